//! Command line and environment, parsed and validated once at start. Every environment
//! variable is named here, as a `const`, under the one prefix `IYSGATE_`; a bad value stops
//! the process with a message naming it before any port is bound ([`Cli::validate`] adds the
//! checks of flag combinations clap cannot make). With no flags at all the embedded default
//! works.
//!
//! Precedence, per setting: the flag, then its environment variable, then the default. A
//! repeatable flag given once on the command line replaces its variable's whole list.
//! Durations are humantime's forms (`100ms`, `30s`, `10m`, `1h 30m`); a bare number is
//! refused. Lists in one variable: `IYSGATE_CLIENTS` separates client specs with `|` (a spec
//! uses `;`, `=`, `,` and `*`, never `|`); `IYSGATE_ADMIN_KEY_SHA256` and
//! `IYSGATE_SYNC_BRANDS` separate with commas.
//!
//! Over 600 lines on purpose: every flag, each documented with its reason and unit, and the start-up checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{Channel, Purpose};
pub use crate::telemetry::LogFormat;

pub const ENV_LISTEN: &str = "IYSGATE_LISTEN";
pub const ENV_PANEL_LISTEN: &str = "IYSGATE_PANEL_LISTEN";
pub const ENV_METRICS_LISTEN: &str = "IYSGATE_METRICS_LISTEN";
pub const ENV_API_KEYS: &str = "IYSGATE_API_KEYS";
pub const ENV_BRANDS: &str = "IYSGATE_BRANDS";
pub const ENV_CALENDAR: &str = "IYSGATE_CALENDAR";
pub const ENV_DATABASE_URL: &str = "IYSGATE_DATABASE_URL";
pub const ENV_EVIDENCE_FILE: &str = "IYSGATE_EVIDENCE_FILE";
pub const ENV_MAX_STALENESS: &str = "IYSGATE_MAX_STALENESS";
pub const ENV_LOG: &str = "IYSGATE_LOG";
pub const ENV_ADDR: &str = "IYSGATE_ADDR";
pub const ENV_REDIS_URL: &str = "IYSGATE_REDIS_URL";
pub const ENV_IYS_URL: &str = "IYSGATE_IYS_URL";
pub const ENV_IYS_TIMEOUT: &str = "IYSGATE_IYS_TIMEOUT";
pub const ENV_PUSH_LISTEN: &str = "IYSGATE_PUSH_LISTEN";
pub const ENV_PUSH_USERNAME: &str = "IYSGATE_PUSH_USERNAME";
pub const ENV_PUSH_PASSWORD: &str = "IYSGATE_PUSH_PASSWORD";
pub const ENV_IYS_USERNAME: &str = "IYSGATE_IYS_USERNAME";
pub const ENV_IYS_PASSWORD: &str = "IYSGATE_IYS_PASSWORD";
pub const ENV_REDIS_PREFIX: &str = "IYSGATE_REDIS_PREFIX";
pub const ENV_REDIS_CA_FILE: &str = "IYSGATE_REDIS_CA_FILE";
pub const ENV_API_KEY: &str = "IYSGATE_API_KEY";
pub const ENV_RUNTIME: &str = "IYSGATE_RUNTIME";
pub const ENV_WORKER_THREADS: &str = "IYSGATE_WORKER_THREADS";
pub const ENV_ADMIN_KEY_SHA256: &str = "IYSGATE_ADMIN_KEY_SHA256";
pub const ENV_MAX_IN_FLIGHT: &str = "IYSGATE_MAX_IN_FLIGHT";
pub const ENV_MAX_IN_FLIGHT_PER_KEY: &str = "IYSGATE_MAX_IN_FLIGHT_PER_KEY";
pub const ENV_MAX_QUEUE_DELAY: &str = "IYSGATE_MAX_QUEUE_DELAY";
pub const ENV_STREAM_IDLE_TIMEOUT: &str = "IYSGATE_STREAM_IDLE_TIMEOUT";
pub const ENV_TLS_CERT: &str = "IYSGATE_TLS_CERT";
pub const ENV_TLS_KEY: &str = "IYSGATE_TLS_KEY";
pub const ENV_TLS_CLIENT_CA: &str = "IYSGATE_TLS_CLIENT_CA";
pub const ENV_TLS_RELOAD: &str = "IYSGATE_TLS_RELOAD";
pub const ENV_FLOOD_API_KEY: &str = "IYSGATE_FLOOD_API_KEY";
/// `--client`, repeated: specs separated by `|`, which no spec contains (a spec uses `;`,
/// `=`, `,` and `*`), e.g. `IYSGATE_CLIENTS='name=a;sha256=..;brands=1|name=b;...'`.
pub const ENV_CLIENTS: &str = "IYSGATE_CLIENTS";
pub const ENV_IYS_CODE: &str = "IYSGATE_IYS_CODE";
pub const ENV_CLIENTS_RELOAD: &str = "IYSGATE_CLIENTS_RELOAD";
pub const ENV_RECONCILE_AT: &str = "IYSGATE_RECONCILE_AT";
pub const ENV_RECONCILE_CONFIRM: &str = "IYSGATE_RECONCILE_CONFIRM";
pub const ENV_UPLOAD_POLL_DELAY: &str = "IYSGATE_UPLOAD_POLL_DELAY";
pub const ENV_QUOTA_HOLD: &str = "IYSGATE_QUOTA_HOLD";
pub const ENV_MAX_CONCURRENT_STREAMS: &str = "IYSGATE_MAX_CONCURRENT_STREAMS";
pub const ENV_MAX_IN_FLIGHT_PER_CONNECTION: &str = "IYSGATE_MAX_IN_FLIGHT_PER_CONNECTION";
pub const ENV_SHUTDOWN_DELAY: &str = "IYSGATE_SHUTDOWN_DELAY";
pub const ENV_GRACE: &str = "IYSGATE_GRACE";
pub const ENV_DEMO_RECORDS: &str = "IYSGATE_DEMO_RECORDS";
pub const ENV_DEMO_SEED: &str = "IYSGATE_DEMO_SEED";
/// `--brand` of `sync`, repeated: `IYSCODE:BRANDCODE` pairs separated by commas.
pub const ENV_SYNC_BRANDS: &str = "IYSGATE_SYNC_BRANDS";
pub const ENV_SYNC_INTERVAL: &str = "IYSGATE_SYNC_INTERVAL";
pub const ENV_SYNC_LEASE: &str = "IYSGATE_SYNC_LEASE";
/// The TOML configuration file (`--config`), see [`crate::app::config_file`].
pub const ENV_CONFIG: &str = "IYSGATE_CONFIG";
pub const ENV_LOG_FORMAT: &str = "IYSGATE_LOG_FORMAT";
/// The usual variable of Rust programs: the log filter when neither `--log`, `IYSGATE_LOG`
/// nor the config file's `log` gives one.
pub const ENV_RUST_LOG: &str = "RUST_LOG";
// Secrets read from files, as Kubernetes mounts them: the variable of the secret plus `_FILE`.
pub const ENV_IYS_PASSWORD_FILE: &str = "IYSGATE_IYS_PASSWORD_FILE";
pub const ENV_PUSH_PASSWORD_FILE: &str = "IYSGATE_PUSH_PASSWORD_FILE";
pub const ENV_REDIS_URL_FILE: &str = "IYSGATE_REDIS_URL_FILE";
pub const ENV_DATABASE_URL_FILE: &str = "IYSGATE_DATABASE_URL_FILE";
pub const ENV_API_KEY_FILE: &str = "IYSGATE_API_KEY_FILE";

