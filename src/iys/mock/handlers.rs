//! HTTP layer of the mock: routes, the guard (faults, per-second limit), auth and handlers.
//!
//! Over 600 lines on purpose: one handler per İYS endpoint the mock serves, each small.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, NaiveDate, TimeDelta};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};

use super::codes::{ApiError, at, entry};
use super::store::{Batch, BatchItem, Side, reconciliation_csv};
use super::validate::{self, Invalid};
use super::{
    CitizenSource, ClientIp, Faults, LOCAL, MockIys, Session, TruncateMode, lock, net,
    push_test_payload,
};
use crate::domain::time::{format_iys, to_turkey};
use crate::domain::{Channel, ConsentStatus, RecipientType};
use crate::iys::wire::{
    AddConsentResponse, AgreementCaptured, AgreementResponse, BatchResponse, Brand,
    ChangeStatsResponse, ChangesPage, HistoryResponse, IysError, LocationPart, MessageResponse,
    MultiStatusResponse, OAuthError, Pagination, PollItem, PollStatus, PushConnection,
    PushRegistration, SourceStats, SubRequest, TokenResponse, TypeStats,
};

const ACCESS_TTL: i64 = 7200;
const REFRESH_TTL: i64 = 14_400;
const BATCH_MAX: usize = 1000;
const MULTI_MAX: usize = 1000;
const PULL_WINDOW_DAYS: i64 = 7;

type Reply = Result<Response, ApiError>;

fn reply(result: Reply) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

pub fn router(mock: MockIys) -> Router {
    let b = "/sps/{iys_code}/brands/{brand_code}";
    let api = Router::new()
        .route("/oauth2/token", post(token))
        .route("/sps/{iys_code}/brands", get(brands))
        .route(&format!("{b}/consents"), post(add_v1))
        .route(&format!("/v2{b}/consents"), post(add_v2))
        .route(&format!("{b}/consents/request"), post(batch_v1))
        .route(&format!("/v2{b}/consents/request"), post(batch_v2))
        .route(
            &format!("{b}/consents/request/{{request_id}}"),
            get(poll_v1),
        )
        .route(
            &format!("/v2{b}/consents/request/{{request_id}}"),
            get(poll_v2),
        )
        .route(&format!("{b}/consents/status"), post(status))
        .route(
            &format!("{b}/consents/{{recipient_type}}/status/{{consent_type}}"),
            post(multi_status),
        )
        .route(&format!("{b}/consents/history"), post(history))
        .route(&format!("{b}/consents/changes"), get(changes))
        .route(
            &format!("{b}/push/registration"),
            post(push_register).get(push_list),
        )
        .route(&format!("{b}/push/unregistration"), post(push_unregister))
        .route(
            &format!("{b}/changes/{{report_date}}/recipients/{{recipient_type}}"),
            get(change_stats),
        )
        .route(
            &format!("{b}/changes/{{report_date}}/file"),
            get(change_file),
        )
        .route(
            &format!("{b}/agreements/{{report_date}}"),
            get(agreement).put(agreement_put),
        )
        .layer(middleware::from_fn_with_state(mock.clone(), guard))
        .with_state(mock.clone());
    let admin = Router::new()
        .route(
            "/_mock/faults",
            get(faults_get).put(faults_put).post(faults_put),
        )
        .route("/_mock/citizen", post(admin_citizen))
        .route("/_mock/burst", post(admin_burst))
        .route("/_mock/push-stats", get(push_stats))
        .route("/_mock/requests", get(requests))
        .with_state(mock);
    api.merge(admin)
}

// ---------------------------------------------------------------- guard: faults and H124

enum Injected {
    Error(u16),
    Throttle(Option<u64>),
    Unauthorized,
}

async fn guard(State(mock): State<MockIys>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(LOCAL, |c| c.0.ip());
    req.extensions_mut().insert(ClientIp(ip));
    let path = req.uri().path().to_owned();
    let has_bearer = bearer(req.headers()).is_some();
    if path == "/oauth2/token" {
        mock.inner.token_requests.fetch_add(1, Ordering::Relaxed);
    } else if has_bearer {
        mock.inner.bearer_requests.fetch_add(1, Ordering::Relaxed);
    }

    let (latency, injected, truncate) = {
        let mut f = lock(&mock.inner.faults);
        if f.path_contains
            .as_ref()
            .is_some_and(|p| !path.contains(p.as_str()))
        {
            (0, None, None)
        } else {
            let injected = if f.error_burst > 0 {
                f.error_burst -= 1;
                Some(Injected::Error(f.error_status))
            } else if f.throttle > 0 {
                f.throttle -= 1;
                Some(Injected::Throttle(f.retry_after_secs))
            } else if f.unauthorized > 0 && has_bearer {
                f.unauthorized -= 1;
                Some(Injected::Unauthorized)
            } else {
                None
            };
            let truncate = (injected.is_none() && f.truncate > 0).then(|| {
                f.truncate -= 1;
                f.truncate_mode
            });
            (f.latency_ms, injected, truncate)
        }
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match injected {
        Some(Injected::Error(status)) => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if status == StatusCode::SERVICE_UNAVAILABLE {
                "H192"
            } else {
                "H015"
            };
            return ApiError::many(status, vec![entry(code)]).into_response();
        }
        Some(Injected::Throttle(retry_after)) => {
            let mut error = ApiError::code("H124");
            error.retry_after = retry_after;
            return error.into_response();
        }
        Some(Injected::Unauthorized) => return ApiError::code("H351").into_response(),
        None => {}
    }
    if let Err(e) = mock.limit(ip, Limit::Second) {
        return e.into_response();
    }
    let response = next.run(req).await;
    match truncate {
        Some(mode) => truncate_response(response, mode).await,
        None => response,
    }
}

