//! The evidence store: the system of record for what the company itself did. Every consent it
//! collects (ONAY or RET, with how, where and by whom it was captured), the upload of each to
//! İYS with every answer, sync cursors, brands, API clients and daily reports.
//!
//! Two backends of one [`Store`] trait, behind the [`EvidenceStore`] handle:
//! - [`PgStore`], PostgreSQL through sqlx, for deployments: migrations in `migrations/`,
//!   uploads claimed with `FOR UPDATE SKIP LOCKED` so several replicas drain one outbox;
//! - [`FileStore`], the embedded default: an append-only JSON-lines file, `fsync`ed before a
//!   write returns and replayed into memory at start.
//!
//! Both keep the promises the rest of the service builds on:
//! - a batch is recorded whole or not at all, and is durable when [`Store::record`]
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
//! [`claim_uploads`]: Store::claim_uploads
//! [`finish_upload`]: Store::finish_upload
//! [`expire_overdue`]: Store::expire_overdue

mod file;
mod model;
mod pg;
mod store;

use std::path::PathBuf;

pub use file::FileStore;
pub(crate) use model::at_risk_before;
pub use model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, Evidence, MAX_IDEMPOTENCY_KEY, MAX_TEXT,
    NewEvent, Provider, Recorded, Recorder, StoredEvent, Upload, UploadAnswer, UploadCounts,
    UploadOutcome, UploadState, api_keys,
};
pub use pg::{MIGRATOR, PgStore};
pub use store::Store;

#[cfg(doc)]
use crate::domain::BusinessCalendar;

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

/// The evidence store the service runs on: PostgreSQL when configured, else the file. A
/// handle: every operation is a [`Store`] method, reached through `Deref`, so callers write
/// `store.record(..)` whichever backend it is.
#[derive(Debug, Clone)]
pub enum EvidenceStore {
    Pg(PgStore),
    File(FileStore),
}

impl std::ops::Deref for EvidenceStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            EvidenceStore::Pg(store) => store,
            EvidenceStore::File(store) => store,
        }
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