#[derive(Debug, Parser)]
#[command(
    name = "iysgate",
    version,
    about = "İYS consent checks in microseconds"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The tokio scheduler: `multi-thread` (work stealing across worker threads) or
    /// `current-thread` (one thread, no cross-thread wake-ups; for a process pinned to one core).
    #[arg(
        long,
        global = true,
        env = ENV_RUNTIME,
        default_value = "multi-thread"
    )]
    pub runtime: RuntimeFlavor,
    /// Worker threads of the multi-thread scheduler (default: one per available core).
    #[arg(long, global = true, env = ENV_WORKER_THREADS)]
    pub worker_threads: Option<usize>,
    /// A TOML file of settings, keyed by the long flag names (`redis-url = "redis://…"`):
    /// a flag or its environment variable wins over the file, the file over the default.
    // Read by `crate::app::config_file::load` before this struct is filled.
    #[arg(long, global = true, env = ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeFlavor {
    MultiThread,
    CurrentThread,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server on the embedded default with a generated, realistic data set and a new
    /// API key (no Redis, no PostgreSQL).
    Demo(DemoArgs),
    /// Run the server on the embedded default (empty until data is loaded).
    Serve(ServeArgs),
    /// Ask a running server about one recipient.
    Check(CheckArgs),
    /// Filter a file of recipients (one per line; `-` or nothing for stdin) through a server.
    Filter(FilterArgs),
    /// Make a new API key: prints the secret once and the entry to configure it with.
    Keygen(KeygenArgs),
    /// Run a sync worker: follow İYS's changes for the configured brands and publish them to
    /// the replicas through Redis (one active leader per deployment, by lease).
    Sync(SyncArgs),
    /// Run the mock İYS (same paths, fields, codes and limits as the real API) for
    /// integration and load tests.
    #[cfg(feature = "dev-tools")]
    MockIys(MockIysArgs),
    /// Load-test a server with unary Checks (closed loop), against iysgate or the echo baseline.
    #[cfg(feature = "dev-tools")]
    Load(LoadArgs),
    /// Serve the load-test baseline: a bare gRPC echo of `Check`'s messages.
    #[cfg(feature = "dev-tools")]
    EchoServer(EchoServerArgs),
    /// Apply the PostgreSQL migrations of the evidence store and exit (`serve` also applies
    /// them at start).
    Migrate(MigrateArgs),
    /// Load a CSV of consents collected elsewhere into the evidence store (resumable: running
    /// the same file again stores only what is missing).
    Import(ImportArgs),
    /// The daily action report of a brand from the evidence store.
    Report(ReportArgs),
    /// Reconcile a brand's past day with İYS through a running server (Admin.Reconcile):
    /// verify İYS's daily file, compare, repair what the index missed, store and print the
    /// daily report. Needs an admin API key.
    Reconcile(ReconcileArgs),
    /// Brands that record consents: `brand add`, `brand list`.
    #[command(subcommand)]
    Brand(BrandCommand),
    /// API clients kept in the evidence store: `client add`, `grant`, `revoke`, `list`.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Panel accounts kept beside the evidence store: `user add`, `grant`, `reset`, `list`.
    #[command(subcommand)]
    User(UserCommand),
    /// The configuration file: `config check FILE [COMMAND [FLAGS…]]`.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file for a command (default `serve`), with the environment and
    /// any flags given after it, and print the effective configuration, secrets redacted.
    /// Exits 1 with the error when it does not validate.
    Check {
        file: PathBuf,
        /// The command the file is for and its flags, e.g. `sync --interval 2s`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Ask a running server (Admin.GetDailyReport) instead of opening the store; needed with
    /// the embedded evidence file, which the server keeps locked.
    #[arg(long, env = ENV_ADDR)]
    pub addr: Option<String>,
    /// With `--addr`: an admin key, or an API key granted the brand.
    #[arg(long, env = ENV_API_KEY, hide_env_values = true, default_value = "")]
    pub api_key: String,
    /// `--api-key` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_API_KEY_FILE, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    #[arg(long)]
    pub brand: u32,
    /// The day (Turkey time), YYYY-MM-DD; default today.
    #[arg(long)]
    pub date: Option<chrono::NaiveDate>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Args, Clone)]