async fn truncate_response(response: Response, mode: TruncateMode) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let full = bytes.len();
    let cut = bytes.slice(..full / 2);
    parts.headers.remove(header::TRANSFER_ENCODING);
    match mode {
        TruncateMode::ShortBody => {
            // Announce the full length but send half: a stream body has no known size, so
            // hyper trusts the header and closes the connection when the body ends early.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
            let body = Body::from_stream(Body::from(cut).into_data_stream());
            Response::from_parts(parts, body)
        }
        TruncateMode::CutJson => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(cut.len()));
            Response::from_parts(parts, Body::from(cut))
        }
    }
}

// ---------------------------------------------------------------- limits and auth

#[derive(Clone, Copy)]
pub(super) enum Limit {
    Second,
    Status,
    History,
}

impl MockIys {
    pub(super) fn limit(&self, ip: std::net::IpAddr, kind: Limit) -> Result<(), ApiError> {
        let limits = self.inner.config.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        let now = self.now_utc();
        let mut state = lock(&self.inner.state);
        let client = state.limits.entry(ip).or_default();
        let (window, span, limit, code) = match kind {
            Limit::Second => (
                &mut client.second,
                TimeDelta::seconds(1),
                limits.per_second,
                "H124",
            ),
            Limit::Status => (
                &mut client.status,
                TimeDelta::hours(1),
                limits.status_per_hour,
                "H086",
            ),
            Limit::History => (
                &mut client.history,
                TimeDelta::hours(1),
                limits.history_per_hour,
                "H089",
            ),
        };
        if super::window_hit(window, now, span, limit) {
            Ok(())
        } else {
            Err(ApiError::code(code))
        }
    }

    /// H084: after `token_per_hour` calls within an hour, token calls are refused for an
    /// hour, and every call while refused restarts that hour (SPEC KİMLİK DOĞRULAMA).
    fn limit_token(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        let limits = self.inner.config.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        let now = self.now_utc();
        let hour = TimeDelta::hours(1);
        let mut state = lock(&self.inner.state);
        let client = state.limits.entry(ip).or_default();
        match client.token_locked_until {
            Some(until) if now < until => {
                client.token_locked_until = Some(now + hour);
                return Err(ApiError::code("H084"));
            }
            Some(_) => {
                client.token_locked_until = None;
                client.token.clear();
            }
            None => {}
        }
        if super::window_hit(&mut client.token, now, hour, limits.token_per_hour) {
            Ok(())
        } else {
            client.token_locked_until = Some(now + hour);
            Err(ApiError::code("H084"))
        }
    }

    /// Bearer check (401 H351), then path codes (422 H190/H191), then ownership (403 H353).
    fn authorize(
        &self,
        headers: &HeaderMap,
        iys_code: &str,
        brand_code: Option<&str>,
    ) -> Result<(usize, u64), ApiError> {
        let now = self.now_utc();
        let account = {
            let state = lock(&self.inner.state);
            bearer(headers)
                .and_then(|t| state.access.get(t))
                .filter(|s| s.expires > now)
                .map(|s| s.account)
        }
        .ok_or_else(|| ApiError::code("H351"))?;
        let iys: u64 = iys_code
            .parse()
            .map_err(|_| ApiError::one(at("H190", "iysCode", Some(&json!(iys_code)))))?;
        let acc = &self.inner.config.accounts[account];
        if acc.iys_code != iys {
            let mut e = entry("H353");
            "iysCode, kullanıcı izinleriyle eşleştiriliemiyor".clone_into(&mut e.message);
            return Err(ApiError::one(e));
        }
        let Some(brand_code) = brand_code else {
            return Ok((account, 0));
        };
        let brand: u64 = brand_code
            .parse()
            .map_err(|_| ApiError::one(at("H191", "brandCode", Some(&json!(brand_code)))))?;
        if !acc.brand_codes.contains(&brand) {
            let mut e = entry("H353");
            "brandCode, kullanıcı izinleriyle eşleştiriliemiyor".clone_into(&mut e.message);
            return Err(ApiError::one(e));
        }
        Ok((account, brand))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::code("H014"))
}

fn invalid(e: Invalid) -> ApiError {
    match e {
        Invalid::Fatal(e) => e,
        Invalid::Fields(errors) => ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, errors),
    }
}

// ---------------------------------------------------------------- token

fn oauth(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(OAuthError {
            error: error.to_owned(),
            error_description: description.to_owned(),
        }),
    )
        .into_response()
}

/// A field of the token body: absent, not a string, or a string.
enum Field {
    Missing,
    Unsupported,
    Text(String),
}

fn token_fields(headers: &HeaderMap, body: &Bytes) -> Option<serde_json::Map<String, Value>> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        Some(
            net::form_pairs(body)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    } else if body.is_empty() {
        Some(serde_json::Map::new())
    } else {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .as_object()
            .cloned()
    }
}

fn field(map: &serde_json::Map<String, Value>, name: &str) -> Field {
    match map.get(name) {
        None | Some(Value::Null) => Field::Missing,
        Some(Value::String(s)) => Field::Text(s.clone()),
        Some(_) => Field::Unsupported,
    }
}

