//! Answers checks from the in-memory index: validate and normalise the input with the same
//! code that normalises synced records, look the key up, and apply the decision rules.
//! Transport-free (the gRPC layer maps to and from it) and never waits on I/O: a check reads
//! only memory.

pub mod index;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::check::index::{
    ChannelState, ConsentIndex, EmailKey, EmailKeyer, IndexAddress, IndexStatus,
};
use crate::domain::decision::{CheckInput, Stale, decide};
use crate::domain::recipient::{self, normalise_email_into};
use crate::domain::time::from_minute;
use crate::domain::{
    AddressKind, BrandPolicy, BusinessCalendar, Channel, Clock, Decision, PhoneNumber, Purpose,
    Reason, Recipient, RecipientType, RecordStatus, RecordView, Verdict,
};

/// When the index last had confirmation that it is in step with its source (rule 7).
#[derive(Debug, Default)]
pub struct Freshness {
    loaded: AtomicBool,
    confirmed_micros: AtomicI64,
}

impl Freshness {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index is in step with its source as of `at`.
    pub fn mark_confirmed(&self, at: DateTime<Utc>) {
        self.confirmed_micros
            .fetch_max(at.timestamp_micros(), Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Age of the data at `now`; `None` until the index has been loaded once.
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        if !self.loaded.load(Ordering::Acquire) {
            return None;
        }
        let confirmed = self.confirmed_micros.load(Ordering::Acquire);
        let micros = now.timestamp_micros().saturating_sub(confirmed).max(0);
        Some(Duration::from_micros(micros as u64))
    }
}

/// One check, as the caller asked it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub brand: u32,
    pub recipient: &'a str,
    pub channel: Channel,
    pub recipient_type: RecipientType,
    pub retailer: Option<u32>,
    pub purpose: Purpose,
}

/// A decided check.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub recipient: Recipient,
    pub data_age: Duration,
}

/// Input that cannot be checked, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// Would ALLOW, but the data is not loaded or older than `max_staleness`.
    #[error("consent data is stale (age {age:?}); retry")]
    Unavailable { age: Option<Duration> },
}

/// What one item of a filter chunk came to, when it was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    Denied(Reason),
    Invalid,
}

/// The answer to one filter chunk: a bitmap of allowed items plus the reason for every other.
#[derive(Debug, Default, Clone)]
pub struct FilterOutcome {
    /// Bit i (byte i/8, bit i%8) set = item i allowed.
    pub allowed: Vec<u8>,
    pub allowed_count: u32,
    pub rejected: Vec<(u32, ItemOutcome)>,
    /// Decisions by reason, for metrics; index = `Reason as usize`.
    pub reason_counts: [u32; Reason::ALL.len()],
    pub data_age: Duration,
    scratch: ChunkScratch,
}

impl FilterOutcome {
    fn reset(&mut self, len: usize) {
        self.scratch.clear();
        self.allowed.clear();
        self.allowed.resize(len.div_ceil(8), 0);
        self.allowed_count = 0;
        self.rejected.clear();
        self.reason_counts = [0; Reason::ALL.len()];
    }

    fn record(&mut self, i: usize, outcome: Result<Reason, ItemOutcome>) {
        match outcome {
            Ok(reason) => {
                self.allowed[i / 8] |= 1 << (i % 8);
                self.allowed_count += 1;
                self.reason_counts[reason as usize] += 1;
            }
            Err(item) => {
                if let ItemOutcome::Denied(reason) = item {
                    self.reason_counts[reason as usize] += 1;
                }
                self.rejected.push((i as u32, item));
            }
        }
    }
}

/// The settings shared by every item of a filter chunk.
#[derive(Debug, Clone, Copy)]
pub struct FilterSpec {
    pub brand: u32,
    pub channel: Channel,
    pub recipient_type: RecipientType,
    pub retailer: Option<u32>,
    pub purpose: Purpose,
}

/// Everything a check reads. Cheap to share: clone the `Arc`.
pub struct Checker {
    index: Arc<ConsentIndex>,
    keyer: Arc<EmailKeyer>,
    freshness: Arc<Freshness>,
    policies: ArcSwap<HashMap<u32, BrandPolicy, foldhash::fast::RandomState>>,
    calendar: Arc<BusinessCalendar>,
    clock: Arc<dyn Clock>,
    max_staleness: Duration,
}

impl Checker {
    pub fn new(
        index: Arc<ConsentIndex>,
        keyer: Arc<EmailKeyer>,
        freshness: Arc<Freshness>,
        calendar: Arc<BusinessCalendar>,
        clock: Arc<dyn Clock>,
        max_staleness: Duration,
    ) -> Self {
        Self {
            index,
            keyer,
            freshness,
            policies: ArcSwap::from_pointee(HashMap::default()),
            calendar,
            clock,
            max_staleness,
        }
    }

