//! Tests of the mock İYS: in-process through `tower::ServiceExt::oneshot`, plus real-socket
//! tests for serving, truncated bodies and push delivery.

#![allow(clippy::many_single_char_names)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::TimeDelta;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::*;
use crate::domain::time::{ManualClock, parse_iys};

const IYS: u64 = 700_000;
const BRAND: u64 = 700_000;
/// Tuesday; no holiday within the 3-business-day window.
const NOW: &str = "2026-03-10 12:00:00";

fn base() -> String {
    format!("/sps/{IYS}/brands/{BRAND}")
}

struct Harness {
    mock: MockIys,
    app: Router,
    clock: Arc<ManualClock>,
}

fn harness_with(edit: impl FnOnce(&mut MockConfig)) -> Harness {
    let clock = Arc::new(ManualClock::at_turkey(parse_iys(NOW).unwrap()));
    let mut config = MockConfig::for_tests(clock.clone());
    config.push_verify = false;
    edit(&mut config);
    let mock = MockIys::new(config);
    Harness {
        app: mock.router(),
        mock,
        clock,
    }
}

fn harness() -> Harness {
    harness_with(|_| {})
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn codes(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn expect(&self, status: u16, codes: &[&str]) {
        assert_eq!(
            (self.status.as_u16(), self.codes()),
            (status, codes.iter().map(|c| (*c).to_owned()).collect()),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

impl Harness {
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Value) -> Answer {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.raw(method, uri, token, "application/json", bytes)
            .await
    }

    async fn token_json(&self, body: Value) -> Answer {
        self.call(Method::POST, "/oauth2/token", None, body).await
    }

    async fn login(&self) -> String {
        let a = self
            .token_json(json!({"grant_type":"password","username":"mock","password":"mock"}))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        a.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn add(&self, token: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("{}/consents", base()),
            Some(token),
            body,
        )
        .await
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(TimeDelta::seconds(secs));
    }
}

fn consent(recipient: &str, t: &str, status: &str, date: &str) -> Value {
    json!({"recipient": recipient, "type": t, "source": "HS_WEB", "status": status,
           "consentDate": date})
}

// ------------------------------------------------------------------ token

#[tokio::test]
async fn token_password_refresh_rotation_and_errors() {
    let h = harness();
    let a = h
        .token_json(json!({"grant_type":"password","username":"mock","password":"mock"}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let first = a.json();
    assert_eq!(first["expires_in"], 7200);
    assert_eq!(first["refresh_expires_in"], 14400);
    assert_eq!(first["token_type"], "bearer");
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3, "JWT-shaped");

    // Refresh rotates: the old refresh token stops working.
    let old_refresh = first["refresh_token"].as_str().unwrap();
    let b = h
        .token_json(json!({"grant_type":"refresh_token","refresh_token": old_refresh}))
        .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_ne!(b.json()["refresh_token"], first["refresh_token"]);
    let c = h
        .token_json(json!({"grant_type":"refresh_token","refresh_token": old_refresh}))
        .await;
    assert_eq!(c.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.json()["error"], "invalid_grant");

    // Form body.
    let f = h
        .raw(
            Method::POST,
            "/oauth2/token",
            None,
            "application/x-www-form-urlencoded",
            b"grant_type=password&username=mock&password=mock".to_vec(),
        )
        .await;
    assert_eq!(f.status, StatusCode::OK);

    for (body, error, description) in [
        (
            json!({"grant_type":"password","username":"mock","password":"x"}),
            "invalid_request",
            "Kullanıcı kimlik bilgileri geçersiz.",
        ),
        (
            json!({"username":"mock"}),
            "invalid_request",
            "Giriş yöntemi belirtilmemiş.",
        ),
        (
            json!({"grant_type":"client_credentials"}),
            "invalid_request",
            "Bilinmeyen giriş yöntemi.",
        ),
        (
            json!({"grant_type":"password","password":"mock"}),
            "invalid_request",
            "Kullanıcı adı verilmemiş.",
        ),
        (
            json!({"grant_type":"refresh_token"}),
            "invalid_request",
            "Yenileme jetonu verilmemiş.",
        ),
    ] {
        let r = h.token_json(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            (
                r.json()["error"].as_str(),
                r.json()["error_description"].as_str()
            ),
            (Some(error), Some(description))
        );
    }

    // The access token works, then expires after 7200 s.
    let uri = format!("{}/consents/changes", base());
    assert_eq!(
        h.call(Method::GET, &uri, Some(access), Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.advance(7201);
    h.call(Method::GET, &uri, Some(access), Value::Null)
        .await
        .expect(401, &["H351"]);
}

#[tokio::test]
async fn token_h084_lockout_restarts_the_hour_on_each_call() {
    let h = harness_with(|c| {
        c.rate_limits = RateLimits {
            enabled: true,
            per_second: 1000,
            token_per_hour: 3,
            ..RateLimits::default()
        };
    });
    let body = json!({"grant_type":"password","username":"mock","password":"mock"});
    for _ in 0..3 {
        assert_eq!(h.token_json(body.clone()).await.status, StatusCode::OK);
    }
    h.token_json(body.clone()).await.expect(429, &["H084"]);
    // Each call while locked restarts the hour.
    h.advance(59 * 60);
    h.token_json(body.clone()).await.expect(429, &["H084"]);
    h.advance(59 * 60);
    h.token_json(body.clone()).await.expect(429, &["H084"]);
    h.advance(60 * 60 + 1);
    assert_eq!(h.token_json(body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limits_h124_h086_h089() {
    let h = harness_with(|c| {
        c.rate_limits = RateLimits {
            enabled: true,
            per_second: 4,
            token_per_hour: 100,
            status_per_hour: 2,
            history_per_hour: 1,
        };
    });
    let t = h.login().await;
    let uri = format!("{}/consents/changes", base());
    for _ in 0..3 {
        assert_eq!(
            h.call(Method::GET, &uri, Some(&t), Value::Null)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
    }
    h.call(Method::GET, &uri, Some(&t), Value::Null)
        .await
        .expect(429, &["H124"]);
    h.advance(1);
    let q = json!({"recipient":"a@bb.cc","recipientType":"BIREYSEL","type":"EPOSTA"});
    let status = format!("{}/consents/status", base());
    let history = format!("{}/consents/history", base());
    h.call(Method::POST, &status, Some(&t), q.clone())
        .await
        .expect(404, &[NOT_FOUND_CODE]);
    h.call(Method::POST, &status, Some(&t), q.clone())
        .await
        .expect(404, &[NOT_FOUND_CODE]);
    h.call(Method::POST, &status, Some(&t), q.clone())
        .await
        .expect(429, &["H086"]);
    h.advance(1);
    assert_eq!(
        h.call(Method::POST, &history, Some(&t), q.clone())
            .await
            .status,
        StatusCode::OK
    );
    h.call(Method::POST, &history, Some(&t), q.clone())
        .await
        .expect(429, &["H089"]);
    h.advance(3601);
    assert_eq!(
        h.call(Method::POST, &history, Some(&t), q).await.status,
        StatusCode::OK
    );
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn auth_h351_h353_h190_h191() {
    let h = harness();
    let t = h.login().await;
    let body = consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10 10:00:00");
    h.add("not-a-token", body.clone())
        .await
        .expect(401, &["H351"]);
    h.call(
        Method::POST,
        &format!("{}/consents", base()),
        None,
        body.clone(),
    )
    .await
    .expect(401, &["H351"]);
    let other_iys = format!("/sps/123/brands/{BRAND}/consents");
    h.call(Method::POST, &other_iys, Some(&t), body.clone())
        .await
        .expect(403, &["H353"]);
    let other_brand = format!("/sps/{IYS}/brands/999/consents");
    h.call(Method::POST, &other_brand, Some(&t), body.clone())
        .await
        .expect(403, &["H353"]);
    let bad_brand = format!("/sps/{IYS}/brands/abc/consents");
    h.call(Method::POST, &bad_brand, Some(&t), body.clone())
        .await
        .expect(422, &["H191"]);
    h.call(Method::POST, "/sps/x/brands/1/consents", Some(&t), body)
        .await
        .expect(422, &["H190"]);
    let brands = h
        .call(
            Method::GET,
            &format!("/sps/{IYS}/brands"),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(brands.json()[0]["master"], true);
}

// ------------------------------------------------------------------ validation matrix

#[tokio::test]
async fn single_add_validation_matrix() {
    let h = harness();
    let t = h.login().await;
    let ok_date = "2026-03-10 10:00:00";
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","consentDate":ok_date}),
            422,
            vec!["H110"],
        ),
        (
            json!({"recipient":"a@bb.cc","source":"HS_WEB","status":"ONAY","consentDate":ok_date}),
            422,
            vec!["H111"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"ONAY"}),
            422,
            vec!["H112"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","status":"ONAY","consentDate":ok_date}),
            422,
            vec!["H113"],
        ),
        (
            json!({"type":"EPOSTA","source":"HS_WEB","status":"ONAY","consentDate":ok_date}),
            422,
            vec!["H114"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"RED",
                "consentDate":ok_date}),
            422,
            vec!["H115"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
                "consentDate":ok_date,"recipientType":"TACIRR"}),
            422,
            vec!["H116"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTAa","source":"HS_WEB","status":"ONAY",
                "consentDate":ok_date}),
            422,
            vec!["H117"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
                "consentDate":ok_date,"unacceptableProperty":"x"}),
            422,
            vec!["H118"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"IYS_WEB","status":"ONAY",
                "consentDate":ok_date}),
            422,
            vec!["H119"],
        ),
        (
            consent("örnek@mail.com", "EPOSTA", "ONAY", ok_date),
            422,
            vec!["H120"],
        ),
        (
            consent("+05543213232", "MESAJ", "ONAY", ok_date),
            422,
            vec!["H121"],
        ),
        (
            consent("9055436100000000", "MESAJ", "ONAY", ok_date),
            422,
            vec!["H160", "H121"],
        ),
        (
            consent("a@bb.cc", "MESAJ", "ONAY", ok_date),
            422,
            vec!["H464"],
        ),
        (
            consent("+905321234567", "EPOSTA", "ONAY", ok_date),
            422,
            vec!["H464"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_2015","status":"ONAY",
                "consentDate":"2016-01-01 00:00:00"}),
            422,
            vec!["H155"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_2015","status":"ONAY",
                "consentDate":"2015-02-10 09:30:00"}),
            422,
            vec!["H156", "H155"],
        ),
        (
            consent("a@bb.cc", "EPOSTA", "ONAY", "2015-04-30 23:59:00"),
            422,
            vec!["H156"],
        ),
        (
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-15-01 13:35:00"),
            422,
            vec!["H157"],
        ),
        (
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10T10:00:00"),
            422,
            vec!["H158"],
        ),
        (
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10 12:00:01"),
            422,
            vec!["H162"],
        ),
        (
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-05 23:59:59"),
            422,
            vec!["H467"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_KARAR","status":"ONAY",
                "consentDate":ok_date}),
            422,
            vec!["H408"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
                "consentDate":ok_date,"retailerCode":""}),
            400,
            vec!["H267"],
        ),
        (
            json!({"recipient":"a@bb.cc","type":"EPOSTA","source":"HS_WEB","status":"ONAY",
                "consentDate":ok_date,"retailerAccess":[]}),
            422,
            vec!["H163"],
        ),
    ];
    for (body, status, codes) in cases {
        let a = h.add(&t, body.clone()).await;
        assert_eq!(
            (a.status.as_u16(), a.codes()),
            (
                status,
                codes.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()
            ),
            "{body}"
        );
    }
    // Locations and values as in SPEC examples.
    let a = h
        .add(
            &t,
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-05 23:59:59"),
        )
        .await;
    assert_eq!(
        a.json()["errors"][0],
        json!({"code":"H467","message":"Üç iş günü öncesinde alınan izinler kaydedilemez.",
               "location":["consentDate"],"value":"2026-03-05 23:59:59"})
    );
    // Three business days back is still fine (Fri → Sat, Mon, Tue; Sunday skipped).
    let a = h
        .add(
            &t,
            consent("b@bb.cc", "EPOSTA", "ONAY", "2026-03-06 00:00:00"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // HS_2015 at exactly 2015-05-01 00:00:00 is accepted (exempt from H467).
    let a = h
        .add(
            &t,
            json!({"recipient":"c@bb.cc","type":"EPOSTA","source":"HS_2015","status":"ONAY",
                   "consentDate":"2015-05-01 00:00:00"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    // Bad JSON.
    let a = h
        .raw(
            Method::POST,
            &format!("{}/consents", base()),
            Some(&t),
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    a.expect(400, &["H014"]);
}

#[tokio::test]
async fn single_add_business_rules() {
    let h = harness();
    let t = h.login().await;
    let date = "2026-03-09 10:00:00";
    h.add(&t, consent("+905321234567", "MESAJ", "RET", date))
        .await
        .expect(400, &["H175"]);
    let first = h
        .add(&t, consent("+905321234567", "MESAJ", "ONAY", date))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let tx = first.json()["transactionId"].as_str().unwrap().to_owned();
    assert_eq!(tx.len(), 64);
    assert_eq!(first.json()["creationDate"], NOW);
    h.add(
        &t,
        consent("+905321234567", "MESAJ", "ONAY", "2026-03-09 11:00:00"),
    )
    .await
    .expect(400, &["H174"]);
    h.add(
        &t,
        consent("+905321234567", "MESAJ", "RET", "2026-03-09 09:00:00"),
    )
    .await
    .expect(400, &["H178"]);
    // HS_KARAR needs an existing record and RET.
    let karar = json!({"recipient":"+905321234567","type":"MESAJ","source":"HS_KARAR",
                       "status":"RET","consentDate":"2026-03-10 11:00:00"});
    h.add(
        &t,
        json!({"recipient":"+905329999999","type":"MESAJ","source":"HS_KARAR","status":"RET",
               "consentDate":"2026-03-10 11:00:00"}),
    )
    .await
    .expect(422, &["H408"]);
    h.advance(1);
    assert_eq!(h.add(&t, karar).await.status, StatusCode::OK);
    // ARAMA is a separate key.
    assert_eq!(
        h.add(&t, consent("+905321234567", "ARAMA", "ONAY", date))
            .await
            .status,
        StatusCode::OK
    );

    // TACIR: first insert may omit source and consentDate; updates need both.
    let tacir = json!({"recipient":"Tacir@Firma.com.tr","type":"EPOSTA","status":"ONAY",
                       "recipientType":"TACIR"});
    assert_eq!(h.add(&t, tacir).await.status, StatusCode::OK);
    h.add(
        &t,
        json!({"recipient":"tacir@firma.com.tr","type":"EPOSTA","status":"RET",
               "recipientType":"TACIR","consentDate":"2026-03-10 11:00:00"}),
    )
    .await
    .expect(400, &["H463"]);
    h.add(
        &t,
        json!({"recipient":"tacir@firma.com.tr","type":"EPOSTA","status":"RET",
               "recipientType":"TACIR","source":"HS_WEB"}),
    )
    .await
    .expect(400, &["H462"]);
    // The same address as BIREYSEL is an independent key (and e-mails are lower-cased).
    h.add(&t, consent("TACIR@firma.com.tr", "EPOSTA", "RET", date))
        .await
        .expect(400, &["H175"]);
    let stored = h
        .mock
        .consent(
            BRAND,
            "TACIR@FIRMA.COM.TR",
            RecipientType::Tacir,
            Channel::Eposta,
        )
        .unwrap();
    assert_eq!(stored.recipient, "tacir@firma.com.tr");
    assert_eq!(stored.consent_date, None);

    // Single status: found and not found.
    let s = h
        .call(
            Method::POST,
            &format!("{}/consents/status", base()),
            Some(&t),
            json!({"recipient":"+905321234567","recipientType":"BIREYSEL","type":"MESAJ"}),
        )
        .await;
    assert_eq!(s.json()["status"], "RET");
    assert_eq!(s.json()["source"], "HS_KARAR");
    assert_eq!(s.json()["retailerAccessCount"], 0);
    h.call(
        Method::POST,
        &format!("{}/consents/status", base()),
        Some(&t),
        json!({"recipient":"+905321234568","recipientType":"BIREYSEL","type":"MESAJ"}),
    )
    .await
    .expect(404, &[NOT_FOUND_CODE]);
    h.call(
        Method::POST,
        &format!("{}/consents/status", base()),
        Some(&t),
        json!({"recipient":"+905321234568","type":"MESAJ"}),
    )
    .await
    .expect(422, &["H170"]);
}

#[tokio::test]
async fn v2_identical_request_returns_same_transaction() {
    let h = harness();
    let t = h.login().await;
    let uri = format!("/v2{}/consents", base());
    let body = consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10 10:00:00");
    let a = h.call(Method::POST, &uri, Some(&t), body.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    h.advance(30);
    let b = h.call(Method::POST, &uri, Some(&t), body.clone()).await;
    assert_eq!(a.json(), b.json());
    // v1 answers the same request with H174.
    h.add(&t, body).await.expect(400, &["H174"]);
    assert_eq!(h.mock.change_count(BRAND), 1);
}

// ------------------------------------------------------------------ batch

#[tokio::test]
async fn batch_validation_rejects_whole_batch_with_indexes() {
    let h = harness();
    let t = h.login().await;
    let uri = format!("{}/consents/request", base());
    let d = "2026-03-10 10:00:00";
    let body = json!([
        consent("a@bb.cc", "EPOSTA", "ONAY", d),
        {"recipient":"b@bb.cc","type":"EPOSTA","status":"ONAY","consentDate":d},
        consent("+905321234567", "MESAJ", "ONAY", "2042-02-10 09:30:00"),
        consent("A@BB.CC", "EPOSTA", "RET", d),
    ]);
    let a = h.call(Method::POST, &uri, Some(&t), body).await;
    a.expect(422, &["H113", "H162", "H194"]);
    let errors = a.json()["errors"].clone();
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["location"], json!(["source"]));
    assert_eq!(errors[1]["index"], 2);
    assert_eq!(errors[2]["index"], 3);
    assert_eq!(h.mock.change_count(BRAND), 0);

    let too_many: Vec<Value> = (0..1001)
        .map(|i| consent(&format!("u{i}@bb.cc"), "EPOSTA", "ONAY", d))
        .collect();
    h.call(Method::POST, &uri, Some(&t), Value::Array(too_many))
        .await
        .expect(422, &["H091"]);
    h.call(Method::POST, &uri, Some(&t), json!({"consents": []}))
        .await
        .expect(400, &["H092"]);
}

#[tokio::test]
async fn batch_poll_empty_then_enqueue_then_results() {
    let h = harness_with(|c| c.batch_delay = Duration::from_mins(5));
    let t = h.login().await;
    let d = "2026-03-10 10:00:00";
    assert_eq!(
        h.add(
            &t,
            consent("old@bb.cc", "EPOSTA", "ONAY", "2026-03-09 10:00:00")
        )
        .await
        .status,
        StatusCode::OK
    );
    let body = json!([
        consent("new@bb.cc", "EPOSTA", "ONAY", d),
        consent("ret@bb.cc", "EPOSTA", "RET", d),
        consent("old@bb.cc", "EPOSTA", "ONAY", d),
    ]);
    let a = h
        .call(
            Method::POST,
            &format!("{}/consents/request", base()),
            Some(&t),
            body,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let accepted = a.json();
    let request_id = accepted["requestId"].as_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 36);
    assert_eq!(accepted["subRequests"].as_array().unwrap().len(), 3);
    assert_eq!(accepted["subRequests"][0]["creationDate"], NOW);

    let poll = format!("{}/consents/request/{request_id}", base());
    let p = h.call(Method::GET, &poll, Some(&t), Value::Null).await;
    assert_eq!(p.json(), json!([]));
    h.advance(200);
    let p = h.call(Method::GET, &poll, Some(&t), Value::Null).await;
    let items = p.json();
    assert_eq!(items.as_array().unwrap().len(), 3);
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "enqueue")
    );
    h.advance(100);
    let p = h.call(Method::GET, &poll, Some(&t), Value::Null).await;
    let items = p.json();
    assert_eq!(items[0]["status"], "success");
    assert_eq!(items[0]["creationDate"], "2026-03-10 12:05:00");
    assert_eq!(items[0]["transactionId"].as_str().unwrap().len(), 64);
    assert_eq!(items[0]["requestId"], request_id.as_str());
    assert_eq!(items[1]["status"], "failure");
    assert_eq!(items[1]["error"]["code"], "H175");
    assert_eq!(items[2]["error"]["code"], "H174");
    assert!(items[1].get("creationDate").is_none());
    assert!(
        h.mock
            .consent(BRAND, "new@bb.cc", RecipientType::Bireysel, Channel::Eposta)
            .is_some()
    );

    // v2: re-sending a stored consent points back to the original request.
    let v2 = h
        .call(
            Method::POST,
            &format!("/v2{}/consents/request", base()),
            Some(&t),
            json!([consent("new@bb.cc", "EPOSTA", "ONAY", d)]),
        )
        .await;
    let id2 = v2.json()["requestId"].as_str().unwrap().to_owned();
    h.advance(300);
    let p = h
        .call(
            Method::GET,
            &format!("/v2{}/consents/request/{id2}", base()),
            Some(&t),
            Value::Null,
        )
        .await;
    let item = &p.json()[0];
    assert_eq!(item["status"], "success");
    assert_eq!(item["transactionId"], items[0]["transactionId"]);
    assert_eq!(item["isAddConsentV2Service"], true);
    assert_eq!(
        item["originalRequestInformation"]["requestId"],
        request_id.as_str()
    );

    // requestId checks and unknown ids.
    for (id, code) in [
        ("a9817bd8-0642-4d8c-946b-cc47d5aac41ab-cc47d5aac41a", "H198"),
        ("abcde", "H199"),
        ("12345", "H400"),
    ] {
        h.call(
            Method::GET,
            &format!("{}/consents/request/{id}", base()),
            Some(&t),
            Value::Null,
        )
        .await
        .expect(422, &[code]);
    }
    let unknown = format!("{}/consents/request/{}", base(), net::uuid_v4());
    assert_eq!(
        h.call(Method::GET, &unknown, Some(&t), Value::Null)
            .await
            .json(),
        json!([])
    );
}

// ------------------------------------------------------------------ multi status, history

#[tokio::test]
async fn multi_status_and_history() {
    let h = harness();
    let t = h.login().await;
    for (r, s, date) in [
        ("+905321111111", "ONAY", "2026-03-09 10:00:00"),
        ("+905322222222", "ONAY", "2026-03-09 10:00:00"),
    ] {
        assert_eq!(
            h.add(&t, consent(r, "MESAJ", s, date)).await.status,
            StatusCode::OK
        );
    }
    h.advance(1);
    assert_eq!(
        h.add(
            &t,
            consent("+905322222222", "MESAJ", "RET", "2026-03-10 09:00:00")
        )
        .await
        .status,
        StatusCode::OK
    );
    let uri = format!("{}/consents/BIREYSEL/status/MESAJ", base());
    let a = h
        .call(
            Method::POST,
            &uri,
            Some(&t),
            json!({"recipients":["+905321111111","+905322222222","+905323333333"]}),
        )
        .await;
    assert_eq!(a.json()["list"], json!(["+905321111111"]));
    h.call(
        Method::POST,
        &uri,
        Some(&t),
        json!({"recipients":["a@bb.cc"]}),
    )
    .await
    .expect(422, &["H464"]);
    let dup = h
        .call(
            Method::POST,
            &uri,
            Some(&t),
            json!({"recipients":["+905321111111","+905321111111"]}),
        )
        .await;
    dup.expect(422, &["H193"]);
    assert_eq!(
        dup.json()["errors"][0]["location"],
        json!(["recipients", 1])
    );
    h.call(Method::POST, &uri, Some(&t), json!({}))
        .await
        .expect(422, &["H168"]);
    h.call(Method::POST, &uri, Some(&t), json!({"recipients": []}))
        .await
        .expect(422, &["H164"]);
    h.call(Method::POST, &uri, Some(&t), json!({"recipients": {}}))
        .await
        .expect(422, &["H478"]);

    let hist = format!("{}/consents/history", base());
    let q = json!({"recipient":"+905322222222","recipientType":"BIREYSEL","type":"MESAJ"});
    let a = h.call(Method::POST, &hist, Some(&t), q.clone()).await;
    let body = a.json();
    assert_eq!(body["list"][0]["status"], "RET", "newest first");
    assert_eq!(body["list"][1]["status"], "ONAY");
    assert_eq!(
        body["pagination"],
        json!({"offset":0,"pageSize":2,"totalCount":2})
    );
    h.call(
        Method::POST,
        &format!("{hist}?limit=1000"),
        Some(&t),
        q.clone(),
    )
    .await
    .expect(422, &["H186"]);
    h.call(Method::POST, &format!("{hist}?limit=0"), Some(&t), q)
        .await
        .expect(422, &["H187"]);
}

// ------------------------------------------------------------------ changes (pull)

#[tokio::test]
async fn changes_order_cursor_204_sources_window_and_limits() {
    let h = harness();
    let t = h.login().await;
    // An old HS change, 8 days ago, is outside the 7-day window.
    h.mock
        .seed(
            BRAND,
            [SeedRecord {
                recipient: "old@bb.cc".into(),
                recipient_type: RecipientType::Bireysel,
                consent_type: Channel::Eposta,
                status: ConsentStatus::Onay,
                source: "HS_WEB".into(),
                consent_date: parse_iys("2026-03-01 10:00:00"),
                creation_date: parse_iys("2026-03-02 10:00:00"),
            }],
        )
        .unwrap();
    for i in 0..5 {
        assert_eq!(
            h.add(
                &t,
                consent(
                    &format!("u{i}@bb.cc"),
                    "EPOSTA",
                    "ONAY",
                    "2026-03-10 10:00:00"
                )
            )
            .await
            .status,
            StatusCode::OK
        );
        h.advance(10);
    }
    h.mock
        .citizen_change(
            BRAND,
            "+905321234567",
            RecipientType::Bireysel,
            Channel::Mesaj,
            ConsentStatus::Onay,
            CitizenSource::WebYeni {
                citizen_name: "Ayşe Yılmaz".into(),
            },
        )
        .unwrap();
    let uri = format!("{}/consents/changes", base());

    // HS pages of 2, oldest first, following `after`.
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let mut u = format!("{uri}?source=HS&limit=2");
        if !after.is_empty() {
            u = format!("{u}&after={after}");
        }
        let a = h.call(Method::GET, &u, Some(&t), Value::Null).await;
        if a.status == StatusCode::NO_CONTENT {
            assert!(a.body.is_empty());
            break;
        }
        let page = a.json();
        let list = page["list"].as_array().unwrap();
        assert!(list.len() <= 2);
        for item in list {
            seen.push(item["recipient"].as_str().unwrap().to_owned());
            assert!(item["source"].as_str().unwrap().starts_with("HS_"));
        }
        let final_item = list.last().unwrap();
        let epoch = crate::domain::time::from_turkey(
            parse_iys(final_item["creationDate"].as_str().unwrap()).unwrap(),
        )
        .timestamp();
        assert_eq!(
            page["after"],
            format!("{epoch}_{}", final_item["transactionId"].as_str().unwrap())
        );
        after = page["after"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        seen,
        ["u0@bb.cc", "u1@bb.cc", "u2@bb.cc", "u3@bb.cc", "u4@bb.cc"]
    );

    // Default source is IYS: only the citizen change, with citizenName.
    let a = h.call(Method::GET, &uri, Some(&t), Value::Null).await;
    let list = a.json()["list"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["source"], "IYS_WEB_YENI");
    assert_eq!(list[0]["citizenName"], "Ayşe Yılmaz");

    h.call(
        Method::GET,
        &format!("{uri}?source=SH"),
        Some(&t),
        Value::Null,
    )
    .await
    .expect(422, &["H506"]);
    let a = h
        .call(
            Method::GET,
            &format!("{uri}?limit=1500"),
            Some(&t),
            Value::Null,
        )
        .await;
    a.expect(422, &["H507"]);
    assert_eq!(a.json()["errors"][0]["value"], "1500");
}

#[tokio::test]
async fn changes_hold_back_hides_the_newest_hour() {
    let h = harness_with(|c| c.hold_back = Duration::from_hours(1));
    let t = h.login().await;
    h.mock
        .citizen_change(
            BRAND,
            "a@bb.cc",
            RecipientType::Bireysel,
            Channel::Eposta,
            ConsentStatus::Ret,
            CitizenSource::Mobil,
        )
        .unwrap();
    let uri = format!("{}/consents/changes?source=IYS", base());
    assert_eq!(
        h.call(Method::GET, &uri, Some(&t), Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.advance(3599);
    assert_eq!(
        h.call(Method::GET, &uri, Some(&t), Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.advance(1);
    let a = h.call(Method::GET, &uri, Some(&t), Value::Null).await;
    assert_eq!(a.json()["list"][0]["source"], "IYS_MOBIL");
}

/// İYS gives every movement its own transactionId, even an ONAY and its RET in one second:
/// the reconciliation keys uploads by it, so a shared id would hide or invent mismatches.
#[tokio::test]
async fn two_changes_of_one_key_in_one_second_have_distinct_transaction_ids() {
    let h = harness();
    let t = h.login().await;
    let onay = h
        .add(
            &t,
            consent("+905321234567", "MESAJ", "ONAY", "2026-03-10 11:00:00"),
        )
        .await;
    let ret = h
        .add(
            &t,
            consent("+905321234567", "MESAJ", "RET", "2026-03-10 11:30:00"),
        )
        .await;
    assert_eq!((onay.status, ret.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(onay.json()["creationDate"], ret.json()["creationDate"]);
    let citizen = h
        .mock
        .citizen_change(
            BRAND,
            "+905321234567",
            RecipientType::Bireysel,
            Channel::Mesaj,
            ConsentStatus::Onay,
            CitizenSource::Mobil,
        )
        .unwrap();
    let ids = [
        onay.json()["transactionId"].as_str().unwrap().to_owned(),
        ret.json()["transactionId"].as_str().unwrap().to_owned(),
        citizen.transaction_id,
    ];
    assert!(ids.iter().all(|id| id.len() == 64));
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "one id per movement: {ids:?}"
    );
}

/// Pull serves the current second at once (no waiting for it to close), and a change made
/// later in that same second is still delivered by the next pull from the cursor.
#[tokio::test]
async fn changes_of_the_current_second_are_served_and_none_is_skipped() {
    let h = harness();
    let t = h.login().await;
    let uri = format!("{}/consents/changes?source=IYS", base());
    let mut after = String::new();
    let mut seen = Vec::new();
    // The clock never moves: every change and every pull is in one second.
    for i in 0..20 {
        let recipient = format!("c{i}@bb.cc");
        h.mock
            .citizen_change(
                BRAND,
                &recipient,
                RecipientType::Bireysel,
                Channel::Eposta,
                ConsentStatus::Ret,
                CitizenSource::Mobil,
            )
            .unwrap();
        let page_uri = if after.is_empty() {
            uri.clone()
        } else {
            format!("{uri}&after={after}")
        };
        let a = h.call(Method::GET, &page_uri, Some(&t), Value::Null).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "change {i} of this second is served"
        );
        let page = a.json();
        for item in page["list"].as_array().unwrap() {
            seen.push(item["recipient"].as_str().unwrap().to_owned());
        }
        after = page["after"].as_str().unwrap().to_owned();
    }
    let expected: Vec<String> = (0..20).map(|i| format!("c{i}@bb.cc")).collect();
    assert_eq!(seen, expected, "each change once, in the order made");
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn faults_burst_throttle_unauthorized_latency_and_admin() {
    let h = harness();
    let t = h.login().await;
    let uri = format!("{}/consents/changes", base());
    let get = || h.call(Method::GET, &uri, Some(&t), Value::Null);

    h.mock.set_faults(Faults {
        error_burst: 2,
        ..Faults::default()
    });
    get().await.expect(500, &["H015"]);
    get().await.expect(500, &["H015"]);
    assert_eq!(get().await.status, StatusCode::NO_CONTENT);

    h.mock.set_faults(Faults {
        error_burst: 1,
        error_status: 503,
        ..Faults::default()
    });
    get().await.expect(503, &["H192"]);

    h.mock.set_faults(Faults {
        throttle: 1,
        retry_after_secs: Some(7),
        ..Faults::default()
    });
    let a = get().await;
    a.expect(429, &["H124"]);
    assert_eq!(a.headers[header::RETRY_AFTER], "7");
    h.mock.set_faults(Faults {
        throttle: 1,
        ..Faults::default()
    });
    let a = get().await;
    a.expect(429, &["H124"]);
    assert!(a.headers.get(header::RETRY_AFTER).is_none());

    h.mock.set_faults(Faults {
        unauthorized: 1,
        ..Faults::default()
    });
    get().await.expect(401, &["H351"]);
    assert_eq!(get().await.status, StatusCode::NO_CONTENT);

    // path filter: a fault for another path leaves this one alone.
    h.mock.set_faults(Faults {
        error_burst: 1,
        path_contains: Some("/consents/status".into()),
        ..Faults::default()
    });
    assert_eq!(get().await.status, StatusCode::NO_CONTENT);
    assert_eq!(h.mock.faults().error_burst, 1);

    // Admin endpoint sets latency.
    let a = h
        .call(
            Method::PUT,
            "/_mock/faults",
            None,
            json!({"latency_ms": 60}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let started = Instant::now();
    assert_eq!(get().await.status, StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= Duration::from_millis(60));
    let a = h
        .call(Method::GET, "/_mock/faults", None, Value::Null)
        .await;
    assert_eq!(a.json()["latency_ms"], 60);
}

#[tokio::test]
async fn faults_truncated_bodies_repeated_and_empty_pages() {
    let h = harness();
    let t = h.login().await;
    for i in 0..3 {
        h.mock
            .citizen_change(
                BRAND,
                &format!("c{i}@bb.cc"),
                RecipientType::Bireysel,
                Channel::Eposta,
                ConsentStatus::Ret,
                CitizenSource::Web,
            )
            .unwrap();
        h.advance(1);
    }
    let uri = format!("{}/consents/changes?limit=2", base());
    h.mock.set_faults(Faults {
        truncate: 1,
        truncate_mode: TruncateMode::CutJson,
        ..Faults::default()
    });
    let a = h.call(Method::GET, &uri, Some(&t), Value::Null).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err());

    h.mock.set_faults(Faults {
        truncate: 1,
        truncate_mode: TruncateMode::ShortBody,
        ..Faults::default()
    });
    let a = h.call(Method::GET, &uri, Some(&t), Value::Null).await;
    let announced: usize = a.headers[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > a.body.len());

    // A normal page, then the same page again once, then an empty page with the cursor.
    let first = h
        .call(Method::GET, &uri, Some(&t), Value::Null)
        .await
        .json();
    let after = first["after"].as_str().unwrap().to_owned();
    h.mock.set_faults(Faults {
        repeat_page: true,
        ..Faults::default()
    });
    let next = format!("{uri}&after={after}");
    let again = h
        .call(Method::GET, &next, Some(&t), Value::Null)
        .await
        .json();
    assert_eq!(again, first);
    h.mock.set_faults(Faults {
        empty_page: true,
        ..Faults::default()
    });
    let empty = h.call(Method::GET, &next, Some(&t), Value::Null).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json(), json!({"after": after, "list": []}));
    let rest = h
        .call(Method::GET, &next, Some(&t), Value::Null)
        .await
        .json();
    assert_eq!(rest["list"][0]["recipient"], "c2@bb.cc");
}

// ------------------------------------------------------------------ reconciliation

#[tokio::test]
async fn reconciliation_csv_hash_agreement_and_stats() {
    let h = harness();
    let t = h.login().await;
    // Yesterday: two HS changes and one citizen change.
    h.clock
        .set_turkey(parse_iys("2026-03-09 09:00:00").unwrap());
    let t2 = h.login().await;
    assert_eq!(
        h.add(
            &t2,
            consent("+905321234567", "MESAJ", "ONAY", "2026-03-09 08:00:00")
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        h.add(
            &t2,
            consent("b@bb.cc", "EPOSTA", "ONAY", "2026-03-09 08:00:00")
        )
        .await
        .status,
        StatusCode::OK
    );
    h.advance(60);
    h.mock
        .citizen_change(
            BRAND,
            "b@bb.cc",
            RecipientType::Bireysel,
            Channel::Eposta,
            ConsentStatus::Ret,
            CitizenSource::KisaMesaj,
        )
        .unwrap();
    h.clock.set_turkey(parse_iys(NOW).unwrap());

    let day = format!("{}/changes/2026-03-09", base());
    let file = h
        .call(Method::GET, &format!("{day}/file"), Some(&t), Value::Null)
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.headers[header::CONTENT_TYPE], "text/csv");
    let csv = String::from_utf8(file.body.to_vec()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source"
    );
    assert_eq!(lines.len(), 4);
    assert!(csv.ends_with('\n'));
    let mut sorted = lines[1..].to_vec();
    sorted.sort_by_key(|l| {
        let f: Vec<&str> = l.split(',').collect();
        (f[0].to_owned(), f[1].to_owned())
    });
    assert_eq!(sorted, lines[1..].to_vec());
    assert!(lines[3].ends_with(",b@bb.cc,BIREYSEL,EPOSTA,RET,2026-03-09 09:01:00,IYS_KISAMESAJ"));

    let agreements = format!("{}/agreements/2026-03-09", base());
    let a = h
        .call(Method::GET, &agreements, Some(&t), Value::Null)
        .await;
    let expected = net::hex(&Sha384::digest(csv.as_bytes()));
    assert_eq!(
        a.json(),
        json!({"processStatus":"completed","hashValue": expected,"hashMethod":"SHA-384",
               "agreementStatus": false})
    );
    h.call(
        Method::PUT,
        &agreements,
        Some(&t),
        json!({"agreementStatus": false}),
    )
    .await
    .expect(422, &["H512"]);
    let put = h
        .call(
            Method::PUT,
            &agreements,
            Some(&t),
            json!({"agreementStatus": true}),
        )
        .await;
    assert_eq!(put.json(), json!({"agreementCaptured": true}));
    let a = h
        .call(Method::GET, &agreements, Some(&t), Value::Null)
        .await;
    assert_eq!(a.json()["agreementStatus"], true);

    let stats = h
        .call(
            Method::GET,
            &format!("{day}/recipients/BIREYSEL"),
            Some(&t),
            Value::Null,
        )
        .await
        .json();
    let eposta = &stats["changeStats"][2];
    assert_eq!(eposta["type"], "EPOSTA");
    assert_eq!(
        eposta["consents"],
        json!([{"source":"HS","approval":1,"rejection":0,"pending":0,"total":1},
               {"source":"IYS","approval":0,"rejection":1,"pending":0,"total":1}])
    );

    // Today's file is not built yet; bad and old dates.
    let today = format!("{}/changes/2026-03-10/file", base());
    assert_eq!(
        h.call(Method::GET, &today, Some(&t), Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.call(
        Method::GET,
        &format!("{}/changes/10.03.2026/file", base()),
        Some(&t),
        Value::Null,
    )
    .await
    .expect(422, &["H501"]);
    h.call(
        Method::GET,
        &format!("{}/agreements/2026-03-02", base()),
        Some(&t),
        Value::Null,
    )
    .await
    .expect(422, &["H502"]);
}

// ------------------------------------------------------------------ seeding

#[tokio::test]
async fn seeding_100k_records_serves_them_all() {
    let h = harness();
    let created = parse_iys("2026-03-09 10:00:00");
    let n = h
        .mock
        .seed(
            BRAND,
            (0..100_000u32).map(|i| SeedRecord {
                recipient: format!("+90532{i:07}"),
                recipient_type: RecipientType::Bireysel,
                consent_type: Channel::Mesaj,
                status: ConsentStatus::Onay,
                source: "HS_WEB".into(),
                consent_date: created,
                creation_date: created,
            }),
        )
        .unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(h.mock.record_count(BRAND), 100_000);
    let t = h.login().await;
    let a = h
        .call(
            Method::GET,
            &format!("{}/consents/changes?source=HS&limit=1000", base()),
            Some(&t),
            Value::Null,
        )
        .await;
    assert_eq!(a.json()["list"].as_array().unwrap().len(), 1000);
    assert_eq!(
        h.mock.seed(BRAND + 5, []),
        Err(MockError::UnknownBrand(BRAND + 5))
    );
}

// ------------------------------------------------------------------ real sockets

/// Minimal HTTP/1.1 client: one request, `Connection: close`, read to EOF.
async fn http(addr: std::net::SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await; // a truncated body may end in a reset
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[tokio::test]
async fn real_socket_serve_token_add_and_short_body() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(h.mock.serve(listener));
    let body = r#"{"grant_type":"password","username":"mock","password":"mock"}"#;
    let (status, _, bytes) = http(
        addr,
        &format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 200);
    let token: Value = serde_json::from_slice(&bytes).unwrap();
    let token = token["access_token"].as_str().unwrap();
    let add = consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10 10:00:00").to_string();
    let (status, _, _) = http(
        addr,
        &format!(
            "POST {}/consents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{add}",
            base(),
            add.len()
        ),
    )
    .await;
    assert_eq!(status, 200);

    // ShortBody on a real socket: hyper refuses to finish a response whose body ends before
    // its Content-Length and drops the connection, so the client never gets a complete
    // response (an "incomplete message" fault). CutJson is the well-framed variant.
    h.mock.set_faults(Faults {
        truncate: 1,
        ..Faults::default()
    });
    let hist = r#"{"recipient":"a@bb.cc","recipientType":"BIREYSEL","type":"EPOSTA"}"#;
    let request = format!(
        "POST {}/consents/history HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{hist}",
        base(),
        hist.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    assert!(
        raw.len() < 200,
        "no complete response: {}",
        String::from_utf8_lossy(&raw)
    );

    h.mock.set_faults(Faults {
        truncate: 1,
        truncate_mode: TruncateMode::CutJson,
        ..Faults::default()
    });
    let (status, _, bytes) = http(addr, &request).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    // And the next request is healthy again.
    let (status, _, bytes) = http(addr, &request).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
}

/// A push receiver: answers 200 and forwards (Authorization, body) of each POST.
async fn push_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/iys/push", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if raw.len() >= end + 4 + len {
                            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                            let auth = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Authorization: Basic "))
                                .unwrap_or_default()
                                .to_owned();
                            let body = serde_json::from_slice(&raw[end + 4..end + 4 + len])
                                .unwrap_or(Value::Null);
                            let _ = tx.send((auth, body));
                            break;
                        }
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn push_registration_test_payload_and_delivery_with_basic_auth() {
    let h = harness_with(|c| c.push_verify = true);
    let t = h.login().await;
    let (url, mut rx) = push_receiver().await;
    let reg = format!("{}/push/registration", base());
    let a = h
        .call(
            Method::POST,
            &reg,
            Some(&t),
            json!({"connection":[{"url": url, "type":"EPOSTA","username":"u","password":"p:w"}]}),
        )
        .await;
    assert_eq!(a.json(), json!({"message":"Bağlantı oluşturuldu"}));
    let (auth, body) = rx.recv().await.unwrap();
    assert_eq!(net::base64_decode(&auth).unwrap(), b"u:p:w");
    assert_eq!(body["list"][0]["recipient"], "pushtest@iys.org.tr");

    let list = h
        .call(Method::GET, &reg, Some(&t), Value::Null)
        .await
        .json();
    assert_eq!(list[0]["status"], "Bağlantı Oluşturuldu");
    assert_eq!(list[0]["type"], "EPOSTA");

    // HS changes and other types are not pushed; a citizen EPOSTA change is.
    assert_eq!(
        h.add(
            &t,
            consent("a@bb.cc", "EPOSTA", "ONAY", "2026-03-10 10:00:00")
        )
        .await
        .status,
        StatusCode::OK
    );
    h.mock
        .citizen_change(
            BRAND,
            "+905321234567",
            RecipientType::Bireysel,
            Channel::Mesaj,
            ConsentStatus::Ret,
            CitizenSource::KisaMesaj,
        )
        .unwrap();
    h.advance(1);
    h.mock
        .citizen_change(
            BRAND,
            "a@bb.cc",
            RecipientType::Bireysel,
            Channel::Eposta,
            ConsentStatus::Ret,
            CitizenSource::Web,
        )
        .unwrap();
    let (auth, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(net::base64_decode(&auth).unwrap(), b"u:p:w");
    let item = &body["list"][0];
    assert_eq!(
        (item["source"].as_str(), item["recipient"].as_str()),
        (Some("IYS_WEB"), Some("a@bb.cc"))
    );
    assert_eq!(item["iysCode"], IYS);
    assert_eq!(item["brandCode"], BRAND);
    assert!(rx.try_recv().is_err());
    for _ in 0..100 {
        if h.mock.push_stats().delivered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.mock.push_stats(),
        PushStats {
            delivered: 1,
            failed: 0
        }
    );

    // Validation and unregistration.
    h.call(
        Method::POST,
        &reg,
        Some(&t),
        json!({"connection":[{"url": "ftp://x","type":"EPOSTAa","username":"","password":"p"}]}),
    )
    .await
    .expect(422, &["H531", "H117", "H093"]);
    let unreg = format!("{}/push/unregistration", base());
    let body = json!({"url": url, "type":"EPOSTA","username":"u","password":"p:w"});
    let a = h.call(Method::POST, &unreg, Some(&t), body.clone()).await;
    assert_eq!(a.json(), json!({"message":"Bağlantı Kaldırıldı"}));
    h.call(Method::POST, &unreg, Some(&t), body)
        .await
        .expect(422, &["H530"]);
}

#[tokio::test]
async fn push_registration_refused_when_url_does_not_answer() {
    let h = harness_with(|c| c.push_verify = true);
    let t = h.login().await;
    // A port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    h.call(
        Method::POST,
        &format!("{}/push/registration", base()),
        Some(&t),
        json!({"connection":[{"url": url, "type":"MESAJ","username":"u","password":"p"}]}),
    )
    .await
    .expect(422, &["H530"]);
}

// ------------------------------------------------------------------ citizen simulator

#[tokio::test]
async fn citizen_simulator_and_admin_hook() {
    let h = harness();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = h.mock.spawn_citizen(500.0, 42, stop_rx);
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop_tx.send(true).unwrap();
    let made = task.await.unwrap();
    assert!(made > 0);
    let total: usize = [700_000, 700_001]
        .iter()
        .map(|b| h.mock.change_count(*b))
        .sum();
    assert_eq!(total as u64, made);

    let a = h
        .call(
            Method::POST,
            "/_mock/citizen",
            None,
            json!({"brandCode": BRAND, "recipient":"X@BB.CC", "type":"EPOSTA",
                   "status":"RET", "source":"IYS_AHS_HAT_KAPATMA"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["recipient"], "x@bb.cc");
    assert!(a.json().get("consentDate").is_none());
}

#[tokio::test]
async fn a_burst_changes_many_seeded_numbers_at_once() {
    let h = harness();
    let before = h.mock.change_count(700_001);
    let a = h
        .call(
            Method::POST,
            "/_mock/burst",
            None,
            json!({"brandCode": 700_001, "first": 10, "count": 500, "status": "RET", "source": "IYS_MOBIL"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["changed"], 500);
    assert_eq!(h.mock.change_count(700_001), before + 500);
    let bad = h
        .call(
            Method::POST,
            "/_mock/burst",
            None,
            json!({"brandCode": 700_001, "count": 1, "status": "MAYBE", "source": "IYS_MOBIL"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