/// `missing`, `unsupported`, `empty` descriptions for one credential field.
fn credential(
    map: &serde_json::Map<String, Value>,
    name: &str,
    texts: [&'static str; 3],
) -> Result<String, (&'static str, &'static str)> {
    match field(map, name) {
        Field::Missing => Err(("invalid_request", texts[0])),
        Field::Unsupported => Err(("invalid_request", texts[1])),
        Field::Text(s) if s.is_empty() => Err(("invalid_grant", texts[2])),
        Field::Text(s) => Ok(s),
    }
}

async fn token(
    State(mock): State<MockIys>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = mock.limit_token(ip) {
        return e.into_response();
    }
    let Some(map) = token_fields(&headers, &body) else {
        return oauth("invalid_request", "Giriş yöntemi belirtilmemiş.");
    };
    let grant = match field(&map, "grant_type") {
        Field::Missing => return oauth("invalid_request", "Giriş yöntemi belirtilmemiş."),
        Field::Unsupported => return oauth("invalid_grant", "Desteklenmeyen giriş yöntemi."),
        Field::Text(s) if s.is_empty() => {
            return oauth("invalid_grant", "Giriş yöntemi boş olamaz.");
        }
        Field::Text(s) => s,
    };
    let now = mock.now_utc();
    let account = match grant.as_str() {
        "password" => {
            let username = match credential(
                &map,
                "username",
                [
                    "Kullanıcı adı verilmemiş.",
                    "Desteklenmeyen kullanıcı adı türü.",
                    "Kullanıcı adı boş bırakılamaz.",
                ],
            ) {
                Ok(u) => u,
                Err((error, text)) => return oauth(error, text),
            };
            let password = match credential(
                &map,
                "password",
                [
                    "Şifre verilmemiş.",
                    "Desteklenmeyen şifre türü.",
                    "Şifre boş bırakılamaz.",
                ],
            ) {
                Ok(p) => p,
                Err((error, text)) => return oauth(error, text),
            };
            let found = mock
                .inner
                .config
                .accounts
                .iter()
                .position(|a| a.username == username && a.password == password);
            match found {
                Some(i) => i,
                None => return oauth("invalid_request", "Kullanıcı kimlik bilgileri geçersiz."),
            }
        }
        "refresh_token" => {
            let refresh = match credential(
                &map,
                "refresh_token",
                [
                    "Yenileme jetonu verilmemiş.",
                    "Desteklenmeyen yenileme jetonu türü.",
                    "Yenileme jetonu boş olamaz.",
                ],
            ) {
                Ok(r) => r,
                Err((error, text)) => return oauth(error, text),
            };
            // Rotation: a refresh token works once; the answer carries its successor.
            let session = lock(&mock.inner.state).refresh.remove(&refresh);
            match session.filter(|s| s.expires > now) {
                Some(s) => s.account,
                None => return oauth("invalid_grant", "Geçersiz yenileme jetonu."),
            }
        }
        _ => return oauth("invalid_request", "Bilinmeyen giriş yöntemi."),
    };
    Json(mock.issue_tokens(account, now)).into_response()
}

impl MockIys {
    fn issue_tokens(&self, account: usize, now: DateTime<chrono::Utc>) -> TokenResponse {
        let acc = &self.inner.config.accounts[account];
        let claims = json!({
            "jti": net::uuid_v4(),
            "exp": (now + TimeDelta::seconds(ACCESS_TTL)).timestamp(),
            "iat": now.timestamp(),
            "typ": "Bearer",
            "preferred_username": acc.username,
            "realm_access": {"roles": ["API_USER", "offline_access", "uma_authorization"]},
            "serviceProvider": {"title": "MOCK HİZMET SAĞLAYICI", "iysCode": acc.iys_code.to_string()},
            "brands": acc.brand_codes.iter()
                .map(|b| json!({"brandCode": b.to_string(), "name": format!("Mock Marka {b}")}))
                .collect::<Vec<_>>(),
        });
        let access = format!(
            "{}.{}.{}",
            net::base64url(br#"{"alg":"RS256","typ":"JWT"}"#),
            net::base64url(claims.to_string().as_bytes()),
            net::base64url(&net::random_bytes::<32>())
        );
        let refresh = format!(
            "{}.{}.{}",
            net::base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
            net::base64url(net::uuid_v4().as_bytes()),
            net::base64url(&net::random_bytes::<32>())
        );
        let mut state = lock(&self.inner.state);
        state.access.retain(|_, s| s.expires > now);
        state.refresh.retain(|_, s| s.expires > now);
        state.access.insert(
            access.clone(),
            Session {
                account,
                expires: now + TimeDelta::seconds(ACCESS_TTL),
            },
        );
        state.refresh.insert(
            refresh.clone(),
            Session {
                account,
                expires: now + TimeDelta::seconds(REFRESH_TTL),
            },
        );
        TokenResponse {
            access_token: access,
            refresh_token: refresh,
            expires_in: ACCESS_TTL as u64,
            refresh_expires_in: REFRESH_TTL as u64,
            token_type: "bearer".to_owned(),
        }
    }
}

// ---------------------------------------------------------------- brands

async fn brands(
    State(mock): State<MockIys>,
    Path(iys_code): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (account, _) = mock.authorize(&headers, &iys_code, None)?;
        let acc = &mock.inner.config.accounts[account];
        let state = lock(&mock.inner.state);
        let list: Vec<Brand> = acc
            .brand_codes
            .iter()
            .map(|&code| {
                let (mut approval, mut rejection) = (0u64, 0u64);
                if let Some(b) = state.brands.get(&code) {
                    for e in &b.log {
                        match e.status {
                            ConsentStatus::Onay => approval += 1,
                            ConsentStatus::Ret => rejection += 1,
                        }
                    }
                }
                Brand {
                    brand_code: code,
                    name: format!("Mock Marka {code}"),
                    master: code == acc.iys_code,
                    stats: Some(json!({
                        "consents": {"approval": approval, "rejection": rejection,
                                     "total": approval + rejection},
                        "retailers": {"total": 0}
                    })),
                }
            })
            .collect();
        Ok(Json(list).into_response())
    })())
}

