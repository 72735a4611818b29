//! Logs and metrics. Logs never carry a phone number or e-mail address in clear: use
//! [`fingerprint`] to correlate a recipient across lines of one process. Metric handles are
//! registered once, so recording on the check path is an atomic add, not a registry lookup.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};
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
            handle
        })
        .clone()
}

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

/// Pre-registered metric handles for the check path.
pub struct Metrics {
    decisions: [Counter; Reason::ALL.len()],
    exempt: [Counter; 7],
    invalid: Counter,
    unavailable: Counter,
    shed: [Counter; Shed::ALL.len()],
    expired_alerts: Counter,
    latency: [Histogram; 4],
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
            latency: ["Check", "CheckBatch", "Filter", "GetConsent"]
                .map(|m| histogram!("iysgate_rpc_duration_seconds", "method" => m)),
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
    fn fingerprint_hides_the_address_but_is_stable_in_process() {
        let a = fingerprint("+905321234567");
        assert_eq!(a, fingerprint("+905321234567"));
        assert_ne!(a, fingerprint("+905321234568"));
        assert!(!a.contains("532"), "{a}");
        assert_eq!(a.len(), 10);
    }
}
