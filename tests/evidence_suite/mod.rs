//! One behaviour suite for the evidence store, run against every backend
//! (`tests/evidence_pg.rs`, `tests/evidence_file.rs`): each function takes a fresh, empty
//! store and proves one promise of `iysgate::evidence`. Times are fixed instants, never the
//! clock, so deadlines are tested at their exact boundaries.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use iysgate::auth::{RetailerGrant, hash_key};
use iysgate::domain::recipient::normalise_recipient;
use iysgate::domain::time::{from_turkey, parse_iys};
use iysgate::domain::{BrandPolicy, Channel, ConsentStatus, RecipientType, Source, TurkeyTime};
use iysgate::evidence::{
    Brand, EventId, Evidence, EvidenceError, EvidenceStore, NewEvent, Provider, Recorded, Recorder,
    UploadAnswer, UploadCounts, UploadOutcome, UploadState, api_keys,
};
use iysgate::iys::client::PullSource;
use iysgate::sync::{BrandRef, Cursor};

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

fn registered(tx: &str) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(200),
        outcome: UploadOutcome::Registered {
            transaction_id: tx.repeat(64),
            creation_date: tr("2026-05-20 10:00:05"),
        },
    }
}

fn retry(retry_at: DateTime<Utc>) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(503),
        outcome: UploadOutcome::Retry {
            retry_at,
            code: Some("H192".into()),
            message: "timeout".into(),
        },
    }
}

fn rejected(code: &str) -> UploadAnswer {
    UploadAnswer {
        http_status: Some(400),
        outcome: UploadOutcome::Rejected {
            code: code.into(),
            message: "rejected by İYS".into(),
        },
    }
}

async fn state_of(store: &EvidenceStore, id: EventId) -> UploadState {
    store.event(id).await.unwrap().unwrap().upload.state
}

async fn brand_events(store: &EvidenceStore, brand: u32) -> usize {
    let all = store
        .events_between(brand, at("2000-01-01 00:00:00"), at("2100-01-01 00:00:00"))
        .await
        .unwrap();
    all.len()
}

/// What was recorded reads back field for field, with a pending upload due at once and the
/// strict deadline: captured Wed 2026-05-20 → Sat 2026-05-23 23:59:59.
pub async fn record_reads_back(store: EvidenceStore) {
    setup(&store).await;
    // Stored to the microsecond, as PostgreSQL keeps it.
    let now = at("2026-05-20 10:00:00") + TimeDelta::nanoseconds(123_456_789);
    let kept = at("2026-05-20 10:00:00") + TimeDelta::microseconds(123_456);
    let phone = onay(BRAND, "k1", "0532 123 45 67", "2026-05-20 09:59:00");
    let mut email = onay(BRAND, "k2", "Ayse@Example.com.tr", "2026-05-20 09:58:00");
    email.status = ConsentStatus::Ret;
    email.evidence.document_ref = None;
    email.recorder.key_sha256 = None;
    email.retailer_access = vec![12_345_678, 5];
    let recorded = store
        .record(&[phone.clone(), email.clone()], now)
        .await
        .unwrap();
    assert!(matches!(recorded[..], [Recorded::New(_), Recorded::New(_)]));
    assert_ne!(recorded[0].id(), recorded[1].id());

    for (event, r) in [(&phone, recorded[0]), (&email, recorded[1])] {
        let stored = store.event(r.id()).await.unwrap().expect("recorded event");
        assert_eq!(&stored.event, event);
        assert_eq!(stored.recorded_at, kept);
        assert_eq!(stored.upload.state, UploadState::Pending);
        assert_eq!(stored.upload.deadline, tr("2026-05-23 23:59:59"));
        assert_eq!(stored.upload.attempts, 0);
        assert_eq!(stored.upload.next_attempt_at, kept);
    }
    assert_eq!(store.event(EventId(9_999)).await.unwrap(), None);

    let day = store
        .events_between(BRAND, at("2026-05-20 00:00:00"), at("2026-05-21 00:00:00"))
        .await
        .unwrap();
    let ids: Vec<_> = day.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![recorded[0].id(), recorded[1].id()]);
    let later = store
        .events_between(BRAND, at("2026-05-21 00:00:00"), at("2026-05-22 00:00:00"))
        .await
        .unwrap();
    assert!(later.is_empty());
    assert_eq!(brand_events(&store, OTHER_BRAND).await, 0);
}

