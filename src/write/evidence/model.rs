//! What the evidence store keeps, and the rules both backends share: which events are
//! accepted, when an upload may be claimed, what an İYS answer does to an upload, and when a
//! pending upload counts as at risk or expired. Pure: no I/O, no clock reads.
//!
//! Over 600 lines on purpose: the evidence model shared by both stores, with its unit tests.

use chrono::{DateTime, Datelike, Days, NaiveDate, SubsecRound, Utc, Weekday};

use crate::auth::RetailerGrant;
use crate::domain::calendar::DayKind;
use crate::domain::time::{from_turkey, to_turkey};
use crate::domain::{
    BrandPolicy, BusinessCalendar, Channel, ConsentStatus, Recipient, RecipientType, Source,
    TurkeyTime,
};

use super::EvidenceError;

/// Longest idempotency key accepted, in bytes: the proto's documented limit (`ConsentInput`
/// says "at most 128 bytes"). Every backend refuses a longer one through [`check_new`]; the
/// import's own keys (`import:<16 hex>:<line>`) stay far below it.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// The refusal of a key outside 1..=[`MAX_IDEMPOTENCY_KEY`] bytes (a unit test ties the two).
const IDEMPOTENCY_KEY_RULE: &str = "must be 1 to 128 bytes";
/// Longest evidence or name text accepted, in bytes: a reference, not a document.
pub const MAX_TEXT: usize = 2048;

/// The id of a stored consent event: assigned in recording order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub i64);

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How and where a consent was captured: what the provider shows when asked to prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// How, e.g. "web form checkbox", "signed paper form", "IVR key press".
    pub method: String,
    /// Where: a page URL, a store, a call-centre line.
    pub location: String,
    /// A document or form reference (scan id, form version, call recording id), if any.
    pub document_ref: Option<String>,
    /// The system that captured it, e.g. "crm-web".
    pub capturing_system: String,
}

/// Who recorded an event: the API client's name and the SHA-256 digest of the key it
/// presented (never the key). No digest for events recorded by an operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorder {
    pub client: String,
    pub key_sha256: Option<[u8; 32]>,
}

/// A consent the company collected, as handed to [`record`](super::EvidenceStore::record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub brand: u32,
    pub recipient: Recipient,
    pub recipient_type: RecipientType,
    pub channel: Channel,
    pub status: ConsentStatus,
    /// An `HS_*` source: the company collected it.
    pub source: Source,
    /// When the consent was given (Turkey time). Day 0 of the upload deadline.
    pub consent_date: TurkeyTime,
    pub retailer_access: Vec<u32>,
    pub evidence: Evidence,
    pub recorder: Recorder,
    /// Unique per brand: the same key again is the same event, stored once.
    pub idempotency_key: String,
}

impl NewEvent {
    /// Whether `other`, recorded under the same idempotency key, is the same event: every
    /// field but the key digest matches (a client may retry after rotating its key).
    pub fn same_event(&self, other: &NewEvent) -> bool {
        self.brand == other.brand
            && self.recipient == other.recipient
            && self.recipient_type == other.recipient_type
            && self.channel == other.channel
            && self.status == other.status
            && self.source == other.source
            && self.consent_date == other.consent_date
            && self.retailer_access == other.retailer_access
            && self.evidence == other.evidence
            && self.recorder.client == other.recorder.client
            && self.idempotency_key == other.idempotency_key
    }
}

/// What recording one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now, with its upload pending.
    New(EventId),
    /// Its idempotency key was already stored for the brand, with the same event: the
    /// original id.
    Duplicate(EventId),
}

impl Recorded {
    pub fn id(self) -> EventId {
        match self {
            Recorded::New(id) | Recorded::Duplicate(id) => id,
        }
    }
}

