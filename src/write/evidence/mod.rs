//! The evidence store: the system of record for what the company itself did. Every consent it
//! collects (ONAY or RET, with how, where and by whom it was captured), the upload of each to
//! İYS with every answer, sync cursors, brands, API clients and daily reports.
//!
//! Two backends behind one [`EvidenceStore`]:
//! - [`PgStore`], PostgreSQL through sqlx, for deployments: migrations in `migrations/`,
//!   uploads claimed with `FOR UPDATE SKIP LOCKED` so several replicas drain one outbox;
//! - [`FileStore`], the embedded default: an append-only JSON-lines file, `fsync`ed before a
//!   write returns and replayed into memory at start.
//!
//! Both keep the promises the rest of the service builds on:
//! - a batch is recorded whole or not at all, and is durable when [`EvidenceStore::record`]
//!   returns: nothing acknowledged is ever lost;
//! - an idempotency key is stored once per brand: the same event again returns the original
//!   id, a different event under a used key is refused;
//! - events are never changed; their upload state moves only through [`claim_uploads`],
//!   [`finish_upload`] and [`expire_overdue`], by the rules in `model`;
//! - each upload carries its deadline, 3 business days on the strict calendar from the
//!   consent date ([`BusinessCalendar::registration_deadline`]), fixed when recorded.
//!
//! Time is always a parameter (`now`), never read here. Recipients are personal data: no
//! error or log line of this module contains one, nor an idempotency key.
//!
//! [`claim_uploads`]: EvidenceStore::claim_uploads
//! [`finish_upload`]: EvidenceStore::finish_upload
//! [`expire_overdue`]: EvidenceStore::expire_overdue

mod file;
mod model;
mod pg;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

pub use file::FileStore;
pub use model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, Evidence, MAX_IDEMPOTENCY_KEY, MAX_TEXT,
    NewEvent, Provider, Recorded, Recorder, StoredEvent, Upload, UploadAnswer, UploadCounts,
    UploadOutcome, UploadState, api_keys,
};
pub use pg::{MIGRATOR, PgStore};

use crate::auth::RetailerGrant;
use crate::domain::BrandPolicy;
#[cfg(doc)]
use crate::domain::BusinessCalendar;
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};

/// Why an evidence store operation failed. Messages name the field or the row, never a
/// recipient or an idempotency key.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("evidence database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("evidence log {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("evidence log {path} is locked by another process", path = .0.display())]
    Locked(PathBuf),
    /// A complete line of the log cannot be read back. Only a torn *last* line (a write cut
    /// short by a crash, never acknowledged) is dropped on open; anything else stops the start.
    #[error("evidence log {path}, line {line}: {reason}", path = .path.display())]
    CorruptLog {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A stored row no longer reads as what was written (e.g. an edited recipient). `row`
    /// names it, e.g. `event 12`.
    #[error("stored {row}, field `{field}`: {reason}")]
    CorruptRow {
        row: String,
        field: &'static str,
        reason: String,
    },
    /// An earlier write failed half-way; the file store refuses writes until restarted and
    /// replayed, so it never acknowledges anything it may not have kept.
    #[error("evidence log {path} failed a write earlier; restart to recover", path = .0.display())]
    Broken(PathBuf),
    #[error("batch item {index}, field `{field}`: {reason}")]
    Invalid {
        index: usize,
        field: &'static str,
        reason: &'static str,
    },
    #[error("field `{field}`: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error(
        "batch item {index}: its idempotency key was already used for brand {brand} by a different event"
    )]
    IdempotencyConflict { index: usize, brand: u32 },
    #[error("brand {0} is not registered")]
    UnknownBrand(u32),
    #[error("service provider (iysCode) {0} is not registered")]
    UnknownProvider(u32),
    #[error("API client {0:?} is not registered")]
    UnknownClient(String),
    #[error("no consent event {0}")]
    UnknownEvent(EventId),
    #[error("event {id} has no claimed attempt {attempt}")]
    UnknownAttempt { id: EventId, attempt: u32 },
    /// `what` is e.g. `brand`, `API client name`, `API key`.
    #[error("{what} {key} already exists")]
    AlreadyExists { what: &'static str, key: String },
    #[error("that API key is already registered; client {0:?} not added")]
    KeyInUse(String),
    #[error("evidence store task failed: {0}")]
    Task(String),
}

/// A [`EvidenceError::CorruptRow`].
pub(crate) fn corrupt(
    row: impl Into<String>,
    field: &'static str,
    reason: impl Into<String>,
) -> EvidenceError {
    EvidenceError::CorruptRow {
        row: row.into(),
        field,
        reason: reason.into(),
    }
}

/// The evidence store the service runs on: PostgreSQL when configured, else the file.
#[derive(Debug, Clone)]
pub enum EvidenceStore {
    Pg(PgStore),
    File(FileStore),
}

/// Calls the same method on whichever backend this is. `read` marks the calls the file
/// store answers from memory without waiting.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            EvidenceStore::Pg(store) => store.$method($($arg),*).await,
            EvidenceStore::File(store) => store.$method($($arg),*).await,
        }
    };
    (read $self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            EvidenceStore::Pg(store) => store.$method($($arg),*).await,
            EvidenceStore::File(store) => store.$method($($arg),*),
        }
    };
}