pub struct ReconcileArgs {
    /// Server address.
    #[arg(long, env = ENV_ADDR, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// An admin API key (`serve --admin-key-sha256`).
    #[arg(long, env = ENV_API_KEY, hide_env_values = true)]
    pub api_key: String,
    /// `--api-key` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_API_KEY_FILE, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    #[arg(long)]
    pub brand: u32,
    /// The day (Turkey time), YYYY-MM-DD; default yesterday.
    #[arg(long)]
    pub date: Option<chrono::NaiveDate>,
    /// Confirm the agreement with İYS when the day is clean.
    #[arg(long)]
    pub confirm: bool,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// Where the administration commands find the evidence store.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    #[arg(long, env = ENV_DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// `--database-url` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_DATABASE_URL_FILE, value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,
    /// Without a database: the evidence file (the server using it must be stopped).
    #[arg(long, env = ENV_EVIDENCE_FILE, default_value = "iysgate-data/evidence.log")]
    pub evidence_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum BrandCommand {
    /// Register a brand (and its provider, if new).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The provider's iysCode.
        #[arg(long)]
        iys_code: u32,
        #[arg(long)]
        brand_code: u32,
        #[arg(long)]
        name: String,
        /// TACIR rule: allow TACIR recipients without a registered record.
        #[arg(long)]
        allow_unregistered_tacir: bool,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `iysgate user …`: panel accounts (on the embedded default, run while `serve` is stopped).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Make a panel account; its password comes from `IYSGATE_USER_PASSWORD` or is generated
    /// and printed once.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: crate::panel::store::Role,
        /// A brand to grant (repeat for more; ignored for admins, who see every brand).
        #[arg(long = "brand")]
        brands: Vec<u32>,
    },
    /// Grant an account a brand, or take it back with `--revoke`.
    Grant {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        brand: u32,
        #[arg(long)]
        revoke: bool,
    },
    /// Give an account a new generated password (printed once) and end its sessions.
    Reset {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Make a new API key for a client (shown once) and keep its digest.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
    },
    /// Grant a client a brand (`--retailers '*'` or a comma list lets it name retailers).
    Grant {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        brand: u32,
        #[arg(long)]
        retailers: Option<String>,
    },
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        brand: u32,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    /// The CSV file (header: see `iysgate::write::import::HEADER`).
    pub file: PathBuf,
    /// The brand the consents were collected for.
    #[arg(long)]
    pub brand: u32,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    #[arg(long, env = ENV_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// `--database-url` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_DATABASE_URL_FILE, value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,
}

