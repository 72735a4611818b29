//! The uploader against the mock İYS over real HTTP, on both evidence stores (a file, and
//! PostgreSQL at `DATABASE_URL`; see `tests/uploader_support`). Each scenario is one
//! promise of `iysgate::write::uploader`:
//! - a collected ONAY reaches İYS, is recorded registered with İYS's transactionId, and the
//!   serving index hears of it once;
//! - İYS's refusals (H175, H162) are recorded with their code and never sent again;
//! - an H174 over an ONAY İYS already holds from another record marks the upload superseded
//!   with İYS's transaction, and the key turns ALLOW on İYS's record;
//! - 5xx, 429 with Retry-After and an expired token are retried until İYS accepts, each
//!   failure an attempt;
//! - an uploader that dies after claiming (before sending, mid-call, or after İYS accepted
//!   by single or batch add) is replaced once its lease runs out, and İYS ends up with one
//!   consent, the callback with one registration;
//! - a later RET waits for the ONAY before it when that ONAY has to be retried, whether it
//!   would go by single add in the same round or in a batch of a later round;
//! - an import of 2500 goes in batches of at most 1000, polled no sooner than İYS allows, its
//!   invalid items rejected with their codes and the rest registered;
//! - overdue uploads are expired, never sent, and counted;
//! - shutdown hands unsent claims back and a new uploader finishes them.

mod common;
#[macro_use]
mod uploader_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use iysgate::clock::SystemClock;
use iysgate::domain::time::{format_iys, parse_iys};
use iysgate::domain::{
    Channel, Clock, ConsentEvent, ConsentStatus, ManualClock, Reason, RecipientType, Registration,
};
use iysgate::iys::client::BatchItemStatus;
use iysgate::iys::mock::{Faults, MockConfig, SeedRecord};
use iysgate::write::evidence::{EvidenceStore, UploadOutcome, UploadState};
use iysgate::write::uploader::{Backoff, UploaderConfig, consent_request, key_of};

use uploader_support::{
    BRAND, Harness, IYS_CODE, Schema, config, event, file_store, mock_config, now_tr, onay, phone,
    wait_for,
};

on_both_stores!(
    onay_is_registered_and_reported_once,
    refusals_are_rejected_with_their_code_and_not_retried,
    h174_over_an_onay_in_force_is_superseded_and_allows,
    transient_faults_are_retried_then_registered,
    crash_after_single_add_ends_exactly_once,
    crash_after_batch_add_ends_exactly_once,
    uploader_killed_mid_call_is_replaced,
    later_ret_waits_for_the_onay_before_it,
    later_ret_in_a_batch_waits_for_the_onay_before_it,
    bulk_import_goes_in_batches_and_drops_invalid_items,
    overdue_uploads_are_expired_and_counted,
    shutdown_hands_back_unsent_claims,
);

const SETTLE: Duration = Duration::from_secs(20);

fn mesaj(recipient: &str) -> (String, RecipientType, Channel) {
    (
        recipient.to_owned(),
        RecipientType::Bireysel,
        Channel::Mesaj,
    )
}

async fn onay_is_registered_and_reported_once(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    // The serving side: the pending ONAY is applied at record time, the callback applies
    // the registration (as the service wires it to `Consents::apply`).
    let node = Arc::new(common::node(BRAND));
    node.freshness.mark_confirmed(SystemClock.now_utc());
    let collected = onay(1, now_tr() - ChronoDuration::minutes(10));
    let key = key_of(&collected);
    let pending = ConsentEvent {
        status: collected.status,
        source: collected.source,
        consent_date: collected.consent_date,
        registration: Registration::Pending,
        retailer_access: vec![],
    };
    node.consents.apply(key, pending).unwrap();
    assert_eq!(node.reason(&phone(1)), Some(Reason::PendingRegistration));

    let id = h.record_one(&collected).await;
    let running = h.start(config());
    h.wait_settled(&[id], SETTLE).await;
    // A few more rounds: nothing is sent or reported again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.stop().await;

    let (recipient, rt, ct) = mesaj(&phone(1));
    let in_iys = h
        .mock
        .consent(u64::from(BRAND), &recipient, rt, ct)
        .unwrap();
    let UploadState::Registered {
        transaction_id,
        creation_date,
    } = h.state(id).await
    else {
        panic!("not registered: {:?}", h.state(id).await)
    };
    assert_eq!(transaction_id, in_iys.transaction_id);
    assert_eq!(format_iys(creation_date), in_iys.creation_date);
    assert_eq!(h.attempts(id).await, 1);
    assert_eq!(h.mock.change_count(u64::from(BRAND)), 1);

    let registered = h.registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 1, "the callback fires once");
    let (key, event) = registered[0].clone();
    assert_eq!(key.recipient.to_string(), phone(1));
    assert_eq!(
        event.registration,
        Registration::Registered {
            creation_date,
            transaction_id: transaction_id.clone().into(),
        }
    );
    node.consents.apply(key, event).unwrap();
    assert_eq!(node.reason(&phone(1)), Some(Reason::ConsentRegistered));
}

