//! A faithful in-process mock of the İYS REST API (3.2.0) for tests, load tests and
//! `iysgate mock-iys`. See `API-NOTES.md` for the behaviour it reproduces.
//!
//! * [`MockIys::new`] with a [`MockConfig`] (accounts, clock, hold-back, batch delay, rate
//!   limits), then [`MockIys::router`] (in-process, e.g. `tower::ServiceExt::oneshot`) or
//!   [`MockIys::serve`] on a listener.
//! * Test hooks: [`MockIys::citizen_change`], [`MockIys::spawn_citizen`], [`MockIys::seed`],
//!   [`MockIys::set_faults`] (also `PUT /_mock/faults` with a JSON [`Faults`]), and
//!   [`MockIys::requests`] (also `GET /_mock/requests`): what reached it, so a test can prove
//!   a client made no call.
//!
//! All times come from the injected [`Clock`]; rate limits and the batch delay use it too, so
//! a `ManualClock` makes every time rule deterministic. Only added latency, push delivery and
//! the citizen simulator's pacing use real time.
//!
//! Never logs recipients: log lines carry brand codes, counts and codes only.
//!
//! Over 600 lines on purpose: the mock İYS's state and its routes; the handlers and tests are in mock/.

mod handlers;
mod net;
mod store;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SystemClock;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::time::{Clock, format_iys};
use crate::domain::{Channel, ConsentStatus, RecipientType};
use crate::iys::wire::{ChangeItem, PollItem, PollStatus, PushItem, PushPayload, StatusResponse};
use crate::iys::{codes, validate};
use store::{Batch, BrandState, Event, FoldMap};

pub use codes::NOT_FOUND_CODE;

/// One API user: its credentials, service-provider code and brands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub password: String,
    pub iys_code: u64,
    pub brand_codes: Vec<u64>,
}

impl Account {
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        iys_code: u64,
        brand_codes: Vec<u64>,
    ) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            iys_code,
            brand_codes,
        }
    }
}

/// Documented İYS limits (SPEC GİRİŞ, KİMLİK DOĞRULAMA and path texts), per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub enabled: bool,
    /// Any request; 429 H124.
    pub per_second: u32,
    /// Token requests per hour; 429 H084, and each call while locked restarts the hour.
    /// SPEC says 100 in one place and 10 in another; the default takes the stricter 10.
    pub token_per_hour: u32,
    /// Single status queries per hour; 429 H086.
    pub status_per_hour: u32,
    /// History queries per hour; 429 H089.
    pub history_per_hour: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 10,
            token_per_hour: 10,
            status_per_hour: 1000,
            history_per_hour: 100,
        }
    }
}

impl RateLimits {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Mock configuration.
#[derive(Clone)]
pub struct MockConfig {
    pub accounts: Vec<Account>,
    /// Pull hides changes newer than this (İYS: 60 min; tests: 0).
    pub hold_back: Duration,
    /// A batch is processed this long after acceptance (İYS says poll after ≥ 300 s).
    pub batch_delay: Duration,
    pub rate_limits: RateLimits,
    pub clock: Arc<dyn Clock>,
    pub calendar: BusinessCalendar,
    /// On push registration, POST İYS's fixed test payload and refuse (H530) if it fails.
    pub push_verify: bool,
    /// Accept `http://` push URLs (İYS demands https; the mock only speaks plain HTTP).
    pub push_allow_http: bool,
    /// Timeout of a push POST (İYS: 5 s).
    pub push_timeout: Duration,
}

impl Default for MockConfig {
    /// One account `mock`/`mock` with iysCode 700000 and brands 700000 (master, same number
    /// as the iysCode as in İYS's sandbox) and 700001; real-time clock; İYS's timings.
    fn default() -> Self {
        Self {
            accounts: vec![Account::new(
                "mock",
                "mock",
                700_000,
                vec![700_000, 700_001],
            )],
            hold_back: Duration::from_hours(1),
            batch_delay: Duration::from_mins(5),
            rate_limits: RateLimits::default(),
            clock: Arc::new(SystemClock),
            calendar: BusinessCalendar::embedded(),
            push_verify: true,
            push_allow_http: true,
            push_timeout: Duration::from_secs(5),
        }
    }
}

impl MockConfig {
    /// Test defaults: the given clock, no hold-back, no batch delay, no rate limits.
    pub fn for_tests(clock: Arc<dyn Clock>) -> Self {
        Self {
            hold_back: Duration::ZERO,
            batch_delay: Duration::ZERO,
            rate_limits: RateLimits::disabled(),
            clock,
            ..Self::default()
        }
    }
}

/// How a truncated response is broken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    /// `Content-Length` announces the whole body but the body carries only half. In-process
    /// (`oneshot`) the response shows exactly that. On a socket, hyper will not finish a
    /// response whose body ends before its `Content-Length`: it drops the connection before
    /// flushing, so the client sees the connection close without a complete response
    /// ("incomplete message"). Use `CutJson` for a cut body that arrives.
    #[default]
    ShortBody,
    /// Half the JSON is sent with a matching `Content-Length` (a well-framed but cut body).
    CutJson,
}