/// Settings of a serving process.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = ENV_LISTEN, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`); "off" disables it.
    #[arg(long, env = ENV_METRICS_LISTEN, default_value = "127.0.0.1:9464")]
    pub metrics_listen: OptionalAddr,
    /// The compliance panel's listen address (a browser's `http(s)://` address); "off"
    /// disables it. Needs an evidence store (it always has one: the file by default).
    #[arg(long, env = ENV_PANEL_LISTEN, default_value = "127.0.0.1:8080")]
    pub panel_listen: OptionalAddr,
    /// JSON file of API clients (key digests and brand grants).
    #[arg(long, env = ENV_API_KEYS)]
    pub api_keys: Option<PathBuf>,
    /// An API client on the command line: `name=NAME;sha256=HEX;brands=CODE,CODE[;retailers=*|CODE,CODE]`.
    #[arg(long = "client", env = ENV_CLIENTS, value_delimiter = '|')]
    pub clients: Vec<String>,
    /// JSON file of brands and their policies.
    #[arg(long, env = ENV_BRANDS)]
    pub brands: Option<PathBuf>,
    /// Holiday calendar CSV replacing the embedded one (date,weekday,kind,name_tr,basis).
    #[arg(long, env = ENV_CALENDAR)]
    pub calendar: Option<PathBuf>,
    /// PostgreSQL holding the consents the company records (evidence, uploads), e.g.
    /// `postgres://iysgate@db/iysgate`; migrations are applied at start. Without it they are
    /// kept in `--evidence-file`.
    #[arg(long, env = ENV_DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// `--database-url` read from this file (a Kubernetes Secret mount; a trailing newline is
    /// dropped), so the URL's password is in neither the environment nor the process list.
    #[arg(long, env = ENV_DATABASE_URL_FILE, value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,
    /// Upload recorded consents to this İYS (https://api.iys.org.tr, or the mock's http://
    /// address): the uploader drains the outbox and turns registered ONAYs into ALLOW.
    /// The same İYS serves the daily reconciliation (`--reconcile-at`, Admin.Reconcile).
    #[arg(long = "upload-iys-url", visible_alias = "iys-url", env = ENV_IYS_URL)]
    pub upload_iys_url: Option<String>,
    /// The İYS API user of the provider whose brands record consents here.
    #[arg(long, env = ENV_IYS_USERNAME, default_value = "")]
    pub iys_username: String,
    #[arg(long, env = ENV_IYS_PASSWORD, hide_env_values = true, default_value = "")]
    pub iys_password: String,
    /// `--iys-password` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_IYS_PASSWORD_FILE, value_name = "PATH")]
    pub iys_password_file: Option<PathBuf>,
    /// The provider's iysCode (the brands recording consents belong to it).
    #[arg(long, env = ENV_IYS_CODE, default_value_t = 0)]
    pub iys_code: u32,
    /// Longest wait for one İYS answer (connect, send, read the whole body), per attempt. At
    /// most half of `--max-staleness`: a hung answer must end, and the next attempt succeed,
    /// while the data is still fresh enough to ALLOW.
    #[arg(long, env = ENV_IYS_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub iys_timeout: Duration,
    /// SHA-256 (64 hex digits) of an API key that may call the Admin service (brands,
    /// clients, reconciliation, every brand's report); repeat or separate with commas.
    /// `iysgate keygen` makes a key and its digest.
    #[arg(
        long = "admin-key-sha256",
        env = ENV_ADMIN_KEY_SHA256,
        value_delimiter = ','
    )]
    pub admin_keys: Vec<String>,
    /// Re-read the API clients kept in the evidence store this often, so a client added,
    /// granted or revoked through another replica is served here too (0s: only at start).
    #[arg(long, env = ENV_CLIENTS_RELOAD, default_value = "30s", value_parser = parse_duration)]
    pub clients_reload: Duration,
    /// Each day at this Turkey time (HH:MM), reconcile every stored brand of `--iys-code`
    /// with İYS for the day before, store the daily report, and retry every 15 minutes until
    /// İYS has the file. Needs `--iys-url`.
    #[arg(long, env = ENV_RECONCILE_AT, value_parser = parse_time_of_day)]
    pub reconcile_at: Option<chrono::NaiveTime>,
    /// Confirm the agreement with İYS when a scheduled reconciliation finds the day clean.
    #[arg(long, env = ENV_RECONCILE_CONFIRM)]
    pub reconcile_confirm: bool,
    /// Poll a batch's result no sooner than this after sending it (İYS: 300 s).
    #[arg(long, env = ENV_UPLOAD_POLL_DELAY, default_value = "300s", value_parser = parse_duration)]
    pub upload_poll_delay: Duration,
    /// The embedded default's durable store of recorded consents: an append-only file, each
    /// write synced to disk before it is acknowledged.
    #[arg(long, env = ENV_EVIDENCE_FILE, default_value = "iysgate-data/evidence.log")]
    pub evidence_file: PathBuf,
    /// Past this data age, ALLOWs become UNAVAILABLE and health NOT_SERVING (e.g. 30s, 2m).
    #[arg(long, env = ENV_MAX_STALENESS, default_value = "30s", value_parser = parse_duration)]
    pub max_staleness: Duration,
    /// Calls being worked on across all connections before new ones are shed with
    /// RESOURCE_EXHAUSTED (a Filter stream counts only while one of its chunks is answered).
    #[arg(long, env = ENV_MAX_IN_FLIGHT, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// The same, per API key: a tenant's share, so one key cannot take the others' capacity.
    #[arg(long, env = ENV_MAX_IN_FLIGHT_PER_KEY, default_value_t = 1024)]
    pub max_in_flight_per_key: usize,
    /// A call that waited longer than this for its work to start (worker threads busy, its
    /// body still arriving) is shed with RESOURCE_EXHAUSTED instead of answered late; 0ms
    /// turns it off.
    #[arg(long, env = ENV_MAX_QUEUE_DELAY, default_value = "100ms", value_parser = parse_duration)]
    pub max_queue_delay: Duration,
    /// A request that sends nothing for this long (a Filter stream waiting for its next
    /// chunk, a call whose message never comes) ends with DEADLINE_EXCEEDED.
    #[arg(long, env = ENV_STREAM_IDLE_TIMEOUT, default_value = "30s", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// How long a call over its client's quota is held before RESOURCE_EXHAUSTED is sent (within
    /// the call's deadline; 0ms answers at once): a client that ignores RetryInfo is slowed
    /// instead of spending the server's CPU on refusals.
    #[arg(long, env = ENV_QUOTA_HOLD, default_value = "50ms", value_parser = parse_duration)]
    pub quota_hold: Duration,
    /// HTTP/2 streams per connection.
    #[arg(long, env = ENV_MAX_CONCURRENT_STREAMS, default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Calls in flight per connection before that connection's new calls are shed.
    #[arg(long, env = ENV_MAX_IN_FLIGHT_PER_CONNECTION, default_value_t = 1024)]
    pub max_in_flight_per_connection: usize,
    /// At shutdown, how long health reports NOT_SERVING before the listener stops accepting,
    /// so load balancers move traffic away first.
    #[arg(long, env = ENV_SHUTDOWN_DELAY, default_value = "1s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight calls may take to finish at shutdown.
    #[arg(long, env = ENV_GRACE, default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Follow the shared state in this Redis (a replica of a deployment) instead of the
    /// embedded in-process state.
    #[arg(long, env = ENV_REDIS_URL)]
    pub redis_url: Option<String>,
    /// `--redis-url` read from this file (for a URL with a password; a trailing newline is
    /// dropped).
    #[arg(long, env = ENV_REDIS_URL_FILE, value_name = "PATH")]
    pub redis_url_file: Option<PathBuf>,
    /// CA certificate (PEM) a `rediss://` server's certificate must chain to, instead of the
    /// system's roots: for a Redis on a private CA.
    #[arg(long, env = ENV_REDIS_CA_FILE, value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,
    /// Key prefix of this deployment's shared state in Redis.
    #[arg(long, env = ENV_REDIS_PREFIX, default_value = "iysgate")]
    pub redis_prefix: String,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// What a process logs and how.
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// Log filter: a level, or `target=level` directives separated by commas (`info`,
    /// `warn,iysgate=debug`). Without it (or `IYSGATE_LOG`, or the config file's `log`),
    /// `RUST_LOG`, then `info`.
    #[arg(long, env = ENV_LOG)]
    pub log: Option<String>,
    /// `text` (human lines, coloured only when stdout is a terminal) or `json` (one object
    /// per line with `timestamp`, `level`, `target`, `message` and the event's fields, for a
    /// log pipeline).
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// The filter in force: `--log`/`IYSGATE_LOG`/the file, else a non-empty `RUST_LOG`, else
    /// `info`.
    pub fn filter(&self) -> String {
        self.log
            .clone()
            .or_else(|| {
                std::env::var(ENV_RUST_LOG)
                    .ok()
                    .filter(|f| !f.trim().is_empty())
            })
            .unwrap_or_else(|| "info".to_owned())
    }
}

/// TLS of the listeners (gRPC, metrics, push), from PEM files re-read when they change.
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// Certificate chain (PEM) served by every listener; with `--tls-key`.
    #[arg(long, env = ENV_TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = ENV_TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM): clients must present a certificate they signed (mTLS).
    #[arg(long, env = ENV_TLS_CLIENT_CA, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the certificate files are looked at; a change is served to new connections.
    #[arg(long, env = ENV_TLS_RELOAD, default_value = "10s", value_parser = parse_duration)]
    pub tls_reload: Duration,
}

