//! The gRPC surface: maps protobuf to the check and back, authenticates the caller, sheds
//! load, and turns every error into a standard status with the field named. This is the only
//! module that knows about tonic's `Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::listener::Arrival;
use crate::auth::{ApiKeys, Client};
use crate::check::store::Consents;
use crate::check::{
    Answer, CheckError, Checker, FilterOutcome, FilterSpec, InvalidField, ItemOutcome, Query,
    parse_recipient,
};
use crate::domain::time::format_iys;
use crate::domain::{
    self, Channel as DChannel, ConsentKey, ConsentStatus, Decision as DDecision,
    Purpose as DPurpose, Reason as DReason, RecipientType as DRecipientType, RecordStatus,
    Registration, Verdict as DVerdict,
};
use crate::telemetry::{Metrics, Rpc, Shed, fingerprint};

pub mod admin;

use crate::pb;

/// Metadata entry carrying the API key (`authorization: Bearer <key>` is accepted too).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Largest CheckBatch.
pub const MAX_BATCH: usize = 10_000;
/// Largest Filter chunk.
pub const MAX_CHUNK: usize = 100_000;

/// Limits that keep one caller from taking the server down, and one tenant from taking the
/// others' share.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls being worked on across all connections; past it new calls get RESOURCE_EXHAUSTED
    /// at once instead of queueing. A Filter stream counts only while a chunk of it is being
    /// answered, never while it waits for the client.
    pub max_in_flight: usize,
    /// The same, per API key: one tenant can hold at most this share of `max_in_flight`.
    pub max_in_flight_per_key: usize,
    /// A call that waited longer than this between its arrival (hyper accepting its stream)
    /// and the start of its work is refused with RESOURCE_EXHAUSTED instead of being answered
    /// late: above capacity callers get a fast refusal and the answered calls keep their
    /// latency. Zero turns it off.
    pub max_queue_delay: Duration,
    /// How long a call refused by its client's quota is held before the refusal is sent (never
    /// past the call's deadline). A client calling again at once, whatever the RetryInfo says,
    /// is slowed to its in-flight calls per hold instead of spending the server's CPU on
    /// refusals; held calls do not count against `max_in_flight`.
    pub quota_hold: Duration,
}

/// Keys already verified, by a 128-bit keyed SipHash of the presented secret (a PRF under a
/// random per-process key, so no one can aim a collision): a repeat caller costs ~20 ns
/// instead of a SHA-256. Only keys that verified are cached; the secret itself is not kept.
struct VerifiedKeys {
    hasher_key: (u64, u64),
    map: arc_swap::ArcSwap<
        std::collections::HashMap<u128, Arc<Client>, foldhash::fast::RandomState>,
    >,
}

impl VerifiedKeys {
    /// Enough for every client of a deployment; past it the cache starts over.
    const MAX: usize = 10_000;

    fn new() -> Self {
        let mut bytes = [0u8; 16];
        // Without OS randomness the cache stays correct (it only maps verified keys); the key
        // merely becomes predictable.
        let _ = getrandom::fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        Self {
            hasher_key: (
                u64::from_le_bytes(a.try_into().expect("8 bytes")),
                u64::from_le_bytes(b.try_into().expect("8 bytes")),
            ),
            map: arc_swap::ArcSwap::from_pointee(std::collections::HashMap::default()),
        }
    }

    fn id(&self, secret: &str) -> u128 {
        use std::hash::Hasher;
        let mut h =
            siphasher::sip128::SipHasher13::new_with_keys(self.hasher_key.0, self.hasher_key.1);
        h.write(secret.as_bytes());
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }

    fn get(&self, id: u128) -> Option<Arc<Client>> {
        self.map.load().get(&id).cloned()
    }

    fn clear(&self) {
        self.map.store(Arc::default());
    }

    fn insert(&self, id: u128, client: &Arc<Client>) {
        self.map.rcu(|map| {
            let mut next = if map.len() >= Self::MAX {
                std::collections::HashMap::default()
            } else {
                (**map).clone()
            };
            next.insert(id, Arc::clone(client));
            next
        });
    }
}

pub struct ConsentService {
    checker: Arc<Checker>,
    consents: Arc<Consents>,
    /// Replaced whole when clients change (`replace_keys`); read only on a cache miss.
    keys: arc_swap::ArcSwap<ApiKeys>,
    verified: VerifiedKeys,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    limits: Limits,
    evidence: Option<Arc<crate::write::evidence::EvidenceStore>>,
    shared: Option<crate::sync::redis::SharedState>,
}

