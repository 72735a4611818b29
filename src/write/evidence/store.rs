//! [`Store`]: what every evidence backend does, declared once. Each backend implements it
//! directly; [`super::EvidenceStore`] hands out whichever one the service runs on.
//!
//! The methods are `async` through `async_trait` (boxed, `Send` futures) so the trait stays
//! object-safe: callers hold `&dyn Store` and never name a backend.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use super::model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, NewEvent, Provider, Recorded, StoredEvent,
    UploadAnswer, UploadCounts, UploadState,
};
use super::{EvidenceError, Leadership};
use crate::auth::RetailerGrant;
use crate::domain::BrandPolicy;
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};

/// An evidence backend. Every method keeps the promises of the [module](super).
#[async_trait::async_trait]
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Records a batch whole or not at all, durably before returning: for each event, in
    /// order, its id and whether it is new or a duplicate of an earlier idempotency key. A new
    /// event's upload is pending from `now`, with its deadline.
    ///
    /// # Errors
    /// [`EvidenceError::Invalid`] or [`EvidenceError::IdempotencyConflict`] naming the item,
    /// [`EvidenceError::UnknownBrand`], or a storage failure. Nothing is stored then.
    async fn record(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, EvidenceError>;

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, EvidenceError>;

    /// A brand's events recorded in `[from, to)`, in recording order: the day's trail for
    /// reports. Recording time, not consent time, so a report once made never changes.
    async fn events_between(
        &self,
        brand: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, EvidenceError>;

    /// Claims up to `limit` uploads due at `now`, earliest deadline first, each in flight
    /// for `lease`. No two concurrent claimers get the same upload; one whose lease ran out
    /// (its uploader died) is claimable again. Uploads past their deadline are not handed out.
    async fn claim_uploads(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, EvidenceError>;

    /// Records İYS's answer to `attempt` of event `id` and moves its upload on (see
    /// `model::after_answer`): the state after. Reporting the same attempt twice records it
    /// once.
    ///
    /// # Errors
    /// [`EvidenceError::UnknownEvent`], [`EvidenceError::UnknownAttempt`] when no such claim
    /// was made, or a storage failure.
    async fn finish_upload(
        &self,
        id: EventId,
        attempt: u32,
        answer: &UploadAnswer,
        now: DateTime<Utc>,
    ) -> Result<UploadState, EvidenceError>;

    /// Every recorded answer for event `id`, by attempt.
    async fn upload_attempts(&self, id: EventId) -> Result<Vec<AttemptRecord>, EvidenceError>;

    /// Marks expired every open upload past its deadline at `now` that no live lease holds;
    /// how many.
    async fn expire_overdue(&self, now: DateTime<Utc>) -> Result<u64, EvidenceError>;

    /// Pending, at-risk and expired uploads at `now`, for metrics and alerts.
    async fn upload_counts(&self, now: DateTime<Utc>) -> Result<UploadCounts, EvidenceError>;

    async fn cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, EvidenceError>;

    async fn set_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError>;

    async fn add_provider(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError>;

    async fn providers(&self) -> Result<Vec<Provider>, EvidenceError>;

    /// Adds a brand of a registered provider.
    async fn add_brand(&self, brand: &Brand, now: DateTime<Utc>) -> Result<(), EvidenceError>;

    /// Brands by brand code.
    async fn brands(&self) -> Result<Vec<Brand>, EvidenceError>;

    async fn set_brand_policy(&self, brand: u32, policy: BrandPolicy) -> Result<(), EvidenceError>;

    /// Adds an API client by the SHA-256 digest of its key (the key itself is never stored).
    async fn add_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError>;

    /// Clients by name, with their grants by brand.
    async fn clients(&self) -> Result<Vec<ApiClient>, EvidenceError>;

    /// Grants a client a brand (and the retailers it may name), replacing an earlier grant.
    async fn grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError>;

    /// Revokes a client's grant of a brand; whether there was one.
    async fn revoke(&self, client: &str, brand: u32) -> Result<bool, EvidenceError>;

    /// Stores (or replaces) a brand's report for a day.
    async fn save_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError>;

    async fn report(
        &self,
        brand: u32,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, EvidenceError>;

    /// Becomes the deployment's one `role` process if no other holds the role now. A backend
    /// only one process can open (the file) always leads.
    ///
    /// # Errors
    /// The database cannot be reached.
    async fn try_lead(&self, role: &str) -> Result<Option<Leadership>, EvidenceError> {
        let _ = role;
        Ok(Some(Leadership::Sole))
    }
}
