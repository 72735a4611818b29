//! A panel of its own for a test: an embedded serving process (file evidence store in a
//! temporary directory, the demo brands and `records` demo recipients), the panel on a free
//! port, and an HTTP client that keeps its session cookie like a browser.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use iysgate::panel::store::{PanelStore, Role};
use iysgate::panel::{self, Panel};

/// A running panel and what it serves from.
pub struct TestPanel {
    pub base: String,
    pub panel: Arc<Panel>,
    pub dir: PathBuf,
    pub stop: CancellationToken,
}

impl Drop for TestPanel {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The password every test account gets.
pub const PASSWORD: &str = "parola-1234-test";

/// Starts a panel on the embedded default with the demo brands and `records` demo
/// recipients, and the accounts `admin` (admin), `uyum` (compliance, brand 600001) and
/// `izleyici` (viewer, brand 600001). `extra` are more `serve` flags.
pub async fn start(test: &str, records: usize, extra: &[&str]) -> TestPanel {
    use clap::Parser;
    use iysgate::app::config::{Cli, Command};
    use iysgate::app::{self, App};
    use iysgate::clock::SystemClock;
    use iysgate::domain::Clock;

    let dir = std::env::temp_dir().join(format!("iysgate-panel-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let evidence = dir.join("evidence.log");
    let mut argv: Vec<String> = [
        "iysgate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--evidence-file",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.push(evidence.display().to_string());
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let clock = Arc::new(SystemClock);
    let mut app = App::embedded(&args, clock.clone()).unwrap();
    let store = app::open_evidence(None, &evidence, app.checker.calendar().clone())
        .await
        .unwrap();
    let brands: Vec<_> = app::demo::BRANDS
        .iter()
        .map(|b| (b.code, b.name, b.policy))
        .collect();
    app::ensure_brands(&store, app::demo::IYS_CODE, &brands, clock.now_utc())
        .await
        .unwrap();
    app.checker
        .set_policies(app::demo::BRANDS.iter().map(|b| (b.code, b.policy)));
    app::demo::generate(&app.consents, records, 7, clock.now_turkey());
    let panel_store = PanelStore::beside(&store, &evidence).unwrap();
    app.evidence = Some(Arc::new(store));
    let service = app::consent_service(&app, &args);
    let now = clock.now_utc();
    let hash = iysgate::panel::auth::hash_password(PASSWORD).unwrap();
    for (name, role) in [
        ("admin", Role::Admin),
        ("uyum", Role::Compliance),
        ("izleyici", Role::Viewer),
    ] {
        panel_store.add_user(name, role, &hash, now).await.unwrap();
        if role != Role::Admin {
            panel_store.set_grant(name, 600001, true).await.unwrap();
        }
    }
    let panel = Arc::new(Panel::new(&app, service, panel_store).unwrap());
    let listener = app::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    app.spawn_embedded_heartbeat(&tasks, stop.clone());
    panel::serve(listener, None, Arc::clone(&panel), stop.clone(), &tasks);
    TestPanel {
        base,
        panel,
        dir,
        stop,
    }
}

/// The reason word `Checker::check` gives now for a commercial MESAJ BIREYSEL check of
/// `phone` by `brand`.
pub fn check_reason(p: &TestPanel, brand: u32, phone: &str) -> String {
    use iysgate::domain::{Channel, Purpose, RecipientType};
    let q = iysgate::check::Query {
        brand,
        recipient: phone,
        channel: Channel::Mesaj,
        recipient_type: RecipientType::Bireysel,
        retailer: None,
        purpose: Purpose::Commercial,
    };
    let answer = p.panel.service.checker().check(&q).unwrap();
    answer.decision.reason.as_str().to_owned()
}

/// An answer: status, headers and body text.
pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of the hidden form token on this page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"_csrf\" value=\"")
            .expect("the page has a form token");
        let rest = &self.body[at + "name=\"_csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client that keeps the cookies it is given, as a browser would.
pub struct Browser {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookies: Vec::new(),
        }
    }

    /// A new browser logged in as `name` (with [`PASSWORD`]).
    pub async fn logged_in(base: &str, name: &str) -> Browser {
        let mut b = Browser::new(base);
        let page = b.login(name, PASSWORD).await;
        assert_eq!(page.status, 303, "login of {name}: {}", page.body);
        b
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Page {
        self.post("/login", &[("name", name), ("password", password)])
            .await
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send(http::Method::GET, path, None, Bytes::new()).await
    }

    /// POSTs a URL-encoded form as given (add `("_csrf", …)` yourself).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        self.send(
            http::Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            Bytes::from(body),
        )
        .await
    }

    /// GETs `form_page`, then POSTs `fields` to `path` with that page's form token.
    pub async fn submit(&mut self, form_page: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(form_page).await.csrf();
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("_csrf", &csrf));
        self.post(path, &all).await
    }

    /// POSTs a `multipart/form-data` form as a browser sends a file input: `fields` in order,
    /// the last one a file named `file_name` with `content`.
    pub async fn post_file(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        file_field: &str,
        file_name: &str,
        content: &[u8],
    ) -> Page {
        const BOUNDARY: &str = "----iysgate-test-boundary-7d3f";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        self.send(
            http::Method::POST,
            path,
            Some(&format!("multipart/form-data; boundary={BOUNDARY}")),
            Bytes::from(body),
        )
        .await
    }

    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Page {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header(http::header::COOKIE, cookie);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for set in headers.get_all(http::header::SET_COOKIE) {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}
