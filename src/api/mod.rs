//! The gRPC surface, one file per service (`check.rs`: ConsentCheck, `filter.rs`: its Filter
//! stream, `records.rs`: ConsentRecords, `admin.rs`: Admin) over one `ConsentService` state;
//! `admission.rs` decides who may call and whether the call is taken now, `status.rs` maps
//! errors to status codes. Protobuf conversions live in `pb::convert`. It decides no consent
//! itself and looks nothing up before the permission check.

use crate::auth::ApiKeys;
use crate::check::Checker;
use crate::check::store::Consents;
use crate::pb;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub mod admin;
mod admission;
mod check;
mod filter;
pub mod records;
mod status;

use admission::VerifiedKeys;
pub use admission::{Arrival, Limits};
pub(crate) use admission::{grpc_timeout_header, permission, presented_key};
pub(crate) use status::invalid_status;

/// Metadata entry carrying the API key (`authorization: Bearer <key>` is accepted too).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Largest CheckBatch.
pub const MAX_BATCH: usize = 10_000;

/// Largest Filter chunk.
pub const MAX_CHUNK: usize = 100_000;

pub struct ConsentService {
    checker: Arc<Checker>,
    consents: Arc<Consents>,
    /// Replaced whole when clients change (`replace_keys`); read only on a cache miss.
    keys: arc_swap::ArcSwap<ApiKeys>,
    verified: VerifiedKeys,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    limits: Limits,
    evidence: Option<Arc<crate::write::evidence::EvidenceStore>>,
    shared: Option<crate::sync::redis::SharedState>,
}

impl ConsentService {
    pub fn new(
        checker: Arc<Checker>,
        consents: Arc<Consents>,
        keys: Arc<ApiKeys>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Self {
            checker,
            consents,
            keys: arc_swap::ArcSwap::new(keys),
            verified: VerifiedKeys::new(),
            metrics,
            in_flight: Arc::default(),
            limits,
            evidence: None,
            shared: None,
        }
    }

    /// Records consents into `store` (the `ConsentRecords` service).
    #[must_use]
    pub fn with_evidence(
        mut self,
        store: Option<Arc<crate::write::evidence::EvidenceStore>>,
    ) -> Self {
        self.evidence = store;
        self
    }

    /// Publishes what it records to the other replicas through `shared` (a replica's Redis).
    #[must_use]
    pub fn with_shared(mut self, shared: Option<crate::sync::redis::SharedState>) -> Self {
        self.shared = shared;
        self
    }

    pub fn into_server(self: &Arc<Self>) -> pb::consent_check_server::ConsentCheckServer<Self> {
        pb::consent_check_server::ConsentCheckServer::from_arc(Arc::clone(self))
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024)
    }

    pub fn records_server(
        self: &Arc<Self>,
    ) -> pb::consent_records_server::ConsentRecordsServer<Self> {
        pb::consent_records_server::ConsentRecordsServer::from_arc(Arc::clone(self))
            .max_decoding_message_size(16 * 1024 * 1024)
    }

    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    pub fn consents(&self) -> &Consents {
        &self.consents
    }

    pub(crate) fn evidence(&self) -> Option<Arc<crate::write::evidence::EvidenceStore>> {
        self.evidence.clone()
    }

    pub(crate) fn shared(&self) -> Option<&crate::sync::redis::SharedState> {
        self.shared.as_ref()
    }
}