impl TlsArgs {
    /// clap's `requires` sees only flags and variables; a pair half-set from the config file
    /// would otherwise turn TLS silently off.
    ///
    /// # Errors
    /// [`ConfigError::TlsPair`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) => Err(ConfigError::TlsPair("--tls-cert needs --tls-key")),
            (None, Some(_), _) => Err(ConfigError::TlsPair("--tls-key needs --tls-cert")),
            (None, None, Some(_)) => Err(ConfigError::TlsPair("--tls-client-ca needs --tls-cert")),
            _ => Ok(()),
        }
    }

    /// The files, when TLS is configured.
    pub fn files(&self) -> Option<crate::app::tls::TlsFiles> {
        Some(crate::app::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Records to generate (one per brand, recipient and recipient type).
    #[arg(long, env = ENV_DEMO_RECORDS, default_value_t = 1_000_000)]
    pub records: usize,
    /// Seed of the generator (the same seed gives the same data).
    #[arg(long, env = ENV_DEMO_SEED, default_value_t = 2026)]
    pub seed: u64,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, env = ENV_ADDR, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// API key (better given through the environment than on the command line).
    #[arg(long, env = ENV_API_KEY, hide_env_values = true)]
    pub api_key: String,
    /// `--api-key` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_API_KEY_FILE, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// İYS brandCode.
    #[arg(long)]
    pub brand: u32,
    #[arg(long, value_enum)]
    pub channel: Channel,
    /// Ask about the TACIR record instead of BIREYSEL.
    #[arg(long)]
    pub tacir: bool,
    /// Retailer (bayi) code the message is sent through.
    #[arg(long)]
    pub retailer: Option<u32>,
    #[arg(long, value_enum, default_value = "commercial")]
    pub purpose: Purpose,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the whole answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// Phone number or e-mail address.
    pub recipient: String,
}

#[derive(Debug, Args, Clone)]
pub struct FilterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print every recipient with its verdict and reason, not only the allowed ones.
    #[arg(long)]
    pub reasons: bool,
    /// Recipients per chunk sent to the server.
    #[arg(long, default_value_t = 10_000)]
    pub chunk: usize,
    /// File of recipients, one per line; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// Client name.
    #[arg(long)]
    pub name: String,
    /// Brand codes to grant, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub brands: Vec<u32>,
    /// Decisions per second this client may ask for (a Check is 1, a batch its items, a
    /// Filter its recipients); past it calls get RESOURCE_EXHAUSTED and Filter streams slow.
    #[arg(long)]
    pub quota: Option<u32>,
    /// Decisions the client may ask for at once (default: one second's worth).
    #[arg(long, requires = "quota")]
    pub burst: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct SyncArgs {
    /// İYS base URL (https://api.iys.org.tr in production; the mock's http:// address in tests).
    #[arg(long, env = ENV_IYS_URL)]
    pub iys_url: String,
    /// İYS API user (created on hs.iys.org.tr).
    #[arg(long, env = ENV_IYS_USERNAME)]
    pub iys_username: String,
    /// İYS API password; give it through the environment, never on the command line.
    #[arg(long, env = ENV_IYS_PASSWORD, hide_env_values = true)]
    pub iys_password: String,
    /// `--iys-password` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_IYS_PASSWORD_FILE, value_name = "PATH")]
    pub iys_password_file: Option<PathBuf>,
    /// A brand to follow, as IYSCODE:BRANDCODE (repeat for every brand of the provider).
    #[arg(
        long = "brand",
        env = ENV_SYNC_BRANDS,
        value_delimiter = ',',
        value_parser = parse_brand_ref,
        required = true
    )]
    pub brands: Vec<crate::sync::BrandRef>,
    /// Redis of the deployment (records, change stream, cursors, lease).
    #[arg(long, env = ENV_REDIS_URL)]
    pub redis_url: String,
    /// `--redis-url` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_REDIS_URL_FILE, value_name = "PATH")]
    pub redis_url_file: Option<PathBuf>,
    /// CA certificate (PEM) a `rediss://` server's certificate must chain to, instead of the
    /// system's roots: for a Redis on a private CA.
    #[arg(long, env = ENV_REDIS_CA_FILE, value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,
    #[arg(long, env = ENV_REDIS_PREFIX, default_value = "iysgate")]
    pub redis_prefix: String,
    /// Pause between sync passes.
    #[arg(long, env = ENV_SYNC_INTERVAL, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Longest wait for one İYS answer, per attempt; at most half of `--max-staleness`.
    #[arg(long, env = ENV_IYS_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub iys_timeout: Duration,
    /// The replicas' staleness budget (their `--max-staleness`): this worker's heartbeats keep
    /// their data fresh, so `--iys-timeout` is checked against it.
    #[arg(long, env = ENV_MAX_STALENESS, default_value = "30s", value_parser = parse_duration)]
    pub max_staleness: Duration,
    /// Sync lease: a standby takes over this long after the leader stops renewing.
    #[arg(long, env = ENV_SYNC_LEASE, default_value = "15s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Where to receive İYS's push webhook (`POST /iys/push`, behind the HTTPS terminator
    /// registered with İYS); none by default (pull only).
    #[arg(long, env = ENV_PUSH_LISTEN)]
    pub push_listen: Option<SocketAddr>,
    /// Basic-auth user İYS is given for the webhook.
    #[arg(long, env = ENV_PUSH_USERNAME, default_value = "iys")]
    pub push_username: String,
    /// Basic-auth password İYS is given for the webhook (environment only).
    #[arg(long, env = ENV_PUSH_PASSWORD, hide_env_values = true)]
    pub push_password: Option<String>,
    /// `--push-password` read from this file (a trailing newline is dropped).
    #[arg(long, env = ENV_PUSH_PASSWORD_FILE, value_name = "PATH")]
    pub push_password_file: Option<PathBuf>,
    /// Prometheus metrics listen address (`/metrics`); "off" disables it.
    #[arg(long, env = ENV_METRICS_LISTEN, default_value = "127.0.0.1:9465")]
    pub metrics_listen: OptionalAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub logging: LogArgs,
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, Args, Clone)]
pub struct MockIysArgs {
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// Pull hides changes newer than this (İYS: 60m).
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    pub hold_back: Duration,
    /// Batch items stay `enqueue` this long (İYS asks to poll no sooner than 300 s).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub batch_delay: Duration,
    /// Switch off İYS's rate limits (H124, H084, H086, H089).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Seed this many ONAY records (MESAJ, HS_WEB) into brand 700001.
    #[arg(long, default_value_t = 0)]
    pub seed: usize,
    /// Citizen changes per second generated by the simulator (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub citizen_rate: f64,
    #[command(flatten)]
    pub logging: LogArgs,
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// `sms` (unary Check), `email` (lists through Filter), `mixed-tenants` (a steady tenant
    /// beside a flooding one), `sync-burst` (RETs arriving at once, until all are enforced) or
    /// `cold-start` (time until a starting server answers SERVING; --records it loads).
    #[arg(long, value_enum, default_value_t = Scenario::Sms)]
    pub scenario: Scenario,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// What answers: iysgate, or the bare-tonic echo baseline (sms only).
    #[arg(long, value_enum, default_value_t = LoadTarget::Iysgate)]
    pub target: LoadTarget,
    #[arg(long, env = ENV_API_KEY, hide_env_values = true, default_value = "")]
    pub api_key: String,
    #[arg(long, default_value_t = 600_001)]
    pub brand: u32,
    /// Connections (for `email`: concurrent Filter streams, one per connection).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The demo's record count and seed, to ask about recipients the server has (half the
    /// calls) besides ones it has not.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Open loop: this many calls per second in total, latency from the intended send time
    /// (0 = closed loop). For `mixed-tenants`: the steady tenant's rate.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Recipients to use instead of the demo's, one per line (e.g. a sample of real traffic,
    /// or the mock İYS's seeded numbers); for `sms` and `mixed-tenants`.
    #[arg(long)]
    pub recipients_file: Option<std::path::PathBuf>,
    /// `sms`: recipients per call; 0 sends `Check`, more a `CheckBatch` of that many.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// `email`: recipients in the whole list.
    #[arg(long, default_value_t = 1_000_000)]
    pub recipients: usize,
    /// `email`: `phones` (packed numbers, MESAJ), `emails` (addresses in `recipient_lines`,
    /// EPOSTA) or `email-strings` (addresses as `repeated string`).
    #[arg(long, value_enum, default_value_t = ListArg::Emails)]
    pub list: ListArg,
    /// `email`: recipients per Filter chunk.
    #[arg(long, default_value_t = 10_000)]
    pub chunk: usize,
    /// `email`: the server's process id, to report its peak memory (Linux).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// `mixed-tenants`: the flooding tenant's API key.
    #[arg(
        long,
        env = ENV_FLOOD_API_KEY,
        hide_env_values = true,
        default_value = ""
    )]
    pub flood_api_key: String,
    /// `mixed-tenants`: the flooding tenant's connections and calls in flight per connection.
    #[arg(long, default_value_t = 2)]
    pub flood_connections: usize,
    #[arg(long, default_value_t = 64)]
    pub flood_in_flight: usize,
    /// `mixed-tenants`: the flooding tenant waits as a RetryInfo tells it (a well-behaved
    /// client) instead of calling again at once.
    #[arg(long)]
    pub flood_honours_retry: bool,
    /// `sync-burst`: the recipients the burst turns to RET, one per line.
    #[arg(long)]
    pub targets_file: Option<std::path::PathBuf>,
    /// `sync-burst`: the request that makes the burst (plain HTTP POST of a JSON body).
    #[arg(long, default_value = "http://127.0.0.1:8089/_mock/burst")]
    pub trigger_url: String,
    #[arg(long, default_value = "")]
    pub trigger_body: String,
    /// `cold-start`: when the server process was started, Unix milliseconds (`date +%s%3N`).
    #[arg(long)]
    pub started_unix_ms: Option<u64>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, Args, Clone)]