impl ConsentService {
    pub fn new(
        checker: Arc<Checker>,
        consents: Arc<Consents>,
        keys: Arc<ApiKeys>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Self {
            checker,
            consents,
            keys: arc_swap::ArcSwap::new(keys),
            verified: VerifiedKeys::new(),
            metrics,
            in_flight: Arc::default(),
            limits,
            evidence: None,
            shared: None,
        }
    }

    /// Records consents into `store` (the `ConsentRecords` service).
    #[must_use]
    pub fn with_evidence(
        mut self,
        store: Option<Arc<crate::write::evidence::EvidenceStore>>,
    ) -> Self {
        self.evidence = store;
        self
    }

    /// Publishes what it records to the other replicas through `shared` (a replica's Redis).
    #[must_use]
    pub fn with_shared(mut self, shared: Option<crate::sync::redis::SharedState>) -> Self {
        self.shared = shared;
        self
    }

    pub fn into_server(self: &Arc<Self>) -> pb::consent_check_server::ConsentCheckServer<Self> {
        pb::consent_check_server::ConsentCheckServer::from_arc(Arc::clone(self))
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024)
    }

    pub fn records_server(
        self: &Arc<Self>,
    ) -> pb::consent_records_server::ConsentRecordsServer<Self> {
        pb::consent_records_server::ConsentRecordsServer::from_arc(Arc::clone(self))
            .max_decoding_message_size(16 * 1024 * 1024)
    }

    pub(crate) fn checker(&self) -> &Checker {
        &self.checker
    }

    pub(crate) fn consents(&self) -> &Consents {
        &self.consents
    }

    pub(crate) fn evidence(&self) -> Option<Arc<crate::write::evidence::EvidenceStore>> {
        self.evidence.clone()
    }

    pub(crate) fn shared(&self) -> Option<&crate::sync::redis::SharedState> {
        self.shared.as_ref()
    }

    /// Admits a call of `client` to be worked on now, or refuses it with RESOURCE_EXHAUSTED:
    /// it waited too long already (`max_queue_delay`, from the [`Arrival`] stamped by the
    /// listener), the server is at `max_in_flight`, or this API key at its share.
    pub(crate) fn admit<'a, T>(
        &'a self,
        request: &Request<T>,
        client: &'a Client,
    ) -> Result<InFlight<'a>, Status> {
        if let Some(waited) =
            waited_too_long(request.extensions().get(), self.limits.max_queue_delay)
        {
            self.metrics.shed(Shed::QueueDelay);
            return Err(overloaded(waited));
        }
        take_slot(&self.in_flight, client, &self.limits, &self.metrics)
    }

    /// Takes `n` decisions from the client's quota, or refuses the call with
    /// RESOURCE_EXHAUSTED and a RetryInfo saying when it would fit, after holding it for
    /// [`Limits::quota_hold`] (within the call's deadline) without its in-flight slot.
    pub(crate) async fn charge<T>(
        &self,
        client: &Client,
        n: usize,
        request: &Request<T>,
        slot: &mut Option<InFlight<'_>>,
    ) -> Result<(), Status> {
        let Err(refusal) = self.quota_refusal(client, n) else {
            return Ok(());
        };
        let hold = grpc_timeout(request.metadata()).map_or(self.limits.quota_hold, |t| {
            self.limits
                .quota_hold
                .min(t.saturating_sub(Duration::from_millis(5)))
        });
        if !hold.is_zero() {
            slot.take();
            tokio::time::sleep(hold).await;
        }
        Err(refusal)
    }

    fn quota_refusal(&self, client: &Client, n: usize) -> Result<(), Status> {
        let Some(quota) = &client.quota else {
            return Ok(());
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match quota.try_take(n, Instant::now()) {
            Ok(()) => Ok(()),
            Err(wait) => {
                self.metrics.quota_exceeded(&client.name);
                let message = match wait {
                    Some(_) => format!(
                        "quota of {} decisions/s for this API key exceeded; retry later",
                        quota.per_second()
                    ),
                    None => format!(
                        "{n} decisions in one call exceed this API key's burst of {}; send smaller batches",
                        quota.burst()
                    ),
                };
                let mut details = ErrorDetails::new();
                if let Some(wait) = wait {
                    details.set_retry_info(Some(wait));
                }
                Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    message,
                    details,
                ))
            }
        }
    }

    /// Serves `keys` from the next call on (clients added, granted or revoked). Keys verified
    /// earlier are forgotten, so a revoked grant stops at once.
    pub fn replace_keys(&self, keys: Arc<ApiKeys>) {
        self.keys.store(keys);
        self.verified.clear();
    }

    pub(crate) fn client<T>(&self, request: &Request<T>) -> Result<Arc<Client>, Status> {
        let secret = presented_key(request)
            .ok_or_else(|| Status::unauthenticated("missing API key (x-api-key metadata)"))?;
        let id = self.verified.id(secret);
        if let Some(client) = self.verified.get(id) {
            return Ok(client);
        }
        let keys = self.keys.load_full();
        let client = keys
            .authenticate(secret)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))?;
        self.verified.insert(id, &client);
        // Keys replaced meanwhile: what was just cached may be stale (a revoked grant).
        if !Arc::ptr_eq(&keys, &self.keys.load()) {
            self.verified.clear();
        }
        Ok(client)
    }
}

