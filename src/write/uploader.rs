//! The uploader: drains the evidence store's upload outbox into İYS, so every consent the
//! company collected is registered within its 3-business-day window, exactly once.
//!
//! A loop of rounds. Each round claims the uploads that are due (earliest deadline first,
//! each under a lease) and sends them:
//! - **live traffic** one by one through İYS's v2 single add, a few at a time, paced under
//!   İYS's per-IP request limit;
//! - **bulk** (more than `bulk_threshold` uploads open, e.g. an import) as batches of at
//!   most 1000 per brand: a 422 refusal of the whole batch is repaired by recording the
//!   items it names as rejected and sending the rest again, and the results are polled no
//!   sooner than İYS allows (`poll_delay`), in a task of their own while live rounds go on.
//!
//! Every answer is recorded with `finish_upload` under the claim's attempt number
//! (`answer` says what each means). Every `sweep_every` the overdue uploads are marked
//! expired and the `iysgate_uploads_*` gauges are set.
//!
//! Exactly once: İYS's v2 add answers an identical re-send with the first transaction, a v2
//! batch points a re-sent stored consent to its original, and an H174 ("that status
//! already") is checked against İYS's current record, which counts as registered when it
//! is this very consent. When it is another record of the same status (an ONAY İYS already
//! held), that record is in force: the upload is closed as superseded by it and the index
//! is handed İYS's record, so the key turns ALLOW instead of waiting, pending, to expire. So an uploader that dies after İYS accepted but before the answer
//! was recorded costs nothing but a re-send once its lease runs out. Several uploaders may
//! run: claims skip each other's rows, and the attempt number fences a late answer.
//!
//! When İYS accepts an event the uploader hands the registered event to `on_registered`
//! (the serving index's `Consents::apply`, or a Redis publish); it knows nothing of either.
//!
//! Never logs or reports a recipient: log lines carry event ids, brand codes and H-codes.
//!
//! Over 600 lines on purpose: the uploader loop and its unit tests (the parts are in uploader/).

mod answer;
mod batch;
mod order;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Clock, ConsentEvent, ConsentKey};
use crate::iys::client::{IysClient, MAX_BATCH};
use crate::write::evidence::{
    Claim, EvidenceError, EvidenceStore, UploadAnswer, UploadCounts, UploadOutcome, UploadState,
};

pub use answer::{Backoff, consent_request, key_of, registered_event, settled_event};
use answer::{Reading, Verdict};
use order::KeyOrder;

/// Called once for each event this uploader saw İYS accept, with the event as registered.
pub type OnRegistered = Arc<dyn Fn(ConsentKey, ConsentEvent) + Send + Sync>;

/// How the uploader works. Every duration is wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploaderConfig {
    /// More open uploads than this and a round claims a whole batch and uses batch add; at
    /// most this many are claimed for single add. Single adds at 5 a second beat a batch's
    /// five-minute wait up to about 1500 items, so this is about İYS's request budget
    /// rather than speed.
    pub bulk_threshold: u32,
    /// Items per batch (İYS accepts at most 1000: H091/H125).
    pub batch_size: usize,
    /// Batches waiting for their results at once; when all are busy, rounds go on with
    /// single adds.
    pub max_open_batches: usize,
    /// Single adds in flight at once.
    pub concurrency: usize,
    /// Least time between two calls to İYS from this uploader (İYS allows 10 requests a
    /// second per IP, shared with the sync worker). Zero: no pacing.
    pub min_request_interval: Duration,
    /// How long a claim for single add is held. It must outlast a round: `bulk_threshold`
    /// paced calls plus the client's retries; after a crash the upload waits this long.
    pub lease: Duration,
    /// How long after a batch is accepted its results are first asked for (İYS: at least
    /// 300 s; the mock's `batch_delay`).
    pub poll_delay: Duration,
    /// Between polls of a batch that is not processed yet.
    pub poll_interval: Duration,
    /// How long after `poll_delay` a batch is polled before its items are sent again. Batch
    /// claims are held for `lease + poll_delay + batch_wait`.
    pub batch_wait: Duration,
    /// Pause when a round found nothing due.
    pub idle: Duration,
    /// How often overdue uploads are expired and the gauges refreshed.
    pub sweep_every: Duration,
    /// Retry timing after a transient failure.
    pub backoff: Backoff,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        Self {
            bulk_threshold: 200,
            batch_size: MAX_BATCH,
            max_open_batches: 4,
            concurrency: 4,
            min_request_interval: Duration::from_millis(200),
            lease: Duration::from_mins(5),
            poll_delay: Duration::from_mins(5),
            poll_interval: Duration::from_mins(1),
            batch_wait: Duration::from_mins(30),
            idle: Duration::from_secs(1),
            sweep_every: Duration::from_mins(1),
            backoff: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_mins(15),
            },
        }
    }
}