async fn refusals_are_rejected_with_their_code_and_not_retried(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let now = now_tr();
    let ids = h
        .record(&[
            // A first record cannot be RET: H175.
            event(
                &phone(1),
                ConsentStatus::Ret,
                now - ChronoDuration::minutes(5),
            ),
            // A consent date in the future: H162 (422).
            onay(2, now + ChronoDuration::days(1)),
        ])
        .await;
    let running = h.start(config());
    h.wait_settled(&ids, SETTLE).await;
    let requests = h.client.api_requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = running.uploader.stats();
    running.stop().await;

    for (id, want) in ids.iter().zip(["H175", "H162"]) {
        match h.state(*id).await {
            UploadState::Rejected { code, message } => {
                assert_eq!(code, want);
                assert!(message.starts_with(want), "{message}");
                assert!(!message.contains("532"), "no recipient in {message}");
            }
            other => panic!("{want}: {other:?}"),
        }
        assert_eq!(h.attempts(*id).await, 1, "{want} is never sent again");
    }
    assert_eq!(
        h.client.api_requests(),
        requests,
        "no İYS call after settling"
    );
    assert_eq!(stats.status_checks, 0, "no H174 to check");
    assert_eq!(stats.rejected, 2);
    assert!(h.registered.lock().unwrap().is_empty());
}

/// İYS already holds an ONAY of the key from another record (an older consent date here), so
/// it answers the collected ONAY with H174. That ONAY is in force: the upload is closed as
/// superseded with İYS's transaction (not left pending to expire, not counted a refusal),
/// and the callback hands the serving index a registered ONAY carrying İYS's transactionId
/// and creationDate, which supersedes the pending one: the check answers ALLOW.
async fn h174_over_an_onay_in_force_is_superseded_and_allows(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let now = now_tr();
    h.mock
        .seed(
            u64::from(BRAND),
            [SeedRecord {
                recipient: phone(3),
                recipient_type: RecipientType::Bireysel,
                consent_type: Channel::Mesaj,
                status: ConsentStatus::Onay,
                source: "HS_WEB".into(),
                consent_date: Some(now - ChronoDuration::days(30)),
                creation_date: Some(now - ChronoDuration::days(30)),
            }],
        )
        .unwrap();
    let (r, rt, ct) = mesaj(&phone(3));
    let in_iys = h.mock.consent(u64::from(BRAND), &r, rt, ct).unwrap();
    let node = Arc::new(common::node(BRAND));
    node.freshness.mark_confirmed(SystemClock.now_utc());
    let collected = onay(3, now - ChronoDuration::minutes(5));
    let pending = ConsentEvent {
        status: collected.status,
        source: collected.source,
        consent_date: collected.consent_date,
        registration: Registration::Pending,
        retailer_access: vec![],
    };
    node.consents.apply(key_of(&collected), pending).unwrap();
    assert_eq!(node.reason(&phone(3)), Some(Reason::PendingRegistration));

    let id = h.record_one(&collected).await;
    let running = h.start(config());
    h.wait_settled(&[id], SETTLE).await;
    let requests = h.client.api_requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = running.uploader.stats();
    running.stop().await;

    match h.state(id).await {
        UploadState::Superseded {
            transaction_id,
            creation_date,
            code,
            message,
        } => {
            assert_eq!(transaction_id, in_iys.transaction_id);
            assert_eq!(format_iys(creation_date), in_iys.creation_date);
            assert_eq!(code, "H174");
            assert!(!message.contains("532"), "no recipient in {message}");
        }
        other => panic!("not superseded: {other:?}"),
    }
    assert_eq!(h.attempts(id).await, 1, "never sent again");
    assert_eq!(
        h.client.api_requests(),
        requests,
        "no İYS call after settling"
    );
    assert_eq!(stats.status_checks, 1);
    assert_eq!(stats.rejected, 0, "not a refusal");
    let counts = h.store.upload_counts(h.clock.now_utc()).await.unwrap();
    assert_eq!((counts.pending, counts.expired), (0, 0));
    // İYS keeps its record: one movement, the seeded one.
    assert_eq!(h.mock.change_count(u64::from(BRAND)), 1);

    let registered = h.registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 1, "the callback fires once");
    let (key, event) = registered[0].clone();
    assert_eq!(key, key_of(&collected));
    assert_eq!(event.status, ConsentStatus::Onay);
    assert_eq!(
        event.registration,
        Registration::Registered {
            creation_date: parse_iys(&in_iys.creation_date).unwrap(),
            transaction_id: in_iys.transaction_id.clone().into(),
        }
    );
    node.consents.apply(key, event).unwrap();
    assert_eq!(node.reason(&phone(3)), Some(Reason::ConsentRegistered));
}

