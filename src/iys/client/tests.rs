//! Tests against a tiny fake İYS (axum on 127.0.0.1:0): just a token endpoint with rotation,
//! bearer checks, and a queue of scripted API answers. Time is paused (tokio) and the token
//! clock is a `ManualClock`, so nothing sleeps for real.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{
    HeaderMap as AxumHeaders, Method as AxumMethod, StatusCode as AxumStatus, Uri as AxumUri,
};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::domain::time::ManualClock;
use crate::iys::token::MemoryTokenStore;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TokenMode {
    Normal,
    RefreshFails,
    Halt,
}

struct Scripted {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    body: String,
}

struct Fake {
    mode: Mutex<TokenMode>,
    token_delay: Duration,
    issued: AtomicU64,
    token_hits: AtomicU64,
    password_grants: AtomicU64,
    refresh_grants: AtomicU64,
    valid_access: Mutex<HashSet<String>>,
    /// Only the latest refresh token works (İYS rotates it).
    valid_refresh: Mutex<Option<String>>,
    always_401: AtomicBool,
    scripted: Mutex<VecDeque<Scripted>>,
    requests: Mutex<Vec<Recorded>>,
}

impl Fake {
    fn new(token_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(TokenMode::Normal),
            token_delay,
            issued: AtomicU64::new(0),
            token_hits: AtomicU64::new(0),
            password_grants: AtomicU64::new(0),
            refresh_grants: AtomicU64::new(0),
            valid_access: Mutex::new(HashSet::new()),
            valid_refresh: Mutex::new(None),
            always_401: AtomicBool::new(false),
            scripted: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn set_mode(&self, mode: TokenMode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn script(&self, status: u16, body: impl Into<String>) {
        self.script_with(status, Vec::new(), body);
    }

    fn script_with(
        &self,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: impl Into<String>,
    ) {
        self.scripted.lock().unwrap().push_back(Scripted {
            status,
            headers,
            body: body.into(),
        });
    }

    fn revoke_access_tokens(&self) {
        self.valid_access.lock().unwrap().clear();
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn issue(&self) -> Value {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let access = format!("access-{n}");
        let refresh = format!("refresh-{n}");
        self.valid_access.lock().unwrap().insert(access.clone());
        *self.valid_refresh.lock().unwrap() = Some(refresh.clone());
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 7200,
            "refresh_expires_in": 14400,
            "token_type": "bearer",
        })
    }
}

fn reply(status: u16, body: &Value) -> Response {
    (
        AxumStatus::from_u16(status).unwrap(),
        axum::Json(body.clone()),
    )
        .into_response()
}

async fn token_endpoint(State(fake): State<Arc<Fake>>, body: AxumBytes) -> Response {
    fake.token_hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(fake.token_delay).await;
    let mode = *fake.mode.lock().unwrap();
    if mode == TokenMode::Halt {
        return reply(
            429,
            &json!({"errors": [{"code": "H084", "message": "Saatlik limit"}]}),
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let bad = |error: &str| {
        reply(
            400,
            &json!({"error": error, "error_description": "geçersiz"}),
        )
    };
    match request["grant_type"].as_str() {
        Some("password") => {
            fake.password_grants.fetch_add(1, Ordering::SeqCst);
            if request["username"] == "api-user" && request["password"] == "s3cret-pass" {
                reply(200, &fake.issue())
            } else {
                bad("invalid_request")
            }
        }
        Some("refresh_token") => {
            fake.refresh_grants.fetch_add(1, Ordering::SeqCst);
            let current = fake.valid_refresh.lock().unwrap().clone();
            if mode == TokenMode::RefreshFails
                || request["refresh_token"].as_str() != current.as_deref()
            {
                bad("invalid_grant")
            } else {
                reply(200, &fake.issue())
            }
        }
        _ => bad("invalid_request"),
    }
}

async fn api(
    State(fake): State<Arc<Fake>>,
    method: AxumMethod,
    uri: AxumUri,
    headers: AxumHeaders,
    body: AxumBytes,
) -> Response {
    fake.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if fake.always_401.load(Ordering::SeqCst)
        || !fake.valid_access.lock().unwrap().contains(&bearer)
    {
        return reply(
            401,
            &json!({"errors": [{"code": "H351", "message": "Eksik veya geçersiz jeton!"}]}),
        );
    }
    let Some(next) = fake.scripted.lock().unwrap().pop_front() else {
        return reply(
            418,
            &json!({"errors": [{"code": "UNSCRIPTED", "message": "no answer queued"}]}),
        );
    };
    let mut response = Response::builder().status(next.status);
    for (name, value) in next.headers {
        response = response.header(name, value);
    }
    if !next.body.is_empty() {
        response = response.header("content-type", "application/json");
    }
    response.body(axum::body::Body::from(next.body)).unwrap()
}

struct Harness {
    fake: Arc<Fake>,
    store: Arc<MemoryTokenStore>,
    clock: Arc<ManualClock>,
    client: IysClient<HttpConnector>,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

async fn harness_with(token_delay: Duration, retry: RetryPolicy) -> Harness {
    let fake = Fake::new(token_delay);
    let app = Router::new()
        .route("/oauth2/token", post(token_endpoint))
        .fallback(api)
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let store = Arc::new(MemoryTokenStore::new());
    let clock = Arc::new(ManualClock::new(start()));
    let client = IysClient::with_connector(
        &format!("http://{addr}/"),
        Credentials {
            username: "api-user".into(),
            password: "s3cret-pass".into(),
        },
        Arc::clone(&store) as Arc<dyn TokenStore>,
        retry,
        HttpConnector::new(),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .unwrap();
    Harness {
        fake,
        store,
        clock,
        client,
    }
}

async fn harness() -> Harness {
    harness_with(Duration::ZERO, policy()).await
}

const PAGE: &str = r#"{"after":"1772434800_ab12","list":[
  {"consentDate":"2026-03-02 09:00:00","creationDate":"2026-03-02 09:00:05","source":"IYS_WEB_YENI",
   "recipient":"+905551112233","recipientType":"BIREYSEL","status":"RET","type":"MESAJ",
   "transactionId":"aa11","citizenName":"Ayşe Yılmaz"},
  {"consentDate":"","creationDate":"2026-03-02 09:01:00","source":"IYS_AHS_HAT_KAPATMA",
   "recipient":"+905551112244","recipientType":"TACIR","status":"RET","type":"ARAMA",
   "transactionId":"bb22"}]}"#;

async fn pull(h: &Harness) -> Result<ChangesPage, IysError> {
    h.client
        .pull_changes(700_001, 700_001, PullSource::Iys, None, 1000)
        .await
}

fn consent(recipient: &str) -> ConsentRequest {
    ConsentRequest {
        recipient: recipient.into(),
        channel: "EPOSTA".into(),
        source: Some("HS_WEB".into()),
        status: "ONAY".into(),
        consent_date: Some("2026-03-02 09:30:00".into()),
        recipient_type: None,
        retailer_code: None,
        retailer_access: None,
    }
}

// ----- tokens ------------------------------------------------------------------------------

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

// ----- retries -----------------------------------------------------------------------------

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

// ----- calls -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn pull_204_is_an_empty_page() {
    let h = harness().await;
    h.fake.script(204, "");
    let page = h
        .client
        .pull_changes(
            700_001,
            700_002,
            PullSource::Hs,
            Some("1597740617_a b/c"),
            999,
        )
        .await
        .unwrap();
    assert_eq!(page, ChangesPage::default());
    assert!(page.after.is_none(), "the caller keeps its own cursor");
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.path,
        "/sps/700001/brands/700002/consents/changes?source=HS&limit=999&after=1597740617_a%20b%2Fc"
    );
}

#[tokio::test(start_paused = true)]
async fn pull_parses_changes() {
    let h = harness().await;
    h.fake.script(200, PAGE);
    let page = pull(&h).await.unwrap();
    assert_eq!(page.after.as_deref(), Some("1772434800_ab12"));
    let [first, second] = page.list.as_slice() else {
        panic!("two rows expected");
    };
    assert_eq!(first.source, "IYS_WEB_YENI");
    assert_eq!(first.channel, "MESAJ");
    assert_eq!(first.citizen_name.as_deref(), Some("Ayşe Yılmaz"));
    assert_eq!(first.consent_date.as_deref(), Some("2026-03-02 09:00:00"));
    assert_eq!(
        second.consent_date, None,
        "empty consentDate of a TACIR line closure"
    );
    assert_eq!(second.recipient_type, "TACIR");
    let shown = format!("{page:?}");
    assert!(
        !shown.contains("+90555") && !shown.contains("Ayşe"),
        "{shown}"
    );
    assert!(
        h.fake.requests()[0]
            .path
            .ends_with("?source=IYS&limit=1000")
    );
}

#[tokio::test(start_paused = true)]
async fn pull_limit_is_checked_locally() {
    let h = harness().await;
    for limit in [0, 1001] {
        let err = h
            .client
            .pull_changes(1, 1, PullSource::Iys, None, limit)
            .await;
        assert!(matches!(err, Err(IysError::InvalidRequest(_))));
    }
    assert_eq!(h.client.token_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn add_consent_uses_v2_and_omits_empty_fields() {
    let h = harness().await;
    h.fake.script(
        200,
        r#"{"transactionId":"f26a","creationDate":"2026-03-02 10:00:00"}"#,
    );
    let mut request = consent("Ali@Example.com");
    request.recipient_type = Some(String::new());
    request.retailer_access = Some(vec![12_345_678]);
    let added = h
        .client
        .add_consent(700_001, 700_001, &request)
        .await
        .unwrap();
    assert_eq!(
        added,
        AddResult {
            transaction_id: "f26a".into(),
            creation_date: "2026-03-02 10:00:00".into()
        }
    );
    let sent = &h.fake.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v2/sps/700001/brands/700001/consents")
    );
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({"recipient":"Ali@Example.com","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
               "consentDate":"2026-03-02 09:30:00","retailerAccess":[12_345_678]})
    );
    assert!(!format!("{request:?}").contains("Ali@"));
}

#[tokio::test(start_paused = true)]
async fn add_consent_is_retried_after_a_5xx() {
    let h = harness().await;
    h.fake.script(500, "");
    h.fake.script(
        200,
        r#"{"transactionId":"f26a","creationDate":"2026-03-02 10:00:00"}"#,
    );
    h.client
        .add_consent(1, 1, &consent("a@x.com"))
        .await
        .unwrap();
    let sent = h.fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].body, sent[1].body,
        "the identical request is re-sent"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_202_is_parsed() {
    let h = harness().await;
    h.fake.script(
        202,
        r#"{"requestId":"2d8ad598-936a-46e6-b758-7ff2aa74c3b8","subRequests":[
            {"subRequestId":"cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf","type":"EPOSTA","source":"HS_WEB",
             "recipient":"a@x.com","status":"ONAY","consentDate":"2026-03-02 09:30:00","recipientType":"BIREYSEL"},
            {"subrequestId":"7ed0f89d-15c7-457f-a16a-d689ef5dca62","type":"EPOSTA","source":"HS_WEB",
             "recipient":"b@x.com","status":"ONAY","consentDate":"2026-03-02 09:30:00"}]}"#,
    );
    let accepted = h
        .client
        .add_consents_batch(1, 2, &[consent("a@x.com"), consent("b@x.com")])
        .await
        .unwrap();
    assert_eq!(accepted.request_id, "2d8ad598-936a-46e6-b758-7ff2aa74c3b8");
    let ids: Vec<_> = accepted
        .sub_requests
        .iter()
        .map(|s| s.sub_request_id.as_deref())
        .collect();
    assert_eq!(
        ids,
        vec![
            Some("cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf"),
            Some("7ed0f89d-15c7-457f-a16a-d689ef5dca62")
        ]
    );
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.path, "/v2/sps/1/brands/2/consents/request");
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(2), "a bare JSON array");
    assert!(!format!("{accepted:?}").contains("a@x.com"));
}

