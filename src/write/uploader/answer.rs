//! How one İYS answer becomes the outcome the evidence store records, and when a retry may
//! come. Pure: no I/O, no clock reads; `now` and the random draw are parameters.
//!
//! The rules (API-NOTES §3, §5.2, §8, §10):
//! - **Registered**: a 200 from v2 single add, or a batch item `success`.
//! - **Rejected**, for good: a refusal of the consent itself, i.e. a 4xx with an H-code
//!   about its fields or its history (H110–H121, H155–H162, H174, H175, H178, H408, H462,
//!   H463, H467, …).
//! - **Retry** with backoff: anything that says nothing about the consent: 5xx, timeouts and
//!   connection errors, 429 (after at least its `Retry-After`), token trouble, and problems of
//!   the provider's account or of this deployment (401, 403, unknown iysCode/brandCode, the
//!   subscription quota H525, a missing client). Rejecting on those would drop a valid
//!   consent because of a configuration mistake; they wait at the backoff cap instead.
//! - **H174** ("the status is already that") is not decided by the answer alone: the caller
//!   asks İYS for the key's current record and [`settle_h174`] reads it. İYS's record is
//!   *this* consent (an answer lost in a crash): registered. Another record of the same
//!   status (an ONAY İYS held before this one was collected): **superseded** by it, since
//!   that record is in force and the consent is not lost; the index then applies it with
//!   İYS's transactionId and creationDate. A record of another status: it changed in
//!   between, so retry.
//!
//! Over 600 lines on purpose: the classification of every İYS answer, with a unit test per answer.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::time::{format_iys, parse_iys};
use crate::domain::{ConsentEvent, ConsentKey, Registration, TurkeyTime};
use crate::iys::client::{ConsentRequest, ErrorItem, IysError, StatusRecord};
use crate::write::evidence::{NewEvent, StoredEvent, UploadAnswer, UploadOutcome, UploadState};

/// İYS's "the key already has this status" refusal.
pub(crate) const H174: &str = "H174";

/// Codes about the provider's account or this deployment's configuration, not the consent:
/// unknown provider or brand (H001, H018), code not the user's (H353), subscription
/// problems (H520, H521, H524, H586) and the consent quota (H525).
const ACCOUNT_CODES: [&str; 8] = [
    "H001", "H018", "H353", "H520", "H521", "H524", "H586", "H525",
];

/// Codes of İYS-side failures that a batch item can carry instead of an HTTP 5xx: server
/// errors (H015, H100–H107, H412, H470, H476) and the timeout H192.
const SERVER_CODES: [&str; 13] = [
    "H015", "H100", "H101", "H102", "H103", "H104", "H105", "H106", "H107", "H412", "H470", "H476",
    "H192",
];

/// The longest refusal text kept: İYS's messages are short catalogue texts.
const MAX_MESSAGE: usize = 500;

/// What one answer means for the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Registered {
        transaction_id: String,
        creation_date: String,
    },
    /// H174: decided by a status query.
    SameStatus {
        code: String,
        message: String,
    },
    Rejected {
        code: String,
        message: String,
    },
    /// H174 over İYS's record of the same status from another movement, in force.
    Superseded {
        transaction_id: String,
        creation_date: String,
        code: String,
        message: String,
    },
    Retry {
        code: Option<String>,
        message: String,
        /// İYS's `Retry-After`, the earliest a retry may come.
        after: Option<Duration>,
        /// A problem of the account or the deployment: retry at the backoff cap.
        account: bool,
    },
}

/// An answer and the HTTP status it came with, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    pub http_status: Option<u16>,
    pub verdict: Verdict,
}

