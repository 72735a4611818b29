//! `iysgate.v1.ConsentRecords`: consents the company collected itself. Each is validated as
//! İYS validates it (the same rules and H-codes as the mock İYS's matrix, so bad input is
//! refused here, naming the field, before it could ever reach İYS), stored durably with its
//! evidence in the [`EvidenceStore`] before the answer, and applied to the index at once: a
//! RET is DENY on the next check, an ONAY is PENDING_REGISTRATION until İYS accepts it (the
//! uploader then applies the registered event, [`on_registered`]).
//!
//! On a replica (`serve --redis-url`) both are also published to the shared state before the
//! answer, so every replica's next check sees them through the change stream. Redis is not the
//! system of record: a failed publish is logged and counted, never refused (see
//! [`publish_for_replicas`] for how the record still gets there).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::check::store::Consents;
use crate::domain::recipient::normalise_recipient;
use crate::domain::{ConsentKey, ConsentRecord, Source};
use crate::iys::validate;
use crate::pb;
use crate::sync::redis::SharedState;
use crate::write::evidence::{Evidence, NewEvent, Recorder};

/// What recording needs: the evidence store, the checker (clock, calendar, the decision
/// after) and the index it applies to, and a replica's shared state.
pub struct Recording<'a> {
    pub store: &'a crate::write::evidence::EvidenceStore,
    pub checker: &'a crate::check::Checker,
    pub consents: &'a Consents,
    pub shared: Option<&'a SharedState>,
}

/// One consent recorded.
#[derive(Debug, Clone)]
pub struct RecordedConsent {
    pub id: crate::write::evidence::EventId,
    /// The idempotency key was seen before: this is the earlier event.
    pub duplicate: bool,
    /// The strict registration deadline (Turkey time).
    pub deadline: crate::domain::time::TurkeyTime,
    pub key: ConsentKey,
    /// What a commercial check of the key answers now (set by [`record_consents`]).
    pub answer: Option<crate::check::Answer>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Fields İYS would refuse; nothing was stored.
    #[error("{} field(s) refused; nothing was stored", .0.len())]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] crate::write::evidence::EvidenceError),
}

/// Records `inputs` for `brand` whole or not at all: each validated as İYS validates it
/// (`prefix(i)` names input `i`'s fields), the batch stored durably, then applied to the
/// index (a RET is DENY from the next check on; an ONAY pending) and published to the other
/// replicas before it returns.
///
/// # Errors
/// [`RecordError::Invalid`] with every violation, or the store's refusal; nothing is stored
/// then.
pub async fn record_consents(
    r: &Recording<'_>,
    brand: u32,
    prefix: &(dyn Fn(usize) -> String + Sync),
    inputs: &[pb::ConsentInput],
    recorder: &Recorder,
) -> Result<Vec<RecordedConsent>, RecordError> {
    let mut events = Vec::with_capacity(inputs.len());
    let mut violations = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let now = r.checker.clock().now_turkey();
        match new_event(
            brand,
            &prefix(i),
            input,
            recorder,
            now,
            r.checker.calendar(),
        ) {
            Ok(event) => events.push(event),
            Err(v) => violations.extend(v),
        }
    }
    if !violations.is_empty() {
        return Err(RecordError::Invalid(violations));
    }
    let recorded = r.store.record(&events, r.checker.clock().now_utc()).await?;
    let mut out = apply_recorded(r, brand, events, recorded).await;
    // What a commercial check of each key answers now, for the caller's reply (an import
    // applies the same way and needs no answer).
    for c in &mut out {
        let text = c.key.recipient.to_string();
        let query = crate::check::Query {
            brand,
            recipient: &text,
            channel: c.key.channel,
            recipient_type: c.key.recipient_type,
            retailer: None,
            purpose: crate::domain::Purpose::Commercial,
        };
        c.answer = r.checker.check(&query).ok();
    }
    Ok(out)
}