#[tokio::test(start_paused = true)]
async fn batch_size_is_checked_locally() {
    let h = harness().await;
    let too_many = vec![consent("a@x.com"); MAX_BATCH + 1];
    assert!(matches!(
        h.client.add_consents_batch(1, 1, &too_many).await,
        Err(IysError::InvalidRequest(_))
    ));
    assert!(matches!(
        h.client.add_consents_batch(1, 1, &[]).await,
        Err(IysError::InvalidRequest(_))
    ));
    assert_eq!(h.client.token_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_parses_both_sub_request_id_spellings() {
    let h = harness().await;
    // The v2 example of the spec, verbatim in shape.
    h.fake.script(
        200,
        r#"[{"subRequestId":"cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf","index":0,"status":"failure",
             "error":{"code":"H175","message":"İlk izin kayıt işlemlerinde RET ..."}},
            {"requestId":"548014a006fb33c6wb1a0a1b0vebs5ae","subRequestId":"2666eb07-cbc9-4069-bc6e-4eeb1a48991f",
             "index":1,"transactionId":"432c","status":"success","creationDate":"2020-08-21 14:45:24",
             "isAddConsentV2Service":"true",
             "originalRequestInformation":{"requestId":"2d8ad598-936a-46e6-b758-7ff2aa74c3b8",
                                           "subRequestId":"86ecb540-a362-49b9-9f59-5b9b6eeac2f6"}},
            {"index":2,"status":"enqueue","subrequestId":"7ed0f89d-15c7-457f-a16a-d689ef5dca62"}]"#,
    );
    let items = h
        .client
        .poll_batch(1, 2, "2d8ad598-936a-46e6-b758-7ff2aa74c3b8")
        .await
        .unwrap();
    assert_eq!(
        h.fake.requests()[0].path,
        "/v2/sps/1/brands/2/consents/request/2d8ad598-936a-46e6-b758-7ff2aa74c3b8"
    );
    let statuses: Vec<_> = items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            BatchItemStatus::Failure,
            BatchItemStatus::Success,
            BatchItemStatus::Enqueue
        ]
    );
    assert_eq!(
        items[0].sub_request_id.as_deref(),
        Some("cf15b6bf-1b84-4e59-b5bb-bda95de5c1cf")
    );
    assert_eq!(
        items[2].sub_request_id.as_deref(),
        Some("7ed0f89d-15c7-457f-a16a-d689ef5dca62")
    );
    assert_eq!(
        items[0].error.as_ref().map(|e| e.code.as_str()),
        Some("H175")
    );
    assert_eq!(items[1].is_add_consent_v2_service, Some(true));
    assert_eq!(
        items[1].creation_date.as_deref(),
        Some("2020-08-21 14:45:24")
    );
    assert_eq!(
        items[1]
            .original_request_information
            .as_ref()
            .and_then(|o| o.sub_request_id.as_deref()),
        Some("86ecb540-a362-49b9-9f59-5b9b6eeac2f6")
    );
}

