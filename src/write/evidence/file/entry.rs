//! The lines of the evidence log: one JSON object per line, tagged by `t`. Each line is one
//! change, applied whole or (torn by a crash, never acknowledged) not at all; a batch of
//! events is one line so a crash can never keep half of it.
//!
//! Words are spelled as İYS spells them and recipients in the İYS form, so the file reads
//! against the İYS documentation. It holds personal data: the store creates it mode 0600.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{RetailerGrant, to_hex};
use crate::domain::recipient::{RecipientError, normalise_recipient};
use crate::domain::types::UnknownWord;
use crate::domain::{Channel, TurkeyTime};
use crate::iys::client::PullSource;
use crate::write::evidence::model::{
    EventId, Evidence, NewEvent, Recorder, UploadAnswer, UploadOutcome,
};

/// Why a line of the log does not apply: a field that no longer reads, or a reference the
/// state does not hold. Wrapped into [`crate::write::evidence::EvidenceError::CorruptLog`]
/// with the file and line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A word (channel, status, source, recipient type) İYS does not use.
    #[error("{field}: {source}")]
    Word {
        field: &'static str,
        source: UnknownWord,
    },
    #[error("recipient: {0}")]
    Recipient(#[source] RecipientError),
    /// `key_sha256` of an event's recorder.
    #[error("key_sha256: not 64 hex digits")]
    EventKey,
    /// `key_sha256` of an API client.
    #[error("key_sha256: not 64 hex")]
    ClientKey,
    #[error("policy for unknown brand {0}")]
    UnknownBrand(u32),
    #[error("grant for an unknown client")]
    UnknownClient,
    #[error("event id {0} out of sequence")]
    OutOfSequence(EventId),
    #[error("unknown event {0}")]
    UnknownEvent(EventId),
    #[error("expiry of closed upload {0}")]
    ExpiryOfClosed(EventId),
    #[error("cursor: unknown source")]
    CursorSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum Entry {
    Provider {
        iys_code: u32,
        name: String,
        credentials_ref: String,
        at: DateTime<Utc>,
    },
    Brand {
        brand_code: u32,
        iys_code: u32,
        name: String,
        allow_unregistered_tacir: bool,
        at: DateTime<Utc>,
    },
    Policy {
        brand_code: u32,
        allow_unregistered_tacir: bool,
    },
    Client {
        name: String,
        key_sha256: String,
        at: DateTime<Utc>,
    },
    Grant {
        client: String,
        brand_code: u32,
        retailers: GrantLine,
        at: DateTime<Utc>,
    },
    Revoke {
        client: String,
        brand_code: u32,
    },
    /// A recorded batch; each event's upload is pending from `recorded_at`.
    Events {
        recorded_at: DateTime<Utc>,
        events: Vec<EventLine>,
    },
    /// Uploads put in flight until `lease_until`, each one attempt more.
    Claim {
        ids: Vec<i64>,
        lease_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// İYS's answer to one attempt.
    Finish {
        id: i64,
        attempt: u32,
        at: DateTime<Utc>,
        http_status: Option<u16>,
        outcome: OutcomeLine,
    },
    Expire {
        ids: Vec<i64>,
        at: DateTime<Utc>,
    },
    Cursor {
        iys_code: u32,
        brand_code: u32,
        source: String,
        after: Option<String>,
        caught_up_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    Report {
        brand_code: u32,
        date: NaiveDate,
        body: serde_json::Value,
        at: DateTime<Utc>,
    },
}

/// One recorded event with its id and deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventLine {
    pub id: i64,
    pub brand: u32,
    pub recipient: String,
    pub recipient_type: String,
    pub channel: String,
    pub status: String,
    pub source: String,
    pub consent_date: TurkeyTime,
    pub retailer_access: Vec<u32>,
    pub method: String,
    pub location: String,
    pub document_ref: Option<String>,
    pub capturing_system: String,
    pub client: String,
    pub key_sha256: Option<String>,
    pub idempotency_key: String,
    pub deadline: TurkeyTime,
}

impl EventLine {
    pub fn new(id: EventId, event: &NewEvent, deadline: TurkeyTime) -> Self {
        Self {
            id: id.0,
            brand: event.brand,
            recipient: event.recipient.to_string(),
            recipient_type: event.recipient_type.as_str().to_owned(),
            channel: event.channel.as_str().to_owned(),
            status: event.status.as_str().to_owned(),
            source: event.source.as_str().to_owned(),
            consent_date: event.consent_date,
            retailer_access: event.retailer_access.clone(),
            method: event.evidence.method.clone(),
            location: event.evidence.location.clone(),
            document_ref: event.evidence.document_ref.clone(),
            capturing_system: event.evidence.capturing_system.clone(),
            client: event.recorder.client.clone(),
            key_sha256: event.recorder.key_sha256.map(|d| to_hex(&d)),
            idempotency_key: event.idempotency_key.clone(),
            deadline,
        }
    }

    /// The event as written; the reason names the field that no longer reads.
    pub fn to_event(&self) -> Result<NewEvent, EntryError> {
        let word = |field: &'static str| move |source| EntryError::Word { field, source };
        let channel: Channel = self.channel.parse().map_err(word("channel"))?;
        let recipient = normalise_recipient(&self.recipient, channel.address_kind())
            .map_err(EntryError::Recipient)?;
        let key_sha256 = self
            .key_sha256
            .as_deref()
            .map(|hex| digest_from_hex(hex).ok_or(EntryError::EventKey))
            .transpose()?;
        Ok(NewEvent {
            brand: self.brand,
            recipient,
            recipient_type: self
                .recipient_type
                .parse()
                .map_err(word("recipient_type"))?,
            channel,
            status: self.status.parse().map_err(word("status"))?,
            source: self.source.parse().map_err(word("source"))?,
            consent_date: self.consent_date,
            retailer_access: self.retailer_access.clone(),
            evidence: Evidence {
                method: self.method.clone(),
                location: self.location.clone(),
                document_ref: self.document_ref.clone(),
                capturing_system: self.capturing_system.clone(),
            },
            recorder: Recorder {
                client: self.client.clone(),
                key_sha256,
            },
            idempotency_key: self.idempotency_key.clone(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(super) enum OutcomeLine {
    Registered {
        transaction_id: String,
        creation_date: TurkeyTime,
    },
    Rejected {
        code: String,
        message: String,
    },
    Retry {
        retry_at: DateTime<Utc>,
        code: Option<String>,
        message: String,
    },
    Superseded {
        transaction_id: String,
        creation_date: TurkeyTime,
        code: String,
        message: String,
    },
}

impl OutcomeLine {
    pub fn new(outcome: &UploadOutcome) -> Self {
        match outcome.clone() {
            UploadOutcome::Registered {
                transaction_id,
                creation_date,
            } => OutcomeLine::Registered {
                transaction_id,
                creation_date,
            },
            UploadOutcome::Rejected { code, message } => OutcomeLine::Rejected { code, message },
            UploadOutcome::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            } => OutcomeLine::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            },
            UploadOutcome::Retry {
                retry_at,
                code,
                message,
            } => OutcomeLine::Retry {
                retry_at,
                code,
                message,
            },
        }
    }

    pub fn to_answer(&self, http_status: Option<u16>) -> UploadAnswer {
        let outcome = match self.clone() {
            OutcomeLine::Registered {
                transaction_id,
                creation_date,
            } => UploadOutcome::Registered {
                transaction_id,
                creation_date,
            },
            OutcomeLine::Rejected { code, message } => UploadOutcome::Rejected { code, message },
            OutcomeLine::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            } => UploadOutcome::Superseded {
                transaction_id,
                creation_date,
                code,
                message,
            },
            OutcomeLine::Retry {
                retry_at,
                code,
                message,
            } => UploadOutcome::Retry {
                retry_at,
                code,
                message,
            },
        };
        UploadAnswer {
            http_status,
            outcome,
        }
    }
}

/// A [`RetailerGrant`] as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum GrantLine {
    None,
    Any,
    Only(Vec<u32>),
}

impl From<&RetailerGrant> for GrantLine {
    fn from(grant: &RetailerGrant) -> Self {
        match grant {
            RetailerGrant::None => GrantLine::None,
            RetailerGrant::Any => GrantLine::Any,
            RetailerGrant::Only(codes) => GrantLine::Only(codes.clone()),
        }
    }
}

impl From<GrantLine> for RetailerGrant {
    fn from(line: GrantLine) -> Self {
        match line {
            GrantLine::None => RetailerGrant::None,
            GrantLine::Any => RetailerGrant::Any,
            GrantLine::Only(codes) => RetailerGrant::Only(codes),
        }
    }
}

pub(super) fn source_from_str(text: &str) -> Option<PullSource> {
    [PullSource::Iys, PullSource::Hs]
        .into_iter()
        .find(|s| s.as_str() == text)
}

pub(super) fn digest_from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