/// Applies events the store has just made durable (`recorded` in the same order as `events`)
/// to the index and publishes them to the other replicas: the one way a recorded consent
/// reaches the checks, for RecordConsent, the panel's form and the panel's import alike.
pub async fn apply_recorded(
    r: &Recording<'_>,
    brand: u32,
    events: Vec<NewEvent>,
    recorded: Vec<crate::write::evidence::Recorded>,
) -> Vec<RecordedConsent> {
    use crate::domain::{ConsentEvent, Registration};
    use crate::write::evidence::Recorded;
    let mut out = Vec::with_capacity(events.len());
    for (event, outcome) in events.into_iter().zip(recorded) {
        let (id, duplicate) = match outcome {
            Recorded::New(id) => (id, false),
            Recorded::Duplicate(id) => (id, true),
        };
        let deadline = r
            .checker
            .calendar()
            .registration_deadline(event.consent_date);
        let key = ConsentKey {
            brand,
            recipient: event.recipient.clone(),
            recipient_type: event.recipient_type,
            channel: event.channel,
        };
        // Applying an event twice changes nothing (the latest-event rule), so a duplicate
        // is applied too: harmless, and it heals an index that missed the first.
        let _ = r.consents.apply(
            key.clone(),
            ConsentEvent {
                status: event.status,
                source: event.source,
                consent_date: event.consent_date,
                registration: Registration::Pending,
                retailer_access: event.retailer_access,
            },
        );
        out.push(RecordedConsent {
            id,
            duplicate,
            deadline,
            key,
            answer: None,
        });
    }
    // Then every other replica: each key's current record here, which is the event just
    // recorded unless this replica already held a newer one.
    if let Some(shared) = r.shared {
        let current: Vec<(ConsentKey, ConsentRecord)> = out
            .iter()
            .filter_map(|c| r.consents.get(&c.key).map(|record| (c.key.clone(), record)))
            .collect();
        let published = publish_for_replicas(shared, &current, Published::Recorded);
        if tokio::time::timeout(PUBLISH_WAIT, published).await.is_err() {
            tracing::error!(
                brand,
                records = current.len(),
                "publishing to the other replicas took too long; answering without it"
            );
            metrics::counter!("iysgate_record_publish_failures_total", "what" => Published::Recorded.as_str())
                .increment(current.len() as u64);
        }
    }
    out
}

/// Most consents in one RecordConsents call (İYS's own batch limit).
pub const MAX_RECORDS: usize = 1_000;

/// One refused field: the request field path and İYS's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

fn status_word(value: i32) -> Option<&'static str> {
    match pb::ConsentStatus::try_from(value).ok()? {
        pb::ConsentStatus::Onay => Some("ONAY"),
        pb::ConsentStatus::Ret => Some("RET"),
        pb::ConsentStatus::Unspecified => None,
    }
}

/// The İYS body this input would be uploaded as, for İYS's own validation; `recipient` is the
/// normalised address when there is one.
fn iys_body(input: &pb::ConsentInput, recipient: &str) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("recipient".into(), json!(recipient));
    if let Ok(channel) = crate::pb::convert::channel(input.channel) {
        body.insert("type".into(), json!(channel.as_str()));
    }
    if let Some(status) = status_word(input.status) {
        body.insert("status".into(), json!(status));
    }
    if let Some(source) = u8::try_from(input.source).ok().and_then(Source::from_code) {
        body.insert("source".into(), json!(source.as_str()));
    }
    if !input.consent_date.is_empty() {
        body.insert("consentDate".into(), json!(input.consent_date));
    }
    if let Ok(rtype) = crate::pb::convert::recipient_type(input.recipient_type) {
        body.insert("recipientType".into(), json!(rtype.as_str()));
    }
    if !input.retailer_access.is_empty() {
        body.insert("retailerAccess".into(), json!(input.retailer_access));
    }
    Value::Object(body)
}

/// İYS's field name to this API's.
fn field_name(iys: &str) -> &str {
    match iys {
        "type" => "channel",
        "consentDate" => "consent_date",
        "recipientType" => "recipient_type",
        "retailerAccess" => "retailer_access",
        other => other,
    }
}