impl UploaderConfig {
    /// How long a batch claim is held: a batch's whole life plus the usual lease.
    pub fn batch_lease(&self) -> Duration {
        self.lease + self.poll_delay + self.batch_wait
    }

    fn validate(&self) -> Result<(), UploaderError> {
        let fail = |what: &str| Err(UploaderError::Config(what.to_owned()));
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return fail("batch_size must be 1..=1000");
        }
        if self.bulk_threshold as usize >= self.batch_size {
            return fail("bulk_threshold must be below batch_size");
        }
        if self.concurrency == 0 || self.max_open_batches == 0 {
            return fail("concurrency and max_open_batches must be at least 1");
        }
        let zero = [
            self.lease,
            self.poll_interval,
            self.idle,
            self.sweep_every,
            self.backoff.base,
        ];
        if zero.contains(&Duration::ZERO) {
            return fail("lease, poll_interval, idle, sweep_every and backoff.base must be > 0");
        }
        if self.backoff.cap < self.backoff.base {
            return fail("backoff.cap must not be below backoff.base");
        }
        if self.lease
            <= self
                .min_request_interval
                .saturating_mul(self.bulk_threshold)
        {
            return fail("lease must outlast a round of bulk_threshold paced calls");
        }
        Ok(())
    }
}

/// Why the uploader cannot start or a round failed.
#[derive(Debug, thiserror::Error)]
pub enum UploaderError {
    #[error("uploader configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] EvidenceError),
}

/// Counts since start, for tests and logs (the same are exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploaderStats {
    pub registered: u64,
    pub rejected: u64,
    pub retried: u64,
    /// Batches İYS accepted.
    pub batches: u64,
    /// Batch submissions refused whole with 422 and repaired.
    pub batch_repairs: u64,
    /// Batch polls made.
    pub polls: u64,
    /// H174 answers checked against İYS's current record.
    pub status_checks: u64,
    /// H174 answers closed as superseded by İYS's record of the same status.
    pub superseded: u64,
}