#[tokio::test(start_paused = true)]
async fn poll_empty_array_means_not_processed_yet() {
    let h = harness().await;
    h.fake.script(200, "[]");
    assert!(h.client.poll_batch(1, 2, "r-1").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn consent_status_found_missing_and_wrong_brand() {
    let h = harness().await;
    h.fake.script(
        200,
        r#"{"consentDate":"2020-07-08 07:07:07","source":"HS_CAGRI_MERKEZI","recipientType":"BIREYSEL",
            "status":"ONAY","type":"EPOSTA","recipient":"ornek@ornek.com","retailerCode":55550127,
            "creationDate":"2020-08-06 15:50:23","retailerTitle":"XYZ","retailerAccessCount":3,
            "transactionId":"abc6"}"#,
    );
    h.fake.script(
        404,
        r#"{"errors":[{"code":"H404","message":"Kayıt bulunamadı"}]}"#,
    );
    h.fake.script(
        404,
        r#"{"errors":[{"code":"H018","message":"Marka bulunamadı"}]}"#,
    );
    let found = h
        .client
        .consent_status(1, 2, "ornek@ornek.com", "BIREYSEL", "EPOSTA")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.status.as_str(), found.retailer_code),
        ("ONAY", Some(55_550_127))
    );
    let body: Value = serde_json::from_str(&h.fake.requests()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"recipient":"ornek@ornek.com","recipientType":"BIREYSEL","type":"EPOSTA"})
    );
    let missing = h
        .client
        .consent_status(1, 2, "x@y.co", "TACIR", "EPOSTA")
        .await
        .unwrap();
    assert!(missing.is_none());
    let wrong = h
        .client
        .consent_status(1, 9, "x@y.co", "TACIR", "EPOSTA")
        .await
        .unwrap_err();
    assert_eq!(wrong.codes(), vec!["H018"]);
}