/// Reads a failed call to İYS.
pub(crate) fn read_error(error: &IysError) -> Reading {
    let retry = |http_status: Option<u16>, code: Option<String>, account: bool| Reading {
        http_status,
        verdict: Verdict::Retry {
            code,
            message: error.to_string(),
            after: None,
            account,
        },
    };
    match error {
        IysError::Business { status, errors } => {
            let first = errors
                .iter()
                .map(|e| e.code.as_str())
                .find(|c| !c.is_empty());
            let account = matches!(status, 401 | 403)
                || errors
                    .iter()
                    .any(|e| ACCOUNT_CODES.contains(&e.code.as_str()));
            if account {
                return retry(Some(*status), first.map(str::to_owned), true);
            }
            Reading {
                http_status: Some(*status),
                verdict: refusal(*status, errors),
            }
        }
        IysError::RateLimited { code, retry_after } => Reading {
            http_status: Some(429),
            verdict: Verdict::Retry {
                code: code.clone(),
                message: error.to_string(),
                after: *retry_after,
                account: false,
            },
        },
        IysError::Server { status, errors } => {
            retry(Some(*status), errors.first().map(|e| e.code.clone()), false)
        }
        IysError::Unauthorized { .. } => retry(Some(401), Some("H351".into()), true),
        IysError::Auth { status, .. } => retry(None, None, *status < 500),
        IysError::UnexpectedStatus { status } => retry(Some(*status), None, false),
        // Wrong settings or a request this code built wrongly: an operator must look, and
        // the consent itself is still valid.
        IysError::Config(_) | IysError::InvalidRequest(_) => retry(None, None, true),
        IysError::TokenHalted { .. }
        | IysError::TokenCooldown { .. }
        | IysError::TokenBusy
        | IysError::TokenStore(_)
        | IysError::Timeout(_)
        | IysError::Transport(_)
        | IysError::Decode(_) => retry(None, None, false),
    }
}

/// A 4xx refusal of the consent itself: H174 goes to the status check, every other code is
/// final.
fn refusal(status: u16, errors: &[ErrorItem]) -> Verdict {
    let code = errors
        .iter()
        .map(|e| e.code.as_str())
        .find(|c| !c.is_empty())
        .map_or_else(|| format!("HTTP{status}"), str::to_owned);
    let message = describe(errors);
    if code == H174 {
        Verdict::SameStatus { code, message }
    } else {
        Verdict::Rejected { code, message }
    }
}

/// Reads one failed item of a batch (`status: failure`, `error: {code, message}`).
pub(crate) fn read_item_error(error: Option<&ErrorItem>) -> Verdict {
    let Some(error) = error.filter(|e| !e.code.is_empty()) else {
        return Verdict::Retry {
            code: None,
            message: "batch item failed without an error code".into(),
            after: None,
            account: false,
        };
    };
    let code = error.code.as_str();
    if SERVER_CODES.contains(&code) || ACCOUNT_CODES.contains(&code) {
        return Verdict::Retry {
            code: Some(error.code.clone()),
            message: describe(std::slice::from_ref(error)),
            after: None,
            account: ACCOUNT_CODES.contains(&code),
        };
    }
    refusal(200, std::slice::from_ref(error))
}

/// Whether a batch validation error refuses its item for good (rather than the batch or
/// the account): an H194 duplicate in the list is this uploader's doing, not the consent's.
pub(crate) fn refuses_item(error: &ErrorItem) -> bool {
    !ACCOUNT_CODES.contains(&error.code.as_str()) && error.code != "H194"
}

/// `H121: message; H160: message`, capped. Only codes and İYS's own texts: an error's
/// `value` (which may echo the recipient) is never used.
pub(crate) fn describe(errors: &[ErrorItem]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let code = if e.code.is_empty() { "?" } else { &e.code };
        let _ = write!(out, "{code}: {}", e.message);
    }
    if out.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

pub use crate::backoff::Backoff;

/// The answer to record for a reading of attempt `attempt` at `now`. `Registered` needs a
/// creation date İYS sent; an unreadable one is taken as `now_turkey` (İYS accepted it,
/// and a re-send would return the same transaction).
pub(crate) fn to_answer(
    reading: Reading,
    attempt: u32,
    now: DateTime<Utc>,
    now_turkey: TurkeyTime,
    backoff: &Backoff,
    random: u64,
) -> UploadAnswer {
    let outcome = match reading.verdict {
        Verdict::Registered {
            transaction_id,
            creation_date,
        } => {
            let creation_date = parse_iys(&creation_date).unwrap_or_else(|| {
                tracing::warn!("İYS sent an unreadable creationDate; using the current time");
                now_turkey
            });
            UploadOutcome::Registered {
                transaction_id,
                creation_date,
            }
        }
        Verdict::Superseded {
            transaction_id,
            creation_date,
            code,
            message,
        } => {
            let creation_date = parse_iys(&creation_date).unwrap_or_else(|| {
                tracing::warn!("İYS sent an unreadable creationDate; using the current time");
                now_turkey
            });
            UploadOutcome::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            }
        }
        Verdict::Rejected { code, message } | Verdict::SameStatus { code, message } => {
            UploadOutcome::Rejected { code, message }
        }
        Verdict::Retry {
            code,
            message,
            after,
            account,
        } => {
            let wait = backoff
                .delay(attempt, account, random)
                .max(after.unwrap_or_default());
            let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            UploadOutcome::Retry {
                retry_at: now.checked_add_signed(wait).unwrap_or(now),
                code,
                message,
            }
        }
    };
    UploadAnswer {
        http_status: reading.http_status,
        outcome,
    }
}