pub struct EchoServerArgs {
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
}

fn parse_brand_ref(text: &str) -> Result<crate::sync::BrandRef, ConfigError> {
    let err = |why| ConfigError::BrandRef {
        text: text.to_owned(),
        why,
    };
    let (iys, brand) = text
        .split_once(':')
        .ok_or_else(|| err("expected IYSCODE:BRANDCODE"))?;
    Ok(crate::sync::BrandRef {
        iys_code: iys
            .trim()
            .parse()
            .map_err(|_| err("iysCode is not a number"))?,
        brand_code: brand
            .trim()
            .parse()
            .map_err(|_| err("brandCode is not a number"))?,
    })
}

/// How a daily report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for a terminal.
    Table,
    /// The report as pretty JSON.
    Json,
    /// One line per action, for a spreadsheet.
    Csv,
}

/// A load-test scenario (`load --scenario`).
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Unary Checks (or CheckBatches with `--batch`), closed or open loop.
    Sms,
    /// Lists through Filter streams.
    Email,
    /// A steady tenant beside a flooding one.
    MixedTenants,
    /// RETs arriving at once, until all are enforced.
    SyncBurst,
    /// Time until a starting server answers SERVING.
    ColdStart,
}

/// What a load test calls (`load --target`).
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadTarget {
    Iysgate,
    Echo,
}

/// How the `email` scenario sends its list (`load --list`).
#[cfg(feature = "dev-tools")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListArg {
    /// Packed phone numbers, MESAJ.
    Phones,
    /// Addresses in `recipient_lines`, EPOSTA.
    Emails,
    /// Addresses as `repeated string`, EPOSTA.
    EmailStrings,
}

/// `--channel`: İYS's spelling (`ARAMA`), lower case accepted as an alias.
impl ValueEnum for Channel {
    fn value_variants<'a>() -> &'a [Self] {
        &Channel::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let alias = match self {
            Channel::Arama => "arama",
            Channel::Mesaj => "mesaj",
            Channel::Eposta => "eposta",
        };
        Some(PossibleValue::new(self.as_str()).alias(alias))
    }
}

/// `--purpose`: kebab case (`debt-reminder`).
impl ValueEnum for Purpose {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Purpose::Commercial,
            Purpose::Transactional,
            Purpose::Information,
            Purpose::DebtReminder,
            Purpose::DeliveryNotice,
            Purpose::DataUpdate,
            Purpose::LegalNotice,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Purpose::Commercial => "commercial",
            Purpose::Transactional => "transactional",
            Purpose::Information => "information",
            Purpose::DebtReminder => "debt-reminder",
            Purpose::DeliveryNotice => "delivery-notice",
            Purpose::DataUpdate => "data-update",
            Purpose::LegalNotice => "legal-notice",
        }))
    }
}