// ---------------------------------------------------------------- single add

async fn add_v1(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(mock.add(&headers, &iys, &brand, &body, false))
}

async fn add_v2(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(mock.add(&headers, &iys, &brand, &body, true))
}

impl MockIys {
    fn add(&self, headers: &HeaderMap, iys: &str, brand: &str, body: &Bytes, v2: bool) -> Reply {
        let (_, brand) = self.authorize(headers, iys, Some(brand))?;
        let value = parse_json(body)?;
        let now = self.now_turkey();
        let mut state = lock(&self.inner.state);
        MockIys::process_due(&mut state, now);
        let brand_state = state
            .brands
            .get_mut(&brand)
            .ok_or_else(|| ApiError::code("H015"))?;
        // v2: an identical request (same brand, same body) returns the first answer again.
        let canonical = v2.then(|| value.to_string());
        if let Some((transaction_id, creation_date)) =
            canonical.as_ref().and_then(|c| brand_state.v2_seen.get(c))
        {
            return Ok(Json(AddConsentResponse {
                transaction_id: transaction_id.clone(),
                creation_date: creation_date.clone(),
            })
            .into_response());
        }
        let consent =
            validate::consent(&value, now, &self.inner.config.calendar).map_err(invalid)?;
        let event = brand_state
            .apply(brand, &consent, now, None)
            .map_err(ApiError::one)?;
        let answer = AddConsentResponse {
            transaction_id: event.txid_hex(),
            creation_date: format_iys(event.creation),
        };
        if let Some(c) = canonical {
            brand_state.v2_seen.insert(
                c,
                (answer.transaction_id.clone(), answer.creation_date.clone()),
            );
        }
        tracing::debug!(brand, "mock İYS: consent added");
        Ok(Json(answer).into_response())
    }
}

// ---------------------------------------------------------------- batch add and poll

async fn batch_v1(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(mock.batch(&headers, &iys, &brand, &body, false))
}

async fn batch_v2(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply(mock.batch(&headers, &iys, &brand, &body, true))
}

async fn poll_v1(
    State(mock): State<MockIys>,
    Path((iys, brand, request_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(mock.poll(&headers, &iys, &brand, &request_id))
}

async fn poll_v2(
    State(mock): State<MockIys>,
    Path((iys, brand, request_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(mock.poll(&headers, &iys, &brand, &request_id))
}

impl MockIys {
    fn batch(&self, headers: &HeaderMap, iys: &str, brand: &str, body: &Bytes, v2: bool) -> Reply {
        let (_, brand) = self.authorize(headers, iys, Some(brand))?;
        let value = parse_json(body)?;
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            return Err(ApiError::code("H092"));
        };
        if items.len() > BATCH_MAX {
            return Err(ApiError::code("H091"));
        }
        let now = self.now_turkey();
        let calendar = &self.inner.config.calendar;
        let mut errors: Vec<IysError> = Vec::new();
        let mut valid = Vec::with_capacity(items.len());
        let mut seen = HashSet::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match validate::consent(item, now, calendar) {
                Ok(consent) => {
                    let key = (
                        consent.recipient.clone(),
                        consent.recipient_type,
                        consent.consent_type,
                    );
                    if seen.insert(key) {
                        valid.push(consent);
                    } else {
                        let mut e = entry("H194");
                        e.index = Some(index as u64);
                        errors.push(e);
                    }
                }
                Err(Invalid::Fatal(mut e)) => {
                    for error in &mut e.errors {
                        error.index = Some(index as u64);
                    }
                    return Err(e);
                }
                Err(Invalid::Fields(found)) => errors.extend(validate::with_index(found, index)),
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, errors));
        }
        let request_id = net::uuid_v4();
        let creation_date = format_iys(now);
        let items: Vec<BatchItem> = valid
            .into_iter()
            .map(|consent| BatchItem {
                sub_request_id: net::uuid_v4(),
                consent,
            })
            .collect();
        let answer = BatchResponse {
            request_id: request_id.clone(),
            sub_requests: items
                .iter()
                .map(|i| SubRequest {
                    sub_request_id: i.sub_request_id.clone(),
                    consent_type: i.consent.consent_type,
                    source: i.consent.source.map(str::to_owned),
                    recipient: i.consent.recipient.clone(),
                    status: i.consent.status,
                    consent_date: i.consent.consent_date.map(format_iys),
                    recipient_type: i.consent.recipient_type,
                    creation_date: creation_date.clone(),
                })
                .collect(),
        };
        let delay = TimeDelta::from_std(self.inner.config.batch_delay).unwrap_or(TimeDelta::MAX);
        let mut state = lock(&self.inner.state);
        state.batches.insert(
            request_id.clone(),
            Batch {
                brand,
                v2,
                accepted: now,
                due: now.checked_add_signed(delay).unwrap_or(now),
                items,
                results: None,
            },
        );
        state.pending.push(request_id);
        tracing::debug!(
            brand,
            items = answer.sub_requests.len(),
            "mock İYS: batch accepted"
        );
        Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
    }

    fn poll(&self, headers: &HeaderMap, iys: &str, brand: &str, request_id: &str) -> Reply {
        let (_, brand) = self.authorize(headers, iys, Some(brand))?;
        let bad = |code: &str| ApiError::one(at(code, "requestId", Some(&json!(request_id))));
        if request_id.chars().count() > 36 {
            return Err(bad("H198"));
        }
        if request_id.chars().all(char::is_alphabetic) {
            return Err(bad("H199"));
        }
        if request_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("H400"));
        }
        let now = self.now_turkey();
        let mut state = lock(&self.inner.state);
        MockIys::process_due(&mut state, now);
        let empty = || Ok(Json(Vec::<PollItem>::new()).into_response());
        let Some(batch) = state.batches.get(request_id).filter(|b| b.brand == brand) else {
            return empty();
        };
        if now - batch.accepted > TimeDelta::days(60) {
            return empty();
        }
        if let Some(results) = &batch.results {
            return Ok(Json(results).into_response());
        }
        self.inner.early_polls.fetch_add(1, Ordering::Relaxed);
        // Not processed: an empty array first, then `enqueue` items for the second half of
        // the delay (İYS: "empty does not mean failed").
        if now < batch.accepted + (batch.due - batch.accepted) / 2 {
            return empty();
        }
        let queued: Vec<PollItem> = batch
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| PollItem {
                index: index as u64,
                status: PollStatus::Enqueue,
                sub_request_id: item.sub_request_id.clone(),
                request_id: None,
                transaction_id: None,
                creation_date: None,
                error: None,
                is_add_consent_v2_service: None,
                original_request_information: None,
            })
            .collect();
        Ok(Json(queued).into_response())
    }
}