/// The API key a request presents (`x-api-key`, or `authorization: Bearer`).
pub(crate) fn presented_key<T>(request: &Request<T>) -> Option<&str> {
    let md = request.metadata();
    md.get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            md.get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}

/// The refusal of a call that waited `waited` for its work to start.
fn overloaded(waited: Duration) -> Status {
    Status::resource_exhausted(format!(
        "server overloaded: the call waited {} ms before it could be worked on; retry with backoff",
        waited.as_millis()
    ))
}

/// How long a call waited since its arrival, when that is more than `max` (zero: no limit).
fn waited_too_long(arrival: Option<&Arrival>, max: Duration) -> Option<Duration> {
    let Arrival(at) = arrival?;
    let waited = at.elapsed();
    (!max.is_zero() && waited > max).then_some(waited)
}

/// A slot of the server's (`server`) and of the key's calls in flight, or RESOURCE_EXHAUSTED.
fn take_slot<'a>(
    server: &'a AtomicUsize,
    client: &'a Client,
    limits: &Limits,
    metrics: &Metrics,
) -> Result<InFlight<'a>, Status> {
    let (slot, in_server, in_key) = InFlight::take(server, client.in_flight());
    if in_server > limits.max_in_flight {
        metrics.shed(Shed::Capacity);
        return Err(Status::resource_exhausted(
            "server at capacity; retry with backoff",
        ));
    }
    if in_key > limits.max_in_flight_per_key {
        metrics.shed(Shed::KeyCapacity);
        return Err(Status::resource_exhausted(format!(
            "this API key has {} calls in flight, its share of the server; retry with backoff",
            limits.max_in_flight_per_key
        )));
    }
    Ok(slot)
}

/// A call counted in flight, in the server's count and its API key's, until dropped.
pub(crate) struct InFlight<'a> {
    server: &'a AtomicUsize,
    key: &'a AtomicUsize,
}

impl<'a> InFlight<'a> {
    /// Counts a call in both; returns the counts including it.
    fn take(server: &'a AtomicUsize, key: &'a AtomicUsize) -> (Self, usize, usize) {
        let in_server = server.fetch_add(1, Ordering::AcqRel) + 1;
        let in_key = key.fetch_add(1, Ordering::AcqRel) + 1;
        (Self { server, key }, in_server, in_key)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.server.fetch_sub(1, Ordering::AcqRel);
        self.key.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn permission(client: &Client, brand: u32, retailer: Option<u32>) -> Result<(), Status> {
    if client.may(brand, retailer) {
        Ok(())
    } else {
        // The same answer whether or not any record exists: nothing has been looked up yet.
        Err(Status::permission_denied(
            "API key is not granted this brand or retailer",
        ))
    }
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn invalid_status(err: &InvalidField) -> Status {
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        err.to_string(),
        ErrorDetails::with_bad_request_violation(err.field, err.reason.clone()),
    )
}

impl From<CheckError> for Status {
    fn from(err: CheckError) -> Self {
        match err {
            CheckError::Invalid(field) => invalid_status(&field),
            CheckError::Unavailable { .. } => Status::unavailable(err.to_string()),
        }
    }
}

/// An İYS code (brandCode, retailerCode, iysCode) as it arrives: the proto carries codes as
/// uint64 so that a value wider than 32 bits arrives whole and is refused here, never
/// truncated into another brand. The one place a wire code becomes a `u32`.
///
/// # Errors
/// The reason, for the caller to name its field with.
pub(crate) fn narrow_code(value: u64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{value} is above {}, the largest İYS code", u32::MAX))
}

/// [`narrow_code`] for a top-level field.
pub(crate) fn code_field(field: &'static str, value: u64) -> Result<u32, InvalidField> {
    narrow_code(value).map_err(|reason| invalid(field, reason))
}

pub(crate) fn brand(code: u64) -> Result<u32, InvalidField> {
    match code_field("brand_code", code)? {
        0 => Err(invalid("brand_code", "required (the İYS brandCode)")),
        code => Ok(code),
    }
}

pub(crate) fn channel(value: i32) -> Result<DChannel, InvalidField> {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Arama) => Ok(DChannel::Arama),
        Ok(pb::Channel::Mesaj) => Ok(DChannel::Mesaj),
        Ok(pb::Channel::Eposta) => Ok(DChannel::Eposta),
        Ok(pb::Channel::Unspecified) => Err(invalid("channel", "required: ARAMA, MESAJ or EPOSTA")),
        Err(_) => Err(invalid("channel", format!("unknown value {value}"))),
    }
}

