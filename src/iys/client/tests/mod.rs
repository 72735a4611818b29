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

use super::transport::parse_errors;
use super::*;
use crate::domain::time::ManualClock;
use crate::iys::token::{MemoryTokenStore, TokenSet};

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

mod calls;
mod retries;
mod tokens;

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