/// Where an event's upload to İYS stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Waiting for an uploader (from `Upload::next_attempt_at`). An ONAY here is not yet a
    /// consent anyone may send on.
    Pending,
    /// Claimed by an uploader until `lease_until`; after that it may be claimed again (the
    /// uploader crashed or lost its connection).
    InFlight { lease_until: DateTime<Utc> },
    /// İYS accepted it.
    Registered {
        transaction_id: String,
        creation_date: TurkeyTime,
    },
    /// İYS refused it for good (e.g. H175, H178, H467).
    Rejected { code: String, message: String },
    /// Its deadline passed before İYS accepted it.
    Expired,
    /// İYS refused it as a repeat (H174) because it already held the same status for the
    /// key from another record, which is in force: that record's transactionId and
    /// creationDate, and İYS's code and message. Final; the consent is not lost, so it is
    /// neither a refusal nor an expiry.
    Superseded {
        transaction_id: String,
        creation_date: TurkeyTime,
        code: String,
        message: String,
    },
}

impl UploadState {
    /// The spelling stored in `upload_outbox.state`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UploadState::Pending => "pending",
            UploadState::InFlight { .. } => "in_flight",
            UploadState::Registered { .. } => "registered",
            UploadState::Rejected { .. } => "rejected",
            UploadState::Expired => "expired",
            UploadState::Superseded { .. } => "superseded",
        }
    }

    /// Pending or in flight: not yet decided by İYS or by the deadline.
    pub fn is_open(&self) -> bool {
        matches!(self, UploadState::Pending | UploadState::InFlight { .. })
    }
}

/// An event's upload: its state, its legal deadline and its attempts so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub state: UploadState,
    /// The strict 3-business-day deadline (Turkey time), fixed when the event is recorded.
    pub deadline: TurkeyTime,
    /// Claims so far; the n-th claim is attempt n.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

/// A recorded event with its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub event: NewEvent,
    pub recorded_at: DateTime<Utc>,
    pub upload: Upload,
}

/// An upload handed to one uploader: send `event` to İYS, then report the answer with
/// [`finish_upload`](super::EvidenceStore::finish_upload) and this `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub event: StoredEvent,
    pub attempt: u32,
}

/// What İYS (or the way to it) answered one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    Registered {
        transaction_id: String,
        creation_date: TurkeyTime,
    },
    /// A final refusal: the upload is not tried again.
    Rejected { code: String, message: String },
    /// İYS already holds the same status from another record (see
    /// [`UploadState::Superseded`]): final, the upload is not tried again.
    Superseded {
        transaction_id: String,
        creation_date: TurkeyTime,
        code: String,
        message: String,
    },
    /// A transient failure (network, 429, 5xx): try again from `retry_at`.
    Retry {
        retry_at: DateTime<Utc>,
        code: Option<String>,
        message: String,
    },
}

impl UploadOutcome {
    /// The spelling stored in `upload_attempts.outcome`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UploadOutcome::Registered { .. } => "registered",
            UploadOutcome::Rejected { .. } => "rejected",
            UploadOutcome::Retry { .. } => "retry",
            UploadOutcome::Superseded { .. } => "superseded",
        }
    }
}

/// One attempt's answer, as reported by the uploader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadAnswer {
    /// The HTTP status, when a response came back at all.
    pub http_status: Option<u16>,
    pub outcome: UploadOutcome,
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub finished_at: DateTime<Utc>,
    pub answer: UploadAnswer,
}

/// Upload figures for metrics and alerts, at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadCounts {
    /// Not yet registered, rejected or past the deadline.
    pub pending: u64,
    /// Of `pending`, those with less than one counted day left before the deadline.
    pub at_risk: u64,
    /// Past the deadline unregistered (marked expired or not yet marked).
    pub expired: u64,
}

/// A service provider account (iysCode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub iys_code: u32,
    pub name: String,
    /// Where the İYS credentials are found (e.g. `env:IYS_PASSWORD`), never the secret.
    pub credentials_ref: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    pub brand_code: u32,
    pub iys_code: u32,
    pub name: String,
    pub policy: BrandPolicy,
}