// ---------------------------------------------------------------- status, multi, history

async fn status(
    State(mock): State<MockIys>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        mock.limit(ip, Limit::Status)?;
        let (recipient, rt, t) = validate::query(&parse_json(&body)?)?;
        let now = mock.now_turkey();
        let mut state = lock(&mock.inner.state);
        MockIys::process_due(&mut state, now);
        state
            .brands
            .get(&brand)
            .and_then(|b| b.record(&recipient, rt, t))
            .and_then(super::store::Record::to_status)
            .map(|s| Json(s).into_response())
            .ok_or_else(|| ApiError::code(super::NOT_FOUND_CODE))
    })())
}

async fn multi_status(
    State(mock): State<MockIys>,
    Path((iys, brand, rt, t)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let recipient_type = RecipientType::parse(&rt)
            .ok_or_else(|| ApiError::one(at("H116", "recipientType", Some(&json!(rt)))))?;
        let consent_type =
            Channel::parse(&t).ok_or_else(|| ApiError::one(at("H117", "type", Some(&json!(t)))))?;
        let value = parse_json(&body)?;
        let list = match value.get("recipients") {
            None | Some(Value::Null) => {
                return Err(ApiError::one(at("H168", "recipients", None)));
            }
            Some(Value::Array(list)) => list,
            Some(other) => return Err(ApiError::one(at("H478", "recipients", Some(other)))),
        };
        if list.is_empty() {
            return Err(ApiError::one(at("H164", "recipients", Some(&json!([])))));
        }
        if list.len() > MULTI_MAX {
            return Err(ApiError::one(at("H127", "recipients", None)));
        }
        let mut errors = Vec::new();
        let mut seen = HashSet::with_capacity(list.len());
        let mut recipients = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let Some(text) = v.as_str() else {
                errors.push(at("H478", "recipients", Some(v)));
                continue;
            };
            let found = validate::multi_recipient(text, consent_type, v);
            if !found.is_empty() {
                errors.extend(found);
                continue;
            }
            let normalized = validate::normalize(text);
            if seen.insert(normalized.clone()) {
                recipients.push(normalized);
            } else {
                let mut e = entry("H193");
                e.location = Some(vec![
                    LocationPart::from("recipients"),
                    LocationPart::from(i),
                ]);
                e.value = Some(v.clone());
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, errors));
        }
        let now = mock.now_turkey();
        let mut state = lock(&mock.inner.state);
        MockIys::process_due(&mut state, now);
        let brand_state = state.brands.get(&brand);
        let onay = recipients
            .into_iter()
            .filter(|r| {
                brand_state
                    .and_then(|b| b.record(r, recipient_type, consent_type))
                    .and_then(|rec| rec.current())
                    .is_some_and(|e| e.status == ConsentStatus::Onay)
            })
            .collect();
        Ok(Json(MultiStatusResponse {
            request_id: net::uuid_v4(),
            list: onay,
        })
        .into_response())
    })())
}

#[derive(Debug, Deserialize)]
struct Paging {
    limit: Option<String>,
    offset: Option<String>,
}