    /// Replaces the brand policies; brands not listed get the default (no opt-out TACIR).
    pub fn set_policies(&self, policies: impl IntoIterator<Item = (u32, BrandPolicy)>) {
        self.policies
            .store(Arc::new(policies.into_iter().collect()));
    }

    pub fn policy(&self, brand: u32) -> BrandPolicy {
        self.policies
            .load()
            .get(&brand)
            .copied()
            .unwrap_or_default()
    }

    /// The brand policies set now (brands not listed have the default).
    pub fn policies(&self) -> Vec<(u32, BrandPolicy)> {
        self.policies.load().iter().map(|(b, p)| (*b, *p)).collect()
    }

    pub fn calendar(&self) -> &BusinessCalendar {
        &self.calendar
    }

    pub fn clock_arc(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Age of the index data now, and whether it may still ALLOW.
    pub fn data_age(&self) -> (Option<Duration>, bool) {
        self.data_age_at(self.clock.now_utc())
    }

    fn data_age_at(&self, now: DateTime<Utc>) -> (Option<Duration>, bool) {
        let age = self.freshness.age(now);
        let fresh = age.is_some_and(|a| a <= self.max_staleness);
        (age, fresh)
    }

    /// One clock read per check (or chunk): its data age and its Turkey-time "now".
    fn now(&self) -> (Option<Duration>, bool, crate::domain::TurkeyTime) {
        let now = self.clock.now_utc();
        let (age, fresh) = self.data_age_at(now);
        (age, fresh, crate::domain::time::to_turkey(now))
    }

    /// Checks one recipient.
    pub fn check(&self, q: &Query<'_>) -> Result<Answer, CheckError> {
        let recipient = parse_recipient(q.recipient, q.channel)?;
        let address = self.address(&recipient, q.recipient_type);
        let (age, fresh, now) = self.now();
        let state = self
            .index
            .state(q.brand, q.recipient_type, address, q.channel);
        let input = CheckInput {
            recipient_type: q.recipient_type,
            purpose: q.purpose,
            retailer: q.retailer,
            record: record_view(state),
            policy: self.policy(q.brand),
            now,
            fresh,
        };
        let decision = decide(&input, &self.calendar, |retailer| {
            self.index
                .retailer_allowed(q.brand, q.recipient_type, address, q.channel, retailer)
        })
        .map_err(|Stale| CheckError::Unavailable { age })?;
        Ok(Answer {
            decision,
            recipient,
            data_age: age.unwrap_or_default(),
        })
    }

    /// The index key of a normalised recipient.
    pub fn address(&self, recipient: &Recipient, rtype: RecipientType) -> IndexAddress {
        match recipient {
            Recipient::Phone(p) => IndexAddress::Phone(p.digits()),
            Recipient::Email(e) => IndexAddress::Email(self.keyer.key(rtype, e.as_str())),
        }
    }

    /// Filters a chunk of phone numbers given as E.164 digits (the packed form).
    pub fn filter_phones(
        &self,
        spec: &FilterSpec,
        phones: &[u64],
        out: &mut FilterOutcome,
    ) -> Result<(), CheckError> {
        check_kind(spec.channel, AddressKind::Phone, "phones")?;
        let ctx = self.chunk_context(spec, out, phones.len());
        let scratch = &mut out.scratch;
        for (i, &digits) in phones.iter().enumerate() {
            if let Ok(phone) = PhoneNumber::from_e164_digits(digits) {
                scratch.positions.push(i as u32);
                scratch.phones.push(phone.digits());
            }
        }
        self.decide_chunk(&ctx, spec, phones.len(), out)
    }

    /// Filters a chunk of recipients given as text. E-mails are normalised into one reused
    /// buffer, so the chunk costs no heap allocation per recipient.
    pub fn filter_recipients<S: AsRef<str>>(
        &self,
        spec: &FilterSpec,
        recipients: &[S],
        out: &mut FilterOutcome,
    ) -> Result<(), CheckError> {
        let ctx = self.chunk_context(spec, out, recipients.len());
        let scratch = &mut out.scratch;
        for (i, text) in recipients.iter().enumerate() {
            match spec.channel.address_kind() {
                AddressKind::Phone => {
                    if let Ok(p) = recipient::normalise_phone(text.as_ref()) {
                        scratch.positions.push(i as u32);
                        scratch.phones.push(p.digits());
                    }
                }
                AddressKind::Email => {
                    if let Ok(e) = normalise_email_into(text.as_ref(), &mut scratch.text) {
                        let key = self.keyer.key(spec.recipient_type, e);
                        scratch.positions.push(i as u32);
                        scratch.emails.push(key);
                    }
                }
            }
        }
        self.decide_chunk(&ctx, spec, recipients.len(), out)
    }

    fn chunk_context(
        &self,
        spec: &FilterSpec,
        out: &mut FilterOutcome,
        len: usize,
    ) -> ChunkContext {
        out.reset(len);
        let (age, fresh, now) = self.now();
        out.data_age = age.unwrap_or_default();
        ChunkContext {
            policy: self.policy(spec.brand),
            now,
            fresh,
            age,
        }
    }

    /// Looks up every valid item of the chunk at once (the index takes its locks once per
    /// run of keys), then decides each item in order; items that did not parse are INVALID.
    fn decide_chunk(
        &self,
        ctx: &ChunkContext,
        spec: &FilterSpec,
        len: usize,
        out: &mut FilterOutcome,
    ) -> Result<(), CheckError> {
        let mut scratch = std::mem::take(&mut out.scratch);
        let slot = usize::from(spec.channel == Channel::Mesaj);
        match spec.channel.address_kind() {
            AddressKind::Phone => {
                let ChunkScratch {
                    phones,
                    phone_states,
                    ..
                } = &mut scratch;
                self.index
                    .phones(spec.brand, spec.recipient_type, phones, phone_states);
            }
            AddressKind::Email => {
                let ChunkScratch {
                    emails,
                    email_states,
                    ..
                } = &mut scratch;
                self.index.emails(spec.brand, emails, email_states);
            }
        }
        let mut valid = 0;
        let mut result = Ok(());
        for i in 0..len {
            if scratch.positions.get(valid) != Some(&(i as u32)) {
                out.record(i, Err(ItemOutcome::Invalid));
                continue;
            }
            let (state, address) = match spec.channel.address_kind() {
                AddressKind::Phone => (
                    scratch.phone_states[valid][slot],
                    IndexAddress::Phone(scratch.phones[valid]),
                ),
                AddressKind::Email => (
                    scratch.email_states[valid],
                    IndexAddress::Email(scratch.emails[valid]),
                ),
            };
            valid += 1;
            match self.decide_item(ctx, spec, state, address) {
                Ok(outcome) => out.record(i, outcome),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        out.scratch = scratch;
        result
    }

    fn decide_item(
        &self,
        ctx: &ChunkContext,
        spec: &FilterSpec,
        state: ChannelState,
        address: IndexAddress,
    ) -> Result<Result<Reason, ItemOutcome>, CheckError> {
        let input = CheckInput {
            recipient_type: spec.recipient_type,
            purpose: spec.purpose,
            retailer: spec.retailer,
            record: record_view(state),
            policy: ctx.policy,
            now: ctx.now,
            fresh: ctx.fresh,
        };
        let decision = decide(&input, &self.calendar, |retailer| {
            self.index.retailer_allowed(
                spec.brand,
                spec.recipient_type,
                address,
                spec.channel,
                retailer,
            )
        })
        .map_err(|Stale| CheckError::Unavailable { age: ctx.age })?;
        Ok(match decision.verdict {
            Verdict::Allow | Verdict::AllowExempt => Ok(decision.reason),
            Verdict::Deny => Err(ItemOutcome::Denied(decision.reason)),
        })
    }
}

/// Buffers a filter chunk reuses, so a stream allocates only for its first chunk.
#[derive(Debug, Default, Clone)]
struct ChunkScratch {
    /// Positions of the items that parsed, ascending.
    positions: Vec<u32>,
    phones: Vec<u64>,
    emails: Vec<EmailKey>,
    phone_states: Vec<[ChannelState; 2]>,
    email_states: Vec<ChannelState>,
    text: String,
}

impl ChunkScratch {
    fn clear(&mut self) {
        self.positions.clear();
        self.phones.clear();
        self.emails.clear();
        self.phone_states.clear();
        self.email_states.clear();
    }
}

struct ChunkContext {
    policy: BrandPolicy,
    now: crate::domain::TurkeyTime,
    fresh: bool,
    age: Option<Duration>,
}

/// Normalises a recipient for a channel, naming the field on failure.
pub fn parse_recipient(text: &str, channel: Channel) -> Result<Recipient, InvalidField> {
    let kind = channel.address_kind();
    recipient::normalise_recipient(text, kind).map_err(|err| InvalidField {
        field: "recipient",
        reason: match kind {
            AddressKind::Phone => format!("{channel} needs a phone number: {err}"),
            AddressKind::Email => format!("{channel} needs an e-mail address: {err}"),
        },
    })
}

fn check_kind(
    channel: Channel,
    kind: AddressKind,
    field: &'static str,
) -> Result<(), InvalidField> {
    if channel.address_kind() == kind {
        Ok(())
    } else {
        Err(InvalidField {
            field,
            reason: format!("{channel} does not take phone numbers"),
        })
    }
}

/// What the index holds for one channel, as the decision rules see it.
pub fn record_view(state: ChannelState) -> Option<RecordView> {
    let status = match state.status() {
        IndexStatus::None => return None,
        IndexStatus::Onay => RecordStatus::Onay,
        IndexStatus::Ret => RecordStatus::Ret,
        IndexStatus::OnayPending => RecordStatus::OnayPending,
        IndexStatus::RetPending => RecordStatus::RetPending,
    };
    Some(RecordView {
        status,
        source: state.source(),
        consent_date: from_minute(state.consent_minute()),
    })
}
