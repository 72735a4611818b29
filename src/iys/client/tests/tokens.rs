//! Token flow: caching, refresh, password fallback, single flight, 401 retry, the H084
//! halt, cooldowns and the cross-replica lease.

use super::*;

#[tokio::test(start_paused = true)]
async fn token_is_cached_and_reused() {
    let h = harness().await;
    for _ in 0..3 {
        h.fake.script(200, PAGE);
        pull(&h).await.unwrap();
    }
    h.clock.advance(chrono::Duration::minutes(90));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.client.token_calls(), 1);
    assert_eq!(h.fake.password_grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.client.api_requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn refreshes_before_expiry_and_stores_the_rotated_refresh_token() {
    let h = harness().await;
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    // 4m59s before the access token expires: inside the 5-minute margin.
    h.clock.advance(chrono::Duration::seconds(7200 - 299));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 1);
    let stored = h.store.snapshot().tokens.unwrap();
    assert_eq!(
        stored.refresh_token, "refresh-2",
        "the rotated refresh token is stored"
    );
    assert_eq!(stored.access_token, "access-2");
    // The next refresh must use refresh-2 (refresh-1 is dead at İYS): it succeeds without
    // falling back to the password grant.
    h.clock.advance(chrono::Duration::seconds(7200 - 299));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 2);
    assert_eq!(h.fake.password_grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.client.token_calls(), 3);
    assert_eq!(
        h.store.snapshot().tokens.unwrap().refresh_token,
        "refresh-3"
    );
}

#[tokio::test(start_paused = true)]
async fn falls_back_to_password_when_refresh_fails() {
    let h = harness().await;
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    h.fake.set_mode(TokenMode::RefreshFails);
    h.clock.advance(chrono::Duration::seconds(7200 - 120));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.fake.password_grants.load(Ordering::SeqCst), 2);
    assert_eq!(h.client.token_calls(), 3);
    assert_eq!(h.store.snapshot().tokens.unwrap().access_token, "access-2");
}

#[tokio::test(start_paused = true)]
async fn expired_refresh_token_goes_straight_to_password() {
    let h = harness().await;
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    h.clock.advance(chrono::Duration::hours(5));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 0);
    assert_eq!(h.fake.password_grants.load(Ordering::SeqCst), 2);
    assert_eq!(h.client.token_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn twenty_concurrent_callers_cause_one_token_call() {
    let h = harness_with(Duration::from_millis(100), policy()).await;
    let run_20 = |h: &Harness| {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            h.fake.script(204, "");
            let client = h.client.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .pull_changes(1, 1, PullSource::Hs, Some("1_x"), 10)
                    .await
            }));
        }
        tasks
    };
    for task in run_20(&h) {
        task.await.unwrap().unwrap();
    }
    assert_eq!(h.client.token_calls(), 1);
    // Near expiry, 20 callers again cause exactly one refresh.
    h.clock.advance(chrono::Duration::seconds(7200 - 60));
    for task in run_20(&h) {
        task.await.unwrap().unwrap();
    }
    assert_eq!(h.client.token_calls(), 2);
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.fake.token_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_forces_one_refresh_and_one_retry() {
    let h = harness().await;
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    h.fake.revoke_access_tokens();
    h.fake.script(200, PAGE);
    let page = pull(&h).await.unwrap();
    assert_eq!(page.list.len(), 2);
    assert_eq!(h.client.token_calls(), 2);
    assert_eq!(h.fake.refresh_grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.client.api_requests(), 3, "1 + the 401 + its retry");
}