#[tokio::test(start_paused = true)]
async fn daily_file_and_agreement() {
    let h = harness().await;
    let csv = "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source\n";
    h.fake.script(200, csv);
    h.fake.script(204, "");
    h.fake.script(
        200,
        r#"{"processStatus":"completed","hashValue":"f082","hashMethod":"SHA-384","agreementStatus":false}"#,
    );
    h.fake.script(204, "");
    let date = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    assert_eq!(
        h.client
            .daily_changes_file(1, 2, date)
            .await
            .unwrap()
            .as_deref(),
        Some(csv)
    );
    assert_eq!(h.client.daily_changes_file(1, 2, date).await.unwrap(), None);
    let agreement = h.client.agreement(1, 2, date).await.unwrap().unwrap();
    assert_eq!(agreement.process_status, "completed");
    assert_eq!(agreement.hash_value.as_deref(), Some("f082"));
    assert!(!agreement.agreement_status);
    assert_eq!(h.client.agreement(1, 2, date).await.unwrap(), None);
    let paths: Vec<_> = h.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths[0], "/sps/1/brands/2/changes/2026-03-01/file");
    assert_eq!(paths[2], "/sps/1/brands/2/agreements/2026-03-01");
}

// ----- configuration and redaction ---------------------------------------------------------