pub(crate) fn recipient_type(value: i32) -> Result<DRecipientType, InvalidField> {
    match pb::RecipientType::try_from(value) {
        Ok(pb::RecipientType::Unspecified | pb::RecipientType::Bireysel) => {
            Ok(DRecipientType::Bireysel)
        }
        Ok(pb::RecipientType::Tacir) => Ok(DRecipientType::Tacir),
        Err(_) => Err(invalid("recipient_type", format!("unknown value {value}"))),
    }
}

fn purpose(value: i32) -> Result<DPurpose, InvalidField> {
    Ok(match pb::Purpose::try_from(value) {
        Ok(pb::Purpose::Commercial) => DPurpose::Commercial,
        Ok(pb::Purpose::Transactional) => DPurpose::Transactional,
        Ok(pb::Purpose::Information) => DPurpose::Information,
        Ok(pb::Purpose::DebtReminder) => DPurpose::DebtReminder,
        Ok(pb::Purpose::DeliveryNotice) => DPurpose::DeliveryNotice,
        Ok(pb::Purpose::DataUpdate) => DPurpose::DataUpdate,
        Ok(pb::Purpose::LegalNotice) => DPurpose::LegalNotice,
        Err(_) => return Err(invalid("purpose", format!("unknown value {value}"))),
    })
}

/// A check from the wire fields (channel, recipient_type, retailer_code, purpose) shared by
/// `CheckRequest` and `CheckBatchItem`, naming the first bad field.
fn query(
    brand: u32,
    recipient: &str,
    fields: (i32, i32, u64, i32),
) -> Result<Query<'_>, InvalidField> {
    let (channel_value, rtype, retailer_code, purpose_value) = fields;
    Ok(Query {
        brand,
        recipient,
        channel: channel(channel_value)?,
        recipient_type: recipient_type(rtype)?,
        retailer: retailer(retailer_code)?,
        purpose: purpose(purpose_value)?,
    })
}

/// A retailer_code: 0 is none.
fn retailer(code: u64) -> Result<Option<u32>, InvalidField> {
    Ok(Some(code_field("retailer_code", code)?).filter(|&c| c != 0))
}

pub fn reason_pb(reason: DReason) -> pb::Reason {
    match reason {
        DReason::ConsentRegistered => pb::Reason::ConsentRegistered,
        DReason::ExemptPurpose => pb::Reason::ExemptPurpose,
        DReason::TacirOptOutPolicy => pb::Reason::TacirOptOutPolicy,
        DReason::LocalRet => pb::Reason::LocalRet,
        DReason::Rejected => pb::Reason::Rejected,
        DReason::PendingRegistration => pb::Reason::PendingRegistration,
        DReason::RegistrationExpired => pb::Reason::RegistrationExpired,
        DReason::NoConsent => pb::Reason::NoConsent,
        DReason::RetailerNotGranted => pb::Reason::RetailerNotGranted,
    }
}

fn source_pb(source: Option<domain::Source>) -> i32 {
    // The proto's Source numbers are the domain's compact codes by construction.
    source.map_or(0, |s| i32::from(s.code()))
}