async fn history(
    State(mock): State<MockIys>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path((iys, brand)): Path<(String, String)>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        mock.limit(ip, Limit::History)?;
        let limit = match paging.limit.as_deref().map(str::parse::<i64>) {
            None => 100,
            Some(Ok(n)) if n > 100 => {
                return Err(ApiError::one(at("H186", "limit", Some(&json!(n)))));
            }
            Some(Ok(0)) => return Err(ApiError::one(at("H187", "limit", Some(&json!(0))))),
            Some(Ok(n)) if n > 0 => n as usize,
            Some(_) => {
                return Err(ApiError::one(at(
                    "H182",
                    "limit",
                    Some(&json!(paging.limit)),
                )));
            }
        };
        let offset = match paging.offset.as_deref().map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Err(ApiError::one(at(
                    "H183",
                    "offset",
                    Some(&json!(paging.offset)),
                )));
            }
        };
        let (recipient, rt, t) = validate::query(&parse_json(&body)?)?;
        let now = mock.now_turkey();
        let mut state = lock(&mock.inner.state);
        MockIys::process_due(&mut state, now);
        let mut events: Vec<_> = state
            .brands
            .get(&brand)
            .and_then(|b| b.record(&recipient, rt, t))
            .map(|r| r.history.iter().collect())
            .unwrap_or_default();
        // Newest consentDate first (SPEC); ties by newest creationDate.
        events.sort_by(|a, b| {
            (b.consent_date, b.creation, b.txid).cmp(&(a.consent_date, a.creation, a.txid))
        });
        let total = events.len() as u64;
        let list: Vec<_> = events
            .into_iter()
            .skip(offset as usize)
            .take(limit)
            .map(|e| e.to_change())
            .collect();
        Ok(Json(HistoryResponse {
            pagination: Pagination {
                offset,
                page_size: list.len() as u64,
                total_count: total,
            },
            list,
        })
        .into_response())
    })())
}

// ---------------------------------------------------------------- changes (pull)

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    source: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn parse_cursor(text: &str) -> Option<(chrono::NaiveDateTime, [u8; 32])> {
    let (epoch, txid) = text.split_once('_')?;
    let utc = DateTime::from_timestamp(epoch.parse().ok()?, 0)?;
    Some((to_turkey(utc), net::parse_hex32(txid)?))
}

async fn changes(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    Query(q): Query<ChangesQuery>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let side = match q.source.as_deref() {
            None | Some("IYS") => Side::Iys,
            Some("HS") => Side::Hs,
            Some(other) => return Err(ApiError::one(at("H506", "source", Some(&json!(other))))),
        };
        let limit = match q.limit.as_deref() {
            None => 1000,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err(ApiError::one(at("H507", "limit", Some(&json!(text))))),
            },
        };
        let cursor = match q.after.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                parse_cursor(text)
                    .ok_or_else(|| ApiError::one(at("H098", "after", Some(&json!(text)))))?,
            ),
        };
        let (repeat, empty) = {
            let mut f = lock(&mock.inner.faults);
            let hit = (f.repeat_page, f.empty_page);
            f.repeat_page = false;
            f.empty_page = false;
            hit
        };
        if empty {
            let page = ChangesPage {
                after: q.after.clone().unwrap_or_default(),
                list: Vec::new(),
            };
            return Ok(Json(page).into_response());
        }
        let now = mock.now_turkey();
        let mut state = lock(&mock.inner.state);
        MockIys::process_due(&mut state, now);
        let brand_state = state
            .brands
            .get_mut(&brand)
            .ok_or_else(|| ApiError::code("H015"))?;
        if repeat && let Some(previous) = brand_state.last_page.get(&side) {
            return Ok(json_bytes(previous.clone()));
        }
        let hold_back = TimeDelta::from_std(mock.inner.config.hold_back).unwrap_or(TimeDelta::MAX);
        let lower = now - TimeDelta::days(PULL_WINDOW_DAYS);
        // The current second is served too: a change made later in it gets a transactionId
        // that sorts after every earlier one (see `store::transaction_id`), so it lands after
        // the cursor `<epoch>_<txid>` this page returns and the next pull delivers it.
        let upper = now.checked_sub_signed(hold_back).unwrap_or(lower);
        let events = brand_state.changes(side, cursor, lower, upper, limit);
        let Some(last) = events.last() else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let page = ChangesPage {
            after: last.cursor(),
            list: events.iter().map(|e| e.to_change()).collect(),
        };
        let bytes = serde_json::to_vec(&page).map_err(|_| ApiError::code("H015"))?;
        brand_state.last_page.insert(side, bytes.clone());
        Ok(json_bytes(bytes))
    })())
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

// ---------------------------------------------------------------- push

fn connection_errors(v: &Value, allow_http: bool) -> (Vec<IysError>, Option<PushConnection>) {
    let mut errors = Vec::new();
    let url = v.get("url").and_then(Value::as_str).unwrap_or_default();
    if url.is_empty() {
        errors.push(at("H531", "url", None));
    } else if !(url.starts_with("https://") || allow_http && url.starts_with("http://")) {
        errors.push(entry("H531"));
    }
    let consent_type = match v.get("type") {
        None | Some(Value::Null) => {
            errors.push(at("H111", "type", None));
            None
        }
        Some(t) => {
            let parsed = t.as_str().and_then(Channel::parse);
            if parsed.is_none() {
                errors.push(at("H117", "type", Some(t)));
            }
            parsed
        }
    };
    let text = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let username = text("username");
    if username.is_none() {
        errors.push(at("H093", "username", None));
    }
    let password = text("password");
    if password.is_none() {
        let mut e = at("H093", "password", None);
        "Şifre (password) bulunamadı.".clone_into(&mut e.message);
        errors.push(e);
    }
    let connection = match (consent_type, username, password) {
        (Some(consent_type), Some(username), Some(password)) if errors.is_empty() => {
            Some(PushConnection {
                url: url.to_owned(),
                consent_type,
                username,
                password,
            })
        }
        _ => None,
    };
    (errors, connection)
}