fn iys_violations(prefix: &str, errors: Vec<crate::iys::wire::IysError>) -> Vec<Violation> {
    errors
        .into_iter()
        .map(|e| {
            let field = e
                .location
                .as_ref()
                .and_then(|parts| {
                    parts.iter().find_map(|p| match p {
                        crate::iys::wire::LocationPart::Field(f) => Some(field_name(f).to_owned()),
                        crate::iys::wire::LocationPart::Index(_) => None,
                    })
                })
                .unwrap_or_default();
            Violation {
                field: format!("{prefix}{field}"),
                description: format!("{}: {}", e.code, e.message),
            }
        })
        .collect()
}

/// Validates one input as İYS would (at `now`, Turkey time) and turns it into the event to
/// store, or says what is wrong with each field (`prefix` names the item, e.g. `consent.`).
///
/// # Errors
/// Every violation found.
pub fn new_event(
    brand: u32,
    prefix: &str,
    input: &pb::ConsentInput,
    recorder: &Recorder,
    now: crate::domain::TurkeyTime,
    calendar: &crate::domain::BusinessCalendar,
) -> Result<NewEvent, Vec<Violation>> {
    let retailer_access = input
        .retailer_access
        .iter()
        .map(|&code| crate::pb::convert::narrow_code(code))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|why| {
            vec![Violation {
                field: format!("{prefix}retailer_access"),
                description: why.to_string(),
            }]
        })?;
    // The recipient is normalised first, by the code that normalises a check's recipient and
    // a synced record's (design rule 2), so "+90 532 999 12 34" is stored, uploaded and found
    // as +905329991234. İYS's validation then sees the form it will be sent.
    let normalised = crate::pb::convert::channel(input.channel)
        .ok()
        .map(|channel| normalise_recipient(&input.recipient, channel.address_kind()));
    let (recipient_text, recipient_refused) = match &normalised {
        Some(Ok(recipient)) => (recipient.to_string(), None),
        Some(Err(e)) => (
            input.recipient.clone(),
            Some(Violation {
                field: format!("{prefix}recipient"),
                description: e.to_string(),
            }),
        ),
        None => (input.recipient.clone(), None),
    };
    let valid = match validate::consent(&iys_body(input, &recipient_text), now, calendar) {
        Ok(valid) => valid,
        Err(validate::Invalid::Fields(errors)) => {
            // A recipient normalisation refused is named once, in our words (İYS's codes for
            // the raw text would only repeat it).
            let recipient_field = format!("{prefix}recipient");
            let named = recipient_refused.is_some();
            let mut violations: Vec<Violation> = recipient_refused.into_iter().collect();
            violations.extend(
                iys_violations(prefix, errors)
                    .into_iter()
                    .filter(|v| !named || v.field != recipient_field),
            );
            return Err(violations);
        }
        // Only retailer fields stop İYS's validation outright (H267, H085).
        Err(validate::Invalid::Fatal(e)) => {
            return Err(e
                .errors
                .into_iter()
                .map(|e| Violation {
                    field: format!("{prefix}retailer_access"),
                    description: format!("{}: {}", e.code, e.message),
                })
                .collect());
        }
    };
    let bad = |field: &str, why: &str| {
        vec![Violation {
            field: format!("{prefix}{field}"),
            description: why.to_owned(),
        }]
    };
    // İYS lets a TACIR record omit source and date; a record of evidence may not.
    let (Some(source), Some(consent_date)) = (
        valid.source.and_then(|s| s.parse::<Source>().ok()),
        valid.consent_date,
    ) else {
        return Err(bad(
            "consent_date",
            "source and consent_date are required to record evidence",
        ));
    };
    let channel =
        crate::pb::convert::channel(input.channel).map_err(|e| bad("channel", &e.reason))?;
    let recipient_type = crate::pb::convert::recipient_type(input.recipient_type)
        .map_err(|e| bad("recipient_type", &e.reason))?;
    let recipient = normalise_recipient(&input.recipient, channel.address_kind())
        .map_err(|e| bad("recipient", &e.to_string()))?;
    let status = valid.status;
    let evidence = input.evidence.clone().unwrap_or_default();
    Ok(NewEvent {
        brand,
        recipient,
        recipient_type,
        channel,
        status,
        source,
        consent_date,
        retailer_access,
        evidence: Evidence {
            method: evidence.method,
            location: evidence.location,
            document_ref: Some(evidence.document_ref).filter(|d| !d.is_empty()),
            capturing_system: evidence.capturing_system,
        },
        recorder: recorder.clone(),
        idempotency_key: input.idempotency_key.clone(),
    })
}