impl Cli {
    /// Checks what clap cannot: settings that must agree with each other. Runs before any
    /// port is bound.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flags that disagree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.command {
            Command::Serve(args) => {
                args.tls.validate()?;
                check_iys_timeout(args.iys_timeout, args.max_staleness)
            }
            Command::Demo(args) => {
                args.serve.tls.validate()?;
                check_iys_timeout(args.serve.iys_timeout, args.serve.max_staleness)
            }
            Command::Sync(args) => {
                args.tls.validate()?;
                check_iys_timeout(args.iys_timeout, args.max_staleness)?;
                if args.push_listen.is_some() && args.push_password.is_none() {
                    return Err(ConfigError::PushPassword);
                }
                Ok(())
            }
            #[cfg(feature = "dev-tools")]
            Command::Load(args) => args.validate(),
            _ => Ok(()),
        }
    }
}

#[cfg(feature = "dev-tools")]
impl LoadArgs {
    /// The flags each scenario needs, checked before any connection is made.
    ///
    /// # Errors
    /// [`ConfigError::Scenario`] naming the scenario and the missing flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let needs = |scenario, needs| Err(ConfigError::Scenario { scenario, needs });
        match self.scenario {
            Scenario::MixedTenants if self.rate == 0 || self.flood_api_key.is_empty() => needs(
                "mixed-tenants",
                "--rate (the steady tenant's calls/s) and --flood-api-key",
            ),
            Scenario::SyncBurst if self.targets_file.is_none() => {
                needs("sync-burst", "--targets-file")
            }
            Scenario::SyncBurst if self.rate == 0 => {
                needs("sync-burst", "--rate (the steady Checks per second)")
            }
            Scenario::ColdStart if self.started_unix_ms.is_none() => {
                needs("cold-start", "--started-unix-ms (the server's start)")
            }
            _ => Ok(()),
        }
    }
}

/// The İYS request timeout must be well below the staleness budget: the sync leader confirms
/// the replicas' data only after a pass whose İYS calls all answered, so one hung answer ages
/// every replica's data by up to the timeout. At most half the budget leaves the other half
/// for the retry and the pass around it.
///
/// # Errors
/// [`ConfigError::IysTimeoutZero`], or [`ConfigError::IysTimeoutTooLong`] naming both flags
/// (and their environment variables) and both values.
pub fn check_iys_timeout(timeout: Duration, max_staleness: Duration) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::IysTimeoutZero);
    }
    if timeout.saturating_mul(2) > max_staleness {
        return Err(ConfigError::IysTimeoutTooLong {
            timeout,
            max_staleness,
        });
    }
    Ok(())
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = ConfigError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(OptionalAddr(None));
        }
        text.parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|source| ConfigError::Addr {
                text: text.to_owned(),
                source,
            })
    }
}

/// Parses a Turkey time of day, `HH:MM`.
///
/// # Errors
/// [`ConfigError::TimeOfDay`].
pub fn parse_time_of_day(text: &str) -> Result<chrono::NaiveTime, ConfigError> {
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| ConfigError::TimeOfDay(text.to_owned()))
}

/// A duration in humantime's forms: `250ms`, `30s`, `5m`, `1h`, `1h 30m`; a bare number has no
/// unit and is refused.
///
/// # Errors
/// [`ConfigError::Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|source| ConfigError::Duration {
        text: text.to_owned(),
        source,
    })
}

/// A flag value that does not parse, or flags that disagree (checked before any port is
/// bound). Each message names the flag or the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{text:?}: {source} (expected e.g. 500ms, 30s, 5m)")]
    Duration {
        text: String,
        source: humantime::DurationError,
    },
    #[error("{0:?}: expected HH:MM (Turkey time), e.g. 02:30")]
    TimeOfDay(String),
    #[error("{text:?}: {source}")]
    Addr {
        text: String,
        source: std::net::AddrParseError,
    },
    /// `--brand IYSCODE:BRANDCODE`.
    #[error("{text:?}: {why}")]
    BrandRef { text: String, why: &'static str },
    #[error("--iys-timeout ({ENV_IYS_TIMEOUT}) must be above zero")]
    IysTimeoutZero,
    #[error(
        "--iys-timeout ({ENV_IYS_TIMEOUT}) {timeout:?} must be at most half of \
         --max-staleness ({ENV_MAX_STALENESS}) {max_staleness:?}: one hung İYS answer \
         would otherwise age every replica's data past the budget and turn ALLOWs \
         UNAVAILABLE"
    )]
    IysTimeoutTooLong {
        timeout: Duration,
        max_staleness: Duration,
    },
    #[error("--push-listen needs {ENV_PUSH_PASSWORD} (or {ENV_PUSH_PASSWORD_FILE})")]
    PushPassword,
    #[error("{0}")]
    TlsPair(&'static str),
    /// A load-test scenario without the flags it needs.
    #[error("{scenario} needs {needs}")]
    Scenario {
        scenario: &'static str,
        needs: &'static str,
    },
}