/// A retried call or a re-run import stores nothing twice: the same key (per brand) and the
/// same event give the original id; a different event under a used key is refused whole.
pub async fn same_key_is_stored_once(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let first = onay(BRAND, "row-1", "+905321234567", "2026-05-20 09:00:00");
    let original = store
        .record(std::slice::from_ref(&first), now)
        .await
        .unwrap()[0]
        .id();

    // Retried later, even after the client rotated its key.
    let mut retried = first.clone();
    retried.recorder.key_sha256 = Some(hash_key("iysk_rotated"));
    let again = store
        .record(&[retried], at("2026-05-20 10:05:00"))
        .await
        .unwrap();
    assert_eq!(again, vec![Recorded::Duplicate(original)]);

    // Twice in one batch, beside a new one; and the same key for another brand is new.
    let second = onay(BRAND, "row-2", "+905321234568", "2026-05-20 09:00:00");
    let elsewhere = onay(OTHER_BRAND, "row-1", "+905321234567", "2026-05-20 09:00:00");
    let batch = store
        .record(&[second.clone(), second.clone(), elsewhere], now)
        .await
        .unwrap();
    assert!(matches!(batch[0], Recorded::New(_)));
    assert_eq!(batch[1], Recorded::Duplicate(batch[0].id()));
    assert!(matches!(batch[2], Recorded::New(_)));
    assert_eq!(brand_events(&store, BRAND).await, 2);

    // A different event under a used key: the whole batch is refused, the new one with it.
    let fresh = onay(BRAND, "row-3", "+905321234569", "2026-05-20 09:00:00");
    let mut reused = first.clone();
    reused.status = ConsentStatus::Ret;
    let err = store.record(&[fresh, reused], now).await.unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::IdempotencyConflict {
                index: 1,
                brand: BRAND
            }
        ),
        "{err}"
    );
    assert!(
        !err.to_string().contains("row-1"),
        "keys stay out of errors: {err}"
    );
    assert_eq!(brand_events(&store, BRAND).await, 2);
}

/// Two callers recording the same key at the same moment get one event between them.
pub async fn concurrent_duplicates_store_one(store: EvidenceStore) {
    setup(&store).await;
    let event = onay(BRAND, "twice", "+905321234567", "2026-05-20 09:00:00");
    let now = at("2026-05-20 10:00:00");
    let calls = (0..4).map(|_| {
        let store = store.clone();
        let event = event.clone();
        tokio::spawn(async move { store.record(&[event], now).await.unwrap()[0] })
    });
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let new = results
        .iter()
        .filter(|r| matches!(r, Recorded::New(_)))
        .count();
    assert_eq!(new, 1, "{results:?}");
    assert!(results.iter().all(|r| r.id() == results[0].id()));
    assert_eq!(brand_events(&store, BRAND).await, 1);
}

/// A batch with one bad event stores none of it.
pub async fn failing_batch_stores_nothing(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let good = onay(BRAND, "good", "+905321234567", "2026-05-20 09:00:00");

    let unknown = onay(999, "x", "+905321234568", "2026-05-20 09:00:00");
    let err = store
        .record(&[good.clone(), unknown], now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownBrand(999)), "{err}");

    let mut wrong_kind = onay(BRAND, "y", "+905321234568", "2026-05-20 09:00:00");
    wrong_kind.channel = Channel::Eposta;
    let err = store
        .record(&[good.clone(), wrong_kind], now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::Invalid {
                index: 1,
                field: "recipient",
                ..
            }
        ),
        "{err}"
    );

    let mut iys_side = onay(BRAND, "z", "+905321234568", "2026-05-20 09:00:00");
    iys_side.source = Source::IysWeb;
    let err = store
        .record(&[good.clone(), iys_side], now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EvidenceError::Invalid {
                field: "source",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !err.to_string().contains("532"),
        "no recipient in errors: {err}"
    );

    assert_eq!(brand_events(&store, BRAND).await, 0);
    assert!(
        store
            .claim_uploads(10, LEASE, now)
            .await
            .unwrap()
            .is_empty()
    );
    // The good event alone goes in, as the first id the store hands out.
    let ok = store.record(&[good], now).await.unwrap();
    assert!(matches!(ok[..], [Recorded::New(_)]));
}

