//! Reading rows back into the store's types, and the columns that spell a state or an
//! outcome. A value the schema allows but the types do not (an edited row) is a
//! [`EvidenceError::CorruptRow`] naming the row and field, never the value.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::domain::Channel;
use crate::domain::recipient::normalise_recipient;
use crate::domain::time::{from_turkey, to_turkey};
use crate::write::evidence::model::{
    AttemptRecord, EventId, Evidence, NewEvent, Recorder, StoredEvent, Upload, UploadAnswer,
    UploadOutcome, UploadState,
};
use crate::write::evidence::{EvidenceError, corrupt};

/// The attempt columns that spell out an outcome.
#[derive(Default)]
pub(super) struct AttemptColumns<'a> {
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub creation_date: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
}

/// The outbox columns that spell out a state.
#[derive(Default)]
pub(super) struct StateColumns<'a> {
    pub lease_until: Option<DateTime<Utc>>,
    pub transaction_id: Option<&'a str>,
    pub creation_date: Option<DateTime<Utc>>,
    pub reject_code: Option<&'a str>,
    pub reject_message: Option<&'a str>,
}

impl<'a> StateColumns<'a> {
    pub(super) fn of(state: &'a UploadState) -> Self {
        match state {
            UploadState::Pending | UploadState::Expired => Self::default(),
            UploadState::InFlight { lease_until } => Self {
                lease_until: Some(*lease_until),
                ..Self::default()
            },
            UploadState::Registered {
                transaction_id,
                creation_date,
            } => Self {
                transaction_id: Some(transaction_id),
                creation_date: Some(from_turkey(*creation_date)),
                ..Self::default()
            },
            UploadState::Rejected { code, message } => Self {
                reject_code: Some(code),
                reject_message: Some(message),
                ..Self::default()
            },
            UploadState::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            } => Self {
                transaction_id: Some(transaction_id),
                creation_date: Some(from_turkey(*creation_date)),
                reject_code: Some(code),
                reject_message: Some(message),
                ..Self::default()
            },
        }
    }
}

/// Reads an event and its upload from a row of `event_columns!`.
pub(super) fn stored_event(row: &PgRow) -> Result<StoredEvent, EvidenceError> {
    let id = EventId(row.try_get("id")?);
    let what = || format!("event {id}");
    let word = |field: &'static str| -> Result<String, EvidenceError> { Ok(row.try_get(field)?) };
    let parse_err =
        |field, e: crate::domain::types::UnknownWord| corrupt(what(), field, e.to_string());
    let channel: Channel = word("channel")?
        .parse()
        .map_err(|e| parse_err("channel", e))?;
    let recipient = normalise_recipient(&word("recipient")?, channel.address_kind())
        .map_err(|e| corrupt(what(), "recipient", e.to_string()))?;
    let key_sha256 = row
        .try_get::<Option<Vec<u8>>, _>("client_key_sha256")?
        .map(|d| <[u8; 32]>::try_from(d.as_slice()))
        .transpose()
        .map_err(|_| corrupt(what(), "client_key_sha256", "not 32 bytes"))?;
    let event = NewEvent {
        brand: code_from_db(row.try_get("brand_code")?, &what(), "brand_code")?,
        recipient,
        recipient_type: word("recipient_type")?
            .parse()
            .map_err(|e| parse_err("recipient_type", e))?,
        channel,
        status: word("status")?
            .parse()
            .map_err(|e| parse_err("status", e))?,
        source: word("source")?
            .parse()
            .map_err(|e| parse_err("source", e))?,
        consent_date: to_turkey(row.try_get("consent_date")?),
        retailer_access: codes_from_db(
            row.try_get("retailer_access")?,
            &what(),
            "retailer_access",
        )?,
        evidence: Evidence {
            method: row.try_get("capture_method")?,
            location: row.try_get("capture_location")?,
            document_ref: row.try_get("document_ref")?,
            capturing_system: row.try_get("capturing_system")?,
        },
        recorder: Recorder {
            client: row.try_get("client_name")?,
            key_sha256,
        },
        idempotency_key: row.try_get("idempotency_key")?,
    };
    Ok(StoredEvent {
        id,
        event,
        recorded_at: row.try_get("recorded_at")?,
        upload: upload_from_row(row, id)?,
    })
}

