//! Syncing from the mock İYS over real HTTP, through the İYS client, into replicas that
//! follow Redis (`REDIS_URL`, default redis://127.0.0.1:6379; these tests fail without it).
//! A citizen's RET made in the mock becomes DENY on two replicas, timed; every injected
//! fault ends in the same state as a clean run with no change lost or applied twice; token
//! calls stay within the limit, and none, nor any call needing a token, during an H084 halt.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use iysgate::clock::SystemClock;
use iysgate::domain::{Channel, ConsentStatus, RecipientType};
use iysgate::domain::{Clock, Reason};
use iysgate::iys::client::{Credentials, IysClient, RetryPolicy};
use iysgate::iys::mock::{CitizenSource, Faults, MockConfig, MockIys, SeedRecord, TruncateMode};
use iysgate::iys::token::MemoryTokenStore;
use iysgate::sync::{BrandRef, MemoryCursors, SyncConfig, SyncWorker};
use tokio_util::sync::CancellationToken;

use common::{node, prefix, replica, shared, wait_for, wipe};

const BRAND: BrandRef = BrandRef {
    iys_code: 700_000,
    brand_code: 700_001,
};

fn phone(i: usize) -> String {
    format!("+90532{i:07}")
}

async fn start_mock() -> (MockIys, String) {
    let mock = MockIys::new(MockConfig::for_tests(Arc::new(SystemClock)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.serve(listener));
    (mock, url)
}

/// `n` ONAYs the brand collected an hour ago, already in İYS (visible to `source=HS`).
fn seed(mock: &MockIys, n: usize) {
    let an_hour_ago = SystemClock.now_turkey() - ChronoDuration::hours(1);
    let records = (0..n).map(|i| SeedRecord {
        recipient: phone(i),
        recipient_type: RecipientType::Bireysel,
        consent_type: Channel::Mesaj,
        status: ConsentStatus::Onay,
        source: "HS_WEB".into(),
        consent_date: Some(an_hour_ago),
        creation_date: Some(an_hour_ago + ChronoDuration::seconds(i as i64 % 600)),
    });
    mock.seed(u64::from(BRAND.brand_code), records).unwrap();
}

fn client(url: &str, retry: RetryPolicy) -> IysClient {
    let credentials = Credentials {
        username: "mock".into(),
        password: "mock".into(),
    };
    IysClient::new(url, credentials, Arc::new(MemoryTokenStore::new()), retry).unwrap()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
    }
}