/// Pending → in flight → registered / retried → rejected, with every answer kept.
pub async fn uploads_follow_the_state_machine(store: EvidenceStore) {
    setup(&store).await;
    let t0 = at("2026-05-20 10:00:00");
    // Deadlines: a Sat 2026-05-23, b Tue 2026-05-26 (Sunday skipped), c Sat 2026-05-23.
    let a = onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00");
    let b = onay(BRAND, "b", "+905321234568", "2026-05-22 09:00:00");
    let c = onay(BRAND, "c", "+905321234569", "2026-05-20 08:00:00");
    let ids: Vec<EventId> = store
        .record(&[a, b, c], t0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id())
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);

    // Leased for a day: these uploaders are slow, not dead.
    let day = Duration::from_hours(24);
    let first = store.claim_uploads(2, day, t0).await.unwrap();
    let claimed: Vec<_> = first.iter().map(|c| (c.event.id, c.attempt)).collect();
    assert_eq!(
        claimed,
        vec![(a, 1), (c, 1)],
        "earliest deadline first, ties by id"
    );
    let lease_until = t0 + TimeDelta::days(1);
    assert_eq!(
        first[0].event.upload.state,
        UploadState::InFlight { lease_until }
    );
    assert_eq!(
        state_of(&store, a).await,
        UploadState::InFlight { lease_until }
    );
    let rest = store.claim_uploads(10, day, t0).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.event.id).collect::<Vec<_>>(), vec![b]);
    assert!(store.claim_uploads(10, LEASE, t0).await.unwrap().is_empty());

    let t1 = t0 + TimeDelta::seconds(2);
    let done = store
        .finish_upload(a, 1, &registered("a"), t1)
        .await
        .unwrap();
    assert!(
        matches!(done, UploadState::Registered { ref transaction_id, creation_date }
        if *transaction_id == "a".repeat(64) && creation_date == tr("2026-05-20 10:00:05"))
    );
    assert_eq!(state_of(&store, a).await, done);

    let retry_at = t0 + TimeDelta::minutes(5);
    let later = store
        .finish_upload(c, 1, &retry(retry_at), t1)
        .await
        .unwrap();
    assert_eq!(later, UploadState::Pending);
    assert_eq!(
        store
            .event(c)
            .await
            .unwrap()
            .unwrap()
            .upload
            .next_attempt_at,
        retry_at
    );
    let early = retry_at - TimeDelta::seconds(1);
    assert!(
        store
            .claim_uploads(10, LEASE, early)
            .await
            .unwrap()
            .is_empty()
    );
    let second = store.claim_uploads(10, LEASE, retry_at).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].event.id, second[0].attempt), (c, 2));
    let refused = store
        .finish_upload(c, 2, &rejected("H174"), retry_at)
        .await
        .unwrap();
    assert_eq!(
        refused,
        UploadState::Rejected {
            code: "H174".into(),
            message: "rejected by İYS".into()
        }
    );
    // The same attempt reported twice is kept once, and the first answer stands.
    let repeat = store
        .finish_upload(c, 2, &registered("c"), retry_at)
        .await
        .unwrap();
    assert_eq!(repeat, refused);
    let attempts = store.upload_attempts(c).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].attempt, attempts[1].attempt), (1, 2));
    assert_eq!(attempts[0].answer, retry(retry_at));
    assert_eq!(attempts[1].answer, rejected("H174"));
    assert_eq!(attempts[1].finished_at, retry_at);
    assert_eq!(
        store.upload_attempts(a).await.unwrap()[0].answer,
        registered("a")
    );

    let err = store
        .finish_upload(b, 2, &registered("b"), t1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EvidenceError::UnknownAttempt { attempt: 2, .. }),
        "{err}"
    );
    let err = store
        .finish_upload(EventId(999), 1, &registered("b"), t1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EvidenceError::UnknownEvent(EventId(999))),
        "{err}"
    );
    // Closed uploads are never handed out again; b's lease has run out.
    let much_later = at("2026-05-23 12:00:00");
    let left = store.claim_uploads(10, LEASE, much_later).await.unwrap();
    assert_eq!(left.iter().map(|c| c.event.id).collect::<Vec<_>>(), vec![b]);
}

