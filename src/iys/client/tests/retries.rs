//! Retries: 5xx backoff, 429 and Retry-After, hourly limits, business errors, bad bodies,
//! timeouts and refused connections.

use super::*;

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_backoff() {
    let h = harness().await;
    h.fake.script(
        500,
        r#"{"errors":[{"code":"H015","message":"Sunucu hatası"}]}"#,
    );
    h.fake.script(
        503,
        r#"{"errors":[{"code":"H192","message":"Zaman aşımı"}]}"#,
    );
    h.fake.script(200, PAGE);
    let began = tokio::time::Instant::now();
    let page = pull(&h).await.unwrap();
    assert_eq!(page.after.as_deref(), Some("1772434800_ab12"));
    assert_eq!(h.client.api_requests(), 3);
    // Full jitter: at most base + 2·base.
    assert!(
        began.elapsed() <= Duration::from_millis(600),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_give_up_after_max_attempts() {
    let h = harness().await;
    for _ in 0..5 {
        h.fake.script(502, "");
    }
    let err = pull(&h).await.unwrap_err();
    assert!(
        matches!(err, IysError::Server { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(h.client.api_requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_honours_retry_after() {
    let h = harness().await;
    h.fake.script_with(
        429,
        vec![("retry-after", "3".into())],
        r#"{"errors":[{"code":"H124","message":"Saniyede kabul edilen istek limitine ulaşıldı."}]}"#,
    );
    h.fake.script(200, PAGE);
    let began = tokio::time::Instant::now();
    pull(&h).await.unwrap();
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert!(began.elapsed() < Duration::from_secs(4));
    assert_eq!(h.client.api_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn hourly_limit_is_not_retried() {
    let h = harness().await;
    h.fake.script(
        429,
        r#"{"errors":[{"code":"H086","message":"Saatlik limit"}]}"#,
    );
    let err = h
        .client
        .consent_status(1, 2, "a@b.co", "BIREYSEL", "EPOSTA")
        .await
        .unwrap_err();
    assert!(matches!(&err, IysError::RateLimited { code: Some(c), .. } if c == "H086"));
    assert_eq!(h.client.api_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn business_422_is_not_retried_and_items_are_parsed() {
    let h = harness().await;
    h.fake.script(
        422,
        r#"{"errors":[
            {"code":"H194","message":"Tekrarlayan kayıt","index":1,"location":["recipient"],"value":"dup@x.com"},
            {"code:":"H180","message":"Bayi yok","index":0,"location":["retailerAccess",0],"value":12345678}
        ]}"#,
    );
    let batch = [consent("a@x.com"), consent("dup@x.com")];
    let err = h.client.add_consents_batch(1, 2, &batch).await.unwrap_err();
    let IysError::Business { status, errors } = &err else {
        panic!("expected Business, got {err:?}");
    };
    assert_eq!(*status, 422);
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].code, "H194");
    assert_eq!(errors[0].index, Some(1));
    assert_eq!(
        errors[0].location,
        vec![PathSegment::Field("recipient".into())]
    );
    assert_eq!(errors[0].value, Some(json!("dup@x.com")));
    assert_eq!(
        errors[1].code, "H180",
        "the spec's \"code:\" typo is accepted"
    );
    assert_eq!(
        errors[1].location,
        vec![
            PathSegment::Field("retailerAccess".into()),
            PathSegment::Index(0)
        ]
    );
    assert!(!err.is_transient());
    assert_eq!(h.client.api_requests(), 1);
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("H194") && !shown.contains("dup@x.com"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn business_400_on_single_add_is_not_retried() {
    let h = harness().await;
    h.fake.script(
        400,
        r#"{"errors":[{"code":"H174","message":"Aynı durum"}]}"#,
    );
    let err = h
        .client
        .add_consent(1, 2, &consent("a@x.com"))
        .await
        .unwrap_err();
    assert_eq!(err.codes(), vec!["H174"]);
    assert_eq!(h.client.api_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn truncated_json_is_retried_on_an_idempotent_get() {
    let h = harness().await;
    h.fake
        .script(200, r#"{"after":"1_ab","list":[{"consentDate":"2026-03"#);
    h.fake.script(200, PAGE);
    let page = pull(&h).await.unwrap();
    assert_eq!(page.list.len(), 2);
    assert_eq!(h.client.api_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn garbage_body_gives_decode_error_without_content() {
    let h = harness().await;
    for _ in 0..4 {
        h.fake.script(
            200,
            r#"{"after":"x","list":[{"recipient":"+905550000000"}]}"#,
        );
    }
    let err = pull(&h).await.unwrap_err();
    assert!(matches!(err, IysError::Decode(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("905550000000"));
    assert_eq!(h.client.api_requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn request_timeout_is_retried() {
    let h = harness_with(
        Duration::ZERO,
        RetryPolicy {
            request_timeout: Duration::from_millis(300),
            ..policy()
        },
    )
    .await;
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = silent.accept().await.unwrap();
            held.push(socket);
        }
    });
    h.store
        .save_tokens(TokenSet {
            access_token: "t".into(),
            refresh_token: "r".into(),
            obtained_at: start(),
            access_expires_at: start() + chrono::Duration::hours(2),
            refresh_expires_at: start() + chrono::Duration::hours(4),
        })
        .await
        .unwrap();
    let client = IysClient::with_connector(
        &format!("http://{addr}"),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
        Arc::clone(&h.store) as Arc<dyn TokenStore>,
        RetryPolicy {
            max_attempts: 2,
            request_timeout: Duration::from_millis(300),
            ..policy()
        },
        HttpConnector::new(),
        Arc::clone(&h.clock) as Arc<dyn Clock>,
    )
    .unwrap();
    let err = client
        .pull_changes(1, 1, PullSource::Iys, None, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, IysError::Timeout(_)), "{err:?}");
    assert_eq!(client.api_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn connection_refused_is_retried() {
    let h = harness().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    h.store
        .save_tokens(TokenSet {
            access_token: "t".into(),
            refresh_token: "r".into(),
            obtained_at: start(),
            access_expires_at: start() + chrono::Duration::hours(2),
            refresh_expires_at: start() + chrono::Duration::hours(4),
        })
        .await
        .unwrap();
    let client = IysClient::with_connector(
        &format!("http://{addr}"),
        Credentials {
            username: "u".into(),
            password: "p".into(),
        },
        Arc::clone(&h.store) as Arc<dyn TokenStore>,
        policy(),
        HttpConnector::new(),
        Arc::clone(&h.clock) as Arc<dyn Clock>,
    )
    .unwrap();
    let err = client
        .pull_changes(1, 1, PullSource::Iys, None, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, IysError::Transport(_)), "{err:?}");
    assert_eq!(client.api_requests(), 4);
}
