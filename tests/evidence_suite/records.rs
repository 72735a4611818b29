//! Recording: what is stored reads back, an idempotency key is stored once, a batch is all
//! or nothing.

use iysgate::auth::hash_key;
use iysgate::domain::{Channel, ConsentStatus, Source};
use iysgate::write::evidence::{EventId, EvidenceError, EvidenceStore, Recorded, UploadState};

use chrono::TimeDelta;

use super::{BRAND, LEASE, OTHER_BRAND, at, brand_events, onay, setup, tr};

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