/// An uploader that died mid-upload leaves a lease that runs out; the upload is claimed
/// again, and the dead uploader's late answer cannot undo the new attempt, unless it is
/// İYS's acceptance, which is a fact whoever reports it.
pub async fn lapsed_lease_is_reclaimed(store: EvidenceStore) {
    setup(&store).await;
    let t0 = at("2026-05-20 10:00:00");
    let recorded = store
        .record(
            &[
                onay(BRAND, "x", "+905321234567", "2026-05-20 09:00:00"),
                onay(BRAND, "y", "+905321234568", "2026-05-20 09:00:00"),
            ],
            t0,
        )
        .await
        .unwrap();
    let (x, y) = (recorded[0].id(), recorded[1].id());
    let first = store.claim_uploads(10, LEASE, t0).await.unwrap();
    assert!(first.iter().all(|c| c.attempt == 1));
    let held = t0 + TimeDelta::seconds(59);
    assert!(
        store
            .claim_uploads(10, LEASE, held)
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = t0 + TimeDelta::seconds(60);
    let again = store.claim_uploads(10, LEASE, lapsed).await.unwrap();
    let again: Vec<_> = again.iter().map(|c| (c.event.id, c.attempt)).collect();
    assert_eq!(again, vec![(x, 2), (y, 2)]);

    let lease_until = lapsed + TimeDelta::seconds(60);
    let stale = store
        .finish_upload(x, 1, &retry(lapsed), lapsed)
        .await
        .unwrap();
    assert_eq!(
        stale,
        UploadState::InFlight { lease_until },
        "attempt 2 still holds it"
    );
    let done = store
        .finish_upload(x, 2, &registered("x"), lapsed)
        .await
        .unwrap();
    assert!(matches!(done, UploadState::Registered { .. }));

    let accepted = store
        .finish_upload(y, 1, &registered("y"), lapsed)
        .await
        .unwrap();
    assert!(matches!(accepted, UploadState::Registered { .. }));
    // Attempt 2 then hears "same status" from İYS: the registration stands.
    let after = store
        .finish_upload(y, 2, &rejected("H174"), lapsed)
        .await
        .unwrap();
    assert_eq!(after, accepted);
    assert_eq!(store.upload_attempts(y).await.unwrap().len(), 2);
}

/// Uploads past the strict deadline are not handed out, count as expired, and are marked
/// expired exactly once; one in flight is left to its uploader until its lease runs out.
/// Captured Fri 2025-10-24: deadline Tue 2025-10-28 13:00 (28 October is a half day).
pub async fn deadlines_follow_the_calendar(store: EvidenceStore) {
    setup(&store).await;
    let t0 = at("2025-10-24 10:00:00");
    let recorded = store
        .record(
            &[
                onay(BRAND, "a", "+905321234567", "2025-10-24 09:00:00"),
                onay(BRAND, "b", "+905321234568", "2025-10-24 09:30:00"),
            ],
            t0,
        )
        .await
        .unwrap();
    let (a, b) = (recorded[0].id(), recorded[1].id());
    let deadline = store.event(a).await.unwrap().unwrap().upload.deadline;
    assert_eq!(deadline, tr("2025-10-28 13:00:00"));

    let counts = |pending, at_risk, expired| UploadCounts {
        pending,
        at_risk,
        expired,
    };
    // Monday: Monday and Tuesday morning left.
    let monday = at("2025-10-27 12:00:00");
    assert_eq!(store.upload_counts(monday).await.unwrap(), counts(2, 0, 0));
    // Tuesday: the last counted day.
    let tuesday = at("2025-10-28 00:00:00");
    assert_eq!(store.upload_counts(tuesday).await.unwrap(), counts(2, 2, 0));

    // b is claimed at 12:59:30 with a 60 s lease that outlives the deadline.
    let claimed = store
        .claim_uploads(1, LEASE, at("2025-10-28 12:59:30"))
        .await
        .unwrap();
    assert_eq!(
        claimed[0].event.id, a,
        "a's deadline is the same; ties go by id"
    );
    let claimed_b = store
        .claim_uploads(1, LEASE, at("2025-10-28 12:59:30"))
        .await
        .unwrap();
    assert_eq!(claimed_b[0].event.id, b);
    store
        .finish_upload(
            a,
            1,
            &retry(at("2025-10-28 12:59:40")),
            at("2025-10-28 12:59:35"),
        )
        .await
        .unwrap();

    let on_time = at("2025-10-28 13:00:00");
    assert_eq!(
        store.expire_overdue(on_time).await.unwrap(),
        0,
        "inclusive deadline"
    );
    let late = on_time + TimeDelta::seconds(1);
    assert!(
        store
            .claim_uploads(10, LEASE, late)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.upload_counts(late).await.unwrap(), counts(0, 0, 2));
    assert_eq!(
        store.expire_overdue(late).await.unwrap(),
        1,
        "b is still leased"
    );
    assert_eq!(state_of(&store, a).await, UploadState::Expired);
    assert!(matches!(
        state_of(&store, b).await,
        UploadState::InFlight { .. }
    ));
    let lapsed = at("2025-10-28 13:00:30");
    assert_eq!(store.expire_overdue(lapsed).await.unwrap(), 1);
    assert_eq!(state_of(&store, b).await, UploadState::Expired);
    assert_eq!(store.expire_overdue(lapsed).await.unwrap(), 0);
    assert_eq!(store.upload_counts(lapsed).await.unwrap(), counts(0, 0, 2));
}

/// Several uploaders draining at once never get the same upload, and together get all.
pub async fn concurrent_claimers_never_share(store: EvidenceStore) {
    const EVENTS: usize = 400;
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let events: Vec<NewEvent> = (0..EVENTS)
        .map(|i| {
            onay(
                BRAND,
                &format!("k{i}"),
                &format!("+90532{i:07}"),
                "2026-05-20 09:00:00",
            )
        })
        .collect();
    store.record(&events, now).await.unwrap();
    let workers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_uploads(5, LEASE, now).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.event.id));
            }
        })
    });
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an upload was claimed twice");
    assert_eq!(all.len(), EVENTS);
}