async fn push_register(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = (|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let value = parse_json(&body)?;
        let list = value
            .get("connection")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| ApiError::code("H014"))?;
        let mut errors = Vec::new();
        let mut connections = Vec::new();
        for item in list {
            let (found, connection) = connection_errors(item, mock.inner.config.push_allow_http);
            errors.extend(found);
            connections.extend(connection);
        }
        if !errors.is_empty() {
            return Err(ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, errors));
        }
        // At most two active connections per brand and type.
        let state = lock(&mock.inner.state);
        let existing = state.brands.get(&brand).map_or(&[][..], |b| &b.push[..]);
        for c in &connections {
            let others = existing
                .iter()
                .filter(|r| {
                    r.connection.consent_type == c.consent_type && r.connection.url != c.url
                })
                .count();
            if others >= 2 {
                return Err(ApiError::code("H530"));
            }
        }
        Ok((brand, connections))
    })();
    let (brand, connections) = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if mock.inner.config.push_verify {
        let Ok(test) = serde_json::to_vec(&push_test_payload()) else {
            return ApiError::code("H015").into_response();
        };
        for c in &connections {
            let outcome = net::post_json_basic(
                &c.url,
                &c.username,
                &c.password,
                &test,
                mock.inner.config.push_timeout,
            )
            .await;
            match outcome {
                Ok(code) if (200..300).contains(&code) => {}
                Err(net::PostError::Timeout) => {
                    let mut e = entry("H191");
                    "Bağlantı zaman aşımına uğradı.".clone_into(&mut e.message);
                    return ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, vec![e])
                        .into_response();
                }
                _ => return ApiError::code("H530").into_response(),
            }
        }
    }
    let now = mock.now_turkey();
    let mut state = lock(&mock.inner.state);
    if let Some(b) = state.brands.get_mut(&brand) {
        for c in connections {
            b.push.retain(|r| {
                !(r.connection.url == c.url && r.connection.consent_type == c.consent_type)
            });
            b.push.push(super::store::PushReg {
                connection: c,
                status: "Bağlantı Oluşturuldu".to_owned(),
                register_time: now,
            });
        }
    }
    Json(MessageResponse {
        message: "Bağlantı oluşturuldu".to_owned(),
    })
    .into_response()
}

async fn push_list(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let state = lock(&mock.inner.state);
        let list: Vec<PushRegistration> = state
            .brands
            .get(&brand)
            .map(|b| {
                b.push
                    .iter()
                    .map(|r| PushRegistration {
                        url: r.connection.url.clone(),
                        consent_type: r.connection.consent_type,
                        status: r.status.clone(),
                        register_time: format_iys(r.register_time),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Json(list).into_response())
    })())
}

async fn push_unregister(
    State(mock): State<MockIys>,
    Path((iys, brand)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let value = parse_json(&body)?;
        let (errors, connection) = connection_errors(&value, true);
        let Some(c) = connection else {
            return Err(ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, errors));
        };
        let mut state = lock(&mock.inner.state);
        let removed = state.brands.get_mut(&brand).is_some_and(|b| {
            let before = b.push.len();
            b.push.retain(|r| r.connection != c);
            b.push.len() < before
        });
        if !removed {
            let mut e = entry("H530");
            "Bağlantı kaldırılamadı.".clone_into(&mut e.message);
            return Err(ApiError::many(StatusCode::UNPROCESSABLE_ENTITY, vec![e]));
        }
        Ok(Json(MessageResponse {
            message: "Bağlantı Kaldırıldı".to_owned(),
        })
        .into_response())
    })())
}

// ---------------------------------------------------------------- reconciliation

impl MockIys {
    /// H501 (not `YYYY-MM-DD`), H502 (more than 7 days back).
    fn report_date(&self, text: &str) -> Result<NaiveDate, ApiError> {
        let date = (text.len() == 10)
            .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
            .flatten()
            .ok_or_else(|| ApiError::one(at("H501", "reportDate", Some(&json!(text)))))?;
        if self.now_turkey().date() - date > TimeDelta::days(7) {
            return Err(ApiError::one(at("H502", "reportDate", Some(&json!(text)))));
        }
        Ok(date)
    }

    /// The day's CSV, or `None` while the day is not over (İYS builds it at day end) or when
    /// the day had no movement (İYS: 204 "Dosya bulunamadı").
    fn day_file(&self, brand: u64, date: NaiveDate) -> Option<String> {
        let now = self.now_turkey();
        if date >= now.date() {
            return None;
        }
        let mut state = lock(&self.inner.state);
        MockIys::process_due(&mut state, now);
        let events = state.brands.get(&brand)?.day_events(date);
        (!events.is_empty()).then(|| reconciliation_csv(events))
    }
}

async fn change_stats(
    State(mock): State<MockIys>,
    Path((iys, brand, report_date, rt)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let date = mock.report_date(&report_date)?;
        let recipient_type = RecipientType::parse(&rt)
            .ok_or_else(|| ApiError::one(at("H116", "recipientType", Some(&json!(rt)))))?;
        let now = mock.now_turkey();
        let mut state = lock(&mock.inner.state);
        MockIys::process_due(&mut state, now);
        let events = state
            .brands
            .get(&brand)
            .map(|b| b.day_events(date))
            .unwrap_or_default();
        let pending_of = |t: Channel| -> u64 {
            state
                .batches
                .values()
                .filter(|b| b.brand == brand && b.results.is_none() && b.accepted.date() == date)
                .flat_map(|b| &b.items)
                .filter(|i| {
                    i.consent.recipient_type == recipient_type && i.consent.consent_type == t
                })
                .count() as u64
        };
        let change_stats = Channel::ALL
            .into_iter()
            .map(|t| {
                let consents = [(Side::Hs, "HS"), (Side::Iys, "IYS")]
                    .into_iter()
                    .map(|(side, name)| {
                        let matching = events.iter().filter(|e| {
                            e.side() == side
                                && e.consent_type == t
                                && e.recipient_type == recipient_type
                        });
                        let (mut approval, mut rejection) = (0, 0);
                        for e in matching {
                            match e.status {
                                ConsentStatus::Onay => approval += 1,
                                ConsentStatus::Ret => rejection += 1,
                            }
                        }
                        let pending = if side == Side::Hs { pending_of(t) } else { 0 };
                        SourceStats {
                            source: name.to_owned(),
                            approval,
                            rejection,
                            pending,
                            total: approval + rejection + pending,
                        }
                    })
                    .collect();
                TypeStats {
                    consent_type: t,
                    consents,
                }
            })
            .collect();
        Ok(Json(ChangeStatsResponse { change_stats }).into_response())
    })())
}

