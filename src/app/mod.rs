//! Assembling a process: the `App` (checker, index, keys, evidence store, İYS account, shared
//! state, TLS) built and validated from the configuration before anything is bound. Serving
//! and its ordered shutdown are in `serving.rs`, the work beside it in `schedules.rs`, the
//! accept loop in `listener.rs`, certificates in `tls.rs`, flags in `config.rs`.

pub mod config;
pub mod config_file;
pub mod demo;
pub mod listener;
pub mod run;
pub mod schedules;
pub mod serving;
pub mod tls;

use crate::app::config::ServeArgs;
use crate::auth::{ApiKeys, KeysError};
use crate::check::index::{ConsentIndex, EmailKeyer};
use crate::check::store::Consents;
use crate::check::{Checker, Freshness};
use crate::clock::SystemClock;
use crate::domain::calendar::CalendarError;
use crate::domain::{BrandPolicy, BusinessCalendar, Clock};
use crate::telemetry::Metrics;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use schedules::{spawn_reconcile_schedule, spawn_uploader};
pub use serving::{ServerTls, bind, consent_service, serve_grpc, serve_metrics, shutdown_signal};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Panel(crate::panel::store::PanelStoreError),
    #[error("panel: {0}")]
    PanelState(String),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("calendar: {0}")]
    Calendar(#[from] CalendarError),
    #[error("brands file {path}: {reason}")]
    Brands { path: String, reason: String },
    #[error("İYS client: {0}")]
    IysClient(#[source] crate::iys::client::IysError),
    /// Where the İYS token is kept (Redis).
    #[error("İYS {0}")]
    TokenStore(#[from] crate::iys::token::TokenStoreError),
    #[error(
        "--iys-url needs --iys-code and the İYS user (IYSGATE_IYS_USERNAME, IYSGATE_IYS_PASSWORD)"
    )]
    IysAccount,
    #[error("--reconcile-at needs --iys-url (and the evidence store)")]
    ReconcileNeedsIys,
    #[error("uploader: {0}")]
    Uploader(#[from] crate::write::uploader::UploaderError),
    /// The replicas' shared state (Redis); its message starts with `redis:`.
    #[error(transparent)]
    Shared(#[from] crate::sync::redis::SharedError),
    #[error(transparent)]
    Logging(#[from] crate::telemetry::LoggingError),
    /// Flags that disagree, found after parsing.
    #[error(transparent)]
    Config(#[from] crate::app::config::ConfigError),
    #[error("listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("--admin-key-sha256: expected 64 hex digits (the SHA-256 of an API key)")]
    AdminKey,
    #[error("no OS randomness for the e-mail key: {0}")]
    Random(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Evidence(#[from] crate::write::evidence::EvidenceError),
    #[error(transparent)]
    ServedKeys(#[from] crate::write::accounts::ServedKeysError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::app::tls::TlsError),
    #[error("evidence file directory {path}: {source}")]
    EvidenceDir {
        path: String,
        source: std::io::Error,
    },
}

/// Opens the store of recorded consents: PostgreSQL when a database URL is given (migrating
/// it), else the append-only `evidence_file` (its directory created if missing).
pub async fn open_evidence(
    database_url: Option<&str>,
    evidence_file: &std::path::Path,
    calendar: BusinessCalendar,
) -> Result<crate::write::evidence::EvidenceStore, StartError> {
    use crate::write::evidence::{EvidenceStore, FileStore, PgStore};
    if let Some(url) = database_url {
        return Ok(EvidenceStore::from(PgStore::connect(url, calendar).await?));
    }
    if let Some(dir) = evidence_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StartError::EvidenceDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(EvidenceStore::from(
        FileStore::open(evidence_file, calendar).await?,
    ))
}

/// The one place an İYS client is built from the flags (`serve`'s uploader and
/// reconciliation, `sync`'s worker): the İYS user, the request timeout, its token kept in
/// `tokens`.
pub(crate) fn iys_client(
    url: &str,
    user: (&str, &str),
    timeout: Duration,
    tokens: Arc<dyn crate::iys::token::TokenStore>,
) -> Result<crate::iys::client::IysClient, StartError> {
    use crate::iys::client::{Credentials, IysClient, RetryPolicy};
    let credentials = Credentials {
        username: user.0.to_owned(),
        password: user.1.to_owned(),
    };
    let retry = RetryPolicy {
        request_timeout: timeout,
        ..RetryPolicy::default()
    };
    IysClient::new(url, credentials, tokens, retry).map_err(StartError::IysClient)
}

/// The İYS account of `--iys-url`/`--iys-code`, shared by the uploader and the
/// reconciliation (one token between them); none without `--iys-url`.
///
/// # Errors
/// [`StartError::IysAccount`] without the İYS code or user, or the client's error.
pub fn iys_account(args: &ServeArgs) -> Result<Option<crate::api::admin::IysAccount>, StartError> {
    let Some(url) = &args.upload_iys_url else {
        return Ok(None);
    };
    if args.iys_code == 0 || args.iys_username.is_empty() {
        return Err(StartError::IysAccount);
    }
    let tokens = Arc::new(crate::iys::token::MemoryTokenStore::new());
    Ok(Some(crate::api::admin::IysAccount {
        client: iys_client(
            url,
            (&args.iys_username, &args.iys_password),
            args.iys_timeout,
            tokens,
        )?,
        iys_code: args.iys_code,
    }))
}

/// With `--redis-url`, the İYS account keeps its token in Redis beside the sync worker's, so
/// the deployment holds one token (İYS limits how often tokens may be asked for).
///
/// # Errors
/// [`StartError::TokenStore`] when Redis cannot be reached, or the client's error.
pub async fn share_iys_token(app: &mut App, args: &ServeArgs) -> Result<(), StartError> {
    let (Some(redis), Some(url), Some(account)) =
        (&args.redis_url, &args.upload_iys_url, &mut app.iys)
    else {
        return Ok(());
    };
    let tokens = crate::iys::token::RedisTokenStore::connect_with_ca(
        redis,
        &args.redis_prefix,
        &args.iys_username,
        args.redis_ca_file.as_deref(),
    )
    .await?;
    account.client = iys_client(
        url,
        (&args.iys_username, &args.iys_password),
        args.iys_timeout,
        Arc::new(tokens),
    )?;
    Ok(())
}

/// Adds the API clients kept in the evidence store (`iysgate client add`) to the ones given by
/// flags and files. A key present in both refuses the start, naming the client.
pub async fn add_stored_clients(
    app: &mut App,
    store: &crate::write::evidence::EvidenceStore,
) -> Result<usize, StartError> {
    let keys = served_keys(&app.base_keys, store).await?;
    let stored = keys.len() - app.base_keys.len();
    app.keys = Arc::new(keys);
    Ok(stored)
}

/// Applies every event kept in the evidence store to the index, as the process that recorded
/// it did: registered when İYS accepted it or already held it from another record, else
/// pending (a RET stays DENY whether or not İYS took it). The embedded default runs this at start, so a recorded RET survives a restart;
/// a replica gets the same from Redis instead. Returns how many events were applied.
///
/// # Errors
/// A store failure.
pub async fn apply_recorded(
    store: &crate::write::evidence::EvidenceStore,
    consents: &Consents,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, crate::write::evidence::EvidenceError> {
    use crate::domain::{ConsentEvent, Registration};
    let mut applied = 0;
    for brand in store.brands().await? {
        let events = store
            .events_between(
                brand.brand_code,
                chrono::DateTime::UNIX_EPOCH,
                now + chrono::Duration::days(1),
            )
            .await?;
        for stored in events {
            let (key, event) = if let Some(settled) = crate::write::uploader::settled_event(&stored)
            {
                settled
            } else {
                let e = &stored.event;
                let pending = ConsentEvent {
                    status: e.status,
                    source: e.source,
                    consent_date: e.consent_date,
                    registration: Registration::Pending,
                    retailer_access: e.retailer_access.clone(),
                };
                (crate::write::uploader::key_of(e), pending)
            };
            let _ = consents.apply(key, event);
            applied += 1;
        }
    }
    Ok(applied)
}

pub use crate::write::accounts::{ensure_brands, ensure_provider, served_keys};

/// Everything a serving process holds.
pub struct App {
    pub checker: Arc<Checker>,
    pub consents: Arc<Consents>,
    pub keys: Arc<ApiKeys>,
    /// The keys of flags and files, without the stored clients.
    pub base_keys: Arc<ApiKeys>,
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<Metrics>,
    /// Where recorded consents are kept (`ConsentRecords`); none: that service refuses.
    pub evidence: Option<Arc<crate::write::evidence::EvidenceStore>>,
    /// The İYS account for uploads and reconciliation (`--iys-url`).
    pub iys: Option<crate::api::admin::IysAccount>,
    /// SHA-256 digests of the admin keys (`--admin-key-sha256`).
    pub admin_keys: Vec<[u8; 32]>,
    /// A replica's shared state (`--redis-url`): what this process records, and the
    /// registrations its uploader sees, are published there for the other replicas. None: they
    /// stay in this process.
    pub shared: Option<crate::sync::redis::SharedState>,
    /// TLS of the listeners (`--tls-cert`); none: plaintext (the loopback demo).
    pub tls: Option<ServerTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandsFile {
    brands: Vec<BrandEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandEntry {
    brand_code: u32,
    #[serde(default)]
    #[allow(dead_code)] // shown by later admin tooling; parsed now so files stay valid
    name: Option<String>,
    #[serde(default)]
    allow_unregistered_tacir: bool,
}

/// Reads the brands file: `{"brands":[{"brand_code":600001,"name":"…","allow_unregistered_tacir":false}]}`.
pub fn load_policies(path: &Path) -> Result<HashMap<u32, BrandPolicy>, StartError> {
    let err = |reason: String| StartError::Brands {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: BrandsFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(file
        .brands
        .into_iter()
        .map(|b| {
            (
                b.brand_code,
                BrandPolicy {
                    allow_unregistered_tacir: b.allow_unregistered_tacir,
                },
            )
        })
        .collect())
}

impl App {
    /// What the reconciliation compares with and repairs: this process's records, published
    /// to the other replicas when there are any.
    pub fn serving(&self) -> crate::write::reconcile::Serving {
        crate::write::reconcile::Serving {
            consents: Arc::clone(&self.consents),
            shared: self.shared.clone(),
        }
    }

    /// The embedded default: records in memory, the given clock.
    pub fn embedded(args: &ServeArgs, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        let mut keys = match &args.api_keys {
            Some(path) => ApiKeys::from_path(path)?,
            None => ApiKeys::default(),
        };
        for flag in &args.clients {
            keys.add_flag(flag)?;
        }
        let calendar = match &args.calendar {
            Some(path) => load_calendar(path)?,
            None => BusinessCalendar::embedded(),
        };
        // Deadlines run up to a week ahead: warn while there is time to ship next year's data.
        let ahead = clock.now_turkey().date() + chrono::Duration::days(14);
        if !calendar.covers(ahead) {
            tracing::warn!(
                last_year = calendar.last_year(),
                "holiday calendar does not cover this year: deadlines count Sundays only \
                 (earliest possible deadline); configure a newer calendar file"
            );
        }
        let admin_keys = args
            .admin_keys
            .iter()
            .map(|hex| crate::auth::from_hex(hex.trim()).ok_or(StartError::AdminKey))
            .collect::<Result<Vec<_>, _>>()?;
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| StartError::Random(e.to_string()))?;
        let keyer = Arc::new(EmailKeyer::new(key));
        let index = Arc::new(ConsentIndex::new());
        let freshness = Arc::new(Freshness::new());
        let checker = Arc::new(Checker::new(
            Arc::clone(&index),
            Arc::clone(&keyer),
            Arc::clone(&freshness),
            Arc::new(calendar),
            clock,
            args.max_staleness,
        ));
        if let Some(path) = &args.brands {
            checker.set_policies(load_policies(path)?);
        }
        Ok(App {
            checker,
            consents: Arc::new(Consents::new(index, keyer)),
            base_keys: Arc::new(keys.clone()),
            keys: Arc::new(keys),
            freshness,
            metrics: Arc::new({
                // Register the handles with the Prometheus recorder, not the no-op default.
                crate::telemetry::install_metrics();
                Metrics::register()
            }),
            evidence: None,
            iys: iys_account(args)?,
            admin_keys,
            shared: None,
            tls: ServerTls::load(&args.tls)?,
        })
    }

    /// In the embedded default the in-process store is the source of truth, so the index is
    /// in step with it by construction: confirm freshness on a steady beat. (A replica fed by
    /// the sync worker confirms on each applied change or heartbeat instead.)
    pub fn spawn_embedded_heartbeat(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let freshness = Arc::clone(&self.freshness);
        let checker = Arc::clone(&self.checker);
        freshness.mark_confirmed(checker.clock().now_utc());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => freshness.mark_confirmed(checker.clock().now_utc()),
                }
            }
        });
    }
}

/// Reads and parses the holiday CSV of `--calendar` (`domain` does no I/O).
///
/// # Errors
/// [`CalendarError::Io`] naming `path` when the file cannot be read or is not UTF-8;
/// otherwise as [`BusinessCalendar::from_csv`].
pub fn load_calendar(path: &Path) -> Result<BusinessCalendar, CalendarError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CalendarError::Io(path.to_path_buf(), e))?;
    BusinessCalendar::from_csv(&text)
}

/// The system clock as the shared clock type.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::schedules::next_run;
    use super::*;

    #[test]
    fn the_schedule_runs_at_the_next_time_of_day() {
        let at = chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        let t = |s: &str| crate::domain::time::parse_iys(s).unwrap();
        assert_eq!(
            next_run(t("2026-05-20 01:00:00"), at),
            t("2026-05-20 02:30:00")
        );
        assert_eq!(
            next_run(t("2026-05-20 02:30:00"), at),
            t("2026-05-21 02:30:00")
        );
        assert_eq!(
            next_run(t("2026-05-20 23:59:59"), at),
            t("2026-05-21 02:30:00")
        );
    }

    #[test]
    fn a_calendar_file_is_read_and_a_missing_one_named() {
        let path =
            std::env::temp_dir().join(format!("iysgate-calendar-{}.csv", std::process::id()));
        std::fs::write(
            &path,
            "date,weekday,kind,name_tr,basis\n2031-01-01,Wed,FULL,Yılbaşı,fixed\n",
        )
        .unwrap();
        let cal = load_calendar(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2031, 1, 1).unwrap();
        assert_eq!(
            cal.day_kind(day),
            crate::domain::calendar::DayKind::FullHoliday
        );
        let err = load_calendar(&path).unwrap_err();
        assert!(matches!(err, CalendarError::Io(..)));
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn example_brands_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/brands.example.json");
        let policies = load_policies(&path).unwrap();
        assert!(policies[&620_001].allow_unregistered_tacir);
        assert!(!policies[&600_001].allow_unregistered_tacir);
    }

    #[test]
    fn example_keys_file_names_the_placeholder_digest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/api-keys.example.json");
        let err = ApiKeys::from_path(&path).unwrap_err().to_string();
        assert!(
            err.contains("sms-gateway") && err.contains("key_sha256"),
            "{err}"
        );
    }

    #[test]
    fn bad_brands_file_names_the_file() {
        let path = std::env::temp_dir().join(format!("iysgate-brands-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"brands":[{"brand_code":"x"}]}"#).unwrap();
        let err = load_policies(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 1 column 28"),
            "{err}"
        );
        std::fs::remove_file(&path).ok();
    }
}
