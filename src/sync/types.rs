//! What sync speaks, as a leaf of the sync folder: a brand and source to follow, İYS's
//! changes and their pages, the mapping of a change to the event the store applies, and
//! where cursors are kept. The worker, the Redis state, the push receiver, the daily file and
//! the reconciliation all use these; this file uses only the domain.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::recipient::normalise_recipient;
use crate::domain::time::parse_iys;
use crate::domain::{
    Channel, ConsentEvent, ConsentKey, ConsentStatus, RecipientType, Registration, Source,
};

/// İYS's pull `source`: one enum, the İYS client's.
pub use crate::iys::client::PullSource;

/// A brand to follow, with the service provider it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrandRef {
    pub iys_code: u32,
    pub brand_code: u32,
}

/// One change as İYS reports it (pull page or push list), in İYS's own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub recipient: String,
    pub recipient_type: String,
    pub channel: String,
    pub status: String,
    pub source: String,
    /// Empty for some `IYS_AHS_HAT_KAPATMA` TACIR rows.
    pub consent_date: Option<String>,
    pub creation_date: String,
    pub transaction_id: String,
}

/// One page of changes; `after` is the opaque cursor for the next page (None: keep yours).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub after: Option<String>,
    pub changes: Vec<Change>,
}

/// Where changes come from (the İYS client in production and tests against the mock).
pub trait ChangeSource: Send + Sync + 'static {
    fn pull(
        &self,
        brand: BrandRef,
        source: PullSource,
        after: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Page, PullError>> + Send;

    /// The brand's changes of one (past) day, from İYS's daily change file; used to repair a
    /// gap in the pull. Sources without daily files say so.
    fn daily_changes(
        &self,
        brand: BrandRef,
        date: chrono::NaiveDate,
    ) -> impl Future<Output = Result<Vec<Change>, PullError>> + Send {
        let _ = (brand, date);
        std::future::ready(Err(PullError(
            "this source has no daily change files".into(),
        )))
    }
}

/// A pull that failed after the client's own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PullError(pub String);

/// A change that cannot be applied, naming the field. Never carries the recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {transaction_id}: {field}: {reason}")]
pub struct BadChange {
    pub transaction_id: String,
    pub field: &'static str,
    pub reason: String,
}

/// Turns an İYS change into the key and event the store applies.
pub fn to_event(brand: u32, change: &Change) -> Result<(ConsentKey, ConsentEvent), BadChange> {
    let bad = |field: &'static str, reason: String| BadChange {
        transaction_id: change.transaction_id.clone(),
        field,
        reason,
    };
    let channel: Channel = change
        .channel
        .parse()
        .map_err(|e| bad("type", format!("{e}")))?;
    let recipient_type = if change.recipient_type.is_empty() {
        RecipientType::Bireysel
    } else {
        change
            .recipient_type
            .parse()
            .map_err(|e| bad("recipientType", format!("{e}")))?
    };
    let status: ConsentStatus = change
        .status
        .parse()
        .map_err(|e| bad("status", format!("{e}")))?;
    let source: Source = change
        .source
        .parse()
        .map_err(|e| bad("source", format!("{e}")))?;
    let recipient = normalise_recipient(&change.recipient, channel.address_kind())
        .map_err(|e| bad("recipient", e.to_string()))?;
    let creation_date = parse_iys(&change.creation_date)
        .ok_or_else(|| bad("creationDate", "not YYYY-MM-DD HH:mm:ss".into()))?;
    // İYS leaves consentDate empty on some line-closure rows; the creationDate is then the
    // best date the event has.
    let consent_date = match change.consent_date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => {
            parse_iys(d).ok_or_else(|| bad("consentDate", "not YYYY-MM-DD HH:mm:ss".into()))?
        }
        None => creation_date,
    };
    if change.transaction_id.is_empty() {
        return Err(bad("transactionId", "missing".into()));
    }
    let key = ConsentKey {
        brand,
        recipient,
        recipient_type,
        channel,
    };
    let event = ConsentEvent {
        status,
        source,
        consent_date,
        registration: Registration::Registered {
            creation_date,
            transaction_id: change.transaction_id.as_str().into(),
        },
        retailer_access: Vec::new(),
    };
    Ok((key, event))
}

/// Where cursors are kept. Memory in the embedded default; Redis or PostgreSQL for a
/// deployment, so a new leader continues where the old one stopped.
pub trait CursorStore: Send + Sync + 'static {
    fn get(&self, brand: BrandRef, source: PullSource) -> Option<Cursor>;
    fn put(&self, brand: BrandRef, source: PullSource, cursor: Cursor);
}

/// A stored position: İYS's opaque `after` and when the (brand, source) was last caught up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub after: Option<String>,
    pub caught_up_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct MemoryCursors(Mutex<HashMap<(BrandRef, PullSource), Cursor>>);

impl CursorStore for MemoryCursors {
    fn get(&self, brand: BrandRef, source: PullSource) -> Option<Cursor> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(brand, source))
            .cloned()
    }

    fn put(&self, brand: BrandRef, source: PullSource, cursor: Cursor) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((brand, source), cursor);
    }
}