/// An API client with its brand grants, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    pub name: String,
    pub key_sha256: [u8; 32],
    /// (brand, retailers it may name), by brand.
    pub grants: Vec<(u32, RetailerGrant)>,
}

impl ApiClient {
    /// The check path's view of this client.
    pub fn to_auth(&self) -> crate::auth::Client {
        self.grants.iter().fold(
            crate::auth::Client::new(&self.name),
            |client, (brand, r)| client.grant(*brand, r.clone()),
        )
    }
}

/// The keys of the check path, built from stored clients.
pub fn api_keys(clients: &[ApiClient]) -> Result<crate::auth::ApiKeys, crate::auth::KeysError> {
    let mut keys = crate::auth::ApiKeys::default();
    for client in clients {
        keys.insert(client.key_sha256, client.to_auth())?;
    }
    Ok(keys)
}

/// Refuses an event no backend may store. `index` is its position in the batch. Errors
/// name the field, never its value.
pub(crate) fn check_new(index: usize, event: &NewEvent) -> Result<(), EvidenceError> {
    let invalid = |field, reason| {
        Err(EvidenceError::Invalid {
            index,
            field,
            reason,
        })
    };
    if event.recipient.kind() != event.channel.address_kind() {
        return invalid("recipient", "address kind does not match the channel");
    }
    if !event.source.is_provider() {
        return invalid("source", "a collected consent needs an HS_* source");
    }
    if event.idempotency_key.is_empty() || event.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        return invalid("idempotency_key", IDEMPOTENCY_KEY_RULE);
    }
    let texts = [
        ("evidence.method", Some(&event.evidence.method)),
        ("evidence.location", Some(&event.evidence.location)),
        (
            "evidence.document_ref",
            event.evidence.document_ref.as_ref(),
        ),
        (
            "evidence.capturing_system",
            Some(&event.evidence.capturing_system),
        ),
        ("recorder.client", Some(&event.recorder.client)),
    ];
    // Only the document reference is optional, and then absent rather than empty.
    for (field, text) in texts {
        if text.is_some_and(|t| t.is_empty() || t.len() > MAX_TEXT) {
            return invalid(field, "must be 1 to 2048 bytes");
        }
    }
    Ok(())
}

/// Validates a batch and brings its times to the stored precision, so a duplicate compares
/// equal to what was stored.
pub(crate) fn prepare(events: &[NewEvent]) -> Result<Vec<NewEvent>, EvidenceError> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            check_new(index, event)?;
            let mut event = event.clone();
            event.consent_date = micros_turkey(event.consent_date);
            Ok(event)
        })
        .collect()
}

/// Refuses a name or reference that is empty or too long.
pub(crate) fn check_text(field: &'static str, text: &str) -> Result<(), EvidenceError> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(EvidenceError::InvalidField {
            field,
            reason: "must be 1 to 2048 bytes",
        });
    }
    Ok(())
}

/// Instants as both backends keep them: PostgreSQL stores microseconds, so the file store
/// does too, and a value reads back equal whichever backend holds it.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// [`micros`] for Turkey local times.
pub(crate) fn micros_turkey(t: TurkeyTime) -> TurkeyTime {
    t.trunc_subsecs(6)
}

/// The deadline as an instant.
pub(crate) fn deadline_utc(deadline: TurkeyTime) -> DateTime<Utc> {
    from_turkey(deadline)
}

/// Whether an upload may be claimed at `now`: open, its deadline not passed, and either
/// due (pending) or its lease run out (in flight).
pub(crate) fn claimable(upload: &Upload, now: DateTime<Utc>) -> bool {
    if deadline_utc(upload.deadline) < now {
        return false;
    }
    match &upload.state {
        UploadState::Pending => upload.next_attempt_at <= now,
        UploadState::InFlight { lease_until } => *lease_until <= now,
        _ => false,
    }
}