pub(crate) fn decision_pb(d: &DDecision, age_ms: u64) -> pb::Decision {
    let verdict = match d.verdict {
        DVerdict::Allow => pb::Verdict::Allow,
        DVerdict::AllowExempt => pb::Verdict::AllowExempt,
        DVerdict::Deny => pb::Verdict::Deny,
    };
    let (status, pending) = match d.record.map(|r| r.status) {
        None => (pb::ConsentStatus::Unspecified, false),
        Some(RecordStatus::Onay) => (pb::ConsentStatus::Onay, false),
        Some(RecordStatus::OnayPending) => (pb::ConsentStatus::Onay, true),
        Some(RecordStatus::Ret) => (pb::ConsentStatus::Ret, false),
        Some(RecordStatus::RetPending) => (pb::ConsentStatus::Ret, true),
    };
    pb::Decision {
        verdict: verdict.into(),
        reason: reason_pb(d.reason).into(),
        status: status.into(),
        source: d.record.map_or(0, |r| source_pb(r.source)),
        consent_date: d
            .record
            .map(|r| r.consent_date.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default(),
        pending_registration: pending,
        registration_deadline: d.registration_deadline.map(format_iys).unwrap_or_default(),
        data_age_ms: age_ms,
        error: String::new(),
    }
}

fn invalid_decision(err: &InvalidField) -> pb::Decision {
    pb::Decision {
        verdict: pb::Verdict::Invalid.into(),
        reason: pb::Reason::InvalidRecipient.into(),
        error: err.to_string(),
        ..pb::Decision::default()
    }
}

impl ConsentService {
    fn log_decision(&self, client: &Client, brand: u32, q: &Query<'_>, answer: &Answer) {
        let d = &answer.decision;
        self.metrics.decision(d.reason, q.purpose);
        if d.verdict == DVerdict::AllowExempt {
            // Exempt sends are the ones an auditor asks about: log them with their purpose.
            tracing::info!(
                target: "iysgate::audit",
                client = %client.name,
                brand,
                channel = %q.channel,
                purpose = q.purpose.as_str(),
                recipient = %fingerprint(&answer.recipient.to_string()),
                "allowed as exempt"
            );
        } else if d.reason == DReason::RegistrationExpired {
            tracing::warn!(
                brand,
                channel = %q.channel,
                recipient = %fingerprint(&answer.recipient.to_string()),
                "collected consent is past its İYS registration deadline"
            );
        }
    }

    fn check_one(&self, client: &Client, brand: u32, item: &pb::CheckBatchItem) -> pb::Decision {
        let fields = (
            item.channel,
            item.recipient_type,
            item.retailer_code,
            item.purpose,
        );
        let q = match query(brand, &item.recipient, fields) {
            Ok(q) => q,
            Err(e) => return invalid_decision(&e),
        };
        match self.checker.check(&q) {
            Ok(answer) => {
                self.log_decision(client, brand, &q, &answer);
                decision_pb(&answer.decision, answer.data_age.as_millis() as u64)
            }
            Err(CheckError::Invalid(e)) => invalid_decision(&e),
            Err(CheckError::Unavailable { age }) => pb::Decision {
                verdict: pb::Verdict::Unspecified.into(),
                data_age_ms: age.map_or(0, |a| a.as_millis() as u64),
                error: "UNAVAILABLE: consent data is stale; retry".into(),
                ..pb::Decision::default()
            },
        }
    }
}

type FilterStream = Pin<Box<dyn Stream<Item = Result<pb::FilterResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::consent_check_server::ConsentCheck for ConsentService {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let started = Instant::now();
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        self.charge(&client, 1, &request, &mut slot).await?;
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(
            &client,
            brand,
            retailer(req.retailer_code).map_err(|e| invalid_status(&e))?,
        )?;
        let fields = (
            req.channel,
            req.recipient_type,
            req.retailer_code,
            req.purpose,
        );
        let q = query(brand, &req.recipient, fields).map_err(|e| invalid_status(&e))?;
        let answer = self.checker.check(&q).inspect_err(|e| match e {
            CheckError::Invalid(_) => self.metrics.invalid(1),
            CheckError::Unavailable { .. } => self.metrics.unavailable(),
        })?;
        self.log_decision(&client, brand, &q, &answer);
        let reply = pb::CheckResponse {
            decision: Some(decision_pb(
                &answer.decision,
                answer.data_age.as_millis() as u64,
            )),
            recipient: answer.recipient.to_string(),
        };
        self.metrics.latency(Rpc::Check, started.elapsed());
        Ok(Response::new(reply))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let started = Instant::now();
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(&client, brand, None)?;
        if req.items.len() > MAX_BATCH {
            return Err(invalid_status(&invalid(
                "items",
                format!(
                    "{} items; at most {MAX_BATCH} per batch (use Filter for lists)",
                    req.items.len()
                ),
            )));
        }
        // Rule 1 for every item before any lookup: a retailer the key is not granted refuses
        // the whole call, as it would a single Check.
        // A code that does not fit is that item's INVALID, answered by `check_one`.
        for item in &req.items {
            if let Ok(named) = retailer(item.retailer_code) {
                permission(&client, brand, named)?;
            }
        }
        self.charge(&client, req.items.len(), &request, &mut slot)
            .await?;
        let decisions: Vec<pb::Decision> = req
            .items
            .iter()
            .map(|item| self.check_one(&client, brand, item))
            .collect();
        let invalid_items = decisions
            .iter()
            .filter(|d| d.verdict == i32::from(pb::Verdict::Invalid))
            .count();
        self.metrics.invalid(invalid_items as u64);
        if decisions
            .iter()
            .any(|d| d.verdict == i32::from(pb::Verdict::Unspecified))
        {
            // Rule 7: an item would be ALLOWed from stale data; the whole batch is retryable.
            self.metrics.unavailable();
            return Err(Status::unavailable("consent data is stale; retry"));
        }
        self.metrics.latency(Rpc::CheckBatch, started.elapsed());
        Ok(Response::new(pb::CheckBatchResponse { decisions }))
    }

    type FilterStream = FilterStream;

    async fn filter(
        &self,
        request: Request<Streaming<pb::FilterRequest>>,
    ) -> Result<Response<Self::FilterStream>, Status> {
        let client = self.client(&request)?;
        // A stream is refused when the server is overloaded as it opens; after that it holds
        // a slot only while one of its chunks is answered, so idle streams hold nothing.
        drop(self.admit(&request, &client)?);
        let checker = Arc::clone(&self.checker);
        let metrics = Arc::clone(&self.metrics);
        let (in_flight, limits) = (Arc::clone(&self.in_flight), self.limits);
        let deadline = grpc_timeout(request.metadata());
        let mut state = FilterState {
            spec: None,
            chunk: 0,
            out: FilterOutcome::default(),
        };
        // A client's quota paces its Filter stream rather than failing it: each chunk waits
        // for its decisions, and HTTP/2 flow control slows the sender.
        let quota = client.quota.clone();
        let paced = request.into_inner().then(move |chunk| {
            let wait = match (&quota, &chunk) {
                (Some(quota), Ok(c)) => {
                    let n = chunk_len(c);
                    quota.reserve(u32::try_from(n).unwrap_or(u32::MAX), Instant::now())
                }
                _ => Duration::ZERO,
            };
            async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                chunk
            }
        });
        let stream = paced.map(move |chunk| {
            let chunk = chunk?;
            let _slot = take_slot(&in_flight, &client, &limits, &metrics)?;
            let started = Instant::now();
            let reply = state.answer(&checker, &metrics, &client, &chunk);
            metrics.latency(Rpc::Filter, started.elapsed());
            reply
        });
        Ok(Response::new(Box::pin(WithDeadline::new(
            Box::pin(stream),
            deadline,
        ))))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let started = Instant::now();
        let client = self.client(&request)?;
        let _slot = self.admit(&request, &client)?;
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(&client, brand, None)?;
        let channel = channel(req.channel).map_err(|e| invalid_status(&e))?;
        let rtype = recipient_type(req.recipient_type).map_err(|e| invalid_status(&e))?;
        let recipient = parse_recipient(&req.recipient, channel).map_err(|e| invalid_status(&e))?;
        let key = ConsentKey {
            brand,
            recipient,
            recipient_type: rtype,
            channel,
        };
        let record = self.consents.get(&key).map(|r| {
            let e = r.current;
            let (creation_date, transaction_id) = match &e.registration {
                Registration::Registered {
                    creation_date,
                    transaction_id,
                } => (format_iys(*creation_date), transaction_id.to_string()),
                Registration::Pending => (String::new(), String::new()),
            };
            let pending = e.is_pending();
            pb::ConsentRecord {
                recipient: key.recipient.to_string(),
                recipient_type: pb_rtype(rtype).into(),
                channel: pb_channel(channel).into(),
                status: match e.status {
                    ConsentStatus::Onay => pb::ConsentStatus::Onay,
                    ConsentStatus::Ret => pb::ConsentStatus::Ret,
                }
                .into(),
                source: source_pb(Some(e.source)),
                consent_date: format_iys(e.consent_date),
                creation_date,
                transaction_id,
                retailer_access: e.retailer_access.clone(),
                pending_registration: pending,
                registration_deadline: if pending && e.status == ConsentStatus::Onay {
                    format_iys(
                        self.checker
                            .calendar()
                            .registration_deadline(e.consent_date),
                    )
                } else {
                    String::new()
                },
            }
        });
        let q = Query {
            brand,
            recipient: &req.recipient,
            channel,
            recipient_type: rtype,
            retailer: None,
            purpose: DPurpose::Commercial,
        };
        let decision = match self.checker.check(&q) {
            Ok(a) => Some(decision_pb(&a.decision, a.data_age.as_millis() as u64)),
            Err(CheckError::Unavailable { age }) => Some(pb::Decision {
                error: "UNAVAILABLE: consent data is stale".into(),
                data_age_ms: age.map_or(0, |a| a.as_millis() as u64),
                ..pb::Decision::default()
            }),
            Err(CheckError::Invalid(e)) => return Err(invalid_status(&e)),
        };
        self.metrics.latency(Rpc::GetConsent, started.elapsed());
        Ok(Response::new(pb::GetConsentResponse { record, decision }))
    }
}

