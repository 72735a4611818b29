//! One behaviour suite for the evidence store, run against every backend
//! (`tests/evidence_pg.rs`, `tests/evidence_file.rs`): each function takes a fresh, empty
//! store and proves one promise of `iysgate::write::evidence`. Times are fixed instants, never the
//! clock, so deadlines are tested at their exact boundaries.
//!
//! - `records`: recording, idempotency, all-or-nothing batches;
//! - `uploads`: the outbox state machine, leases, deadlines, concurrent claimers;
//! - `admin`: providers, brands, clients and grants, cursors, reports.
//!
//! The list of the suite's tests is written once, in [`evidence_suite!`]: a backend file
//! implements [`Backend`] and invokes the macro, so a test added here runs on every backend.
#![allow(dead_code)] // each test binary uses its own subset

mod admin;
mod records;
mod uploads;

pub use admin::*;
pub use records::*;
pub use uploads::*;

use std::time::Duration;

use chrono::{DateTime, Utc};
use iysgate::auth::hash_key;
use iysgate::domain::recipient::normalise_recipient;
use iysgate::domain::time::{from_turkey, parse_iys};
use iysgate::domain::{BrandPolicy, Channel, ConsentStatus, RecipientType, Source, TurkeyTime};
use iysgate::write::evidence::{
    Brand, EventId, Evidence, EvidenceStore, NewEvent, Provider, Recorder, UploadAnswer,
    UploadOutcome, UploadState,
};

/// A backend the suite runs against: a fresh, empty store for each test, and what to tidy
/// away once the test passed (a failing test leaves its file or schema to look at).
pub trait Backend: Sized {
    /// A fresh, empty store of its own for the test named `test`.
    async fn fresh(test: &str) -> (Self, EvidenceStore);
    /// Removes what `fresh` made; runs only when the test passed.
    async fn tidy(self);
}

/// One `#[tokio::test]` per suite test, each on a fresh store of the [`Backend`] given:
/// `evidence_suite!(FileBackend);`. The one list of the suite's tests.
macro_rules! evidence_suite {
    ($backend:ty) => {
        evidence_suite!(@tests $backend;
            record_reads_back,
            same_key_is_stored_once,
            concurrent_duplicates_store_one,
            failing_batch_stores_nothing,
            uploads_follow_the_state_machine,
            superseded_is_final_and_kept,
            lapsed_lease_is_reclaimed,
            deadlines_follow_the_calendar,
            concurrent_claimers_never_share,
            brands_and_clients,
            cursors_and_reports,
        );
    };
    (@tests $backend:ty; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (backend, store) =
                <$backend as $crate::evidence_suite::Backend>::fresh(stringify!($name)).await;
            $crate::evidence_suite::$name(store).await;
            $crate::evidence_suite::Backend::tidy(backend).await;
        }
    )*};
}

pub const IYS_CODE: u32 = 600_000;
pub const BRAND: u32 = 600_001;
pub const OTHER_BRAND: u32 = 600_002;
pub const LEASE: Duration = Duration::from_mins(1);

pub fn tr(text: &str) -> TurkeyTime {
    parse_iys(text).expect("test times are in the İYS format")
}

/// An instant given as Turkey local time.
pub fn at(text: &str) -> DateTime<Utc> {
    from_turkey(tr(text))
}

/// An ONAY for `brand` on MESAJ (or EPOSTA when `recipient` has an '@'), consent given at
/// `consent_date` (Turkey time), under idempotency key `key`.
pub fn onay(brand: u32, key: &str, recipient: &str, consent_date: &str) -> NewEvent {
    let channel = if recipient.contains('@') {
        Channel::Eposta
    } else {
        Channel::Mesaj
    };
    NewEvent {
        brand,
        recipient: normalise_recipient(recipient, channel.address_kind()).unwrap(),
        recipient_type: RecipientType::Bireysel,
        channel,
        status: ConsentStatus::Onay,
        source: Source::HsWeb,
        consent_date: tr(consent_date),
        retailer_access: vec![],
        evidence: Evidence {
            method: "web form checkbox".into(),
            location: "https://example.com.tr/uyelik".into(),
            document_ref: Some("form-v3".into()),
            capturing_system: "crm-web".into(),
        },
        recorder: Recorder {
            client: "crm".into(),
            key_sha256: Some(hash_key("iysk_test")),
        },
        idempotency_key: key.into(),
    }
}

/// The provider and two brands every test records against.
pub async fn setup(store: &EvidenceStore) {
    let now = at("2026-01-01 09:00:00");
    let provider = Provider {
        iys_code: IYS_CODE,
        name: "Örnek A.Ş.".into(),
        credentials_ref: "env:IYS_PASSWORD".into(),
    };
    store.add_provider(&provider, now).await.unwrap();
    for (brand_code, name) in [(BRAND, "Örnek"), (OTHER_BRAND, "Örnek Market")] {
        let brand = Brand {
            brand_code,
            iys_code: IYS_CODE,
            name: name.into(),
            policy: BrandPolicy::default(),
        };
        store.add_brand(&brand, now).await.unwrap();
    }
}

pub fn registered(tx: &str) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(200),
        outcome: UploadOutcome::Registered {
            transaction_id: tx.repeat(64),
            creation_date: tr("2026-05-20 10:00:05"),
        },
    }
}

pub fn retry(retry_at: DateTime<Utc>) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(503),
        outcome: UploadOutcome::Retry {
            retry_at,
            code: Some("H192".into()),
            message: "timeout".into(),
        },
    }
}

pub fn rejected(code: &str) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(400),
        outcome: UploadOutcome::Rejected {
            code: code.into(),
            message: "rejected by İYS".into(),
        },
    }
}

pub async fn state_of(store: &EvidenceStore, id: EventId) -> UploadState {
    store.event(id).await.unwrap().unwrap().upload.state
}

pub async fn brand_events(store: &EvidenceStore, brand: u32) -> usize {
    let all = store
        .events_between(brand, at("2000-01-01 00:00:00"), at("2100-01-01 00:00:00"))
        .await
        .unwrap();
    all.len()
}