impl EvidenceStore {
    /// Records a batch whole or not at all, durably before returning: for each event, in
    /// order, its id and whether it is new or a duplicate of an earlier idempotency key. A new
    /// event's upload is pending from `now`, with its deadline.
    ///
    /// # Errors
    /// [`EvidenceError::Invalid`] or [`EvidenceError::IdempotencyConflict`] naming the item,
    /// [`EvidenceError::UnknownBrand`], or a storage failure. Nothing is stored then.
    pub async fn record(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, EvidenceError> {
        dispatch!(self.record(events, now))
    }

    pub async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, EvidenceError> {
        dispatch!(read self.event(id))
    }

    /// A brand's events recorded in `[from, to)`, in recording order: the day's trail for
    /// reports. Recording time, not consent time, so a report once made never changes.
    pub async fn events_between(
        &self,
        brand: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, EvidenceError> {
        dispatch!(read self.events_between(brand, from, to))
    }

    /// Claims up to `limit` uploads due at `now`, earliest deadline first, each in flight
    /// for `lease`. No two concurrent claimers get the same upload; one whose lease ran out
    /// (its uploader died) is claimable again. Uploads past their deadline are not handed out.
    pub async fn claim_uploads(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, EvidenceError> {
        dispatch!(self.claim_uploads(limit, lease, now))
    }

    /// Records İYS's answer to `attempt` of event `id` and moves its upload on (see
    /// `model::after_answer`): the state after. Reporting the same attempt twice records it
    /// once.
    ///
    /// # Errors
    /// [`EvidenceError::UnknownEvent`], [`EvidenceError::UnknownAttempt`] when no such claim
    /// was made, or a storage failure.
    pub async fn finish_upload(
        &self,
        id: EventId,
        attempt: u32,
        answer: &UploadAnswer,
        now: DateTime<Utc>,
    ) -> Result<UploadState, EvidenceError> {
        dispatch!(self.finish_upload(id, attempt, answer, now))
    }

    /// Every recorded answer for event `id`, by attempt.
    pub async fn upload_attempts(&self, id: EventId) -> Result<Vec<AttemptRecord>, EvidenceError> {
        dispatch!(read self.upload_attempts(id))
    }

    /// Marks expired every open upload past its deadline at `now` that no live lease holds;
    /// how many.
    pub async fn expire_overdue(&self, now: DateTime<Utc>) -> Result<u64, EvidenceError> {
        dispatch!(self.expire_overdue(now))
    }

    /// Pending, at-risk and expired uploads at `now`, for metrics and alerts.
    pub async fn upload_counts(&self, now: DateTime<Utc>) -> Result<UploadCounts, EvidenceError> {
        dispatch!(read self.upload_counts(now))
    }

    pub async fn cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, EvidenceError> {
        dispatch!(read self.cursor(brand, source))
    }

    pub async fn set_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.set_cursor(brand, source, cursor, now))
    }

    pub async fn add_provider(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.add_provider(provider, now))
    }

    pub async fn providers(&self) -> Result<Vec<Provider>, EvidenceError> {
        dispatch!(read self.providers())
    }

    /// Adds a brand of a registered provider.
    pub async fn add_brand(&self, brand: &Brand, now: DateTime<Utc>) -> Result<(), EvidenceError> {
        dispatch!(self.add_brand(brand, now))
    }

    /// Brands by brand code.
    pub async fn brands(&self) -> Result<Vec<Brand>, EvidenceError> {
        dispatch!(read self.brands())
    }

    pub async fn set_brand_policy(
        &self,
        brand: u32,
        policy: BrandPolicy,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.set_brand_policy(brand, policy))
    }

    /// Adds an API client by the SHA-256 digest of its key (the key itself is never stored).
    pub async fn add_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.add_client(name, key_sha256, now))
    }

    /// Clients by name, with their grants by brand.
    pub async fn clients(&self) -> Result<Vec<ApiClient>, EvidenceError> {
        dispatch!(read self.clients())
    }

    /// Grants a client a brand (and the retailers it may name), replacing an earlier grant.
    pub async fn grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.grant(client, brand, retailers, now))
    }

    /// Revokes a client's grant of a brand; whether there was one.
    pub async fn revoke(&self, client: &str, brand: u32) -> Result<bool, EvidenceError> {
        dispatch!(self.revoke(client, brand))
    }

    /// Stores (or replaces) a brand's report for a day.
    pub async fn save_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        dispatch!(self.save_report(brand, date, body, now))
    }

    pub async fn report(
        &self,
        brand: u32,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, EvidenceError> {
        dispatch!(read self.report(brand, date))
    }
}

/// The one process of a deployment that does a job (the uploader, the scheduled
/// reconciliation) while it holds this. With PostgreSQL: a session advisory lock, released
/// when its connection ends (the process died or lost the database); with the file store:
/// always, since the file is locked by one process.
pub enum Leadership {
    Sole,
    Pg(sqlx::PgConnection),
}

impl Leadership {
    /// Whether the lock is still held (its connection answers).
    pub async fn still_held(&mut self) -> bool {
        match self {
            Leadership::Sole => true,
            Leadership::Pg(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }
}

impl EvidenceStore {
    /// Becomes the deployment's one `role` process if no other holds the role now.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn try_lead(&self, role: &str) -> Result<Option<Leadership>, EvidenceError> {
        match self {
            EvidenceStore::File(_) => Ok(Some(Leadership::Sole)),
            EvidenceStore::Pg(store) => Ok(store
                .try_advisory_lock(&format!("iysgate:{role}"))
                .await?
                .map(Leadership::Pg)),
        }
    }
}

impl From<PgStore> for EvidenceStore {
    fn from(store: PgStore) -> Self {
        EvidenceStore::Pg(store)
    }
}

impl From<FileStore> for EvidenceStore {
    fn from(store: FileStore) -> Self {
        EvidenceStore::File(store)
    }
}