/// How long a RecordConsent(s) call waits for its publish to the other replicas before it
/// answers anyway (the events are durable; see [`publish_for_replicas`]). Redis answers a
/// publish in about a millisecond; this bounds the answer when it does not answer at all.
pub const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a publish to the other replicas carried, for its failure metric.
#[derive(Debug, Clone, Copy)]
pub enum Published {
    /// Consents just recorded (pending registration).
    Recorded,
    /// Recorded consents İYS has accepted.
    Registered,
    /// Changes the daily reconciliation found missing and applied.
    Reconciled,
}

impl Published {
    pub fn as_str(self) -> &'static str {
        match self {
            Published::Recorded => "recorded",
            Published::Registered => "registered",
            Published::Reconciled => "reconciled",
        }
    }
}

/// Publishes the current records of keys this process changed to the other replicas (each only
/// if newer than Redis's, so it is safe whatever they hold). The events are durable in the
/// evidence store already, so a failure is not the caller's: it is logged (brand codes only:
/// recipients are personal data) and counted in `iysgate_record_publish_failures_total`, and
/// the record reaches the others later, in the first of these ways: this replica republishes
/// its records pending registration when it next reloads the snapshot (after losing Redis,
/// which is what a failed publish usually means); the uploader's registration of the event is
/// published; the sync leader pulls the registered event from İYS. Until then the other
/// replicas hold the older record (if Redis is down for them too, their data ages and ALLOWs
/// turn UNAVAILABLE).
pub async fn publish_for_replicas(
    shared: &SharedState,
    records: &[(ConsentKey, ConsentRecord)],
    what: Published,
) {
    if records.is_empty() {
        return;
    }
    if let Err(e) = shared
        .publish_many(records.iter().map(|(k, r)| (k, r)))
        .await
    {
        let brands: std::collections::BTreeSet<u32> =
            records.iter().map(|(k, _)| k.brand).collect();
        tracing::error!(
            error = %e,
            records = records.len(),
            ?brands,
            what = what.as_str(),
            "publishing to the other replicas failed; the events are stored and applied here"
        );
        metrics::counter!("iysgate_record_publish_failures_total", "what" => what.as_str())
            .increment(records.len() as u64);
    }
}

/// Registrations waiting for their publish; past this the uploader's callback drops them
/// (counted as failed: the sync leader still brings them from İYS).
const REGISTERED_QUEUE: usize = 10_000;