/// Faults injected at run time. Counters count down per affected request. Applies to every
/// route except `/_mock/*`, or only to paths containing `path_contains` when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The next N requests get a 5xx (`error_status`, default 500) with `errors[H015]`
    /// (H192 for 503).
    pub error_burst: u32,
    pub error_status: u16,
    /// The next N requests get 429 H124.
    pub throttle: u32,
    /// `Retry-After` (seconds) on those 429s; none when `None`.
    pub retry_after_secs: Option<u64>,
    /// The next N requests carrying a (valid or not) Bearer token get 401 H351.
    pub unauthorized: u32,
    /// Added to every request (real time).
    pub latency_ms: u64,
    /// The next N responses are truncated.
    pub truncate: u32,
    pub truncate_mode: TruncateMode,
    /// The next changes request gets the previous page again (once).
    pub repeat_page: bool,
    /// The next changes request gets `200 {after: <same cursor>, list: []}` (once).
    pub empty_page: bool,
    pub path_contains: Option<String>,
}

/// Citizen-side sources the simulator can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CitizenSource {
    Web,
    Mobil,
    KisaMesaj,
    Cm,
    Eposta,
    /// The citizen added the brand for the first time; `citizenName` is shown on pull.
    WebYeni {
        citizen_name: String,
    },
    /// Line closure reported by an operator.
    AhsHatKapatma,
}

impl CitizenSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Web => "IYS_WEB",
            Self::Mobil => "IYS_MOBIL",
            Self::KisaMesaj => "IYS_KISAMESAJ",
            Self::Cm => "IYS_CM",
            Self::Eposta => "IYS_EPOSTA",
            Self::WebYeni { .. } => "IYS_WEB_YENI",
            Self::AhsHatKapatma => "IYS_AHS_HAT_KAPATMA",
        }
    }
}

/// The `i`-th number of a seeded brand (`iysgate mock-iys --seed N` seeds 0 .. N).
pub fn seeded_recipient(i: usize) -> String {
    format!("+90532{i:07}")
}

/// One record for [`MockIys::seed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRecord {
    pub recipient: String,
    pub recipient_type: RecipientType,
    pub consent_type: Channel,
    pub status: ConsentStatus,
    /// Any HS_* or IYS_* source name.
    pub source: String,
    pub consent_date: Option<NaiveDateTime>,
    /// Defaults to the clock's now.
    pub creation_date: Option<NaiveDateTime>,
}

/// Errors of the direct (non-HTTP) API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    #[error("brand {0} belongs to no configured account")]
    UnknownBrand(u64),
    #[error("unknown source {0:?}")]
    UnknownSource(String),
}

/// Requests that reached the mock's İYS routes (faults and rate limits included), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// `POST /oauth2/token`.
    pub token: u64,
    /// Requests carrying a Bearer token (every API call: pull, add, status, …).
    pub with_token: u64,
}