#[tokio::test(start_paused = true)]
async fn persistent_unauthorized_is_returned_after_one_retry() {
    let h = harness().await;
    h.fake.always_401.store(true, Ordering::SeqCst);
    let err = pull(&h).await.unwrap_err();
    assert!(matches!(err, IysError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.codes(), vec!["H351"]);
    assert_eq!(h.client.api_requests(), 2);
    assert_eq!(
        h.client.token_calls(),
        2,
        "password, then one forced refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn h084_halts_token_calls_for_an_hour() {
    let h = harness().await;
    h.fake.set_mode(TokenMode::Halt);
    let err = pull(&h).await.unwrap_err();
    let IysError::TokenHalted { until } = err else {
        panic!("expected TokenHalted, got {err:?}");
    };
    assert_eq!(until, start() + chrono::Duration::hours(1));
    assert_eq!(h.store.snapshot().halted_until, Some(until));
    assert!(err_text(&IysError::TokenHalted { until }).contains("H084"));
    // Meanwhile: a clear error and no token call.
    h.fake.set_mode(TokenMode::Normal);
    for _ in 0..3 {
        assert!(matches!(pull(&h).await, Err(IysError::TokenHalted { .. })));
    }
    assert_eq!(h.fake.token_hits.load(Ordering::SeqCst), 1);
    assert_eq!(h.client.api_requests(), 0);
    // After the hour, token calls resume.
    h.clock.advance(chrono::Duration::minutes(61));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.token_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn rejected_credentials_pause_token_calls() {
    let h = harness().await;
    let client = IysClient::with_connector(
        &h.client.inner.base,
        Credentials {
            username: "api-user".into(),
            password: "wrong".into(),
        },
        Arc::new(MemoryTokenStore::new()),
        policy(),
        HttpConnector::new(),
        Arc::clone(&h.clock) as Arc<dyn Clock>,
    )
    .unwrap();
    let err = client
        .pull_changes(1, 1, PullSource::Iys, None, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IysError::Auth { status: 400, error, .. } if error == "invalid_request")
    );
    assert!(!err_text(&err).contains("wrong"));
    for _ in 0..5 {
        let again = client.pull_changes(1, 1, PullSource::Iys, None, 1).await;
        assert!(matches!(again, Err(IysError::TokenCooldown { .. })));
    }
    assert_eq!(client.token_calls(), 1, "no token call in a loop");
}

/// The halt stops every call that needs a token, even with an access token that has not
/// expired yet: İYS counts failures against the IP, and the halt only comes when a token was
/// needed (here an early renewal two minutes before expiry).
#[tokio::test(start_paused = true)]
async fn no_api_call_while_halted_even_with_an_unexpired_token() {
    let h = harness().await;
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.client.api_requests(), 1);
    h.fake.set_mode(TokenMode::Halt);
    h.clock.advance(chrono::Duration::seconds(7200 - 120));
    for _ in 0..3 {
        assert!(matches!(pull(&h).await, Err(IysError::TokenHalted { .. })));
    }
    assert_eq!(
        h.fake.token_hits.load(Ordering::SeqCst),
        2,
        "one renewal, H084"
    );
    assert_eq!(h.client.api_requests(), 1, "no API call during the halt");
    let until = h.store.snapshot().halted_until.unwrap();
    assert_eq!(h.client.token_halted_until(), Some(until));
    // After the hour: a token call, then the API again.
    h.fake.set_mode(TokenMode::Normal);
    h.clock.advance(chrono::Duration::minutes(61));
    h.fake.script(204, "");
    pull(&h).await.unwrap();
    assert_eq!(h.fake.token_hits.load(Ordering::SeqCst), 3);
    assert_eq!(h.client.api_requests(), 2);
    assert_eq!(h.client.token_halted_until(), None);
}

#[tokio::test(start_paused = true)]
async fn waits_for_another_process_holding_the_lease() {
    let h = harness().await;
    // Another replica holds the lease and publishes its token 1 s later.
    let lease = h
        .store
        .try_lock_refresh(Duration::from_mins(1))
        .await
        .unwrap()
        .unwrap();
    let store = Arc::clone(&h.store);
    let other = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let issued = start();
        store
            .save_tokens(TokenSet {
                access_token: "access-from-replica".into(),
                refresh_token: "refresh-from-replica".into(),
                obtained_at: issued,
                access_expires_at: issued + chrono::Duration::hours(2),
                refresh_expires_at: issued + chrono::Duration::hours(4),
            })
            .await
            .unwrap();
        store.unlock_refresh(lease).await.unwrap();
    });
    // The fake does not know that token: check the token path directly.
    let token = h.client.access_token(None).await.unwrap();
    other.await.unwrap();
    assert_eq!(token, "access-from-replica");
    assert_eq!(h.client.token_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn lease_never_released_gives_token_busy() {
    let h = harness().await;
    let _held = h
        .store
        .try_lock_refresh(Duration::from_mins(10))
        .await
        .unwrap()
        .unwrap();
    let began = tokio::time::Instant::now();
    assert!(matches!(pull(&h).await, Err(IysError::TokenBusy)));
    assert!(began.elapsed() >= Duration::from_secs(10));
    assert_eq!(h.client.token_calls(), 0);
}
