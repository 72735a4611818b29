//! The harness of `tests/uploader.rs`: the mock İYS served over real HTTP, an evidence store
//! (a fresh file, or a fresh PostgreSQL schema at `DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test: without PostgreSQL those tests fail, never
//! skip), an İYS client that does not retry by itself (so every failure is an uploader
//! attempt), and a registration callback that records what it is given.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use iysgate::clock::SystemClock;
use iysgate::domain::recipient::normalise_recipient;
use iysgate::domain::{
    BrandPolicy, BusinessCalendar, Channel, Clock, ConsentEvent, ConsentKey, ConsentStatus,
    RecipientType, Source, TurkeyTime,
};
use iysgate::iys::client::{Credentials, IysClient, RetryPolicy};
use iysgate::iys::mock::{Account, Faults, MockConfig, MockIys};
use iysgate::iys::token::MemoryTokenStore;
use iysgate::write::evidence::{
    Brand, EventId, Evidence, EvidenceStore, FileStore, NewEvent, Provider, Recorder, UploadState,
};
use iysgate::write::uploader::{Backoff, Uploader, UploaderConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs each scenario (an `async fn name(store: EvidenceStore)` of the test file, which
/// imports `file_store` and `Schema`) on a fresh file store and on a fresh PostgreSQL schema.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::file_store(stringify!($name)).await;
                    super::$name(store).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let schema = super::Schema::new(stringify!($name)).await;
                    super::$name(schema.store().await).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

pub const IYS_CODE: u32 = 700_000;
pub const BRAND: u32 = 700_001;

/// The `i`-th test recipient (a Turkish mobile number).
pub fn phone(i: usize) -> String {
    format!("+90532{i:07}")
}

/// Now in Turkey, to the second (İYS dates have no fractions).
pub fn now_tr() -> TurkeyTime {
    let now = SystemClock.now_turkey();
    now.with_nanosecond(0).unwrap_or(now)
}

/// A collected event of `recipient` (MESAJ), given at `consent_date`.
pub fn event(recipient: &str, status: ConsentStatus, consent_date: TurkeyTime) -> NewEvent {
    NewEvent {
        brand: BRAND,
        recipient: normalise_recipient(recipient, Channel::Mesaj.address_kind()).unwrap(),
        recipient_type: RecipientType::Bireysel,
        channel: Channel::Mesaj,
        status,
        source: Source::HsWeb,
        consent_date,
        retailer_access: vec![],
        evidence: Evidence {
            method: "web form checkbox".into(),
            location: "https://example.com.tr/uyelik".into(),
            document_ref: None,
            capturing_system: "crm-web".into(),
        },
        recorder: Recorder {
            client: "crm".into(),
            key_sha256: None,
        },
        idempotency_key: format!("{recipient}/{}/{consent_date}", status.as_str()),
    }
}

pub fn onay(i: usize, consent_date: TurkeyTime) -> NewEvent {
    event(&phone(i), ConsentStatus::Onay, consent_date)
}

/// Fast settings: short lease, no pacing, quick backoff, a batch from 50 open uploads.
pub fn config() -> UploaderConfig {
    UploaderConfig {
        bulk_threshold: 50,
        batch_size: 1000,
        max_open_batches: 4,
        concurrency: 4,
        min_request_interval: Duration::ZERO,
        lease: Duration::from_secs(2),
        poll_delay: Duration::from_millis(300),
        poll_interval: Duration::from_millis(100),
        batch_wait: Duration::from_secs(10),
        idle: Duration::from_millis(20),
        sweep_every: Duration::from_millis(200),
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
    }
}

/// The mock's test defaults with one account: iysCode 700000, brands 700000 and 700001.
pub fn mock_config(clock: Arc<dyn Clock>) -> MockConfig {
    MockConfig {
        accounts: vec![Account::new(
            "mock",
            "mock",
            u64::from(IYS_CODE),
            vec![u64::from(IYS_CODE), u64::from(BRAND)],
        )],
        ..MockConfig::for_tests(clock)
    }
}

/// Registrations handed to the callback, in order.
pub type Registered = Arc<Mutex<Vec<(ConsentKey, ConsentEvent)>>>;

pub struct Harness {
    pub mock: MockIys,
    pub url: String,
    pub store: EvidenceStore,
    pub client: IysClient,
    pub registered: Registered,
    pub clock: Arc<dyn Clock>,
}

impl Harness {
    /// The mock served on a fresh port, `store` set up with the mock's provider and brand.
    pub async fn new(store: EvidenceStore, mock: MockConfig, clock: Arc<dyn Clock>) -> Self {
        let mock = MockIys::new(mock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(mock.serve(listener));
        let now = clock.now_utc();
        store
            .add_provider(
                &Provider {
                    iys_code: IYS_CODE,
                    name: "Mock A.Ş.".into(),
                    credentials_ref: "env:IYS_PASSWORD".into(),
                },
                now,
            )
            .await
            .unwrap();
        store
            .add_brand(
                &Brand {
                    brand_code: BRAND,
                    iys_code: IYS_CODE,
                    name: "Mock".into(),
                    policy: BrandPolicy::default(),
                },
                now,
            )
            .await
            .unwrap();
        let client = client(&url);
        Self {
            mock,
            url,
            store,
            client,
            registered: Registered::default(),
            clock,
        }
    }

    /// The mock on the real clock.
    pub async fn real_time(store: EvidenceStore) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self::new(store, mock_config(Arc::clone(&clock)), clock).await
    }

    pub fn uploader(&self, config: UploaderConfig) -> Uploader {
        let registered = Arc::clone(&self.registered);
        Uploader::new(
            self.store.clone(),
            HashMap::from([(IYS_CODE, self.client.clone())]),
            config,
            Arc::clone(&self.clock),
            Arc::new(move |key, event| registered.lock().unwrap().push((key, event))),
        )
        .unwrap()
    }

    /// An uploader running until the token is cancelled.
    pub fn start(&self, config: UploaderConfig) -> Running {
        let uploader = self.uploader(config);
        let stop = CancellationToken::new();
        let task = tokio::spawn(uploader.clone().run(stop.clone()));
        Running {
            uploader,
            stop,
            task,
        }
    }

    pub async fn record(&self, events: &[NewEvent]) -> Vec<EventId> {
        self.store
            .record(events, self.clock.now_utc())
            .await
            .unwrap()
            .iter()
            .map(|r| r.id())
            .collect()
    }

    pub async fn record_one(&self, event: &NewEvent) -> EventId {
        self.record(std::slice::from_ref(event)).await[0]
    }

    /// Makes the next `n` İYS consent calls (add, batch, poll, status) fail with `status`.
    pub fn fail_consent_calls(&self, n: u32, status: u16) {
        self.mock.set_faults(Faults {
            error_burst: n,
            error_status: status,
            path_contains: Some("/consents".into()),
            ..Faults::default()
        });
    }

    pub async fn state(&self, id: EventId) -> UploadState {
        self.store.event(id).await.unwrap().unwrap().upload.state
    }

    pub async fn attempts(&self, id: EventId) -> u32 {
        self.store.event(id).await.unwrap().unwrap().upload.attempts
    }

    /// Waits until no upload of `ids` is open (pending or in flight).
    pub async fn wait_settled(&self, ids: &[EventId], limit: Duration) {
        wait_for("uploads to settle", limit, || async move {
            for id in ids {
                if self.state(*id).await.is_open() {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Waits until the store has no open upload left.
    pub async fn wait_none_open(&self, limit: Duration) {
        wait_for("no open upload", limit, || async move {
            let counts = self
                .store
                .upload_counts(self.clock.now_utc())
                .await
                .unwrap();
            counts.pending == 0
        })
        .await;
    }

    /// How many registrations the callback got for the key of `recipient` (MESAJ).
    pub fn registrations_of(&self, recipient: &str) -> usize {
        self.registered
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.recipient.to_string() == recipient)
            .count()
    }
}

pub struct Running {
    pub uploader: Uploader,
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Running {
    /// Stops the uploader and waits for it (it must stop promptly).
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the uploader stops within 10 s of its shutdown token")
            .unwrap();
    }
}

/// A client that makes one attempt per call: each failure reaches the uploader.
pub fn client(url: &str) -> IysClient {
    let credentials = Credentials {
        username: "mock".into(),
        password: "mock".into(),
    };
    let retry = RetryPolicy {
        max_attempts: 1,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
    };
    IysClient::new(url, credentials, Arc::new(MemoryTokenStore::new()), retry).unwrap()
}

pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn utc(t: TurkeyTime) -> DateTime<Utc> {
    iysgate::domain::time::from_turkey(t)
}

// ---- backends ------------------------------------------------------------------------------

/// A fresh file store in a new directory of its own (removed by the caller's drop guard).
pub async fn file_store(test: &str) -> (EvidenceStore, TempDir) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "iysgate-uploader-{test}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = FileStore::open(&dir.join("evidence.jsonl"), BusinessCalendar::embedded())
        .await
        .unwrap();
    (EvidenceStore::from(store), TempDir(dir))
}

pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[path = "../pg_support/mod.rs"]
mod pg_support;
pub use pg_support::Schema;