#[derive(Debug, Default)]
struct Counters {
    registered: AtomicU64,
    rejected: AtomicU64,
    retried: AtomicU64,
    batches: AtomicU64,
    batch_repairs: AtomicU64,
    polls: AtomicU64,
    status_checks: AtomicU64,
    superseded: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spaces calls to İYS at least `interval` apart, across every task of the uploader.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    async fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = lock(&self.next);
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

struct Inner {
    store: EvidenceStore,
    /// İYS clients by iysCode (one API user per service provider).
    clients: HashMap<u32, IysClient>,
    /// brandCode → iysCode, from the store's brands; reloaded when a brand is missing.
    brands: Mutex<HashMap<u32, u32>>,
    config: UploaderConfig,
    clock: Arc<dyn Clock>,
    on_registered: OnRegistered,
    order: Mutex<KeyOrder>,
    pacer: Pacer,
    open_batches: AtomicUsize,
    batches: TaskTracker,
    counters: Counters,
}

/// The outbox drainer. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Uploader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("config", &self.inner.config)
            .field("providers", &self.inner.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// An uploader over `store`, sending through `clients` (by iysCode), handing each
    /// registration to `on_registered`.
    ///
    /// # Errors
    /// [`UploaderError::Config`] naming the setting that cannot work.
    pub fn new(
        store: EvidenceStore,
        clients: HashMap<u32, IysClient>,
        config: UploaderConfig,
        clock: Arc<dyn Clock>,
        on_registered: OnRegistered,
    ) -> Result<Self, UploaderError> {
        config.validate()?;
        if clients.is_empty() {
            return Err(UploaderError::Config("no İYS client given".into()));
        }
        let pacer = Pacer {
            interval: config.min_request_interval,
            next: Mutex::new(tokio::time::Instant::now()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clients,
                brands: Mutex::new(HashMap::new()),
                config,
                clock,
                on_registered,
                order: Mutex::new(KeyOrder::default()),
                pacer,
                open_batches: AtomicUsize::new(0),
                batches: TaskTracker::new(),
                counters: Counters::default(),
            }),
        })
    }

    pub fn stats(&self) -> UploaderStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UploaderStats {
            registered: get(&c.registered),
            rejected: get(&c.rejected),
            retried: get(&c.retried),
            batches: get(&c.batches),
            batch_repairs: get(&c.batch_repairs),
            polls: get(&c.polls),
            status_checks: get(&c.status_checks),
            superseded: get(&c.superseded),
        }
    }

    /// Runs rounds until `shutdown`. On shutdown, calls already sent finish and are
    /// recorded, claims not yet sent are handed back (due at once), and batches waiting for
    /// their results are left to their leases: their items are sent again later and İYS
    /// points the re-send to the original.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("uploader started");
        let mut next_sweep = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            if tokio::time::Instant::now() >= next_sweep {
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "upload sweep failed");
                }
                next_sweep = tokio::time::Instant::now() + self.inner.config.sweep_every;
            }
            let claimed = match self.round(&shutdown).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "upload round failed");
                    0
                }
            };
            if claimed == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.inner.config.idle) => {}
                }
            }
        }
        self.inner.batches.close();
        self.inner.batches.wait().await;
        tracing::info!("uploader stopped");
    }

    /// Marks overdue uploads expired and publishes the counts as gauges; the counts.
    pub async fn sweep(&self) -> Result<UploadCounts, EvidenceError> {
        let now = self.inner.clock.now_utc();
        let expired = self.inner.store.expire_overdue(now).await?;
        if expired > 0 {
            metrics::counter!("iysgate_uploads_expired_total").increment(expired);
            tracing::error!(
                expired,
                "uploads passed their İYS registration deadline unregistered"
            );
        }
        let counts = self.inner.store.upload_counts(now).await?;
        publish(&counts);
        lock(&self.inner.order).forget_stale(now);
        if counts.at_risk > 0 {
            tracing::warn!(
                at_risk = counts.at_risk,
                "uploads have less than a business day left"
            );
        }
        Ok(counts)
    }

    /// One round: claims what is due and uploads it (a bulk claim goes to a batch task
    /// and the round returns at once). How many uploads were claimed.
    pub async fn round(&self, shutdown: &CancellationToken) -> Result<usize, UploaderError> {
        let inner = &self.inner;
        let config = &inner.config;
        let now = inner.clock.now_utc();
        let open = inner.store.upload_counts(now).await?;
        publish(&open);
        let batch_free = inner.open_batches.load(Ordering::Relaxed) < config.max_open_batches;
        let bulk = batch_free && open.pending > u64::from(config.bulk_threshold);
        let (limit, lease) = if bulk {
            (config.batch_size as u32, config.batch_lease())
        } else {
            (config.bulk_threshold.max(1), config.lease)
        };
        let claims = inner.store.claim_uploads(limit, lease, now).await?;
        let claimed = claims.len();
        if claimed == 0 {
            return Ok(0);
        }
        // An event whose key has an earlier event still open here (retrying, or in a batch
        // not processed yet) waits for it, whichever path would have sent it.
        let mut ready = Vec::with_capacity(claimed);
        for claim in claims {
            match self.wait_for_earlier(&claim) {
                Some(answer) => self.finish(&claim, answer).await,
                None => ready.push(claim),
            }
        }
        let claims = ready;
        let lease_end = now + to_chrono(lease);
        self.hold_all(&claims, lease_end);
        if claims.is_empty() {
            return Ok(claimed);
        }
        if bulk && claims.len() > config.bulk_threshold as usize {
            tracing::info!(claimed = claims.len(), "bulk upload: sending as batches");
            let slot = BatchSlot::take(self);
            let shutdown = shutdown.clone();
            inner.batches.spawn(async move {
                slot.uploader.upload_bulk(claims, &shutdown).await;
            });
        } else {
            self.upload_singles(claims, shutdown).await;
        }
        Ok(claimed)
    }

    /// Marks every claim open until its lease ends, so later events of its key wait.
    fn hold_all(&self, claims: &[Claim], lease_end: DateTime<Utc>) {
        let until = lease_end + to_chrono(self.inner.config.lease);
        let mut order = lock(&self.inner.order);
        for claim in claims {
            let event = &claim.event.event;
            order.hold(
                &key_of(event),
                order::rank(claim.event.id, event),
                lease_end,
                until,
            );
        }
    }

    /// Single adds: the events of one key one after the other in their order, different
    /// keys side by side (at most `concurrency` calls at once).
    async fn upload_singles(&self, claims: Vec<Claim>, shutdown: &CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.inner.config.concurrency));
        let mut tasks = JoinSet::new();
        for group in by_key(claims) {
            let this = self.clone();
            let permits = Arc::clone(&permits);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                for claim in group {
                    this.upload_one(&claim, &permits, &shutdown).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "an upload task failed");
            }
        }
    }

    /// Sends one claim by single add, unless its key has an earlier open event or the
    /// uploader is stopping, and records the answer.
    async fn upload_one(&self, claim: &Claim, permits: &Semaphore, shutdown: &CancellationToken) {
        if shutdown.is_cancelled() {
            return self.hand_back(claim).await;
        }
        if let Some(answer) = self.wait_for_earlier(claim) {
            return self.finish(claim, answer).await;
        }
        let permit = permits.acquire().await;
        if permit.is_err() || shutdown.is_cancelled() {
            return self.hand_back(claim).await;
        }
        let reading = self.send_single(claim).await;
        let answer = self.answer(reading, claim.attempt);
        self.finish(claim, answer).await;
    }

    /// A retry answer when an earlier event of the claim's key is still open here.
    fn wait_for_earlier(&self, claim: &Claim) -> Option<UploadAnswer> {
        let event = &claim.event.event;
        let now = self.inner.clock.now_utc();
        let due = lock(&self.inner.order).blocked(
            &key_of(event),
            order::rank(claim.event.id, event),
            now,
        )?;
        let retry_at = due.max(now) + to_chrono(self.inner.config.backoff.base);
        Some(UploadAnswer {
            http_status: None,
            outcome: UploadOutcome::Retry {
                retry_at,
                code: None,
                message: "waits for an earlier event of the same recipient and channel".into(),
            },
        })
    }

    /// v2 single add; an H174 is checked against İYS's current record.
    async fn send_single(&self, claim: &Claim) -> Reading {
        let event = &claim.event.event;
        let Some((client, iys_code)) = self.client_for(event.brand).await else {
            return no_client(event.brand);
        };
        let brand = u64::from(event.brand);
        self.inner.pacer.wait().await;
        let request = answer::consent_request(event);
        match client.add_consent(iys_code, brand, &request).await {
            Ok(added) => Reading {
                http_status: Some(200),
                verdict: Verdict::Registered {
                    transaction_id: added.transaction_id,
                    creation_date: added.creation_date,
                },
            },
            Err(error) => {
                let reading = answer::read_error(&error);
                self.settle_same_status(&client, iys_code, claim, reading)
                    .await
            }
        }
    }

    /// For an H174 reading: registered when İYS's current record is this very event,
    /// superseded when it is another record of the same status, retried when the check
    /// cannot be made or the record changed (see `answer::settle_h174`).
    async fn settle_same_status(
        &self,
        client: &IysClient,
        iys_code: u64,
        claim: &Claim,
        reading: Reading,
    ) -> Reading {
        let Verdict::SameStatus { code, message } = reading.verdict else {
            return reading;
        };
        let event = &claim.event.event;
        bump(&self.inner.counters.status_checks);
        self.inner.pacer.wait().await;
        let record = client
            .consent_status(
                iys_code,
                u64::from(event.brand),
                &event.recipient.to_string(),
                event.recipient_type.as_str(),
                event.channel.as_str(),
            )
            .await;
        let verdict = match record {
            Ok(Some(record)) => answer::settle_h174(&record, event, code, message),
            // H174 but no record now: something changed in between; try again.
            Ok(None) => Verdict::Retry {
                code: Some(code),
                message: "İYS answered H174 but holds no record for the key".into(),
                after: None,
                account: false,
            },
            Err(e) => answer::read_error(&e).verdict,
        };
        match verdict {
            Verdict::Registered { .. } => tracing::info!(
                event = %claim.event.id,
                "İYS already held this consent (H174 confirmed by status query)"
            ),
            Verdict::Superseded { .. } => tracing::info!(
                event = %claim.event.id,
                brand = event.brand,
                "İYS already holds this status for the key from another record (H174); \
                 the upload is superseded by that record, which is in force"
            ),
            _ => {}
        }
        Reading {
            http_status: reading.http_status,
            verdict: match verdict {
                // A status query answered H174 itself? Not a reason to drop the consent.
                Verdict::SameStatus { code, message } => Verdict::Retry {
                    code: Some(code),
                    message,
                    after: None,
                    account: false,
                },
                v => v,
            },
        }
    }

    /// The İYS client and iysCode for a brand, from the store's brands.
    async fn client_for(&self, brand: u32) -> Option<(IysClient, u64)> {
        let known = lock(&self.inner.brands).get(&brand).copied();
        let iys_code = if let Some(code) = known {
            code
        } else {
            let brands = match self.inner.store.brands().await {
                Ok(brands) => brands,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read brands");
                    return None;
                }
            };
            let mut map = lock(&self.inner.brands);
            map.extend(brands.iter().map(|b| (b.brand_code, b.iys_code)));
            *map.get(&brand)?
        };
        let client = self.inner.clients.get(&iys_code)?.clone();
        Some((client, u64::from(iys_code)))
    }

    /// The answer to record for a reading of `attempt`, now.
    fn answer(&self, reading: Reading, attempt: u32) -> UploadAnswer {
        let clock = &self.inner.clock;
        answer::to_answer(
            reading,
            attempt,
            clock.now_utc(),
            clock.now_turkey(),
            &self.inner.config.backoff,
            getrandom::u64().unwrap_or_default(),
        )
    }

    /// Hands an unsent claim back, due at once (the uploader is stopping).
    async fn hand_back(&self, claim: &Claim) {
        let answer = UploadAnswer {
            http_status: None,
            outcome: UploadOutcome::Retry {
                retry_at: self.inner.clock.now_utc(),
                code: None,
                message: "uploader stopped before sending".into(),
            },
        };
        self.finish(claim, answer).await;
    }

    /// Records an answer, keeps the key order, counts it and reports a registration.
    async fn finish(&self, claim: &Claim, answer: UploadAnswer) {
        let inner = &self.inner;
        let id = claim.event.id;
        let event = &claim.event.event;
        let key = key_of(event);
        let now = inner.clock.now_utc();
        let state = match inner
            .store
            .finish_upload(id, claim.attempt, &answer, now)
            .await
        {
            Ok(state) => state,
            Err(e) => {
                // The lease runs out and the upload is claimed again; İYS answers a re-send
                // with the same transaction.
                tracing::error!(event = %id, error = %e, "could not record an İYS answer");
                return;
            }
        };
        let outcome = answer.outcome.as_str();
        metrics::counter!("iysgate_uploads_total", "outcome" => outcome).increment(1);
        match &answer.outcome {
            UploadOutcome::Registered { .. } => bump(&inner.counters.registered),
            UploadOutcome::Superseded { .. } => bump(&inner.counters.superseded),
            UploadOutcome::Rejected { code, .. } => {
                bump(&inner.counters.rejected);
                tracing::info!(event = %id, brand = event.brand, code, "İYS refused an upload");
            }
            UploadOutcome::Retry { code, message, .. } => {
                bump(&inner.counters.retried);
                tracing::debug!(
                    event = %id,
                    attempt = claim.attempt,
                    code = code.as_deref().unwrap_or(""),
                    message,
                    "upload will be retried"
                );
            }
        }
        {
            let mut order = lock(&inner.order);
            match &state {
                UploadState::Pending => {
                    let due = match &answer.outcome {
                        UploadOutcome::Retry { retry_at, .. } => *retry_at,
                        _ => now,
                    };
                    let until = due + to_chrono(inner.config.lease);
                    order.hold(&key, order::rank(id, event), due, until);
                }
                UploadState::InFlight { lease_until } => {
                    let until = *lease_until + to_chrono(inner.config.lease);
                    order.hold(&key, order::rank(id, event), *lease_until, until);
                }
                UploadState::Registered { .. }
                | UploadState::Rejected { .. }
                | UploadState::Superseded { .. }
                | UploadState::Expired => order.release(&key, id),
            }
        }
        // Only for the answer that made the state, so the index hears of it once.
        let made = matches!(
            (&state, &answer.outcome),
            (
                UploadState::Registered { .. },
                UploadOutcome::Registered { .. }
            ) | (
                UploadState::Superseded { .. },
                UploadOutcome::Superseded { .. }
            )
        );
        if made {
            let mut stored = claim.event.clone();
            stored.upload.state = state;
            if let Some((key, registered)) = settled_event(&stored) {
                (inner.on_registered)(key, registered);
            }
        }
    }
}