/// The uploader's callback for a serving process: applies each event İYS accepted here (the
/// pending ONAY becomes ALLOW) and, on a replica, hands the key's current record to a task on
/// `tasks` that publishes them to the other replicas in batches. The callback is synchronous
/// and runs on the uploader's task, so it never waits for Redis; the publishing task ends once
/// the uploader, and with it the callback, is gone.
pub fn on_registered(
    consents: Arc<Consents>,
    shared: Option<SharedState>,
    tasks: &tokio_util::task::TaskTracker,
) -> crate::write::uploader::OnRegistered {
    let queue = shared.map(|shared| {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(ConsentKey, ConsentRecord)>(REGISTERED_QUEUE);
        tasks.spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 1_000).await > 0 {
                publish_for_replicas(&shared, &batch, Published::Registered).await;
                batch.clear();
            }
        });
        tx
    });
    Arc::new(move |key, event| {
        let _ = consents.apply(key.clone(), event);
        let (Some(queue), Some(record)) = (&queue, consents.get(&key)) else {
            return;
        };
        if queue.try_send((key, record)).is_err() {
            tracing::error!("too many registrations waiting for their publish; dropped one");
            metrics::counter!("iysgate_record_publish_failures_total", "what" => Published::Registered.as_str())
                .increment(1);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AddressKind;

    /// The decided ambiguous inputs (`domain::recipient::ambiguous_inputs`) get the same answer
    /// on every path: Check and GetConsent (`check::parse_recipient`), RecordConsent and the CSV
    /// import (`new_event`, which the import calls per row), and sync (`sync::to_event`).
    /// Filter's strings and packed phones are the domain functions the domain test covers.
    #[test]
    fn ambiguous_inputs_get_the_same_answer_on_every_path() {
        let calendar = crate::domain::BusinessCalendar::embedded();
        let now = crate::domain::time::parse_iys("2026-05-20 12:00:00").unwrap();
        let recorder = Recorder {
            client: "t".into(),
            key_sha256: None,
        };
        for (text, kind, expected) in crate::domain::recipient::ambiguous_inputs() {
            let (channel, pb_channel) = match kind {
                AddressKind::Phone => (crate::domain::Channel::Mesaj, pb::Channel::Mesaj),
                AddressKind::Email => (crate::domain::Channel::Eposta, pb::Channel::Eposta),
            };
            let accepted = expected.as_ref().ok().cloned();

            let check = crate::check::parse_recipient(&text, channel);
            assert_eq!(
                check.as_ref().ok().map(ToString::to_string),
                accepted,
                "check {text:?}"
            );
            if let Err(e) = check {
                assert_eq!(e.field, "recipient");
            }

            let input = pb::ConsentInput {
                recipient: text.clone(),
                channel: pb_channel.into(),
                status: pb::ConsentStatus::Ret.into(),
                source: pb::Source::HsWeb.into(),
                consent_date: "2026-05-20 09:00:00".into(),
                evidence: Some(pb::Evidence {
                    method: "m".into(),
                    location: "l".into(),
                    document_ref: String::new(),
                    capturing_system: "c".into(),
                }),
                idempotency_key: "k".into(),
                ..Default::default()
            };
            match new_event(1, "consent.", &input, &recorder, now, &calendar) {
                Ok(event) => assert_eq!(
                    Some(event.recipient.to_string()),
                    accepted,
                    "record {text:?}"
                ),
                Err(v) => {
                    assert_eq!(accepted, None, "record {text:?} refused: {v:?}");
                    assert_eq!(v.len(), 1, "{text:?}: {v:?}");
                    assert_eq!(v[0].field, "consent.recipient");
                }
            }

            let change = crate::sync::Change {
                recipient: text.clone(),
                recipient_type: "BIREYSEL".into(),
                channel: channel.as_str().into(),
                status: "RET".into(),
                source: "IYS_WEB".into(),
                consent_date: Some("2026-05-20 09:00:00".into()),
                creation_date: "2026-05-20 09:05:00".into(),
                transaction_id: "tx".into(),
            };
            match crate::sync::to_event(1, &change) {
                Ok((key, _)) => {
                    assert_eq!(Some(key.recipient.to_string()), accepted, "sync {text:?}");
                }
                Err(e) => {
                    assert_eq!(accepted, None, "sync {text:?} refused: {e}");
                    assert_eq!(e.field, "recipient");
                }
            }
        }
    }

    #[test]
    fn the_iys_body_carries_what_was_given() {
        let input = pb::ConsentInput {
            recipient: "+905321234567".into(),
            channel: pb::Channel::Mesaj.into(),
            status: pb::ConsentStatus::Ret.into(),
            source: pb::Source::HsWeb.into(),
            consent_date: "2026-05-20 10:00:00".into(),
            ..Default::default()
        };
        let body = iys_body(&input, &input.recipient);
        assert_eq!(body["type"], "MESAJ");
        assert_eq!(body["status"], "RET");
        assert_eq!(body["source"], "HS_WEB");
        assert_eq!(body["recipientType"], "BIREYSEL");
        assert!(body.get("retailerAccess").is_none());
        let empty = iys_body(&pb::ConsentInput::default(), "");
        assert!(empty.get("status").is_none() && empty.get("source").is_none());
        assert_eq!(field_name("consentDate"), "consent_date");
        assert_eq!(field_name("type"), "channel");
    }
}
