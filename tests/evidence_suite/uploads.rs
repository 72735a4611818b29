//! The upload outbox: claims, answers, leases, deadlines on the strict calendar, the
//! superseded state, and concurrent claimers.

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use iysgate::write::evidence::{
    EventId, EvidenceError, EvidenceStore, NewEvent, UploadAnswer, UploadCounts, UploadOutcome,
    UploadState,
};

use super::{BRAND, LEASE, at, onay, registered, rejected, retry, setup, state_of, tr};

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

    // b's slow uploader comes back: İYS did accept it. That is the truth, late or not.
    let answer = at("2025-10-28 13:00:40");
    let accepted = store
        .finish_upload(b, 1, &registered("b"), answer)
        .await
        .unwrap();
    assert!(matches!(accepted, UploadState::Registered { .. }));
    assert_eq!(store.upload_counts(answer).await.unwrap(), counts(0, 0, 1));
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

/// An H174 over İYS's record of the same status from another movement closes the upload as
/// superseded: İYS's transaction and the code kept, final (never claimed, expired or
/// counted pending again), and the attempt kept with its outcome.
pub async fn superseded_is_final_and_kept(store: EvidenceStore) {
    setup(&store).await;
    let t0 = at("2026-05-20 10:00:00");
    let a = onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00");
    let id = store.record(&[a], t0).await.unwrap()[0].id();
    let claim = store.claim_uploads(10, LEASE, t0).await.unwrap();
    assert_eq!(claim.len(), 1);
    let answer = UploadAnswer {
        http_status: Some(400),
        outcome: UploadOutcome::Superseded {
            transaction_id: "f".repeat(64),
            creation_date: tr("2026-04-01 12:00:00"),
            code: "H174".into(),
            message: "H174: İzin durumu: ONAY".into(),
        },
    };
    let want = UploadState::Superseded {
        transaction_id: "f".repeat(64),
        creation_date: tr("2026-04-01 12:00:00"),
        code: "H174".into(),
        message: "H174: İzin durumu: ONAY".into(),
    };
    let t1 = t0 + TimeDelta::seconds(1);
    assert_eq!(store.finish_upload(id, 1, &answer, t1).await.unwrap(), want);
    assert_eq!(state_of(&store, id).await, want);
    assert_eq!(want.as_str(), "superseded");
    assert!(!want.is_open());
    // A late refusal of the same attempt changes nothing.
    assert_eq!(
        store
            .finish_upload(id, 1, &rejected("H175"), t1)
            .await
            .unwrap(),
        want
    );
    let attempts = store.upload_attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].answer, answer);
    // Final: past its lease and its deadline it is neither claimed nor expired.
    let later = at("2026-05-30 00:00:00");
    assert!(
        store
            .claim_uploads(10, LEASE, later)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.expire_overdue(later).await.unwrap(), 0);
    assert_eq!(state_of(&store, id).await, want);
    assert_eq!(
        store.upload_counts(later).await.unwrap(),
        UploadCounts::default()
    );
}