/// Whether an open upload is past its deadline at `now` and no live lease holds it, so
/// `expire_overdue` marks it expired. An upload in flight is left to its uploader until the
/// lease runs out: İYS may yet accept it.
pub(crate) fn expirable(upload: &Upload, now: DateTime<Utc>) -> bool {
    let free = match &upload.state {
        UploadState::Pending => true,
        UploadState::InFlight { lease_until } => *lease_until <= now,
        _ => false,
    };
    free && deadline_utc(upload.deadline) < now
}

/// The state an answer to `attempt` leads to, or `None` when it changes nothing.
///
/// İYS's acceptance is a fact whoever asked: `Registered` applies unless the upload is
/// already registered, `Superseded` (İYS's record in force) unless it is registered or
/// superseded already. A refusal or a retry applies only while `attempt` still holds the
/// upload (in flight, and no later claim since): an uploader whose lease ran out and was
/// claimed again must not undo the newer attempt.
pub(crate) fn after_answer(
    upload: &Upload,
    attempt: u32,
    outcome: &UploadOutcome,
) -> Option<(UploadState, DateTime<Utc>)> {
    let holds = matches!(upload.state, UploadState::InFlight { .. }) && upload.attempts == attempt;
    match outcome {
        UploadOutcome::Registered {
            transaction_id,
            creation_date,
        } => (!matches!(upload.state, UploadState::Registered { .. })).then(|| {
            let state = UploadState::Registered {
                transaction_id: transaction_id.clone(),
                creation_date: *creation_date,
            };
            (state, upload.next_attempt_at)
        }),
        UploadOutcome::Superseded {
            transaction_id,
            creation_date,
            code,
            message,
        } => (!matches!(
            upload.state,
            UploadState::Registered { .. } | UploadState::Superseded { .. }
        ))
        .then(|| {
            let state = UploadState::Superseded {
                transaction_id: transaction_id.clone(),
                creation_date: *creation_date,
                code: code.clone(),
                message: message.clone(),
            };
            (state, upload.next_attempt_at)
        }),
        UploadOutcome::Rejected { code, message } => holds.then(|| {
            let state = UploadState::Rejected {
                code: code.clone(),
                message: message.clone(),
            };
            (state, upload.next_attempt_at)
        }),
        UploadOutcome::Retry { retry_at, .. } => {
            holds.then(|| (UploadState::Pending, micros(*retry_at)))
        }
    }
}

/// Whether a day counts on the strict calendar: not a Sunday, not a FULL holiday.
fn strict_counts(calendar: &BusinessCalendar, date: NaiveDate) -> bool {
    date.weekday() != Weekday::Sun && calendar.day_kind(date) != DayKind::FullHoliday
}

/// An open upload is at risk at `now` when less than one whole counted day is left: its
/// deadline falls no later than the first counted day from today on (today itself, or the
/// next counted day when today is a Sunday or a holiday). Returns the start of the day after
/// that day: uploads with a deadline before it are at risk.
pub(crate) fn at_risk_before(calendar: &BusinessCalendar, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut day = to_turkey(now).date();
    // A week always holds a counted day unless every day of it is a holiday; stop there.
    for _ in 0..7 {
        if strict_counts(calendar, day) {
            break;
        }
        day = day.succ_opt().unwrap_or(day);
    }
    let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
    from_turkey(next.and_time(chrono::NaiveTime::MIN))
}

