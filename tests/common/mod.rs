//! Pieces shared by the tests that need Redis: connection (failing loudly without Redis),
//! per-test key prefixes, replica nodes with their own index and checker, and polling.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iysgate::check::index::{ConsentIndex, EmailKeyer};
use iysgate::check::store::Consents;
use iysgate::check::{Checker, Freshness, Query};
use iysgate::clock::SystemClock;
use iysgate::domain::{BusinessCalendar, Channel, Clock, Purpose, Reason, RecipientType};
use iysgate::sync::redis::SharedState;
use iysgate::sync::{BrandRef, Change, ChangeSource, Page, PullError, PullSource};
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub async fn shared(prefix: &str) -> SharedState {
    SharedState::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {} (set REDIS_URL, or start one with \
             `redis-server --daemonize yes --port 6379 --save ''`): {e}",
                redis_url()
            )
        })
}

pub fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("iysgate-test:{test}:{}:{nanos}", std::process::id())
}

pub async fn wipe(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

pub struct Node {
    pub brand: u32,
    pub consents: Arc<Consents>,
    pub freshness: Arc<Freshness>,
    pub checker: Checker,
}

pub fn node(brand: u32) -> Node {
    node_keyed(brand, [9; 16])
}

/// A node whose e-mail index keys are made under `email_key` (each process has its own).
pub fn node_keyed(brand: u32, email_key: [u8; 16]) -> Node {
    let index = Arc::new(ConsentIndex::new());
    let keyer = Arc::new(EmailKeyer::new(email_key));
    let freshness = Arc::new(Freshness::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let checker = Checker::new(
        Arc::clone(&index),
        Arc::clone(&keyer),
        Arc::clone(&freshness),
        Arc::new(BusinessCalendar::embedded()),
        clock,
        Duration::from_secs(30),
    );
    Node {
        brand,
        consents: Arc::new(Consents::new(index, keyer)),
        freshness,
        checker,
    }
}

impl Node {
    pub fn reason(&self, phone: &str) -> Option<Reason> {
        let q = Query {
            brand: self.brand,
            recipient: phone,
            channel: Channel::Mesaj,
            recipient_type: RecipientType::Bireysel,
            retailer: None,
            purpose: Purpose::Commercial,
        };
        self.checker.check(&q).ok().map(|a| a.decision.reason)
    }

    pub fn records(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.consents
            .records()
            .for_each(|k, r| out.push(format!("{k:?} {:?}", r.current)));
        out.sort();
        out
    }
}

/// Starts a replica following the shared state.
pub async fn replica(brand: u32, prefix: &str, stop: &CancellationToken) -> Arc<Node> {
    let n = Arc::new(node(brand));
    let s = shared(prefix).await;
    let (c, f, stop) = (
        Arc::clone(&n.consents),
        Arc::clone(&n.freshness),
        stop.clone(),
    );
    tokio::spawn(async move { s.follow(c, f, stop).await.unwrap() });
    n
}

pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// İYS's changes for one brand as a growing list (source IYS; HS empty); cursor = position.
#[derive(Clone, Default)]
pub struct ListSource(pub Arc<Mutex<Vec<Change>>>);

impl ListSource {
    pub fn push(&self, recipient: &str, status: &str, minute: u32) {
        let mut list = self.0.lock().unwrap();
        let n = list.len();
        list.push(Change {
            recipient: recipient.into(),
            recipient_type: "BIREYSEL".into(),
            channel: "MESAJ".into(),
            status: status.into(),
            source: "IYS_WEB".into(),
            consent_date: Some(format!("2026-05-01 10:{minute:02}:00")),
            creation_date: format!("2026-05-01 10:{minute:02}:30"),
            transaction_id: format!("{n:064x}"),
        });
    }
}

impl ChangeSource for ListSource {
    fn pull(
        &self,
        _brand: BrandRef,
        source: PullSource,
        after: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Page, PullError>> + Send {
        let list = self.0.lock().unwrap().clone();
        let start: usize = after.as_deref().map_or(0, |a| a.parse().unwrap());
        let page = if source == PullSource::Hs {
            Page::default()
        } else {
            let end = (start + limit as usize).min(list.len());
            Page {
                after: (end > start).then(|| end.to_string()),
                changes: list[start..end].to_vec(),
            }
        };
        std::future::ready(Ok(page))
    }
}

/// An embedded iysgate on a free port serving the demo data set of `records` and `seed`, with
/// the `--client` specs given; returns its `http://` address. Stops when `stop` is cancelled.
pub async fn demo_server(
    records: usize,
    seed: u64,
    clients: &[String],
    stop: &CancellationToken,
) -> String {
    demo_server_with(records, seed, clients, &[], stop).await
}

/// [`demo_server`] with more `serve` flags.
pub async fn demo_server_with(
    records: usize,
    seed: u64,
    clients: &[String],
    extra: &[&str],
    stop: &CancellationToken,
) -> String {
    use clap::Parser;
    use iysgate::app::config::{Cli, Command};
    use iysgate::app::{self, App};
    use iysgate::clock::SystemClock;
    let mut argv = vec![
        "iysgate".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
    ];
    for spec in clients {
        argv.push("--client".into());
        argv.push(spec.clone());
    }
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let app = Arc::new(App::embedded(&args, Arc::new(SystemClock)).unwrap());
    iysgate::app::demo::generate(
        &app.consents,
        records,
        seed,
        Clock::now_turkey(&SystemClock),
    );
    let listener = app::bind(args.listen).await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = stop.clone();
    tokio::spawn(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        app.spawn_embedded_heartbeat(&tasks, stop.clone());
        app::serve_grpc(
            &app,
            &args,
            app::consent_service(&app, &args),
            listener,
            stop,
            &tasks,
        )
        .await
    });
    addr
}

/// A Redis server of the test's own on `port` (no persistence), so the test can stop and
/// restart it; `redis-server` must be installed (the test fails without it).
pub fn start_redis(port: u16) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("this test needs redis-server on the PATH (apt-get install redis-server)");
    // Wait until it answers.
    // Up to 5 s: the whole suite runs on two cores.
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server on port {port} did not start");
}

/// A port for a server of the test's own, in `base .. base + 6000`, kept below the kernel's
/// ephemeral range (32768 and up): a client reconnecting to a stopped server on an ephemeral
/// port can connect to itself and hold the port, and the server then cannot start again.
pub fn private_port(base: u16) -> u16 {
    assert!(
        base + 6_000 <= 32_768,
        "stay below the ephemeral port range"
    );
    base + (std::process::id() % 6_000) as u16
}