#[test]
fn bad_configuration_is_rejected() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
    let creds = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    for url in ["", "not a url", "ftp://x", "http://host/?q=1"] {
        let made = IysClient::new(
            url,
            creds.clone(),
            Arc::clone(&store),
            RetryPolicy::default(),
        );
        assert!(matches!(made, Err(IysError::Config(_))), "{url}");
    }
    let zero = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::default()
    };
    assert!(IysClient::new("http://h", creds.clone(), Arc::clone(&store), zero).is_err());
    // The real İYS is HTTPS: the default client speaks it.
    assert!(
        IysClient::new(
            "https://api.iys.org.tr",
            creds,
            store,
            RetryPolicy::default()
        )
        .is_ok()
    );
}

#[test]
fn secrets_are_redacted() {
    let creds = Credentials {
        username: "api-user".into(),
        password: "s3cret-pass".into(),
    };
    let client = IysClient::new(
        "http://egress-proxy:8080",
        creds.clone(),
        Arc::new(MemoryTokenStore::new()),
        RetryPolicy::default(),
    )
    .unwrap();
    let shown = format!("{creds:?} {client:?}");
    assert!(
        shown.contains("api-user") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn backoff_is_capped_full_jitter() {
    let p = RetryPolicy {
        max_attempts: 10,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(250),
        request_timeout: Duration::from_secs(1),
    };
    for attempt in 1..40 {
        let ceiling = Duration::from_millis(100 * (1 << (attempt - 1).min(10))).min(p.cap);
        assert!(p.backoff(attempt) <= ceiling);
    }
}

#[test]
fn error_bodies_are_read_leniently() {
    assert_eq!(
        parse_errors(br#"{"errors":{"code":"H118","message":"m"}}"#)[0].code,
        "H118"
    );
    assert_eq!(
        parse_errors(br#"{"code":"H015","message":"m"}"#)[0].code,
        "H015"
    );
    assert_eq!(
        parse_errors(br#"{"errors":[{"code":"H120","location":"recipient"}]}"#)[0].location,
        vec![PathSegment::Field("recipient".into())]
    );
    assert!(parse_errors(b"<html>").is_empty());
}

fn err_text(e: &IysError) -> String {
    e.to_string()
}