/// The İYS body for a collected event. Every field is sent, `recipientType` too: a re-send
/// of the same event is then byte-for-byte the same request, which is what makes İYS's v2
/// single add return the first answer again.
pub fn consent_request(event: &NewEvent) -> ConsentRequest {
    ConsentRequest {
        recipient: event.recipient.to_string(),
        channel: event.channel.as_str().to_owned(),
        source: Some(event.source.as_str().to_owned()),
        status: event.status.as_str().to_owned(),
        consent_date: Some(format_iys(event.consent_date)),
        recipient_type: Some(event.recipient_type.as_str().to_owned()),
        retailer_code: None,
        retailer_access: (!event.retailer_access.is_empty()).then(|| {
            event
                .retailer_access
                .iter()
                .map(|&r| u64::from(r))
                .collect()
        }),
    }
}

/// What an H174 (`code`, `message`) to `event` means, given İYS's current record of the key:
/// - this very event (status, consent date to the second, and source), e.g. after an answer
///   lost in a crash: registered, with its transaction id and creation date;
/// - another record of the same status: superseded by that record, which is in force;
/// - another status: the record changed between the add and the query, so retry;
/// - a record without its transaction id or creation date: retry (İYS always sends both).
pub(crate) fn settle_h174(
    record: &StatusRecord,
    event: &NewEvent,
    code: String,
    message: String,
) -> Verdict {
    let retry = |message: &str| Verdict::Retry {
        code: Some(H174.to_owned()),
        message: message.to_owned(),
        after: None,
        account: false,
    };
    if record.status != event.status.as_str() {
        return retry("İYS answered H174 but its record of the key has another status now");
    }
    let (Some(transaction_id), Some(creation_date)) =
        (record.transaction_id.clone(), record.creation_date.clone())
    else {
        return retry("İYS answered H174 but its record lacks transactionId or creationDate");
    };
    let same = record.consent_date.as_deref() == Some(format_iys(event.consent_date).as_str())
        && record.source.as_deref() == Some(event.source.as_str());
    if same {
        Verdict::Registered {
            transaction_id,
            creation_date,
        }
    } else {
        Verdict::Superseded {
            transaction_id,
            creation_date,
            code,
            message,
        }
    }
}

/// The key of an event, as the serving index keeps it.
pub fn key_of(event: &NewEvent) -> ConsentKey {
    ConsentKey {
        brand: event.brand,
        recipient: event.recipient.clone(),
        recipient_type: event.recipient_type,
        channel: event.channel,
    }
}

/// The event the serving index applies once İYS accepted `event`: the same consent,
/// registered. By the latest-event rule it supersedes the pending event it confirms.
pub fn registered_event(
    event: &NewEvent,
    transaction_id: &str,
    creation_date: TurkeyTime,
) -> (ConsentKey, ConsentEvent) {
    let consent = ConsentEvent {
        status: event.status,
        source: event.source,
        consent_date: event.consent_date,
        registration: Registration::Registered {
            creation_date,
            transaction_id: transaction_id.into(),
        },
        retailer_access: event.retailer_access.clone(),
    };
    (key_of(event), consent)
}