/// Counters of push deliveries (successful = 2xx answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStats {
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug)]
struct Session {
    account: usize,
    expires: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct ClientLimits {
    second: VecDeque<DateTime<Utc>>,
    token: VecDeque<DateTime<Utc>>,
    token_locked_until: Option<DateTime<Utc>>,
    status: VecDeque<DateTime<Utc>>,
    history: VecDeque<DateTime<Utc>>,
}

/// Sliding-window hit: records `now` and says whether it is within `limit`.
fn window_hit(
    window: &mut VecDeque<DateTime<Utc>>,
    now: DateTime<Utc>,
    span: TimeDelta,
    limit: u32,
) -> bool {
    while window.front().is_some_and(|t| *t <= now - span) {
        window.pop_front();
    }
    if window.len() >= limit as usize {
        return false;
    }
    window.push_back(now);
    true
}

#[derive(Debug, Default)]
struct State {
    brands: FoldMap<u64, BrandState>,
    batches: FoldMap<String, Batch>,
    /// Request ids of batches not processed yet.
    pending: Vec<String>,
    access: FoldMap<String, Session>,
    refresh: FoldMap<String, Session>,
    limits: HashMap<IpAddr, ClientLimits>,
}

struct Inner {
    config: MockConfig,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Batch polls answered before the batch was processed (İYS: poll no sooner than 300 s).
    early_polls: AtomicU64,
    token_requests: AtomicU64,
    bearer_requests: AtomicU64,
}

/// The mock İYS. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MockIys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockIys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockIys")
            .field("accounts", &self.inner.config.accounts.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The client address a request came from, put into request extensions by the guard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

impl MockIys {
    pub fn new(config: MockConfig) -> Self {
        let mut state = State::default();
        for account in &config.accounts {
            for brand in &account.brand_codes {
                state.brands.entry(*brand).or_default();
            }
        }
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                faults: Mutex::new(Faults::default()),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                early_polls: AtomicU64::new(0),
                token_requests: AtomicU64::new(0),
                bearer_requests: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &MockConfig {
        &self.inner.config
    }

    /// The İYS routes plus `/_mock/*` admin routes.
    pub fn router(&self) -> Router {
        handlers::router(self.clone())
    }

    /// Serves on `listener` until the future is dropped (client IPs feed the rate limits).
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        async move { axum::serve(listener, app).await }
    }

    /// Like [`MockIys::serve`], stopping gracefully when `shutdown` completes.
    pub fn serve_with_shutdown(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    /// The faults still pending (counters already decremented).
    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    pub fn push_stats(&self) -> PushStats {
        PushStats {
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
        }
    }

    /// What reached the İYS routes so far.
    pub fn requests(&self) -> RequestCounts {
        RequestCounts {
            token: self.inner.token_requests.load(Ordering::Relaxed),
            with_token: self.inner.bearer_requests.load(Ordering::Relaxed),
        }
    }

    /// Polls of a batch that was not processed yet (answered with an empty list or
    /// `enqueue` items): a client that waits as İYS asks makes none.
    pub fn early_polls(&self) -> u64 {
        self.inner.early_polls.load(Ordering::Relaxed)
    }

    /// The item counts of every batch accepted so far, in no particular order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.inner.state)
            .batches
            .values()
            .map(|b| b.items.len())
            .collect()
    }

    /// The current record of a key, as single status would return it.
    pub fn consent(
        &self,
        brand: u64,
        recipient: &str,
        recipient_type: RecipientType,
        consent_type: Channel,
    ) -> Option<StatusResponse> {
        let now = self.now_turkey();
        let mut state = lock(&self.inner.state);
        MockIys::process_due(&mut state, now);
        state
            .brands
            .get(&brand)?
            .record(
                &validate::normalize(recipient),
                recipient_type,
                consent_type,
            )?
            .to_status()
    }

    /// Number of stored keys of a brand.
    pub fn record_count(&self, brand: u64) -> usize {
        lock(&self.inner.state)
            .brands
            .get(&brand)
            .map_or(0, BrandState::len)
    }

    /// Number of movements in a brand's change log.
    pub fn change_count(&self, brand: u64) -> usize {
        lock(&self.inner.state)
            .brands
            .get(&brand)
            .map_or(0, |b| b.log.len())
    }

    /// A change made by the recipient inside İYS (web, mobile app, SMS 3338, call centre,
    /// new brand, line closure). No provider rules apply. The change is visible to pull with
    /// `source=IYS` and pushed to the brand's registered URLs for its type.
    pub fn citizen_change(
        &self,
        brand: u64,
        recipient: &str,
        recipient_type: RecipientType,
        consent_type: Channel,
        status: ConsentStatus,
        source: CitizenSource,
    ) -> Result<ChangeItem, MockError> {
        let now = self.now_turkey();
        let (event, pushes) = {
            let mut state = lock(&self.inner.state);
            MockIys::process_due(&mut state, now);
            let brand_state = state
                .brands
                .get_mut(&brand)
                .ok_or(MockError::UnknownBrand(brand))?;
            let recipient = validate::normalize(recipient);
            let previous_date = brand_state
                .record(&recipient, recipient_type, consent_type)
                .and_then(|r| r.current())
                .and_then(|e| e.consent_date);
            // IYS_AHS_HAT_KAPATMA carries the record's last consentDate (empty for a TACIR
            // record stored without one); other citizen actions are dated now.
            let consent_date = match source {
                CitizenSource::AhsHatKapatma => previous_date,
                _ => Some(now),
            };
            let source_name = source.as_str();
            let citizen_name = match source {
                CitizenSource::WebYeni { citizen_name } => Some(citizen_name.into_boxed_str()),
                _ => None,
            };
            let txid = brand_state.next_txid(brand, &recipient, recipient_type, consent_type, now);
            let event = brand_state.insert(
                Event {
                    recipient: Arc::from(recipient.as_str()),
                    recipient_type,
                    consent_type,
                    status,
                    source: store::source_index(source_name),
                    consent_date,
                    creation: now,
                    txid,
                    citizen_name,
                    origin: None,
                },
                None,
            );
            let pushes: Vec<_> = brand_state
                .push
                .iter()
                .filter(|r| r.connection.consent_type == consent_type)
                .map(|r| r.connection.clone())
                .collect();
            (event, pushes)
        };
        tracing::debug!(
            brand,
            source = event.source_str(),
            "mock İYS: citizen change"
        );
        if !pushes.is_empty() {
            let iys_code = self.iys_code_of(brand).unwrap_or_default();
            let payload = PushPayload {
                list: vec![push_item(iys_code, brand, &event)],
            };
            self.deliver(pushes, &payload);
        }
        Ok(event.to_change())
    }

    /// Spawns a task making random citizen changes at `rate_per_sec` (real time) over the
    /// configured brands, deterministic for a `seed`, until `stop` turns true or its sender
    /// is dropped. The task returns how many changes it made. Needs a Tokio runtime.
    pub fn spawn_citizen(
        &self,
        rate_per_sec: f64,
        seed: u64,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<u64> {
        let mock = self.clone();
        let period = Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001));
        tokio::spawn(async move {
            let brands: Vec<u64> = mock
                .inner
                .config
                .accounts
                .iter()
                .flat_map(|a| a.brand_codes.iter().copied())
                .collect();
            let mut rng = net::SplitMix::new(seed);
            let mut made = 0;
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            break;
                        }
                        continue;
                    }
                }
                if *stop.borrow() || brands.is_empty() {
                    break;
                }
                let brand = brands[rng.below(brands.len() as u64) as usize];
                let consent_type = Channel::ALL[rng.below(3) as usize];
                let n = rng.below(10_000);
                let recipient = if consent_type.wants_phone() {
                    format!("+90555{n:07}")
                } else {
                    format!("citizen{n}@example.com")
                };
                let recipient_type = if rng.below(5) == 0 {
                    RecipientType::Tacir
                } else {
                    RecipientType::Bireysel
                };
                let status = if rng.below(2) == 0 {
                    ConsentStatus::Onay
                } else {
                    ConsentStatus::Ret
                };
                let source = match rng.below(6) {
                    0 => CitizenSource::Web,
                    1 => CitizenSource::Mobil,
                    2 => CitizenSource::KisaMesaj,
                    3 => CitizenSource::Cm,
                    4 => CitizenSource::WebYeni {
                        citizen_name: ["Ayşe Yılmaz", "Mehmet Kaya", "Zeynep Demir"]
                            [rng.below(3) as usize]
                            .to_owned(),
                    },
                    _ => CitizenSource::AhsHatKapatma,
                };
                if mock
                    .citizen_change(
                        brand,
                        &recipient,
                        recipient_type,
                        consent_type,
                        status,
                        source,
                    )
                    .is_ok()
                {
                    made += 1;
                }
            }
            made
        })
    }

    /// Inserts records directly (no HTTP, no validation, no business rules): each becomes
    /// the key's current record and one movement in the change log (so recent ones are
    /// visible to pull and reconciliation). Fast enough for millions of records.
    pub fn seed(
        &self,
        brand: u64,
        records: impl IntoIterator<Item = SeedRecord>,
    ) -> Result<usize, MockError> {
        let now = self.now_turkey();
        let records = records.into_iter();
        let mut state = lock(&self.inner.state);
        let brand_state = state
            .brands
            .get_mut(&brand)
            .ok_or(MockError::UnknownBrand(brand))?;
        let (hint, _) = records.size_hint();
        brand_state.reserve(RecipientType::Bireysel, Channel::Mesaj, hint);
        let mut count = 0;
        let mut sorted = true;
        let mut last = brand_state.log.last().map(|e| (e.creation, e.txid));
        // Appends in bulk, then sorts the log once if needed.
        let mut appended = Vec::with_capacity(hint);
        for record in records {
            let source = store::source_index(&record.source)
                .ok_or_else(|| MockError::UnknownSource(record.source.clone()))?;
            // İYS dates have whole seconds; a fraction would also break the `<epoch>_<txid>`
            // cursor, which cannot point inside a second.
            let whole = |t: NaiveDateTime| t.with_nanosecond(0).unwrap_or(t);
            let creation = record.creation_date.map_or(now, whole);
            let recipient = validate::normalize(&record.recipient);
            let txid = brand_state.next_txid(
                brand,
                &recipient,
                record.recipient_type,
                record.consent_type,
                creation,
            );
            let key = (creation, txid);
            if last.is_some_and(|l| l > key) {
                sorted = false;
            }
            last = Some(key);
            appended.push(Event {
                recipient: Arc::from(recipient),
                recipient_type: record.recipient_type,
                consent_type: record.consent_type,
                status: record.status,
                source: Some(source),
                consent_date: record.consent_date.map(whole),
                creation,
                txid,
                citizen_name: None,
                origin: None,
            });
            count += 1;
        }
        for event in appended {
            brand_state.insert(event, None);
        }
        if !sorted {
            brand_state.sort_log();
        }
        tracing::info!(brand, count, "mock İYS: seeded records");
        Ok(count)
    }

    // ---- internals shared with the handlers ----

    fn now_utc(&self) -> DateTime<Utc> {
        self.inner.config.clock.now_utc()
    }

    /// Turkey time, whole seconds (İYS dates have no fractions).
    fn now_turkey(&self) -> NaiveDateTime {
        let now = self.inner.config.clock.now_turkey();
        now.with_nanosecond(0).unwrap_or(now)
    }

    fn iys_code_of(&self, brand: u64) -> Option<u64> {
        self.inner
            .config
            .accounts
            .iter()
            .find(|a| a.brand_codes.contains(&brand))
            .map(|a| a.iys_code)
    }

    /// Processes every batch whose time has come (lazily, before any state is read).
    fn process_due(state: &mut State, now: NaiveDateTime) {
        if state.pending.is_empty() {
            return;
        }
        let State {
            brands,
            batches,
            pending,
            ..
        } = state;
        let mut due: Vec<(NaiveDateTime, String)> = pending
            .iter()
            .filter_map(|id| {
                let b = batches.get(id)?;
                (b.due <= now).then(|| (b.due, id.clone()))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        pending.retain(|id| !due.iter().any(|(_, d)| d == id));
        for (_, id) in due {
            let Some(batch) = batches.get_mut(&id) else {
                continue;
            };
            let Some(brand_state) = brands.get_mut(&batch.brand) else {
                continue;
            };
            let mut results = Vec::with_capacity(batch.items.len());
            for (index, item) in batch.items.iter().enumerate() {
                let current = brand_state
                    .record(
                        &item.consent.recipient,
                        item.consent.recipient_type,
                        item.consent.consent_type,
                    )
                    .and_then(|r| r.current())
                    .cloned();
                // v2: an identical, already stored consent points back to the original.
                if batch.v2
                    && let Some(e) = current.filter(|e| {
                        e.status == item.consent.status
                            && e.consent_date == item.consent.consent_date
                            && e.source_str() == item.consent.source.unwrap_or("")
                    })
                {
                    results.push(PollItem {
                        index: index as u64,
                        status: PollStatus::Success,
                        sub_request_id: item.sub_request_id.clone(),
                        request_id: Some(id.clone()),
                        transaction_id: Some(e.txid_hex()),
                        creation_date: Some(format_iys(e.creation)),
                        error: None,
                        is_add_consent_v2_service: Some(serde_json::Value::Bool(true)),
                        original_request_information: e.origin.as_ref().map(|o| {
                            crate::iys::wire::OriginalRequestInformation {
                                request_id: o.0.clone(),
                                sub_request_id: o.1.clone(),
                            }
                        }),
                    });
                    continue;
                }
                let origin = Some((id.clone(), item.sub_request_id.clone()));
                let outcome = brand_state.apply(batch.brand, &item.consent, batch.due, origin);
                results.push(match outcome {
                    Ok(event) => PollItem {
                        index: index as u64,
                        status: PollStatus::Success,
                        sub_request_id: item.sub_request_id.clone(),
                        request_id: Some(id.clone()),
                        transaction_id: Some(event.txid_hex()),
                        creation_date: Some(format_iys(event.creation)),
                        error: None,
                        is_add_consent_v2_service: None,
                        original_request_information: None,
                    },
                    Err(error) => PollItem {
                        index: index as u64,
                        status: PollStatus::Failure,
                        sub_request_id: item.sub_request_id.clone(),
                        request_id: None,
                        transaction_id: None,
                        creation_date: None,
                        error: Some(crate::iys::wire::CodeMessage {
                            code: error.code,
                            message: error.message,
                        }),
                        is_add_consent_v2_service: None,
                        original_request_information: None,
                    },
                });
            }
            tracing::debug!(
                brand = batch.brand,
                items = results.len(),
                "mock İYS: batch processed"
            );
            batch.results = Some(results);
        }
    }

    /// Fire-and-forget push delivery (one attempt per connection; İYS documents no retry).
    fn deliver(&self, connections: Vec<crate::iys::wire::PushConnection>, payload: &PushPayload) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("mock İYS: no Tokio runtime, push skipped");
            return;
        };
        let Ok(body) = serde_json::to_vec(payload) else {
            return;
        };
        let body = Arc::new(body);
        for connection in connections {
            let inner = Arc::clone(&self.inner);
            let body = Arc::clone(&body);
            handle.spawn(async move {
                let outcome = net::post_json_basic(
                    &connection.url,
                    &connection.username,
                    &connection.password,
                    &body,
                    inner.config.push_timeout,
                )
                .await;
                match outcome {
                    Ok(code) if (200..300).contains(&code) => {
                        inner.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        inner.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            outcome = ?other.map_err(|e| e.to_string()),
                            "mock İYS: push delivery failed"
                        );
                    }
                }
            });
        }
    }
}