async fn transient_faults_are_retried_then_registered(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let id = h
        .record_one(&onay(1, now_tr() - ChronoDuration::minutes(5)))
        .await;
    // Two 503s, a 429 asking for 1 s, then a 401 (expired token) that the client itself
    // answers with a new token: four attempts for the uploader.
    h.mock.set_faults(Faults {
        error_burst: 2,
        error_status: 503,
        throttle: 1,
        retry_after_secs: Some(1),
        unauthorized: 1,
        path_contains: Some("/consents".into()),
        ..Faults::default()
    });
    let running = h.start(config());
    h.wait_settled(&[id], SETTLE).await;
    running.stop().await;

    assert!(matches!(h.state(id).await, UploadState::Registered { .. }));
    let attempts = h.store.upload_attempts(id).await.unwrap();
    let seen: Vec<(Option<u16>, &str)> = attempts
        .iter()
        .map(|a| (a.answer.http_status, a.answer.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(503), "retry"),
            (Some(503), "retry"),
            (Some(429), "retry"),
            (Some(200), "registered"),
        ]
    );
    let UploadOutcome::Retry { retry_at, code, .. } = &attempts[2].answer.outcome else {
        panic!("429 is a retry")
    };
    assert_eq!(code.as_deref(), Some("H124"));
    assert!(
        *retry_at >= attempts[2].finished_at + ChronoDuration::milliseconds(999),
        "Retry-After is honoured"
    );
    assert_eq!(h.mock.change_count(u64::from(BRAND)), 1);
    assert_eq!(h.registrations_of(&phone(1)), 1);
}

/// The dead uploader claimed, İYS accepted its v2 single add, and it died before recording.
async fn crash_after_single_add_ends_exactly_once(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let collected = onay(1, now_tr() - ChronoDuration::minutes(5));
    let id = h.record_one(&collected).await;
    let lease = config().lease;
    let claims = h
        .store
        .claim_uploads(10, lease, SystemClock.now_utc())
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let accepted = h
        .client
        .add_consent(
            u64::from(IYS_CODE),
            u64::from(BRAND),
            &consent_request(&collected),
        )
        .await
        .unwrap();
    drop(claims); // …and the process dies.

    let running = h.start(config());
    // Nothing happens while the dead uploader's lease lasts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.state(id).await.is_open());
    h.wait_settled(&[id], SETTLE).await;
    running.stop().await;

    let UploadState::Registered { transaction_id, .. } = h.state(id).await else {
        panic!("registered")
    };
    assert_eq!(transaction_id, accepted.transaction_id);
    assert_eq!(
        h.mock.change_count(u64::from(BRAND)),
        1,
        "one consent in İYS"
    );
    assert_eq!(h.registrations_of(&phone(1)), 1);
    let attempts = h.store.upload_attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the dead attempt left no answer");
    assert_eq!(attempts[0].attempt, 2);
}