/// Upload counts over `uploads` at `now`; `risk_before` from [`at_risk_before`].
pub(crate) fn count<'a>(
    uploads: impl Iterator<Item = &'a Upload>,
    now: DateTime<Utc>,
    risk_before: DateTime<Utc>,
) -> UploadCounts {
    let mut counts = UploadCounts::default();
    for upload in uploads {
        let deadline = deadline_utc(upload.deadline);
        match &upload.state {
            UploadState::Expired => counts.expired += 1,
            state if state.is_open() && deadline < now => counts.expired += 1,
            state if state.is_open() => {
                counts.pending += 1;
                if deadline < risk_before {
                    counts.at_risk += 1;
                }
            }
            _ => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iys;

    fn tr(text: &str) -> TurkeyTime {
        parse_iys(text).unwrap()
    }

    #[test]
    fn the_idempotency_key_refusal_states_the_limit() {
        assert!(IDEMPOTENCY_KEY_RULE.ends_with(&format!(" {MAX_IDEMPOTENCY_KEY} bytes")));
    }

    fn upload(state: UploadState, attempts: u32) -> Upload {
        Upload {
            state,
            deadline: tr("2024-04-08 23:59:59"),
            attempts,
            next_attempt_at: from_turkey(tr("2024-04-04 10:00:00")),
        }
    }

    #[test]
    fn at_risk_means_less_than_one_counted_day_left() {
        let calendar = BusinessCalendar::embedded();
        // Captured Thu 2024-04-04: deadline Mon 2024-04-08 23:59:59 (Sunday skipped).
        let open = [upload(UploadState::Pending, 0)];
        let at = |t: &str| {
            let now = from_turkey(tr(t));
            count(open.iter(), now, at_risk_before(&calendar, now))
        };
        // Saturday: Saturday and Monday still count.
        assert_eq!(at("2024-04-06 12:00:00").at_risk, 0);
        // Sunday: only Monday is left.
        assert_eq!(at("2024-04-07 00:00:00").at_risk, 1);
        assert_eq!(at("2024-04-08 23:59:59").at_risk, 1);
        assert_eq!(at("2024-04-08 23:59:59").expired, 0);
        let late = at("2024-04-09 00:00:00");
        assert_eq!((late.pending, late.at_risk, late.expired), (0, 0, 1));
    }

    #[test]
    fn a_stale_attempt_cannot_undo_a_newer_claim() {
        let lease_until = from_turkey(tr("2024-04-04 10:01:00"));
        let held_by_2 = upload(UploadState::InFlight { lease_until }, 2);
        let retry = UploadOutcome::Retry {
            retry_at: lease_until,
            code: None,
            message: "timeout".into(),
        };
        assert_eq!(after_answer(&held_by_2, 1, &retry), None);
        assert_eq!(
            after_answer(&held_by_2, 2, &retry).map(|(s, _)| s),
            Some(UploadState::Pending)
        );
        // İYS's acceptance counts whichever attempt brought it.
        let registered = UploadOutcome::Registered {
            transaction_id: "a".repeat(64),
            creation_date: tr("2024-04-04 10:00:30"),
        };
        assert!(after_answer(&held_by_2, 1, &registered).is_some());
        let done = upload(
            UploadState::Registered {
                transaction_id: "b".repeat(64),
                creation_date: tr("2024-04-04 10:00:20"),
            },
            2,
        );
        assert_eq!(
            after_answer(&done, 2, &registered),
            None,
            "first acceptance stays"
        );
    }

    #[test]
    fn claimable_needs_due_or_lapsed_lease_before_deadline() {
        let at = |t: &str| from_turkey(tr(t));
        let pending = upload(UploadState::Pending, 0);
        assert!(claimable(&pending, at("2024-04-04 10:00:00")));
        assert!(!claimable(&pending, at("2024-04-04 09:59:59")));
        assert!(claimable(&pending, at("2024-04-08 23:59:59")));
        assert!(!claimable(&pending, at("2024-04-09 00:00:00")));
        let leased = upload(
            UploadState::InFlight {
                lease_until: at("2024-04-05 10:00:00"),
            },
            1,
        );
        assert!(!claimable(&leased, at("2024-04-05 09:59:59")));
        assert!(claimable(&leased, at("2024-04-05 10:00:00")));
        assert!(!expirable(&leased, at("2024-04-05 10:00:00")));
    }
}