fn push_item(iys_code: u64, brand: u64, event: &Event) -> PushItem {
    PushItem {
        iys_code,
        brand_code: brand,
        consent_date: event.consent_date.map(format_iys),
        creation_date: format_iys(event.creation),
        source: event.source_str().to_owned(),
        recipient: event.recipient.to_string(),
        recipient_type: event.recipient_type,
        status: event.status,
        consent_type: event.consent_type,
        transaction_id: event.txid_hex(),
    }
}

/// İYS's fixed test payload, POSTed to a URL when it is registered.
fn push_test_payload() -> PushPayload {
    PushPayload {
        list: vec![PushItem {
            iys_code: 121_212,
            brand_code: 121_212,
            consent_date: Some("2015-05-01 15:00:00".to_owned()),
            creation_date: "2015-05-01 15:00:00".to_owned(),
            source: "IYS_MOBIL".to_owned(),
            recipient: "pushtest@iys.org.tr".to_owned(),
            recipient_type: RecipientType::Bireysel,
            status: ConsentStatus::Onay,
            consent_type: Channel::Eposta,
            transaction_id: "e52ee30512adfcd2a41fb3b4682f5bd61eee5b1c92bda665fc0b7e56644d429d"
                .to_owned(),
        }],
    }
}

/// Whether a source name is citizen-side (pushed, pulled with `source=IYS`).
pub fn is_citizen_source(source: &str) -> bool {
    store::CITIZEN_SOURCES.iter().any(|s| s.as_str() == source)
}

/// Default client key when the router runs without connect info (in-process tests).
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
