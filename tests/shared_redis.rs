//! Replicas sharing state through real Redis (`REDIS_URL`, default redis://127.0.0.1:6379):
//! a change the sync leader applies reaches every replica's index; a replica started
//! mid-stream converges; Redis losing its data is detected and recovered from; the sync lease
//! passes to another candidate when the leader dies. Each test uses its own key prefix.
//! These tests need Redis and fail (never skip) without it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use iysgate::clock::SystemClock;
use iysgate::domain::Reason;
use iysgate::sync::{BrandRef, MemoryCursors, SyncConfig, SyncWorker};
use tokio_util::sync::CancellationToken;

use common::{ListSource, prefix, replica, shared, wait_for, wipe};

const BRAND: BrandRef = BrandRef {
    iys_code: 600_000,
    brand_code: 600_001,
};

/// Starts a sync leader candidate; returns the handle so a test can kill it.
async fn leader(
    prefix: &str,
    source: &ListSource,
    holder: &str,
    lease: Duration,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let n = common::node(BRAND.brand_code);
    let worker = SyncWorker::new(
        source.clone(),
        n.consents,
        Arc::new(MemoryCursors::default()),
        vec![BRAND],
        n.freshness,
        Arc::new(SystemClock),
        SyncConfig {
            page_limit: 100,
            interval: Duration::from_millis(20),
            ..SyncConfig::default()
        },
    )
    .with_shared(shared(prefix).await);
    tokio::spawn(worker.run_leader(holder.to_owned(), lease, stop.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_ret_becomes_deny_on_every_replica() {
    let p = prefix("ret");
    let stop = CancellationToken::new();
    let source = ListSource::default();
    source.push("+905321000001", "ONAY", 1);
    let _leader = leader(&p, &source, "a", Duration::from_secs(2), &stop).await;
    let r1 = replica(BRAND.brand_code, &p, &stop).await;
    let r2 = replica(BRAND.brand_code, &p, &stop).await;
    for r in [&r1, &r2] {
        wait_for("the ONAY on a replica", Duration::from_secs(10), || {
            r.reason("+905321000001") == Some(Reason::ConsentRegistered)
        })
        .await;
    }
    source.push("+905321000001", "RET", 2);
    let started = Instant::now();
    for r in [&r1, &r2] {
        wait_for("the RET on a replica", Duration::from_secs(5), || {
            r.reason("+905321000001") == Some(Reason::Rejected)
        })
        .await;
    }
    println!(
        "citizen RET enforced on both replicas {:?} after it appeared in İYS's changes",
        started.elapsed()
    );
    stop.cancel();
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_mid_stream_converges() {
    let p = prefix("mid");
    let stop = CancellationToken::new();
    let source = ListSource::default();
    let _leader = leader(&p, &source, "a", Duration::from_secs(2), &stop).await;
    let early = replica(BRAND.brand_code, &p, &stop).await;
    for i in 0..50 {
        source.push(
            &format!("+9053220{i:05}"),
            if i % 3 == 0 { "RET" } else { "ONAY" },
            1,
        );
    }
    wait_for(
        "50 records on the early replica",
        Duration::from_secs(10),
        || early.consents.records().len() == 50,
    )
    .await;
    let late = replica(BRAND.brand_code, &p, &stop).await;
    for i in 0..50 {
        source.push(
            &format!("+9053220{i:05}"),
            if i % 3 == 0 { "ONAY" } else { "RET" },
            2,
        );
    }
    wait_for(
        "the late replica to converge",
        Duration::from_secs(10),
        || {
            early.consents.records().len() == 50
                && early.records() == late.records()
                && late.reason("+905322000000") == Some(Reason::ConsentRegistered)
        },
    )
    .await;
    stop.cancel();
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_is_detected_and_recovered() {
    let p = prefix("lost");
    let stop = CancellationToken::new();
    let source = ListSource::default();
    source.push("+905323000001", "ONAY", 1);
    let _leader = leader(&p, &source, "a", Duration::from_secs(2), &stop).await;
    let r = replica(BRAND.brand_code, &p, &stop).await;
    wait_for("the first record", Duration::from_secs(10), || {
        r.reason("+905323000001") == Some(Reason::ConsentRegistered)
    })
    .await;
    wipe(&p).await; // as if Redis restarted empty
    // The leader starts a new epoch and republishes; a fresh replica sees the record again.
    let fresh = replica(BRAND.brand_code, &p, &stop).await;
    wait_for(
        "the republished record on a new replica",
        Duration::from_secs(10),
        || fresh.reason("+905323000001") == Some(Reason::ConsentRegistered),
    )
    .await;
    // The old replica noticed the new epoch and keeps following.
    source.push("+905323000001", "RET", 2);
    wait_for(
        "a change after the loss on the old replica",
        Duration::from_secs(10),
        || r.reason("+905323000001") == Some(Reason::Rejected),
    )
    .await;
    stop.cancel();
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_lease_passes_on_when_the_leader_dies() {
    let p = prefix("lease");
    let stop = CancellationToken::new();
    let source = ListSource::default();
    let lease = Duration::from_millis(400);
    let a = leader(&p, &source, "a", lease, &stop).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _b = leader(&p, &source, "b", lease, &stop).await;
    let r = replica(BRAND.brand_code, &p, &stop).await;
    source.push("+905324000001", "ONAY", 1);
    source.push("+905324000001", "RET", 2);
    wait_for(
        "the RET from the first leader",
        Duration::from_secs(10),
        || r.reason("+905324000001") == Some(Reason::Rejected),
    )
    .await;
    a.abort(); // killed: it does not release the lease
    // A late, older change for the same number, then a change that shows the takeover.
    source.push("+905324000001", "ONAY", 0);
    source.push("+905324000002", "ONAY", 1);
    let took = wait_for("the standby to take over", Duration::from_secs(10), || {
        r.reason("+905324000002") == Some(Reason::ConsentRegistered)
    })
    .await;
    println!(
        "standby leader took over and its first change reached the replica in {took:?} (lease {lease:?})"
    );
    // The new leader had no local copy of the RET; it must not publish the older ONAY over it
    // in the snapshot that new replicas load.
    let late = replica(BRAND.brand_code, &p, &stop).await;
    wait_for(
        "a new replica to load the snapshot",
        Duration::from_secs(10),
        || late.reason("+905324000002") == Some(Reason::ConsentRegistered),
    )
    .await;
    assert_eq!(late.reason("+905324000001"), Some(Reason::Rejected));
    assert_eq!(r.reason("+905324000001"), Some(Reason::Rejected));
    stop.cancel();
    wipe(&p).await;
}