/// Brands, providers, API clients and their grants: what the check path's keys are built from.
pub async fn brands_and_clients(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let brands = store.brands().await.unwrap();
    assert_eq!(
        brands.iter().map(|b| b.brand_code).collect::<Vec<_>>(),
        vec![BRAND, OTHER_BRAND]
    );
    assert_eq!(
        store.providers().await.unwrap()[0].credentials_ref,
        "env:IYS_PASSWORD"
    );
    let dup = Brand {
        brand_code: BRAND,
        iys_code: IYS_CODE,
        name: "again".into(),
        policy: BrandPolicy::default(),
    };
    let err = store.add_brand(&dup, now).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::AlreadyExists { what: "brand", .. }),
        "{err}"
    );
    let orphan = Brand {
        brand_code: 700_001,
        iys_code: 700_000,
        ..dup
    };
    let err = store.add_brand(&orphan, now).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::UnknownProvider(700_000)),
        "{err}"
    );

    let tacir = BrandPolicy {
        allow_unregistered_tacir: true,
    };
    store.set_brand_policy(OTHER_BRAND, tacir).await.unwrap();
    assert_eq!(store.brands().await.unwrap()[1].policy, tacir);
    assert!(matches!(
        store.set_brand_policy(1, tacir).await.unwrap_err(),
        EvidenceError::UnknownBrand(1)
    ));

    store
        .add_client("sms-gw", hash_key("iysk_a"), now)
        .await
        .unwrap();
    store
        .add_client("crm", hash_key("iysk_b"), now)
        .await
        .unwrap();
    let err = store
        .add_client("sms-gw", hash_key("iysk_c"), now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::AlreadyExists { .. }), "{err}");
    let err = store
        .add_client("other", hash_key("iysk_a"), now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::KeyInUse(_)), "{err}");

    store
        .grant("sms-gw", BRAND, &RetailerGrant::Any, now)
        .await
        .unwrap();
    store
        .grant("sms-gw", OTHER_BRAND, &RetailerGrant::None, now)
        .await
        .unwrap();
    let only = RetailerGrant::Only(vec![12_345_678]);
    store
        .grant("sms-gw", OTHER_BRAND, &only, now)
        .await
        .unwrap();
    store
        .grant("crm", BRAND, &RetailerGrant::None, now)
        .await
        .unwrap();
    let err = store
        .grant("nobody", BRAND, &RetailerGrant::None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownClient(_)), "{err}");
    let err = store
        .grant("crm", 1, &RetailerGrant::None, now)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownBrand(1)), "{err}");
    assert!(store.revoke("crm", BRAND).await.unwrap());
    assert!(!store.revoke("crm", BRAND).await.unwrap());

    let clients = store.clients().await.unwrap();
    assert_eq!(clients.len(), 2);
    assert_eq!(
        (clients[0].name.as_str(), clients[0].grants.len()),
        ("crm", 0)
    );
    assert_eq!(
        clients[1].grants,
        vec![(BRAND, RetailerGrant::Any), (OTHER_BRAND, only)]
    );
    let keys = api_keys(&clients).unwrap();
    let gw = keys
        .authenticate("iysk_a")
        .expect("stored digest authenticates");
    assert!(gw.may(BRAND, Some(1)) && gw.may(OTHER_BRAND, Some(12_345_678)));
    assert!(!gw.may(OTHER_BRAND, Some(1)));
    let crm = keys.authenticate("iysk_b").unwrap();
    assert!(!crm.may(BRAND, None), "revoked");
}