/// One of the `max_open_batches` slots, given back when the batch task ends however it
/// ends.
struct BatchSlot {
    uploader: Uploader,
}

impl BatchSlot {
    fn take(uploader: &Uploader) -> Self {
        uploader.inner.open_batches.fetch_add(1, Ordering::Relaxed);
        Self {
            uploader: uploader.clone(),
        }
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        self.uploader
            .inner
            .open_batches
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reading when no İYS client serves a brand's provider: a deployment problem.
fn no_client(brand: u32) -> Reading {
    Reading {
        http_status: None,
        verdict: Verdict::Retry {
            code: None,
            message: format!("no İYS client is configured for the provider of brand {brand}"),
            after: None,
            account: true,
        },
    }
}

/// Claims grouped by key, each group in the key's order (see `order::rank`).
fn by_key(claims: Vec<Claim>) -> Vec<Vec<Claim>> {
    let mut groups: HashMap<ConsentKey, Vec<Claim>> = HashMap::new();
    for claim in claims {
        groups
            .entry(key_of(&claim.event.event))
            .or_default()
            .push(claim);
    }
    let mut groups: Vec<Vec<Claim>> = groups.into_values().collect();
    for group in &mut groups {
        group.sort_by_key(|c| order::rank(c.event.id, &c.event.event));
    }
    // Earliest deadline first, as claimed.
    groups.sort_by_key(|g| g.first().map(|c| (c.event.upload.deadline, c.event.id)));
    groups
}

/// Sets the upload gauges.
pub fn publish(counts: &UploadCounts) {
    metrics::gauge!("iysgate_uploads_pending").set(counts.pending as f64);
    metrics::gauge!("iysgate_uploads_at_risk").set(counts.at_risk as f64);
    metrics::gauge!("iysgate_uploads_expired").set(counts.expired as f64);
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_carry_the_counts() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            publish(&UploadCounts {
                pending: 7,
                at_risk: 2,
                expired: 1,
            });
        });
        let text = handle.render();
        for line in [
            "iysgate_uploads_pending 7",
            "iysgate_uploads_at_risk 2",
            "iysgate_uploads_expired 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn config_is_checked() {
        assert!(UploaderConfig::default().validate().is_ok());
        let bad = [
            UploaderConfig {
                batch_size: 1001,
                ..UploaderConfig::default()
            },
            UploaderConfig {
                bulk_threshold: 1000,
                ..UploaderConfig::default()
            },
            UploaderConfig {
                concurrency: 0,
                ..UploaderConfig::default()
            },
            UploaderConfig {
                lease: Duration::from_secs(10),
                ..UploaderConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let d = UploaderConfig::default();
        assert_eq!(d.batch_lease(), Duration::from_mins(40));
    }
}
