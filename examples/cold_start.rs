//! Cold start of a replica from Redis: how long loading N records (the snapshot) takes, in
//! records per second, and the process memory it ends with. Why: a replica must be SERVING
//! again quickly after a restart (target: 10 M records in ≤ 10 s).
//!
//! It first acts as the sync leader: writes N synthetic records (Turkish mobiles, MESAJ, brand
//! 600001) under the prefix `iysgate-coldstart` through the leader's own publish path, and a
//! checkpoint. Then it loads them as a replica does (from the checkpoint), and for comparison
//! by scanning the per-key hashes, and as the floor the bare HSCAN fetch. Then it deletes them.
//!
//! Run: `cargo run --release --example cold_start -- 10000000`. Writing 10 M records takes a
//! few minutes: `IYSGATE_COLDSTART_KEEP=1` leaves them in Redis afterwards and
//! `IYSGATE_COLDSTART_REUSE=1` measures the loads again without writing;
//! `IYSGATE_COLDSTART_WRITE_ONLY=1` (with KEEP) only writes them (`load-tests/cold-start.sh`). (Redis at `REDIS_URL`, default
//! redis://127.0.0.1:6379; 10 M records need about 3 GB of Redis memory).

use std::sync::Arc;
use std::time::Instant;

use iysgate::check::index::{ConsentIndex, EmailKeyer};
use iysgate::check::store::Consents;
use iysgate::domain::time::parse_iys;
use iysgate::domain::{
    Channel, ConsentEvent, ConsentKey, ConsentRecord, ConsentStatus, PhoneNumber, Recipient,
    RecipientType, Registration, Source,
};
use iysgate::sync::redis::SharedState;

const PREFIX: &str = "iysgate-coldstart";

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let shared = SharedState::connect(&url, PREFIX)
        .await
        .expect("Redis at REDIS_URL");
    let reuse = std::env::var_os("IYSGATE_COLDSTART_REUSE").is_some();
    if !reuse {
        wipe(&url).await;

        let started = Instant::now();
        let date = parse_iys("2026-01-05 10:00:00").expect("valid date");
        let leader = Arc::new(Consents::new(
            Arc::new(ConsentIndex::new()),
            Arc::new(EmailKeyer::new([4; 16])),
        ));
        let mut batch = Vec::with_capacity(5_000);
        for i in 0..n {
            let digits = 905_300_000_000 + (i as u64 * 7_919) % 99_999_999;
            let key = ConsentKey {
                brand: 600_001,
                recipient: Recipient::Phone(PhoneNumber::from_e164_digits(digits).expect("valid")),
                recipient_type: RecipientType::Bireysel,
                channel: Channel::Mesaj,
            };
            let record = ConsentRecord {
                current: ConsentEvent {
                    status: if i % 5 == 0 {
                        ConsentStatus::Ret
                    } else {
                        ConsentStatus::Onay
                    },
                    source: Source::HsWeb,
                    consent_date: date,
                    registration: Registration::Registered {
                        creation_date: date,
                        transaction_id: format!("{i:064x}").into(),
                    },
                    retailer_access: Vec::new(),
                },
            };
            leader.records().apply(key.clone(), record.current.clone());
            batch.push((key, record));
            if batch.len() == 5_000 || i + 1 == n {
                shared
                    .publish_many(batch.iter().map(|(k, r)| (k, r)))
                    .await
                    .expect("publish");
                batch.clear();
            }
        }
        println!(
            "wrote {n} records to Redis in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        // From the start of the stream: the leader replays it before writing (its own entries
        // here), as a leader catches up with what replicas published.
        let (written, _) = shared
            .write_checkpoint(&leader, "0-0")
            .await
            .expect("checkpoint");
        println!(
            "wrote a checkpoint of {written} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        drop(leader);
        if std::env::var_os("IYSGATE_COLDSTART_WRITE_ONLY").is_some() {
            // load-tests/cold-start.sh measures a real replica process instead.
            return;
        }
    }
    // The floor: fetching the same records with HSCAN and doing nothing with them.
    let started = Instant::now();
    let fetched = raw_scan(&url).await;
    println!(
        "baseline: HSCAN alone fetched {fetched} records in {:.2} s = {:.0} records/s",
        started.elapsed().as_secs_f64(),
        fetched as f64 / started.elapsed().as_secs_f64()
    );

    let rss_before = rss_mib();
    let consents = Arc::new(Consents::new(
        Arc::new(ConsentIndex::new()),
        Arc::new(EmailKeyer::new([5; 16])),
    ));
    let started = Instant::now();
    let (_, loaded) = shared.load_snapshot(&consents).await.expect("load");
    let took = started.elapsed().as_secs_f64();
    println!(
        "cold start from the checkpoint: {loaded} records (index {} records) in {took:.2} s = {:.0} records/s; RSS +{:.0} MiB",
        consents.index().len(),
        loaded as f64 / took,
        rss_mib() - rss_before
    );
    let started = Instant::now();
    consents.rebuild_index();
    println!(
        "  of which building the index from the records: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(consents);
    let consents = Arc::new(Consents::new(
        Arc::new(ConsentIndex::new()),
        Arc::new(EmailKeyer::new([5; 16])),
    ));
    let started = Instant::now();
    let (_, loaded) = shared.scan_records(&consents).await.expect("scan");
    let took = started.elapsed().as_secs_f64();
    println!(
        "cold start scanning the per-key hashes: {loaded} records in {took:.2} s = {:.0} records/s",
        loaded as f64 / took
    );
    if std::env::var_os("IYSGATE_COLDSTART_KEEP").is_none() {
        wipe(&url).await;
    }
}

async fn wipe(url: &str) {
    let client = redis::Client::open(url).expect("url");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        redis::cmd("UNLINK")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("del");
    }
}

async fn raw_scan(url: &str) -> usize {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, entries): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(format!("{PREFIX}:rec:600001"))
            .arg(cursor)
            .arg("COUNT")
            .arg(5_000)
            .query_async(&mut conn)
            .await
            .expect("hscan");
        n += entries.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}