/// Sync cursors and daily reports are kept and replaced.
pub async fn cursors_and_reports(store: EvidenceStore) {
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let brand = BrandRef {
        iys_code: IYS_CODE,
        brand_code: BRAND,
    };
    assert_eq!(store.cursor(brand, PullSource::Iys).await.unwrap(), None);
    let cursor = Cursor {
        after: Some("1597740617_abc".into()),
        caught_up_at: Some(now),
    };
    store
        .set_cursor(brand, PullSource::Iys, &cursor, now)
        .await
        .unwrap();
    let next = Cursor {
        after: Some("1597740999_def".into()),
        caught_up_at: None,
    };
    store
        .set_cursor(brand, PullSource::Iys, &next, now)
        .await
        .unwrap();
    store
        .set_cursor(brand, PullSource::Hs, &cursor, now)
        .await
        .unwrap();
    assert_eq!(
        store.cursor(brand, PullSource::Iys).await.unwrap(),
        Some(next)
    );
    assert_eq!(
        store.cursor(brand, PullSource::Hs).await.unwrap(),
        Some(cursor)
    );

    let day = chrono::NaiveDate::from_ymd_opt(2026, 5, 20).unwrap();
    assert_eq!(store.report(BRAND, day).await.unwrap(), None);
    let first = serde_json::json!({"calendar": "display", "pending": 3, "expired": []});
    let second = serde_json::json!({"calendar": "display", "pending": 0, "expired": [12]});
    store.save_report(BRAND, day, &first, now).await.unwrap();
    store.save_report(BRAND, day, &second, now).await.unwrap();
    assert_eq!(store.report(BRAND, day).await.unwrap(), Some(second));
    let err = store.save_report(1, day, &first, now).await.unwrap_err();
    assert!(matches!(err, EvidenceError::UnknownBrand(1)), "{err}");
}