#[cfg(test)]
mod tests {
    /// `iysgate sync` with the İYS user and Redis set, then `--brand` followed by `rest`.
    fn sync_argv<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec![
            "iysgate",
            "sync",
            "--iys-url",
            "http://127.0.0.1:8089",
            "--iys-username",
            "u",
            "--iys-password",
            "p",
            "--redis-url",
            "redis://127.0.0.1",
            "--brand",
        ];
        argv.extend_from_slice(rest);
        argv
    }

    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_mins(2)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_mins(10)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_mins(5)));
        assert!(parse_duration("30").is_err(), "a bare number has no unit");
        assert!(
            parse_duration("x")
                .unwrap_err()
                .to_string()
                .contains("expected e.g.")
        );
    }

    /// Every flag of `serve` (and so of `demo`, which flattens it) and of `sync` can be set
    /// from the environment, under the one prefix.
    #[test]
    fn every_serve_and_sync_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for name in ["serve", "demo", "sync"] {
            let sub = cli.find_subcommand(name).expect("subcommand exists");
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("{name} --{id} has no environment variable"));
                let env = env.to_str().expect("ASCII name");
                assert!(env.starts_with("IYSGATE_"), "{name} --{id}: {env}");
            }
        }
    }

    /// A flag over the default; `|` separates client specs (in `IYSGATE_CLIENTS` too).
    #[test]
    fn a_flag_overrides_the_default_and_client_specs_split_on_bars() {
        use clap::{CommandFactory, FromArgMatches};
        // The process environment is not touched (tests run in parallel): the flag and the
        // default sides are checked here, the environment names by the test above.
        let m = Cli::command()
            .try_get_matches_from(["iysgate", "serve", "--grace", "3s", "--client", "a|b"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(serve.grace, Duration::from_secs(3));
        assert_eq!(serve.clients, ["a", "b"], "`|` separates client specs");
        assert_eq!(serve.quota_hold, Duration::from_millis(50), "the default");
    }

    #[test]
    fn closed_sets_of_words_are_typed() {
        let err = Cli::try_parse_from(["iysgate", "report", "--brand", "1", "--format", "xml"])
            .unwrap_err();
        assert!(err.to_string().contains("table"), "{err}");
        let cli =
            Cli::try_parse_from(["iysgate", "report", "--brand", "1", "--format", "csv"]).unwrap();
        let Command::Report(report) = cli.command else {
            panic!("report expected")
        };
        assert_eq!(report.format, ReportFormat::Csv);
    }

    #[test]
    fn sync_push_needs_its_password_before_any_port() {
        let err = Cli::try_parse_from(sync_argv(&[
            "700000:700001,700000:700002",
            "--push-listen",
            "127.0.0.1:0",
        ]))
        .unwrap();
        let Command::Sync(sync) = &err.command else {
            panic!("sync expected")
        };
        assert_eq!(sync.brands.len(), 2, "commas separate brands");
        if sync.push_password.is_none() {
            assert!(
                err.validate()
                    .unwrap_err()
                    .to_string()
                    .contains(ENV_PUSH_PASSWORD)
            );
        }
    }

    #[cfg(feature = "dev-tools")]
    #[test]
    fn load_scenarios_check_their_flags_at_start() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let err = parse(&["iysgate", "load", "--scenario", "mixed-tenants"]).unwrap_err();
        assert!(err.contains("--flood-api-key"), "{err}");
        let err = parse(&["iysgate", "load", "--scenario", "cold-start"]).unwrap_err();
        assert!(err.contains("--started-unix-ms"), "{err}");
        assert!(parse(&["iysgate", "load"]).is_ok());
        assert!(Cli::try_parse_from(["iysgate", "load", "--scenario", "smss"]).is_err());
    }

    #[test]
    fn embedded_default_needs_no_flags() {
        let cli = Cli::try_parse_from(["iysgate", "demo"]).unwrap();
        let Command::Demo(demo) = cli.command else {
            panic!("demo expected")
        };
        assert_eq!(demo.records, 1_000_000);
        assert_eq!(demo.serve.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(demo.serve.max_staleness, Duration::from_secs(30));
    }

    #[test]
    fn sync_brands_parse_and_bad_ones_name_the_flag() {
        let cli = Cli::try_parse_from(sync_argv(&["700000:700001"])).unwrap();
        let Command::Sync(sync) = cli.command else {
            panic!("sync expected")
        };
        assert_eq!(sync.brands[0].brand_code, 700_001);
        let err = Cli::try_parse_from([
            "iysgate",
            "sync",
            "--iys-url",
            "x",
            "--iys-username",
            "u",
            "--iys-password",
            "p",
            "--redis-url",
            "r",
            "--brand",
            "700001",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--brand"), "{err}");
    }

    /// One hung İYS answer lasts up to the request timeout; with the defaults it must stay
    /// well inside the staleness budget, or it turns every replica's ALLOWs UNAVAILABLE.
    #[test]
    fn default_iys_timeout_is_well_inside_the_staleness_budget() {
        let cli = Cli::try_parse_from(["iysgate", "serve"]).unwrap();
        cli.validate().unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("serve expected")
        };
        let timeout = crate::iys::client::RetryPolicy::default().request_timeout;
        assert!(
            timeout * 2 <= serve.max_staleness,
            "request timeout {timeout:?} vs max staleness {:?}",
            serve.max_staleness
        );
        assert_eq!(
            serve.iys_timeout, timeout,
            "the flag's default is the client's"
        );
    }

    /// A timeout not well below the staleness budget stops the start with a message naming
    /// both flags; half the budget is the limit, and zero is refused.
    #[test]
    fn iys_timeout_must_be_at_most_half_the_staleness_budget() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let err = parse(&["iysgate", "serve", "--iys-timeout", "30s"]).unwrap_err();
        for name in [
            "--iys-timeout",
            "--max-staleness",
            ENV_IYS_TIMEOUT,
            ENV_MAX_STALENESS,
        ] {
            assert!(err.contains(name), "{name} in {err}");
        }
        assert!(parse(&["iysgate", "serve", "--iys-timeout", "15s"]).is_ok());
        assert!(parse(&["iysgate", "serve", "--iys-timeout", "15001ms"]).is_err());
        assert!(
            parse(&[
                "iysgate",
                "serve",
                "--max-staleness",
                "10s",
                "--iys-timeout",
                "5s"
            ])
            .is_ok()
        );
        assert!(parse(&["iysgate", "demo", "--max-staleness", "10s"]).is_err());
        assert!(parse(&["iysgate", "serve", "--iys-timeout", "0s"]).is_err());
        let sync = sync_argv(&["700000:700001"]);
        assert!(parse(&sync).is_ok());
        let mut slow = sync.clone();
        slow.extend(["--iys-timeout", "20s"]);
        assert!(parse(&slow).unwrap_err().contains("--max-staleness"));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Cli::try_parse_from(["iysgate", "serve", "--max-staleness", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--max-staleness"), "{err}");
    }
}