async fn change_file(
    State(mock): State<MockIys>,
    Path((iys, brand, report_date)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let date = mock.report_date(&report_date)?;
        Ok(match mock.day_file(brand, date) {
            Some(csv) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
                csv,
            )
                .into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        })
    })())
}

async fn agreement(
    State(mock): State<MockIys>,
    Path((iys, brand, report_date)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let date = mock.report_date(&report_date)?;
        let Some(csv) = mock.day_file(brand, date) else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let agreed = lock(&mock.inner.state)
            .brands
            .get(&brand)
            .is_some_and(|b| b.agreements.contains(&date));
        Ok(Json(AgreementResponse {
            process_status: "completed".to_owned(),
            hash_value: net::hex(&Sha384::digest(csv.as_bytes())),
            hash_method: "SHA-384".to_owned(),
            agreement_status: agreed,
        })
        .into_response())
    })())
}

async fn agreement_put(
    State(mock): State<MockIys>,
    Path((iys, brand, report_date)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reply((|| {
        let (_, brand) = mock.authorize(&headers, &iys, Some(&brand))?;
        let date = mock.report_date(&report_date)?;
        let value = parse_json(&body)?;
        if value.get("agreementStatus") != Some(&Value::Bool(true)) {
            return Err(ApiError::one(at(
                "H512",
                "agreementStatus",
                value.get("agreementStatus"),
            )));
        }
        if let Some(b) = lock(&mock.inner.state).brands.get_mut(&brand) {
            b.agreements.insert(date);
        }
        Ok(Json(AgreementCaptured {
            agreement_captured: true,
        })
        .into_response())
    })())
}

// ---------------------------------------------------------------- admin (/_mock)

async fn faults_get(State(mock): State<MockIys>) -> Json<Faults> {
    Json(mock.faults())
}

async fn faults_put(State(mock): State<MockIys>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            mock.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CitizenBody {
    brand_code: u64,
    recipient: String,
    #[serde(default)]
    recipient_type: RecipientType,
    #[serde(rename = "type")]
    consent_type: Channel,
    status: ConsentStatus,
    source: String,
    citizen_name: Option<String>,
}

/// An admin route's JSON body, or a 400 saying what is wrong with it.
fn admin_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, Json<Value>)> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
    })
}

async fn admin_citizen(State(mock): State<MockIys>, body: Bytes) -> Response {
    let parsed: CitizenBody = match admin_body(&body) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let source = match parsed.source.as_str() {
        "IYS_WEB" => CitizenSource::Web,
        "IYS_MOBIL" => CitizenSource::Mobil,
        "IYS_KISAMESAJ" => CitizenSource::KisaMesaj,
        "IYS_CM" => CitizenSource::Cm,
        "IYS_EPOSTA" => CitizenSource::Eposta,
        "IYS_AHS_HAT_KAPATMA" => CitizenSource::AhsHatKapatma,
        "IYS_WEB_YENI" => CitizenSource::WebYeni {
            citizen_name: parsed.citizen_name.unwrap_or_default(),
        },
        other => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("unknown citizen source {other}")})),
            )
                .into_response();
        }
    };
    match mock.citizen_change(
        parsed.brand_code,
        &parsed.recipient,
        parsed.recipient_type,
        parsed.consent_type,
        parsed.status,
        source,
    ) {
        Ok(change) => Json(change).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BurstBody {
    brand_code: u64,
    /// The seeded numbers `first .. first + count` (see [`super::seeded_recipient`]).
    #[serde(default)]
    first: usize,
    count: usize,
    status: ConsentStatus,
    /// Any HS_* or IYS_* source name.
    source: String,
}

/// Many changes at one instant (load tests): each named seeded number gets a new record of
/// `status`, all visible to pull at once.
async fn admin_burst(State(mock): State<MockIys>, body: Bytes) -> Response {
    let parsed: BurstBody = match admin_body(&body) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let now = mock.now_turkey();
    let records = (parsed.first..parsed.first + parsed.count).map(|i| super::SeedRecord {
        recipient: super::seeded_recipient(i),
        recipient_type: RecipientType::Bireysel,
        consent_type: Channel::Mesaj,
        status: parsed.status,
        source: parsed.source.clone(),
        consent_date: Some(now),
        creation_date: Some(now),
    });
    match mock.seed(parsed.brand_code, records) {
        Ok(n) => Json(json!({ "changed": n })).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn push_stats(State(mock): State<MockIys>) -> Json<super::PushStats> {
    Json(mock.push_stats())
}

async fn requests(State(mock): State<MockIys>) -> Json<super::RequestCounts> {
    Json(mock.requests())
}