/// The caller's deadline from the `grpc-timeout` header. tonic enforces it for the response
/// headers of every call; a Filter stream lives longer than that, so it is enforced here too.
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    grpc_timeout_header(md.as_ref())
}

/// The `grpc-timeout` header's duration (`<digits><unit>`), if well formed.
pub(crate) fn grpc_timeout_header(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Ends a response stream with DEADLINE_EXCEEDED once the caller's deadline passes.
struct WithDeadline {
    inner: FilterStream,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
}

impl WithDeadline {
    fn new(inner: FilterStream, timeout: Option<Duration>) -> Self {
        let deadline = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        Self {
            inner,
            deadline,
            expired: false,
        }
    }
}

impl Stream for WithDeadline {
    type Item = Result<pb::FilterResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        if self.expired {
            return std::task::Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.expired = true;
            return std::task::Poll::Ready(Some(Err(Status::deadline_exceeded(
                "the call's deadline passed before the stream ended",
            ))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

pub(crate) fn pb_channel(c: DChannel) -> pb::Channel {
    match c {
        DChannel::Arama => pb::Channel::Arama,
        DChannel::Mesaj => pb::Channel::Mesaj,
        DChannel::Eposta => pb::Channel::Eposta,
    }
}

pub(crate) fn pb_rtype(t: DRecipientType) -> pb::RecipientType {
    match t {
        DRecipientType::Bireysel => pb::RecipientType::Bireysel,
        DRecipientType::Tacir => pb::RecipientType::Tacir,
    }
}

/// The state of one Filter stream: the settings of its first chunk (later chunks may change
/// them) and a reused output buffer.
struct FilterState {
    spec: Option<FilterSpec>,
    chunk: u64,
    out: FilterOutcome,
}

/// The lines of a `recipient_lines` field, borrowed from the message (one allocation per
/// chunk, none per recipient).
fn recipient_lines(text: &[u8]) -> Result<Vec<&str>, Status> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        invalid_status(&invalid(
            "recipient_lines",
            format!("not UTF-8 at byte {}", e.valid_up_to()),
        ))
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    Ok(text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect())
}

/// Items in a Filter chunk, whatever its form, without parsing it. (The compiler vectorises
/// the byte count; a crate for it is not worth a dependency.)
#[allow(clippy::naive_bytecount)]
fn chunk_len(req: &pb::FilterRequest) -> usize {
    let lines = &req.recipient_lines;
    let line_count = if lines.is_empty() {
        0
    } else {
        lines.iter().filter(|&&b| b == b'\n').count() + usize::from(!lines.ends_with(b"\n"))
    };
    req.recipients.len() + req.phones.len() + line_count
}

impl FilterState {
    fn spec_for(&mut self, client: &Client, req: &pb::FilterRequest) -> Result<FilterSpec, Status> {
        let spec = if let (Some(spec), 0) = (self.spec, req.brand_code) {
            spec
        } else {
            {
                let s = FilterSpec {
                    brand: brand(req.brand_code).map_err(|e| invalid_status(&e))?,
                    channel: channel(req.channel).map_err(|e| invalid_status(&e))?,
                    recipient_type: recipient_type(req.recipient_type)
                        .map_err(|e| invalid_status(&e))?,
                    retailer: retailer(req.retailer_code).map_err(|e| invalid_status(&e))?,
                    purpose: purpose(req.purpose).map_err(|e| invalid_status(&e))?,
                };
                permission(client, s.brand, s.retailer)?;
                s
            }
        };
        self.spec = Some(spec);
        Ok(spec)
    }

    fn answer(
        &mut self,
        checker: &Checker,
        metrics: &Metrics,
        client: &Client,
        req: &pb::FilterRequest,
    ) -> Result<pb::FilterResponse, Status> {
        let spec = self.spec_for(client, req)?;
        let lines = recipient_lines(&req.recipient_lines)?;
        let count = req.recipients.len() + req.phones.len() + lines.len();
        let forms = [
            ("recipients", req.recipients.len()),
            ("phones", req.phones.len()),
            ("recipient_lines", lines.len()),
        ];
        let mut used = forms.iter().filter(|(_, n)| *n > 0);
        let form = used.next().map_or("recipients", |(field, _)| *field);
        if let Some((second, _)) = used.next() {
            return Err(invalid_status(&invalid(
                second,
                "a chunk carries one of recipients, phones or recipient_lines",
            )));
        }
        if count > MAX_CHUNK {
            // Named as sent: the field the client filled.
            return Err(invalid_status(&invalid(
                form,
                format!("{count} items in one chunk; at most {MAX_CHUNK}"),
            )));
        }
        let result = if !req.phones.is_empty() {
            checker.filter_phones(&spec, &req.phones, &mut self.out)
        } else if !lines.is_empty() {
            checker.filter_recipients(&spec, &lines, &mut self.out)
        } else {
            checker.filter_recipients(&spec, &req.recipients, &mut self.out)
        };
        if let Err(e) = result {
            if matches!(e, CheckError::Unavailable { .. }) {
                metrics.unavailable();
            }
            return Err(e.into());
        }
        metrics.decisions(&self.out.reason_counts, spec.purpose);
        let mut invalid_items = 0;
        let rejected = self
            .out
            .rejected
            .iter()
            .map(|&(index, outcome)| pb::Rejection {
                index,
                reason: match outcome {
                    ItemOutcome::Denied(r) => reason_pb(r),
                    ItemOutcome::Invalid => {
                        invalid_items += 1;
                        pb::Reason::InvalidRecipient
                    }
                }
                .into(),
            })
            .collect();
        metrics.invalid(invalid_items);
        if spec.purpose.is_exempt() && self.out.allowed_count > 0 {
            tracing::info!(
                target: "iysgate::audit",
                client = %client.name,
                brand = spec.brand,
                channel = %spec.channel,
                purpose = spec.purpose.as_str(),
                allowed = self.out.allowed_count,
                "filter chunk allowed as exempt"
            );
        }
        let reply = pb::FilterResponse {
            chunk: self.chunk,
            count: count as u32,
            allowed: prost::bytes::Bytes::copy_from_slice(&self.out.allowed),
            allowed_count: self.out.allowed_count,
            rejected,
            data_age_ms: self.out.data_age.as_millis() as u64,
        };
        self.chunk += 1;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(server: usize, key: usize) -> Limits {
        Limits {
            max_in_flight: server,
            max_in_flight_per_key: key,
            max_queue_delay: Duration::ZERO,
            quota_hold: Duration::ZERO,
        }
    }

    #[test]
    fn a_key_at_its_share_is_shed_while_another_key_is_admitted() {
        let metrics = Metrics::register();
        let server = AtomicUsize::new(0);
        let (a, b) = (Client::new("a"), Client::new("b"));
        let limits = limits(3, 2);
        let a1 = take_slot(&server, &a, &limits, &metrics).unwrap();
        let a2 = take_slot(&server, &a, &limits, &metrics).unwrap();
        let refused = take_slot(&server, &a, &limits, &metrics).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("API key"),
            "{}",
            refused.message()
        );
        // The refused call left no count behind.
        assert_eq!(server.load(Ordering::Acquire), 2);
        assert_eq!(a.in_flight().load(Ordering::Acquire), 2);
        let b1 = take_slot(&server, &b, &limits, &metrics).unwrap();
        // The server is full now: b is refused for the server's capacity, not its own.
        let full = take_slot(&server, &b, &limits, &metrics).err().unwrap();
        assert!(
            full.message().contains("server at capacity"),
            "{}",
            full.message()
        );
        drop((a1, b1));
        assert_eq!(server.load(Ordering::Acquire), 1);
        take_slot(&server, &b, &limits, &metrics).unwrap();
        drop(a2);
        assert_eq!(a.in_flight().load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_call_that_waited_past_the_queue_delay_is_shed() {
        let max = Duration::from_millis(100);
        let late = Arrival(
            Instant::now()
                .checked_sub(Duration::from_millis(250))
                .unwrap(),
        );
        let waited = waited_too_long(Some(&late), max).unwrap();
        assert!(waited >= Duration::from_millis(250));
        assert_eq!(waited_too_long(Some(&Arrival(Instant::now())), max), None);
        assert_eq!(
            waited_too_long(Some(&late), Duration::ZERO),
            None,
            "0 turns it off"
        );
        assert_eq!(
            waited_too_long(None, max),
            None,
            "a call the listener did not stamp"
        );
    }

    #[test]
    fn the_grpc_timeout_header_reads_every_unit() {
        let mut headers = http::HeaderMap::new();
        for (text, expected) in [
            ("2H", Duration::from_hours(2)),
            ("3M", Duration::from_mins(3)),
            ("4S", Duration::from_secs(4)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            headers.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout_header(&headers), Some(expected), "{text}");
        }
        for bad in ["", "S", "10x", "-1S"] {
            headers.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout_header(&headers), None, "{bad:?}");
        }
    }
}
