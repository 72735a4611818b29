//! A short run of the load generator against the echo baseline and against iysgate serving
//! the demo data, so the kit cannot rot. It checks that calls were made and answered without
//! errors, not how fast: speed is measured by `load-tests/compare.sh`, never by a test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use iysgate::auth::{hash_key, to_hex};
use iysgate::domain::Channel;
use iysgate::load::filter::{FilterRun, ListKind, run_filter};
use iysgate::load::tenants::{TenantsRun, run_tenants};
use iysgate::load::{
    ClosedLoop, Progress, Target, demo_recipients, run_closed_loop, run_open_loop, serve_echo,
};
use tokio_util::sync::CancellationToken;

const KEY: &str = "iysk_load_smoke";
const FLOOD_KEY: &str = "iysk_load_smoke_flood";

fn run(addr: String, target: Target, recipients: Arc<Vec<String>>) -> ClosedLoop {
    ClosedLoop {
        addr,
        target,
        api_key: KEY.into(),
        brand: 600_001,
        connections: 2,
        in_flight: 4,
        duration: Duration::from_millis(300),
        recipients,
        progress: Progress::default(),
        honour_retry_info: false,
        batch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_loads_the_echo_baseline_and_iysgate() {
    let recipients = Arc::new(demo_recipients(5_000, 7, 200, Channel::Mesaj));
    assert!(recipients.len() >= 200, "hits and misses");

    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = format!("http://{}", echo.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { serve_echo(echo, async move { s.cancelled().await }).await });
    let report = run_closed_loop(run(
        echo_addr.clone(),
        Target::Echo,
        Arc::clone(&recipients),
    ))
    .await
    .unwrap();
    assert!(
        report.requests > 0 && report.errors.is_empty(),
        "{}",
        report.summary()
    );
    assert!(report.p50_us > 0 && report.p50_us <= report.p99_us);
    // Open loop at 2 000 calls/s for 0.3 s: about 600 calls, all answered.
    let report = run_open_loop(
        run(echo_addr.clone(), Target::Echo, Arc::clone(&recipients)),
        2_000,
    )
    .await
    .unwrap();
    assert!(
        (400..=700).contains(&report.requests),
        "{}",
        report.summary()
    );
    assert!(report.errors.is_empty(), "{}", report.summary());

    // iysgate with the same demo data (same record count and seed) and a key for it.
    let clients = [
        format!("name=load;sha256={};brands=600001", to_hex(&hash_key(KEY))),
        format!(
            "name=flood;sha256={};brands=600001;quota=200/20",
            to_hex(&hash_key(FLOOD_KEY))
        ),
    ];
    let addr = common::demo_server(5_000, 7, &clients, &stop).await;
    let progress = Progress::default();
    let mut sms = run(addr.clone(), Target::Iysgate, Arc::clone(&recipients));
    sms.progress = progress.clone();
    let report = run_closed_loop(sms).await.unwrap();
    assert!(
        report.requests > 0 && report.errors.is_empty(),
        "{}",
        report.summary()
    );
    assert_eq!(
        progress.done(),
        report.requests,
        "the progress line counts every call"
    );
    assert_eq!(
        report.answered, report.requests,
        "no errors: every call answered"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["target"], "Iysgate");

    // sms with --batch: CheckBatch calls of 50 recipients each.
    let mut batches = run(addr.clone(), Target::Iysgate, Arc::clone(&recipients));
    batches.batch = 50;
    let report = run_closed_loop(batches).await.unwrap();
    assert!(
        report.answered > 0 && report.errors.is_empty(),
        "{}",
        report.summary()
    );

    // email: lists of both kinds through Filter, every recipient answered, some allowed.
    for (kind, channel) in [
        (ListKind::Phones, Channel::Mesaj),
        (ListKind::Emails, Channel::Eposta),
    ] {
        let report = run_filter(FilterRun {
            addr: addr.clone(),
            api_key: KEY.into(),
            brand: 600_001,
            kind,
            total: 25_000,
            chunk: 1_000,
            streams: 2,
            pool: Arc::new(demo_recipients(5_000, 7, 500, channel)),
            server_pid: Some(std::process::id()),
            progress: Progress::default(),
        })
        .await
        .unwrap();
        assert_eq!(report.recipients, 25_000, "{}", report.summary());
        assert!(report.errors.is_empty(), "{}", report.summary());
        assert!(
            report.allowed > 0 && report.allowed < 25_000,
            "{}",
            report.summary()
        );
        assert!(report.server_peak_rss_mib.unwrap() > 0.0);
    }

    // mixed-tenants: the flooding key's excess over its quota is refused, the steady tenant
    // is answered.
    let mut flood = run(addr.clone(), Target::Iysgate, Arc::clone(&recipients));
    flood.api_key = FLOOD_KEY.into();
    let report = run_tenants(TenantsRun {
        steady: run(addr, Target::Iysgate, Arc::clone(&recipients)),
        steady_rate: 500,
        flood,
    })
    .await
    .unwrap();
    assert!(
        report.steady_with_flood.errors.is_empty(),
        "{}",
        report.summary()
    );
    assert!(
        report.steady_with_flood.requests >= 100,
        "{}",
        report.summary()
    );
    let refused = report
        .flood
        .errors
        .get("ResourceExhausted")
        .copied()
        .unwrap_or(0);
    assert!(refused > 0, "{}", report.summary());
    stop.cancel();
}