/// The dead uploader's batch was accepted and processed; the restart's single add gets
/// H174, which the status query shows to be this very consent.
async fn crash_after_batch_add_ends_exactly_once(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let collected = onay(1, now_tr() - ChronoDuration::minutes(5));
    let id = h.record_one(&collected).await;
    let claims = h
        .store
        .claim_uploads(10, config().lease, SystemClock.now_utc())
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let batch = h
        .client
        .add_consents_batch(
            u64::from(IYS_CODE),
            u64::from(BRAND),
            &[consent_request(&collected)],
        )
        .await
        .unwrap();
    let results = h
        .client
        .poll_batch(u64::from(IYS_CODE), u64::from(BRAND), &batch.request_id)
        .await
        .unwrap();
    assert_eq!(results[0].status, BatchItemStatus::Success);
    drop(claims);

    let running = h.start(config());
    h.wait_settled(&[id], SETTLE).await;
    let stats = running.uploader.stats();
    running.stop().await;

    let UploadState::Registered { transaction_id, .. } = h.state(id).await else {
        panic!("registered: {:?}", h.state(id).await)
    };
    assert_eq!(Some(transaction_id), results[0].transaction_id);
    assert_eq!(stats.status_checks, 1, "H174 checked once");
    assert_eq!(
        h.mock.change_count(u64::from(BRAND)),
        1,
        "one consent in İYS"
    );
    assert_eq!(h.registrations_of(&phone(1)), 1);
}

