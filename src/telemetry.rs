//! Logs and metrics. Logs never carry a phone number or e-mail address in clear: use
//! [`fingerprint`] to correlate a recipient across lines of one process. Metric handles are
//! registered once, so recording on the check path is an atomic add, not a registry lookup.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use siphasher::sip::SipHasher13;

use crate::domain::{Purpose, Reason};

/// Why logging could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `--log` is not a `Targets` filter.
    #[error("log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already set.
    #[error(transparent)]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines; ANSI colours only when stdout is a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's fields.
    Json,
}

/// Starts the tracing subscriber, writing to stdout. `filter` uses the `RUST_LOG` syntax of
/// `Targets` (e.g. `info,iysgate=debug`).
///
/// # Errors
/// [`LoggingError`]: a filter that does not parse, or a subscriber already set.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), LoggingError> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets: tracing_subscriber::filter::Targets =
        filter.parse().map_err(|source| LoggingError::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let layer = match format {
        // A file or a pipe gets no colour codes.
        LogFormat::Text => fmt.with_ansi(std::io::stdout().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_ansi(false).boxed(),
    };
    Ok(tracing_subscriber::registry()
        .with(layer.with_filter(targets))
        .try_init()?)
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0,
                ])
                .expect("bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            gauge!("iysgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// HELP text and unit of every `iysgate_` metric, wherever it is recorded (`grep iysgate_
/// src/`): a new metric is described here too.
fn describe_metrics() {
    use Unit::{Count, Seconds};
    for (name, help) in [
        (
            "iysgate_decisions_total",
            "Decisions answered, by reason (ALLOW and DENY reasons).",
        ),
        (
            "iysgate_exempt_decisions_total",
            "ALLOWs without a consent record because the message's purpose is exempt, by purpose.",
        ),
        (
            "iysgate_invalid_items_total",
            "Recipients or requests refused as INVALID (not a phone number or e-mail, bad field).",
        ),
        (
            "iysgate_unavailable_total",
            "Answers refused as UNAVAILABLE because the replica's data was older than --max-staleness.",
        ),
        (
            "iysgate_shed_total",
            "Calls refused with RESOURCE_EXHAUSTED before any work, by reason.",
        ),
        (
            "iysgate_registration_expired_total",
            "DENYs because an ONAY recorded here was not registered with İYS within its deadline.",
        ),
        (
            "iysgate_quota_exceeded_total",
            "Calls refused by their client's quota, by client.",
        ),
        (
            "iysgate_grpc_requests_total",
            "ConsentCheck calls answered, by gRPC method and status code (a Filter stream counts once, by how it opened).",
        ),
        (
            "iysgate_reconcile_mismatches_total",
            "Differences found by the daily reconciliation with İYS.",
        ),
        (
            "iysgate_reconcile_failures_total",
            "Daily reconciliations that could not complete.",
        ),
        (
            "iysgate_upload_batches_total",
            "Batches of recorded consents sent to İYS.",
        ),
        (
            "iysgate_uploads_total",
            "Recorded consents whose upload to İYS ended, by outcome.",
        ),
        (
            "iysgate_uploads_expired_total",
            "Recorded consents whose İYS registration deadline passed before upload.",
        ),
        (
            "iysgate_record_publish_failures_total",
            "Recorded consents or registrations not published to the other replicas, by what.",
        ),
        (
            "iysgate_replica_follow_errors_total",
            "Errors following the shared state's change stream (a replica).",
        ),
        (
            "iysgate_replica_snapshot_loads_total",
            "Full loads of the shared state's records (a replica's start or a gap).",
        ),
        (
            "iysgate_replica_epoch_changes_total",
            "Changes of the shared state's epoch seen by a replica (a rebuilt Redis).",
        ),
        (
            "iysgate_sync_pull_failures_total",
            "Failed pulls of İYS's changes by the sync worker.",
        ),
        (
            "iysgate_sync_gaps_total",
            "Pulls whose cursor showed changes were missed and a catch-up was needed.",
        ),
        (
            "iysgate_sync_cursor_repeats_total",
            "Pulls that returned the cursor they were given.",
        ),
        (
            "iysgate_sync_changes_total",
            "Consent changes applied by the sync worker, by source (pull or push).",
        ),
        (
            "iysgate_push_changes_total",
            "Consent changes received through İYS's push webhook.",
        ),
    ] {
        describe_counter!(name, Count, help);
    }
    for (name, unit, help) in [
        (
            "iysgate_build_info",
            Count,
            "Always 1; the version label is the running build's.",
        ),
        (
            "iysgate_data_age_seconds",
            Seconds,
            "Age of this replica's consent data (the time since it was last confirmed in step with İYS), sampled at each scrape; past --max-staleness ALLOWs become UNAVAILABLE.",
        ),
        (
            "iysgate_index_records",
            Count,
            "Consent records in this replica's index, sampled at each scrape.",
        ),
        (
            "iysgate_leader",
            Count,
            "1 while this process holds the lease of its role (sync, uploader, reconcile), 0 otherwise.",
        ),
        (
            "iysgate_uploads_pending",
            Count,
            "Recorded consents waiting to be uploaded to İYS.",
        ),
        (
            "iysgate_uploads_at_risk",
            Count,
            "Recorded consents near their İYS registration deadline and not yet uploaded.",
        ),
        (
            "iysgate_uploads_expired",
            Count,
            "Recorded consents past their İYS registration deadline, never uploaded.",
        ),
        (
            "iysgate_iys_token_halted",
            Count,
            "1 while İYS token requests for the user are halted after refusals.",
        ),
    ] {
        describe_gauge!(name, unit, help);
    }
    describe_histogram!(
        "iysgate_rpc_duration_seconds",
        Seconds,
        "Time to answer a successful ConsentCheck call (a Filter chunk), by method."
    );
}

/// Sets the gauges sampled at each scrape of a serving process: the data age (absent until the
/// index is first loaded) and the index size. Called by the `/metrics` handler, never by the
/// check path.
pub fn sample_replica(data_age: Option<Duration>, records: usize) {
    if let Some(age) = data_age {
        gauge!("iysgate_data_age_seconds").set(age.as_secs_f64());
    }
    gauge!("iysgate_index_records").set(records as f64);
}

/// The standard `process_*` series (Prometheus client conventions), read from `/proc/self` at
/// each scrape and appended to the exporter's text; empty off Linux or when `/proc` is absent.
pub fn process_metrics() -> String {
    use std::fmt::Write as _;
    /// `/proc` counts CPU time and start time in USER_HZ, which is 100 on every Linux ABI.
    const TICKS: f64 = 100.0;
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Field 3 of proc(5) is fields[0]: utime is 14, stime 15, starttime 22.
    let tick = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    if let (Some(user), Some(system)) = (tick(14), tick(15)) {
        put(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (user + system) / TICKS,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    if let Some(kib) = rss_kib {
        put(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        put(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, tick(22)) {
        put(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS,
        );
    }
    out
}

/// gRPC status codes, in `tonic::Code`'s order (its discriminants, 0 to 16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Why a call was refused with RESOURCE_EXHAUSTED before any work (`iysgate_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The server's calls in flight were at `--max-in-flight`.
    Capacity = 0,
    /// The API key's calls in flight were at `--max-in-flight-per-key`.
    KeyCapacity = 1,
    /// The call waited longer than `--max-queue-delay` before its work could start.
    QueueDelay = 2,
    /// Its connection had `--max-in-flight-per-connection` calls in flight.
    Connection = 3,
}

impl Shed {
    pub const ALL: [Shed; 4] = [
        Shed::Capacity,
        Shed::KeyCapacity,
        Shed::QueueDelay,
        Shed::Connection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Capacity => "capacity",
            Shed::KeyCapacity => "key_capacity",
            Shed::QueueDelay => "queue_delay",
            Shed::Connection => "connection",
        }
    }
}

/// Counts a refusal where no [`Metrics`] handle is at hand (the listener); a registry look-up,
/// paid only when shedding.
pub fn shed(reason: Shed) {
    counter!("iysgate_shed_total", "reason" => reason.as_str()).increment(1);
}

/// The RPCs whose latency is recorded.
#[derive(Debug, Clone, Copy)]
pub enum Rpc {
    Check = 0,
    CheckBatch = 1,
    Filter = 2,
    GetConsent = 3,
}

/// The `method` label of each [`Rpc`].
const RPC_NAMES: [&str; 4] = ["Check", "CheckBatch", "Filter", "GetConsent"];

/// Pre-registered metric handles for the check path.
pub struct Metrics {
    decisions: [Counter; Reason::ALL.len()],
    exempt: [Counter; 7],
    invalid: Counter,
    unavailable: Counter,
    shed: [Counter; Shed::ALL.len()],
    expired_alerts: Counter,
    latency: [Histogram; 4],
    /// `iysgate_grpc_requests_total`, by [`Rpc`] and then by `tonic::Code`.
    calls: [[Counter; CODES.len()]; 4],
}

impl Metrics {
    /// Registers the handles with whatever recorder is installed (a no-op recorder in tests
    /// that install none).
    pub fn register() -> Self {
        let purposes = [
            Purpose::Commercial,
            Purpose::Transactional,
            Purpose::Information,
            Purpose::DebtReminder,
            Purpose::DeliveryNotice,
            Purpose::DataUpdate,
            Purpose::LegalNotice,
        ];
        Self {
            decisions: Reason::ALL
                .map(|r| counter!("iysgate_decisions_total", "reason" => r.as_str())),
            exempt: purposes
                .map(|p| counter!("iysgate_exempt_decisions_total", "purpose" => p.as_str())),
            invalid: counter!("iysgate_invalid_items_total"),
            unavailable: counter!("iysgate_unavailable_total"),
            shed: Shed::ALL.map(|r| counter!("iysgate_shed_total", "reason" => r.as_str())),
            expired_alerts: counter!("iysgate_registration_expired_total"),
            latency: RPC_NAMES.map(|m| histogram!("iysgate_rpc_duration_seconds", "method" => m)),
            calls: RPC_NAMES.map(|m| {
                CODES.map(|c| counter!("iysgate_grpc_requests_total", "method" => m, "code" => c))
            }),
        }
    }

    pub fn decision(&self, reason: Reason, purpose: Purpose) {
        self.decisions[reason as usize].increment(1);
        if reason == Reason::ExemptPurpose {
            self.exempt[purpose as usize].increment(1);
        }
        if reason == Reason::RegistrationExpired {
            self.expired_alerts.increment(1);
        }
    }

    /// Adds a chunk's counts at once.
    pub fn decisions(&self, counts: &[u32; Reason::ALL.len()], purpose: Purpose) {
        for (reason, &n) in Reason::ALL.iter().zip(counts) {
            if n > 0 {
                self.decisions[*reason as usize].increment(u64::from(n));
                if *reason == Reason::ExemptPurpose {
                    self.exempt[purpose as usize].increment(u64::from(n));
                }
                if *reason == Reason::RegistrationExpired {
                    self.expired_alerts.increment(u64::from(n));
                }
            }
        }
    }

    pub fn invalid(&self, n: u64) {
        self.invalid.increment(n);
    }

    pub fn unavailable(&self) {
        self.unavailable.increment(1);
    }

    /// A call refused by its client's quota; by client name (a handful per deployment).
    pub fn quota_exceeded(&self, client: &str) {
        counter!("iysgate_quota_exceeded_total", "client" => client.to_owned()).increment(1);
    }

    pub fn shed(&self, reason: Shed) {
        self.shed[reason as usize].increment(1);
    }

    /// A call answered, counted by its status code: one atomic add on a handle registered at
    /// start (the code is an index, no label is formatted or looked up).
    pub fn call<T>(&self, rpc: Rpc, result: &Result<T, tonic::Status>) {
        let code = result
            .as_ref()
            .err()
            .map_or(tonic::Code::Ok, tonic::Status::code);
        self.calls[rpc as usize][code as usize].increment(1);
    }

    pub fn latency(&self, rpc: Rpc, took: Duration) {
        self.latency[rpc as usize].record(took.as_secs_f64());
    }
}

/// A short keyed hash of a recipient for logs: lines of one process about the same
/// recipient correlate, but the address cannot be read back (the key is random per process).
pub fn fingerprint(recipient: &str) -> String {
    use std::hash::Hasher;
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    let (k0, k1) = *KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // Without OS randomness the fingerprint would still hide the address, just with a
        // fixed key; logging must never fail a request.
        let _ = getrandom::fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        (
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        )
    });
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write(recipient.as_bytes());
    format!("r:{:08x}", h.finish() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_in_tonics_order() {
        for (i, name) in CODES.iter().enumerate() {
            let code = tonic::Code::from(i as i32);
            assert_eq!(code as usize, i);
            let words = format!("{code:?}");
            assert_eq!(
                name.replace('_', "").to_lowercase(),
                words.to_lowercase(),
                "{i}"
            );
        }
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {text}"));
            let value: f64 = line[name.len() + 1..].parse().unwrap();
            // A young test process may not have used a whole 10 ms tick of CPU yet.
            let floor = if name == "process_cpu_seconds_total" {
                0.0
            } else {
                1.0
            };
            assert!(value >= floor, "{line}");
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        }
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn fingerprint_hides_the_address_but_is_stable_in_process() {
        let a = fingerprint("+905321234567");
        assert_eq!(a, fingerprint("+905321234567"));
        assert_ne!(a, fingerprint("+905321234568"));
        assert!(!a.contains("532"), "{a}");
        assert_eq!(a.len(), 10);
    }
}