/// Reads an upload from the outbox columns of a row.
pub(super) fn upload_from_row(row: &PgRow, id: EventId) -> Result<Upload, EvidenceError> {
    let what = || format!("event {id}");
    let missing = |field| corrupt(what(), field, "missing for its state");
    let state_text: String = row.try_get("state")?;
    let state = match state_text.as_str() {
        "pending" => UploadState::Pending,
        "in_flight" => UploadState::InFlight {
            lease_until: row
                .try_get::<Option<DateTime<Utc>>, _>("lease_until")?
                .ok_or_else(|| missing("lease_until"))?,
        },
        "registered" => UploadState::Registered {
            transaction_id: row
                .try_get::<Option<String>, _>("transaction_id")?
                .ok_or_else(|| missing("transaction_id"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| missing("iys_creation_date"))?,
            ),
        },
        "rejected" => UploadState::Rejected {
            code: row
                .try_get::<Option<String>, _>("reject_code")?
                .ok_or_else(|| missing("reject_code"))?,
            message: row
                .try_get::<Option<String>, _>("reject_message")?
                .unwrap_or_default(),
        },
        "expired" => UploadState::Expired,
        "superseded" => UploadState::Superseded {
            transaction_id: row
                .try_get::<Option<String>, _>("transaction_id")?
                .ok_or_else(|| missing("transaction_id"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| missing("iys_creation_date"))?,
            ),
            code: row
                .try_get::<Option<String>, _>("reject_code")?
                .ok_or_else(|| missing("reject_code"))?,
            message: row
                .try_get::<Option<String>, _>("reject_message")?
                .unwrap_or_default(),
        },
        _ => return Err(corrupt(what(), "state", "not an upload state")),
    };
    let attempts: i32 = row.try_get("attempts")?;
    Ok(Upload {
        state,
        deadline: to_turkey(row.try_get("deadline")?),
        attempts: u32::try_from(attempts).map_err(|_| corrupt(what(), "attempts", "negative"))?,
        next_attempt_at: row.try_get("next_attempt_at")?,
    })
}

pub(super) fn attempt_from_row(row: &PgRow, id: EventId) -> Result<AttemptRecord, EvidenceError> {
    let what = || format!("event {id}");
    let text = |field: &str| -> Result<Option<String>, EvidenceError> { Ok(row.try_get(field)?) };
    let outcome: String = row.try_get("outcome")?;
    let outcome = match outcome.as_str() {
        "registered" => UploadOutcome::Registered {
            transaction_id: text("transaction_id")?
                .ok_or_else(|| corrupt(what(), "transaction_id", "missing"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| corrupt(what(), "iys_creation_date", "missing"))?,
            ),
        },
        "rejected" => UploadOutcome::Rejected {
            code: text("iys_code")?.unwrap_or_default(),
            message: text("iys_message")?.unwrap_or_default(),
        },
        "superseded" => UploadOutcome::Superseded {
            transaction_id: text("transaction_id")?
                .ok_or_else(|| corrupt(what(), "transaction_id", "missing"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| corrupt(what(), "iys_creation_date", "missing"))?,
            ),
            code: text("iys_code")?.unwrap_or_default(),
            message: text("iys_message")?.unwrap_or_default(),
        },
        "retry" => UploadOutcome::Retry {
            retry_at: row
                .try_get::<Option<DateTime<Utc>>, _>("retry_at")?
                .ok_or_else(|| corrupt(what(), "retry_at", "missing"))?,
            code: text("iys_code")?,
            message: text("iys_message")?.unwrap_or_default(),
        },
        _ => return Err(corrupt(what(), "outcome", "not an attempt outcome")),
    };
    let attempt: i32 = row.try_get("attempt")?;
    let http_status: Option<i32> = row.try_get("http_status")?;
    Ok(AttemptRecord {
        attempt: u32::try_from(attempt).map_err(|_| corrupt(what(), "attempt", "negative"))?,
        finished_at: row.try_get("finished_at")?,
        answer: UploadAnswer {
            http_status: http_status.and_then(|s| u16::try_from(s).ok()),
            outcome,
        },
    })
}

pub(super) fn attempt_to_db(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

pub(super) fn codes_to_db(codes: &[u32]) -> Vec<i64> {
    codes.iter().map(|&c| i64::from(c)).collect()
}

pub(super) fn code_from_db(
    code: i64,
    what: &str,
    field: &'static str,
) -> Result<u32, EvidenceError> {
    u32::try_from(code).map_err(|_| corrupt(what.to_owned(), field, "not a u32 code"))
}

pub(super) fn codes_from_db(
    codes: Vec<i64>,
    what: &str,
    field: &'static str,
) -> Result<Vec<u32>, EvidenceError> {
    codes
        .into_iter()
        .map(|c| code_from_db(c, what, field))
        .collect()
}
