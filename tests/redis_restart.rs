//! Redis restarting empty under a running deployment: the test runs a Redis server of its own
//! (`redis-server` must be installed; the test fails without it), kills it and starts it again
//! empty on the same port. The leader notices the missing epoch and republishes its records,
//! the replica's stream connection fails and is re-established, and both converge again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use iysgate::clock::SystemClock;
use iysgate::domain::Reason;
use iysgate::sync::redis::SharedState;
use iysgate::sync::{BrandRef, MemoryCursors, SyncConfig, SyncWorker};
use tokio_util::sync::CancellationToken;

use common::{ListSource, node, start_redis, wait_for};

const BRAND: BrandRef = BrandRef {
    iys_code: 600_000,
    brand_code: 600_001,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_is_detected_and_recovered_from() {
    let port = common::private_port(20_000);
    let url = format!("redis://127.0.0.1:{port}");
    let mut redis = start_redis(port);
    let stop = CancellationToken::new();
    let source = ListSource::default();
    source.push("+905325000001", "ONAY", 1);

    let leader = node(BRAND.brand_code);
    let worker = SyncWorker::new(
        source.clone(),
        leader.consents,
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        leader.freshness,
        Arc::new(SystemClock),
        SyncConfig {
            page_limit: 100,
            interval: Duration::from_millis(20),
            ..SyncConfig::default()
        },
    )
    .with_shared(SharedState::connect(&url, "iysgate").await.unwrap());
    tokio::spawn(worker.run_leader("a".into(), Duration::from_secs(2), stop.clone()));
    let replica = Arc::new(node(BRAND.brand_code));
    {
        let shared = SharedState::connect(&url, "iysgate").await.unwrap();
        let (c, f, s) = (
            Arc::clone(&replica.consents),
            Arc::clone(&replica.freshness),
            stop.clone(),
        );
        tokio::spawn(async move { shared.follow(c, f, s).await });
    }
    wait_for("the ONAY on the replica", Duration::from_secs(10), || {
        replica.reason("+905325000001") == Some(Reason::ConsentRegistered)
    })
    .await;

    // Redis dies and comes back empty.
    redis.kill().unwrap();
    redis.wait().unwrap();
    let mut redis = start_redis(port);
    source.push("+905325000001", "RET", 2);
    source.push("+905325000002", "ONAY", 2);
    wait_for(
        "the RET after the restart on the replica",
        Duration::from_secs(20),
        || {
            replica.reason("+905325000001") == Some(Reason::Rejected)
                && replica.reason("+905325000002") == Some(Reason::ConsentRegistered)
        },
    )
    .await;
    // The leader republished what Redis lost: a new replica sees everything.
    let fresh = Arc::new(node(BRAND.brand_code));
    {
        let shared = SharedState::connect(&url, "iysgate").await.unwrap();
        let (c, f, s) = (
            Arc::clone(&fresh.consents),
            Arc::clone(&fresh.freshness),
            stop.clone(),
        );
        tokio::spawn(async move { shared.follow(c, f, s).await });
    }
    wait_for(
        "a new replica after the restart",
        Duration::from_secs(10),
        || {
            fresh.reason("+905325000001") == Some(Reason::Rejected)
                && fresh.reason("+905325000002") == Some(Reason::ConsentRegistered)
        },
    )
    .await;
    stop.cancel();
    redis.kill().unwrap();
    redis.wait().unwrap();
}