fn citizen_ret(mock: &MockIys, i: usize) {
    mock.citizen_change(
        u64::from(BRAND.brand_code),
        &phone(i),
        RecipientType::Bireysel,
        Channel::Mesaj,
        ConsentStatus::Ret,
        CitizenSource::Web,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_ret_in_the_mock_becomes_deny_on_two_replicas() {
    let (mock, url) = start_mock().await;
    seed(&mock, 2_000);
    let p = prefix("iys");
    let stop = CancellationToken::new();
    let leader = node(BRAND.brand_code);
    let worker = SyncWorker::new(
        client(&url, fast_retries()),
        leader.consents,
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        leader.freshness,
        Arc::new(SystemClock),
        SyncConfig {
            page_limit: 1000,
            interval: Duration::from_millis(50),
            ..SyncConfig::default()
        },
    )
    .with_shared(shared(&p).await);
    tokio::spawn(worker.run_leader("leader".into(), Duration::from_secs(2), stop.clone()));
    let replicas = [
        replica(BRAND.brand_code, &p, &stop).await,
        replica(BRAND.brand_code, &p, &stop).await,
    ];
    for r in &replicas {
        wait_for(
            "the seeded ONAYs on a replica",
            Duration::from_secs(20),
            || {
                r.consents.records().len() == 2_000
                    && r.reason(&phone(1_999)) == Some(Reason::ConsentRegistered)
            },
        )
        .await;
    }
    // Citizens say RET one after another; each is timed until both replicas deny.
    let mut took = Vec::new();
    for i in 0..12 {
        let started = Instant::now();
        citizen_ret(&mock, i);
        for r in &replicas {
            wait_for(
                "a citizen RET on a replica",
                Duration::from_secs(10),
                || r.reason(&phone(i)) == Some(Reason::Rejected),
            )
            .await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "citizen RET in the mock → DENY on both replicas (12 RETs, sync interval 50 ms): p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(
        replicas[0].reason(&phone(12)),
        Some(Reason::ConsentRegistered)
    );
    stop.cancel();
    wipe(&p).await;
}

fn snapshot(n: &common::Node) -> Vec<String> {
    n.records()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_fault_ends_like_a_clean_run() {
    let (mock, url) = start_mock().await;
    seed(&mock, 2_500);
    for i in 0..30 {
        citizen_ret(&mock, i * 7);
    }
    let stop = CancellationToken::new();
    let config = SyncConfig {
        page_limit: 1000,
        interval: Duration::from_millis(1),
        ..SyncConfig::default()
    };
    let worker = |n: &common::Node, c: IysClient| {
        SyncWorker::new(
            c,
            Arc::clone(&n.consents),
            Arc::new(MemoryCursors::default()),
            vec![BRAND],
            Arc::clone(&n.freshness),
            Arc::new(SystemClock),
            config,
        )
    };
    let clean = node(BRAND.brand_code);
    let stats = worker(&clean, client(&url, fast_retries()))
        .pass(&stop)
        .await;
    assert!(stats.failed.is_empty(), "{stats:?}");
    assert_eq!(clean.consents.records().len(), 2_500);

    let faulty = node(BRAND.brand_code);
    let faulty_client = client(&url, fast_retries());
    let w = worker(&faulty, faulty_client.clone());
    // The faults hit a process that already holds its token, as in steady operation.
    faulty_client
        .pull_changes(
            700_000,
            700_001,
            iysgate::iys::client::PullSource::Iys,
            None,
            1,
        )
        .await
        .unwrap();
    let faults = [
        Faults {
            error_burst: 3,
            error_status: 500,
            ..Faults::default()
        },
        Faults {
            error_burst: 2,
            error_status: 503,
            ..Faults::default()
        },
        Faults {
            throttle: 2,
            ..Faults::default()
        },
        Faults {
            throttle: 1,
            retry_after_secs: Some(1),
            ..Faults::default()
        },
        Faults {
            unauthorized: 1,
            ..Faults::default()
        },
        Faults {
            latency_ms: 30,
            ..Faults::default()
        },
        Faults {
            truncate: 1,
            truncate_mode: TruncateMode::CutJson,
            ..Faults::default()
        },
        Faults {
            truncate: 1,
            truncate_mode: TruncateMode::ShortBody,
            ..Faults::default()
        },
        Faults {
            repeat_page: true,
            ..Faults::default()
        },
        Faults {
            empty_page: true,
            ..Faults::default()
        },
    ];
    for (added, fault) in (30..).zip(faults) {
        mock.set_faults(fault.clone());
        // New citizen changes arrive while the fault is active.
        citizen_ret(&mock, 2_000 + added);
        let mut passes = 0;
        loop {
            passes += 1;
            let stats = w.pass(&stop).await;
            if stats.failed.is_empty() {
                break;
            }
            assert!(
                passes < 10,
                "fault {fault:?} never cleared: {:?}",
                stats.failed
            );
        }
        mock.set_faults(Faults {
            latency_ms: 0,
            ..Faults::default()
        });
    }
    let stats = worker(&clean, client(&url, fast_retries()))
        .pass(&stop)
        .await;
    assert!(stats.failed.is_empty());
    w.pass(&stop).await;
    let (a, b) = (snapshot(&faulty), snapshot(&clean));
    let only_faulty: Vec<_> = a.iter().filter(|x| !b.contains(x)).take(3).collect();
    let only_clean: Vec<_> = b.iter().filter(|x| !a.contains(x)).take(3).collect();
    assert!(
        only_faulty.is_empty() && only_clean.is_empty() && a.len() == b.len(),
        "same final state as the clean run: {} vs {} records; only after faults: {only_faulty:?}; only clean: {only_clean:?}",
        a.len(),
        b.len()
    );
    assert!(
        faulty_client.token_calls() <= 3,
        "token calls within the limit: {}",
        faulty_client.token_calls()
    );
}

#[tokio::test]
async fn paging_through_many_changes_of_one_second_sees_each_once() {
    let (mock, url) = start_mock().await;
    let at = SystemClock.now_turkey() - ChronoDuration::days(1);
    let records = (0..5_000).map(|i| SeedRecord {
        recipient: phone(i),
        recipient_type: RecipientType::Bireysel,
        consent_type: Channel::Mesaj,
        status: ConsentStatus::Onay,
        source: "HS_WEB".into(),
        consent_date: Some(at),
        creation_date: Some(at),
    });
    mock.seed(u64::from(BRAND.brand_code), records).unwrap();
    let c = client(&url, fast_retries());
    let mut after: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let page = c
            .pull_changes(
                700_000,
                700_001,
                iysgate::iys::client::PullSource::Hs,
                after.as_deref(),
                1000,
            )
            .await
            .unwrap();
        if page.list.is_empty() {
            break;
        }
        for ch in &page.list {
            assert!(
                seen.insert(ch.transaction_id.clone()),
                "a change served twice"
            );
        }
        after = page.after;
    }
    assert_eq!(seen.len(), 5_000);
}

/// One HTTP/1.1 exchange on a fresh connection; returns (status, body).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_ret_reaches_the_replicas_before_the_pull_could() {
    // İYS's real hold-back: the pull alone would not show the RET for an hour.
    let mut config = MockConfig::for_tests(Arc::new(SystemClock));
    config.hold_back = Duration::from_hours(1);
    let mock = MockIys::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(mock.serve(listener));
    seed(&mock, 10);

    let p = prefix("push");
    let stop = CancellationToken::new();
    // The push receiver, as `iysgate sync --push-listen` runs it.
    let receiver = iysgate::sync::push::router(shared(&p).await, "iys", "s3cret");
    let push_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_addr = push_listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(push_listener, receiver).await });

    // Wrong credentials are refused.
    let (status, _) = http(
        &push_addr,
        "POST",
        "/iys/push",
        Some("Basic aXlzOndyb25n"),
        "{\"list\":[]}",
    )
    .await;
    assert_eq!(status, 401);

    // Register the webhook with İYS (the mock sends its test payload, which is ignored).
    let (status, token) = http(
        &mock_addr,
        "POST",
        "/oauth2/token",
        None,
        r#"{"grant_type":"password","username":"mock","password":"mock"}"#,
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let registration = format!(
        r#"{{"connection":[{{"url":"http://{push_addr}/iys/push","type":"MESAJ","username":"iys","password":"s3cret"}}]}}"#
    );
    let (status, body) = http(
        &mock_addr,
        "POST",
        "/sps/700000/brands/700001/push/registration",
        Some(&bearer),
        &registration,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let leader = node(BRAND.brand_code);
    let worker = SyncWorker::new(
        client(&format!("http://{mock_addr}"), fast_retries()),
        leader.consents,
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        leader.freshness,
        Arc::new(SystemClock),
        SyncConfig {
            page_limit: 1000,
            interval: Duration::from_millis(50),
            ..SyncConfig::default()
        },
    )
    .with_shared(shared(&p).await);
    tokio::spawn(worker.run_leader("leader".into(), Duration::from_secs(2), stop.clone()));
    let r = replica(BRAND.brand_code, &p, &stop).await;
    wait_for("the replica to be fresh", Duration::from_secs(10), || {
        r.reason(&phone(100)) == Some(Reason::NoConsent)
    })
    .await;
    assert_eq!(
        r.reason(&phone(3)),
        Some(Reason::NoConsent),
        "the seeded ONAYs are held back from the pull"
    );

    // A citizen's change: only push can bring it now.
    mock.citizen_change(
        u64::from(BRAND.brand_code),
        &phone(500),
        RecipientType::Bireysel,
        Channel::Mesaj,
        ConsentStatus::Onay,
        CitizenSource::Mobil,
    )
    .unwrap();
    let took = wait_for(
        "the pushed ONAY on the replica",
        Duration::from_secs(10),
        || r.reason(&phone(500)) == Some(Reason::ConsentRegistered),
    )
    .await;
    println!("a citizen change pushed by the mock İYS reached the replica in {took:?}");
    let stats = mock.push_stats();
    assert!(stats.delivered >= 1 && stats.failed == 0, "{stats:?}");
    stop.cancel();
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_token_through_redis() {
    use iysgate::iys::token::{RedisTokenStore, TokenStore};
    let (_mock, url) = start_mock().await;
    let p = prefix("token");
    let credentials = || Credentials {
        username: "mock".into(),
        password: "mock".into(),
    };
    let store = || async {
        Arc::new(
            RedisTokenStore::connect(&common::redis_url(), &p, "mock")
                .await
                .unwrap(),
        )
    };
    let a = IysClient::new(&url, credentials(), store().await, fast_retries()).unwrap();
    let b = IysClient::new(&url, credentials(), store().await, fast_retries()).unwrap();
    let pull = |c: IysClient| async move {
        c.pull_changes(
            700_000,
            700_001,
            iysgate::iys::client::PullSource::Iys,
            None,
            10,
        )
        .await
        .unwrap();
    };
    pull(a.clone()).await;
    pull(b.clone()).await;
    pull(b.clone()).await;
    assert_eq!(
        (a.token_calls(), b.token_calls()),
        (1, 0),
        "the second worker used the stored token"
    );

    // A halt one worker records (after İYS's 429 H084) stops token calls everywhere: with
    // the stored token gone, a third worker must not call the token endpoint.
    let shared_store = store().await;
    shared_store
        .halt_until(chrono::Utc::now() + ChronoDuration::hours(1))
        .await
        .unwrap();
    let client_redis = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client_redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:iys-token:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let tokens: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":halt")).collect();
    assert_eq!(tokens.len(), 1);
    redis::cmd("DEL")
        .arg(tokens[0])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let c = IysClient::new(&url, credentials(), store().await, fast_retries()).unwrap();
    let refused = c
        .pull_changes(
            700_000,
            700_001,
            iysgate::iys::client::PullSource::Iys,
            None,
            10,
        )
        .await;
    assert!(refused.is_err(), "halted");
    assert_eq!(c.token_calls(), 0, "no token call while halted");
    wipe(&p).await;
}

/// İYS refuses the token (every call 401) and then answers the new-token request with 429
/// H084: the halt lasts an hour and İYS counts each failure against the caller's IP. While
/// it lasts the worker makes no call that needs a token (the mock counts what reaches it),
/// the client says it is halted; when it ends, a token call and the pulls resume. The mock
/// and the client share a manual clock, so the hour passes without waiting.
#[tokio::test]
async fn no_call_needing_a_token_while_token_calls_are_halted() {
    use iysgate::domain::ManualClock;
    use iysgate::iys::mock::RateLimits;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut config = MockConfig::for_tests(clock.clone());
    // One token an hour: the second token request is answered 429 H084.
    config.rate_limits = RateLimits {
        enabled: true,
        per_second: 1_000_000,
        token_per_hour: 1,
        status_per_hour: 1_000_000,
        history_per_hour: 1_000_000,
    };
    let mock = MockIys::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.serve(listener));
    let credentials = Credentials {
        username: "mock".into(),
        password: "mock".into(),
    };
    let iys = IysClient::with_connector(
        &url,
        credentials,
        Arc::new(MemoryTokenStore::new()),
        fast_retries(),
        hyper_util::client::legacy::connect::HttpConnector::new(),
        clock.clone(),
    )
    .unwrap();
    let n = node(BRAND.brand_code);
    let worker = SyncWorker::new(
        iys.clone(),
        Arc::clone(&n.consents),
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        Arc::clone(&n.freshness),
        clock.clone(),
        SyncConfig::default(),
    );
    let stop = CancellationToken::new();
    assert!(worker.pass(&stop).await.failed.is_empty());
    assert_eq!(mock.requests().token, 1);

    // İYS now refuses the token it issued; getting a new one hits H084.
    mock.set_faults(Faults {
        unauthorized: u32::MAX,
        ..Faults::default()
    });
    let halting = worker.pass(&stop).await;
    assert!(!halting.failed.is_empty());
    assert_eq!(mock.requests().token, 2, "one token request, answered H084");
    assert!(
        iys.token_halted_until().is_some(),
        "the client says it is halted"
    );
    let at_halt = mock.requests();

    // 59 minutes of passes every 15 s: nothing reaches İYS.
    for _ in 0..236 {
        clock.advance(ChronoDuration::seconds(15));
        let stats = worker.pass(&stop).await;
        assert!(!stats.failed.is_empty(), "a halted pass confirms nothing");
    }
    assert_eq!(
        mock.requests(),
        at_halt,
        "no token call and no call with a token during the halt"
    );
    assert!(iys.token_halted_until().is_some());

    // The hour is over (and İYS takes the token again): calls resume.
    mock.set_faults(Faults::default());
    clock.advance(ChronoDuration::minutes(2));
    let resumed = worker.pass(&stop).await;
    assert!(resumed.failed.is_empty(), "{:?}", resumed.failed);
    // The stored token works again here, so no new one is needed; the API is called.
    assert!(mock.requests().token <= at_halt.token + 1);
    assert!(mock.requests().with_token > at_halt.with_token);
    assert_eq!(iys.token_halted_until(), None);
}