/// A real uploader is killed (its task dropped) while its call to İYS is in flight.
async fn uploader_killed_mid_call_is_replaced(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let id = h
        .record_one(&onay(1, now_tr() - ChronoDuration::minutes(5)))
        .await;
    // Long enough that the call is surely still in flight when the task is killed.
    h.mock.set_faults(Faults {
        latency_ms: 2000,
        path_contains: Some("/consents".into()),
        ..Faults::default()
    });
    let first = h.start(config());
    wait_for("the claim", SETTLE, || async move {
        matches!(h.state(id).await, UploadState::InFlight { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.task.abort();
    let _ = first.task.await;
    h.mock.set_faults(Faults::default());

    let second = h.start(config());
    h.wait_settled(&[id], SETTLE).await;
    second.stop().await;
    assert!(matches!(h.state(id).await, UploadState::Registered { .. }));
    assert!(h.attempts(id).await >= 2);
    assert_eq!(
        h.mock.change_count(u64::from(BRAND)),
        1,
        "one consent in İYS"
    );
    assert_eq!(h.registrations_of(&phone(1)), 1);
}

async fn later_ret_waits_for_the_onay_before_it(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let now = now_tr();
    let ids = h
        .record(&[
            onay(1, now - ChronoDuration::minutes(60)),
            event(
                &phone(1),
                ConsentStatus::Ret,
                now - ChronoDuration::minutes(30),
            ),
        ])
        .await;
    // The ONAY's first try fails: the RET must not overtake it.
    h.fail_consent_calls(1, 500);
    let running = h.start(config());
    h.wait_settled(&ids, SETTLE).await;
    running.stop().await;

    for id in &ids {
        assert!(
            matches!(h.state(*id).await, UploadState::Registered { .. }),
            "{:?}",
            h.state(*id).await
        );
    }
    let (r, rt, ct) = mesaj(&phone(1));
    let in_iys = h.mock.consent(u64::from(BRAND), &r, rt, ct).unwrap();
    assert_eq!(
        in_iys.status,
        ConsentStatus::Ret,
        "İYS ends on the company's last word"
    );
    assert_eq!(h.mock.change_count(u64::from(BRAND)), 2);
    assert!(h.attempts(ids[1]).await >= 2, "the RET was held once");
}

/// The ONAY is retrying when an import brings the RET that follows it: the RET must not go
/// out in the import's batch ahead of the ONAY.
async fn later_ret_in_a_batch_waits_for_the_onay_before_it(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let now = now_tr();
    let first = h
        .record_one(&onay(1, now - ChronoDuration::minutes(60)))
        .await;
    h.fail_consent_calls(1, 500);
    let running = h.start(UploaderConfig {
        bulk_threshold: 5,
        // The ONAY's retry comes 1 to 2 s later: time for the import to be claimed.
        backoff: Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(2),
        },
        ..config()
    });
    wait_for("the ONAY's failed attempt", SETTLE, || async move {
        h.attempts(first).await == 1 && h.state(first).await == UploadState::Pending
    })
    .await;
    let mut import = vec![event(
        &phone(1),
        ConsentStatus::Ret,
        now - ChronoDuration::minutes(30),
    )];
    import.extend((10..20).map(|i| onay(i, now - ChronoDuration::minutes(30))));
    let mut ids = h.record(&import).await;
    ids.push(first);
    h.wait_settled(&ids, SETTLE).await;
    let stats = running.uploader.stats();
    running.stop().await;

    assert!(stats.batches >= 1, "the import went as a batch");
    for id in &ids {
        assert!(
            matches!(h.state(*id).await, UploadState::Registered { .. }),
            "{:?}",
            h.state(*id).await
        );
    }
    let (r, rt, ct) = mesaj(&phone(1));
    let in_iys = h.mock.consent(u64::from(BRAND), &r, rt, ct).unwrap();
    assert_eq!(
        in_iys.status,
        ConsentStatus::Ret,
        "İYS ends on the company's last word"
    );
}

async fn bulk_import_goes_in_batches_and_drops_invalid_items(store: EvidenceStore) {
    // The mock counts whole seconds as İYS's dates do, so a batch is processed up to a
    // second after `batch_delay`; the uploader waits that much longer before polling.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let harness = Harness::new(
        store,
        MockConfig {
            batch_delay: Duration::from_millis(500),
            ..mock_config(Arc::clone(&clock))
        },
        clock,
    )
    .await;
    let h = &harness;
    let now = now_tr();
    let mut events: Vec<_> = (0..2490)
        .map(|i| onay(i, now - ChronoDuration::minutes(30)))
        .collect();
    // Refused by validation at submission (422 H162, the whole batch).
    events.extend((5000..5006).map(|i| onay(i, now + ChronoDuration::days(2))));
    // Refused when processed (failure H175 in the results).
    events.extend((6000..6004).map(|i| {
        event(
            &phone(i),
            ConsentStatus::Ret,
            now - ChronoDuration::minutes(30),
        )
    }));
    let ids = h.record(&events).await;
    let running = h.start(UploaderConfig {
        poll_delay: Duration::from_millis(1500),
        // Long enough that no batch claim lapses while its results are recorded.
        batch_wait: Duration::from_mins(1),
        ..config()
    });
    h.wait_none_open(Duration::from_mins(2)).await;
    let stats = running.uploader.stats();
    running.stop().await;

    let sizes = h.mock.batch_sizes();
    assert!(sizes.iter().all(|n| *n <= 1000), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2494, "{sizes:?}");
    assert_eq!(stats.batches, sizes.len() as u64);
    assert!(stats.batch_repairs >= 1);
    assert_eq!(
        h.mock.early_polls(),
        0,
        "never polled before İYS processed a batch"
    );
    assert_eq!(stats.polls, stats.batches);

    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for (id, e) in ids.iter().zip(&events) {
        match h.state(*id).await {
            UploadState::Registered { transaction_id, .. } => {
                let (r, rt, ct) = mesaj(&e.recipient.to_string());
                let in_iys = h.mock.consent(u64::from(BRAND), &r, rt, ct).unwrap();
                assert_eq!(transaction_id, in_iys.transaction_id);
                *codes.entry("registered".into()).or_default() += 1;
            }
            UploadState::Rejected { code, .. } => *codes.entry(code).or_default() += 1,
            other => panic!("{other:?}"),
        }
    }
    let want: std::collections::BTreeMap<String, usize> = [
        ("registered".to_owned(), 2490),
        ("H162".to_owned(), 6),
        ("H175".to_owned(), 4),
    ]
    .into();
    assert_eq!(codes, want);
    assert_eq!(h.mock.record_count(u64::from(BRAND)), 2490);
    assert_eq!(h.registered.lock().unwrap().len(), 2490);
}

async fn overdue_uploads_are_expired_and_counted(store: EvidenceStore) {
    let tr = |t: &str| parse_iys(t).unwrap();
    // Captured Thu 2024-04-04: deadline Mon 2024-04-08 23:59:59 (the Sunday does not count).
    let clock = Arc::new(ManualClock::at_turkey(tr("2024-04-04 10:00:00")));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let harness = Harness::new(store, mock_config(Arc::clone(&dyn_clock)), dyn_clock).await;
    let h = &harness;
    let late: Vec<_> = (0..3).map(|i| onay(i, tr("2024-04-04 09:00:00"))).collect();
    let late_ids = h.record(&late).await;
    let uploader = h.uploader(config());

    let counts = uploader.sweep().await.unwrap();
    assert_eq!((counts.pending, counts.at_risk, counts.expired), (3, 0, 0));
    clock.set_turkey(tr("2024-04-07 12:00:00"));
    let counts = uploader.sweep().await.unwrap();
    assert_eq!(counts.at_risk, 3, "Sunday: only Monday is left");

    clock.set_turkey(tr("2024-04-08 09:30:00"));
    let fresh = h.record_one(&onay(9, tr("2024-04-08 09:00:00"))).await;
    clock.set_turkey(tr("2024-04-09 00:00:00"));
    let counts = uploader.sweep().await.unwrap();
    assert_eq!((counts.pending, counts.expired), (1, 3));
    for id in &late_ids {
        assert_eq!(h.state(*id).await, UploadState::Expired);
    }
    // A round sends only what is still on time.
    let stop = tokio_util::sync::CancellationToken::new();
    assert_eq!(uploader.round(&stop).await.unwrap(), 1);
    assert!(matches!(
        h.state(fresh).await,
        UploadState::Registered { .. }
    ));
    assert_eq!(h.mock.record_count(u64::from(BRAND)), 1);
    for id in &late_ids {
        assert_eq!(h.state(*id).await, UploadState::Expired);
    }
    let counts = uploader.sweep().await.unwrap();
    assert_eq!((counts.pending, counts.expired), (0, 3));
}

async fn shutdown_hands_back_unsent_claims(store: EvidenceStore) {
    let harness = Harness::real_time(store).await;
    let h = &harness;
    let events: Vec<_> = (0..20)
        .map(|i| onay(i, now_tr() - ChronoDuration::minutes(5)))
        .collect();
    let ids = h.record(&events).await;
    h.mock.set_faults(Faults {
        latency_ms: 100,
        path_contains: Some("/consents".into()),
        ..Faults::default()
    });
    let running = h.start(UploaderConfig {
        concurrency: 1,
        ..config()
    });
    wait_for("a first registration", SETTLE, || async move {
        !h.registered.lock().unwrap().is_empty()
    })
    .await;
    running.stop().await;

    let (mut registered, mut handed_back) = (0, 0);
    for id in &ids {
        match h.state(*id).await {
            UploadState::Registered { .. } => registered += 1,
            UploadState::Pending => {
                handed_back += 1;
                let attempts = h.store.upload_attempts(*id).await.unwrap();
                let UploadOutcome::Retry { message, .. } = &attempts.last().unwrap().answer.outcome
                else {
                    panic!("handed back as a retry")
                };
                assert_eq!(message, "uploader stopped before sending");
            }
            other => panic!("left {other:?} after shutdown"),
        }
    }
    assert!(
        registered >= 1 && handed_back >= 1,
        "{registered} / {handed_back}"
    );

    h.mock.set_faults(Faults::default());
    let again = h.start(config());
    h.wait_settled(&ids, SETTLE).await;
    again.stop().await;
    assert_eq!(h.mock.record_count(u64::from(BRAND)), 20);
    assert_eq!(h.registered.lock().unwrap().len(), 20);
    for e in &events {
        assert_eq!(h.registrations_of(&e.recipient.to_string()), 1);
    }
}