/// The event the serving index holds for a stored upload İYS settled, or `None` while it is
/// open or when İYS never took it (rejected, expired):
/// - registered: the event as registered ([`registered_event`]);
/// - superseded: the registered form of İYS's record in force, under its transactionId and
///   creationDate. It keeps the collected event's consent date, because the index keeps one
///   event per key and orders by consent date first: İYS's record may be older than the
///   pending event it must replace, and its ONAY was in force on both dates. No retailer
///   access: the collected event's grants never reached İYS, so a check naming a retailer
///   stays on the safe side.
pub fn settled_event(stored: &StoredEvent) -> Option<(ConsentKey, ConsentEvent)> {
    match &stored.upload.state {
        UploadState::Registered {
            transaction_id,
            creation_date,
        } => Some(registered_event(
            &stored.event,
            transaction_id,
            *creation_date,
        )),
        UploadState::Superseded {
            transaction_id,
            creation_date,
            ..
        } => {
            let (key, mut event) = registered_event(&stored.event, transaction_id, *creation_date);
            event.retailer_access.clear();
            Some((key, event))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(code: &str) -> ErrorItem {
        ErrorItem {
            code: code.into(),
            message: format!("text of {code}"),
            value: Some(serde_json::json!("+905321234567")),
            ..ErrorItem::default()
        }
    }

    fn business(status: u16, codes: &[&str]) -> IysError {
        IysError::Business {
            status,
            errors: codes.iter().map(|c| item(c)).collect(),
        }
    }

    #[test]
    fn refusals_of_the_consent_are_final_and_name_the_code() {
        for (status, code) in [(400, "H175"), (400, "H178"), (422, "H467"), (422, "H162")] {
            let reading = read_error(&business(status, &[code]));
            assert_eq!(reading.http_status, Some(status));
            match reading.verdict {
                Verdict::Rejected { code: got, message } => {
                    assert_eq!(got, code);
                    assert!(
                        message.starts_with(&format!("{code}: text of")),
                        "{message}"
                    );
                    assert!(!message.contains("532"), "no recipient in {message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        assert!(matches!(
            read_error(&business(400, &["H174"])).verdict,
            Verdict::SameStatus { .. }
        ));
        // A 4xx without a code is still final, named by its status.
        assert!(matches!(
            read_error(&business(400, &[])).verdict,
            Verdict::Rejected { code, .. } if code == "HTTP400"
        ));
    }

    #[test]
    fn account_and_transport_problems_are_retried() {
        let cases = [
            (business(403, &["H353"]), true),
            (business(422, &["H525"]), true),
            (business(404, &["H018"]), true),
            (IysError::Unauthorized { errors: vec![] }, true),
            (IysError::Config("x".into()), true),
            (
                IysError::Server {
                    status: 503,
                    errors: vec![item("H192")],
                },
                false,
            ),
            (IysError::Timeout(Duration::from_secs(1)), false),
            (IysError::Transport("reset".into()), false),
            (IysError::TokenBusy, false),
        ];
        for (error, want_account) in cases {
            match read_error(&error).verdict {
                Verdict::Retry { account, .. } => assert_eq!(account, want_account, "{error}"),
                other => panic!("{error}: {other:?}"),
            }
        }
        let limited = read_error(&IysError::RateLimited {
            code: Some("H124".into()),
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(limited.http_status, Some(429));
        assert!(matches!(
            limited.verdict,
            Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
    }

    #[test]
    fn batch_item_errors() {
        assert!(matches!(
            read_item_error(Some(&item("H175"))),
            Verdict::Rejected { .. }
        ));
        assert!(matches!(
            read_item_error(Some(&item("H174"))),
            Verdict::SameStatus { .. }
        ));
        assert!(matches!(
            read_item_error(Some(&item("H015"))),
            Verdict::Retry { .. }
        ));
        assert!(matches!(read_item_error(None), Verdict::Retry { .. }));
        assert!(refuses_item(&item("H162")));
        assert!(!refuses_item(&item("H194")));
        assert!(!refuses_item(&item("H525")));
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_mins(1),
        };
        // Equal jitter: within [ceiling/2, ceiling].
        for random in [0, 1, 12_345, u64::MAX] {
            for (attempt, ceiling) in [(1, 2), (2, 4), (3, 8), (6, 60), (40, 60)] {
                let d = backoff.delay(attempt, false, random);
                let ceiling = Duration::from_secs(ceiling);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
            }
            let account = backoff.delay(1, true, random);
            assert!(account >= Duration::from_secs(30), "{account:?}");
        }
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let answer = to_answer(
            Reading {
                http_status: Some(429),
                verdict: Verdict::Retry {
                    code: Some("H124".into()),
                    message: "limited".into(),
                    after: Some(Duration::from_mins(10)),
                    account: false,
                },
            },
            1,
            now,
            crate::domain::time::to_turkey(now),
            &backoff,
            7,
        );
        match answer.outcome {
            UploadOutcome::Retry { retry_at, .. } => {
                assert_eq!(retry_at, now + chrono::Duration::seconds(600));
            }
            other => panic!("{other:?}"),
        }
    }

    fn collected(consent_date: &str) -> NewEvent {
        use crate::domain::{Channel, ConsentStatus, RecipientType, Source};
        NewEvent {
            brand: 600_001,
            recipient: crate::domain::recipient::normalise_recipient(
                "+905321234567",
                Channel::Mesaj.address_kind(),
            )
            .unwrap(),
            recipient_type: RecipientType::Bireysel,
            channel: Channel::Mesaj,
            status: ConsentStatus::Onay,
            source: Source::HsWeb,
            consent_date: parse_iys(consent_date).unwrap(),
            retailer_access: vec![12_345_678],
            evidence: crate::write::evidence::Evidence {
                method: "web form".into(),
                location: "shop".into(),
                document_ref: None,
                capturing_system: "web".into(),
            },
            recorder: crate::write::evidence::Recorder {
                client: "web".into(),
                key_sha256: None,
            },
            idempotency_key: "k".into(),
        }
    }

    fn in_iys(status: &str, consent_date: &str, transaction_id: Option<&str>) -> StatusRecord {
        serde_json::from_value(serde_json::json!({
            "recipient": "+905321234567", "recipientType": "BIREYSEL", "type": "MESAJ",
            "status": status, "source": "HS_WEB", "consentDate": consent_date,
            "creationDate": "2026-04-01 12:00:00", "transactionId": transaction_id,
        }))
        .unwrap()
    }

    /// İYS's record decides an H174: this event → registered; another record of the same
    /// status → superseded by it (in force, not a refusal); another status or a record
    /// without its ids → retry.
    #[test]
    fn h174_is_settled_by_iys_record() {
        let event = collected("2026-05-20 09:00:00");
        let tx = "a".repeat(64);
        let settle =
            |record: &StatusRecord| settle_h174(record, &event, H174.into(), "H174: text".into());
        assert_eq!(
            settle(&in_iys("ONAY", "2026-05-20 09:00:00", Some(&tx))),
            Verdict::Registered {
                transaction_id: tx.clone(),
                creation_date: "2026-04-01 12:00:00".into(),
            }
        );
        assert_eq!(
            settle(&in_iys("ONAY", "2026-04-01 11:00:00", Some(&tx))),
            Verdict::Superseded {
                transaction_id: tx.clone(),
                creation_date: "2026-04-01 12:00:00".into(),
                code: H174.into(),
                message: "H174: text".into(),
            }
        );
        for record in [
            in_iys("RET", "2026-04-01 11:00:00", Some(&tx)),
            in_iys("ONAY", "2026-04-01 11:00:00", None),
        ] {
            assert!(matches!(
                settle(&record),
                Verdict::Retry { account: false, .. }
            ));
        }
    }

    /// A superseded upload gives the index a registered event under İYS's transaction, on
    /// the collected event's consent date (so it replaces the pending one), with no retailer
    /// access (the collected grants never reached İYS).
    #[test]
    fn a_superseded_upload_settles_the_index_on_iys_transaction() {
        let event = collected("2026-05-20 09:00:00");
        let creation_date = parse_iys("2026-04-01 12:00:00").unwrap();
        let mut stored = StoredEvent {
            id: crate::write::evidence::EventId(1),
            event: event.clone(),
            recorded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            upload: crate::write::evidence::Upload {
                state: UploadState::Pending,
                deadline: parse_iys("2026-05-25 23:59:59").unwrap(),
                attempts: 1,
                next_attempt_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            },
        };
        assert_eq!(settled_event(&stored), None, "open: nothing settled");
        stored.upload.state = UploadState::Superseded {
            transaction_id: "f".repeat(64),
            creation_date,
            code: H174.into(),
            message: "H174: text".into(),
        };
        let (key, settled) = settled_event(&stored).unwrap();
        assert_eq!(key, key_of(&event));
        assert_eq!(settled.status, event.status);
        assert_eq!(settled.consent_date, event.consent_date);
        assert!(settled.retailer_access.is_empty());
        assert_eq!(
            settled.registration,
            Registration::Registered {
                creation_date,
                transaction_id: "f".repeat(64).into(),
            }
        );
        let pending = ConsentEvent {
            registration: Registration::Pending,
            retailer_access: event.retailer_access.clone(),
            ..settled.clone()
        };
        assert!(settled.supersedes(&pending));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut e = item("H999");
        e.message = "ş".repeat(400);
        let text = describe(&[e]);
        assert!(text.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}