/// One hung İYS answer (the mock holds a pull 3 s) with a request timeout at most half the
/// staleness budget: the call times out, the retry answers, the leader's heartbeat follows
/// the pass, and the replica's data never gets older than the budget (its ALLOWs stand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_iys_answer_times_out_and_replicas_stay_fresh() {
    const MAX_STALENESS: Duration = Duration::from_secs(1);
    let timeout = Duration::from_millis(300);
    iysgate::app::config::check_iys_timeout(timeout, MAX_STALENESS).unwrap();
    let (mock, url) = start_mock().await;
    seed(&mock, 10);
    let p = prefix("hung");
    let stop = CancellationToken::new();
    let leader = node(BRAND.brand_code);
    let iys = client(
        &url,
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(50),
            request_timeout: timeout,
        },
    );
    let worker = SyncWorker::new(
        iys.clone(),
        leader.consents,
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        leader.freshness,
        Arc::new(SystemClock),
        SyncConfig {
            page_limit: 1000,
            interval: Duration::from_millis(50),
            ..SyncConfig::default()
        },
    )
    .with_shared(shared(&p).await);
    tokio::spawn(worker.run_leader("leader".into(), Duration::from_secs(2), stop.clone()));
    let r = replica(BRAND.brand_code, &p, &stop).await;
    let age = || r.freshness.age(SystemClock.now_utc());
    wait_for("the replica fresh", Duration::from_secs(20), || {
        r.consents.records().len() == 10 && age().is_some_and(|a| a < MAX_STALENESS / 4)
    })
    .await;

    // The next pull hangs for 3 s; only that one (the fault is cleared once it is sent).
    let before = iys.api_requests();
    mock.set_faults(Faults {
        latency_ms: 3_000,
        path_contains: Some("/consents/changes".into()),
        ..Faults::default()
    });
    wait_for("the pull that hangs", Duration::from_secs(5), || {
        iys.api_requests() > before
    })
    .await;
    mock.set_faults(Faults::default());
    let hung_at = Instant::now();
    let mut oldest = Duration::ZERO;
    let mut retried_after = None;
    while hung_at.elapsed() < Duration::from_millis(1_500) {
        oldest = oldest.max(age().unwrap());
        if retried_after.is_none() && iys.api_requests() > before + 1 {
            retried_after = Some(hung_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let retried_after = retried_after.expect("the hung call ended and was retried");
    assert!(
        retried_after < Duration::from_secs(1),
        "the hung call timed out after about {timeout:?}, not the mock's 3 s: {retried_after:?}"
    );
    assert!(
        oldest < MAX_STALENESS,
        "the replica's data stayed fresh: oldest {oldest:?} of {MAX_STALENESS:?}"
    );
    println!(
        "hung İYS pull (3 s) with a {timeout:?} timeout: retried after {retried_after:?}, replica data at most {oldest:?} old"
    );
    stop.cancel();
    wipe(&p).await;
}
