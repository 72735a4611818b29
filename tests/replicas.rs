//! Consents recorded on one serving replica reach every replica through Redis (`REDIS_URL`,
//! default redis://127.0.0.1:6379): a recorded RET is DENY on another replica within a short
//! bounded wait; a recorded ONAY becomes ALLOW on another replica once İYS accepts it; the sync
//! leader's older record, published afterwards, replaces the recorded RET neither in Redis nor
//! in the checkpoint new replicas load; a RET recorded while Redis is away is answered, and
//! reaches the other replicas once Redis is back (a Redis server of the test's own, which needs
//! `redis-server` installed); the publish script decides "newer" exactly as
//! `ConsentEvent::supersedes` does; a leader catching up past trimmed stream entries rescans.
//! These tests need Redis and fail (never skip) without it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use iysgate::app::config::{Cli, Command};
use iysgate::app::{self, App};
use iysgate::auth::{hash_key, to_hex};
use iysgate::check::store::Consents;
use iysgate::clock::SystemClock;
use iysgate::domain::time::{format_iys, parse_iys};
use iysgate::domain::{
    BrandPolicy, Channel as DChannel, Clock, ConsentEvent, ConsentKey, ConsentRecord,
    ConsentStatus, PhoneNumber, Reason, Recipient, RecipientType, Registration, Source,
};
use iysgate::pb;
use iysgate::pb::consent_check_client::ConsentCheckClient;
use iysgate::pb::consent_records_client::ConsentRecordsClient;
use iysgate::sync::redis::SharedState;
use iysgate::sync::{BrandRef, MemoryCursors, SyncConfig, SyncWorker};
use iysgate::write::evidence::EvidenceStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Request;
use tonic::transport::Channel;

use common::{
    ListSource, prefix, private_port, redis_url, replica, shared, start_redis, wait_for, wipe,
};

const KEY: &str = "iysk_replicas_test";
const BRAND: BrandRef = BrandRef {
    iys_code: 600_000,
    brand_code: 600_001,
};
const MOCK_BRAND: u32 = 700_001;

/// A serving replica as `iysgate serve --redis-url` runs it: follows the shared state and
/// publishes what it records, with the evidence store every replica of the test shares.
struct ServingReplica {
    checks: ConsentCheckClient<Channel>,
    records: ConsentRecordsClient<Channel>,
    admin: iysgate::pb::admin_client::AdminClient<Channel>,
}

async fn evidence_store(dir: &std::path::Path) -> Arc<EvidenceStore> {
    let calendar = iysgate::domain::BusinessCalendar::embedded();
    let store = app::open_evidence(None, &dir.join("evidence.log"), calendar)
        .await
        .unwrap();
    let now = SystemClock.now_utc();
    app::ensure_brands(
        &store,
        BRAND.iys_code,
        &[(BRAND.brand_code, "Anadolu Market", BrandPolicy::default())],
        now,
    )
    .await
    .unwrap();
    app::ensure_brands(
        &store,
        700_000,
        &[(MOCK_BRAND, "Mock Marka", BrandPolicy::default())],
        now,
    )
    .await
    .unwrap();
    Arc::new(store)
}

fn temp_dir(test: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("iysgate-{test}-{}-{nanos}", std::process::id()))
}

/// Starts a replica of the Redis at `url` on a free port; `extra` flags are added to
/// `serve`'s (the uploader's).
async fn serving_replica(
    url: &str,
    prefix: &str,
    store: &Arc<EvidenceStore>,
    extra: &[String],
    stop: &CancellationToken,
) -> ServingReplica {
    let argv = [
        "iysgate".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
        "--redis-url".into(),
        url.into(),
        "--redis-prefix".into(),
        prefix.into(),
        "--client".into(),
        format!(
            "name=crm;sha256={};brands={},{MOCK_BRAND}",
            to_hex(&hash_key(KEY)),
            BRAND.brand_code
        ),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect::<Vec<_>>();
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    // As `run_serve` does with `--redis-url`.
    let mut app = App::embedded(&args, Arc::new(SystemClock)).unwrap();
    app.evidence = Some(Arc::clone(store));
    app.shared = Some(connect(url, prefix).await);
    let app = Arc::new(app);
    let listener = app::bind(args.listen).await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    {
        let (app, stop) = (Arc::clone(&app), stop.clone());
        tokio::spawn(async move {
            let tasks = TaskTracker::new();
            let follower = app.shared.clone().expect("set above");
            let (consents, freshness) = (Arc::clone(&app.consents), Arc::clone(&app.freshness));
            let following = stop.clone();
            tasks.spawn(async move { follower.follow(consents, freshness, following).await });
            app::spawn_uploader(&app, &args, &tasks, stop.clone()).unwrap();
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
    }
    let channel = tonic::transport::Endpoint::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ServingReplica {
        checks: ConsentCheckClient::new(channel.clone()),
        records: ConsentRecordsClient::new(channel.clone()),
        admin: iysgate::pb::admin_client::AdminClient::new(channel),
    }
}

/// The shared state at `url`, failing loudly (never skipping) when Redis is not there.
async fn connect(url: &str, prefix: &str) -> SharedState {
    SharedState::connect(url, prefix).await.unwrap_or_else(|e| {
        panic!(
            "these tests need Redis at {url} (set REDIS_URL, or start one with \
             `redis-server --daemonize yes --port 6379 --save ''`): {e}"
        )
    })
}

fn keyed<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    r
}

impl ServingReplica {
    /// The decision for a phone on MESAJ; `None` while the answer is UNAVAILABLE (stale data).
    async fn decision(&mut self, brand: u32, phone: &str) -> Option<pb::Decision> {
        let asked = self
            .checks
            .check(keyed(pb::CheckRequest {
                brand_code: brand.into(),
                recipient: phone.into(),
                channel: pb::Channel::Mesaj.into(),
                ..Default::default()
            }))
            .await;
        match asked {
            Ok(answer) => answer.into_inner().decision,
            Err(status) if status.code() == tonic::Code::Unavailable => None,
            Err(status) => panic!("check failed: {status}"),
        }
    }

    /// Polls until the phone's reason is `reason`; returns how long that took.
    async fn wait_reason(
        &mut self,
        brand: u32,
        phone: &str,
        reason: pb::Reason,
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let d = self.decision(brand, phone).await;
            if d.as_ref().is_some_and(|d| d.reason() == reason) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {reason:?} on {phone}; last: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn record(
        &mut self,
        brand: u32,
        phone: &str,
        status: pb::ConsentStatus,
        key: &str,
    ) -> pb::RecordedConsent {
        // A minute ago: valid for İYS (not in the future, within the 3-business-day window)
        // and newer than anything the test's leader publishes (dated May 2026).
        let date = format_iys(SystemClock.now_turkey() - chrono::Duration::minutes(1));
        self.records
            .record_consent(keyed(pb::RecordConsentRequest {
                brand_code: brand.into(),
                consent: Some(pb::ConsentInput {
                    recipient: phone.into(),
                    channel: pb::Channel::Mesaj.into(),
                    status: status.into(),
                    source: pb::Source::HsWeb.into(),
                    consent_date: date,
                    evidence: Some(pb::Evidence {
                        method: "web form checkbox".into(),
                        location: "https://example.com.tr/uyelik".into(),
                        document_ref: "form-v3".into(),
                        capturing_system: "crm-web".into(),
                    }),
                    idempotency_key: key.into(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .recorded
            .unwrap()
    }
}

/// A sync leader of the Redis at `url` over `source`, checkpointing after every pass; ends
/// after `stop`.
async fn leader(
    url: &str,
    prefix: &str,
    source: &ListSource,
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
            checkpoint_every: Duration::ZERO,
        },
    )
    .with_shared(connect(url, prefix).await);
    tokio::spawn(worker.run_leader("leader".into(), Duration::from_secs(2), stop.clone()))
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ret_recorded_on_one_replica_is_deny_on_another_and_no_older_record_replaces_it() {
    let p = prefix("recorded-ret");
    let stop = CancellationToken::new();
    let dir = temp_dir("replicas-ret");
    let store = evidence_store(&dir).await;
    let phone = "+905326000001";
    let marker = "+905326000002";
    let source = ListSource::default();
    source.push(phone, "ONAY", 1);
    let leader = leader(&redis_url(), &p, &source, &stop).await;
    let mut a = serving_replica(&redis_url(), &p, &store, &[], &stop).await;
    let mut b = serving_replica(&redis_url(), &p, &store, &[], &stop).await;
    let limit = Duration::from_secs(10);
    for r in [&mut a, &mut b] {
        r.wait_reason(
            BRAND.brand_code,
            phone,
            pb::Reason::ConsentRegistered,
            limit,
        )
        .await;
    }

    // (a) A RET recorded on A is DENY on B, through the change stream.
    let sent = Instant::now();
    let recorded = a
        .record(BRAND.brand_code, phone, pb::ConsentStatus::Ret, "ret-1")
        .await;
    let answered = sent.elapsed();
    assert_eq!(recorded.decision.unwrap().verdict(), pb::Verdict::Deny);
    let on_b = b
        .wait_reason(
            BRAND.brand_code,
            phone,
            pb::Reason::LocalRet,
            Duration::from_secs(2),
        )
        .await;
    println!(
        "recorded RET: answered on replica A in {answered:?}, DENY on replica B {on_b:?} after \
         the answer ({:?} after the call was sent)",
        sent.elapsed()
    );

    // (b) The leader pulls an older ONAY (consentDate May 2026; it never saw the RET) and
    // publishes it; then a marker change shows the page was applied and published.
    source.push(phone, "ONAY", 2);
    source.push(marker, "ONAY", 3);
    b.wait_reason(
        BRAND.brand_code,
        marker,
        pb::Reason::ConsentRegistered,
        limit,
    )
    .await;
    let mut conn = redis().await;
    let stored: String = redis::cmd("HGET")
        .arg(format!("{p}:rec:{}", BRAND.brand_code))
        .arg(format!("BIREYSEL|MESAJ|{phone}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        stored.contains(r#""s":"RET""#) && stored.contains(r#""o":"HS_WEB""#),
        "the leader's older ONAY replaced the recorded RET in Redis: {stored}"
    );
    assert_eq!(
        b.decision(BRAND.brand_code, phone).await.unwrap().reason(),
        pb::Reason::LocalRet
    );

    // A checkpoint written after all that must hold the RET too (the leader catches up with
    // the stream before writing it), or a replica starting from it would ALLOW the older ONAY.
    let generation = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = format!("{p}:ckpt");
        async move {
            redis::cmd("HGET")
                .arg(key)
                .arg("generation")
                .query_async::<Option<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    let before = generation(&mut conn).await;
    let started = Instant::now();
    while generation(&mut conn).await == before {
        assert!(
            started.elapsed() < limit,
            "no checkpoint written after the marker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generation = generation(&mut conn).await.unwrap();
    let chunk: String = redis::cmd("GET")
        .arg(format!("{p}:ckpt:{generation}:0"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let line = chunk
        .lines()
        .find(|l| l.contains(phone))
        .expect("the phone in the checkpoint");
    assert!(
        line.contains(r#""s":"RET""#),
        "checkpoint lost the RET: {line}"
    );
    let fresh = replica(BRAND.brand_code, &p, &stop).await;
    wait_for(
        "a new replica to load the snapshot",
        Duration::from_secs(10),
        || fresh.reason(marker) == Some(Reason::ConsentRegistered),
    )
    .await;
    assert_eq!(fresh.reason(phone), Some(Reason::LocalRet));

    stop.cancel();
    leader.await.unwrap();
    wipe(&p).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_onay_becomes_allow_on_another_replica_once_iys_accepts_it() {
    use iysgate::domain::ManualClock;
    use iysgate::iys::mock::{Account, MockConfig, MockIys};
    let p = prefix("recorded-onay");
    let stop = CancellationToken::new();
    let dir = temp_dir("replicas-onay");
    let store = evidence_store(&dir).await;
    let clock = Arc::new(ManualClock::new(SystemClock.now_utc()));
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "mock",
            "mock",
            700_000,
            vec![700_000, MOCK_BRAND.into()],
        )],
        ..MockConfig::for_tests(clock)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener));
    let uploads = [
        "--upload-iys-url".to_owned(),
        url,
        "--iys-code".into(),
        "700000".into(),
        "--iys-username".into(),
        "mock".into(),
        "--iys-password".into(),
        "mock".into(),
    ];
    // The leader only confirms freshness here (its heartbeats); it follows another brand.
    let source = ListSource::default();
    let leader = leader(&redis_url(), &p, &source, &stop).await;
    let mut a = serving_replica(&redis_url(), &p, &store, &uploads, &stop).await;
    let mut b = serving_replica(&redis_url(), &p, &store, &[], &stop).await;
    let phone = "+905326000003";
    let limit = Duration::from_secs(20);
    b.wait_reason(MOCK_BRAND, phone, pb::Reason::NoConsent, limit)
        .await;

    let sent = Instant::now();
    let recorded = a
        .record(MOCK_BRAND, phone, pb::ConsentStatus::Onay, "onay-1")
        .await;
    assert_eq!(
        recorded.decision.unwrap().reason(),
        pb::Reason::PendingRegistration
    );
    let took = b
        .wait_reason(MOCK_BRAND, phone, pb::Reason::ConsentRegistered, limit)
        .await;
    let d = b.decision(MOCK_BRAND, phone).await.unwrap();
    assert_eq!(d.verdict(), pb::Verdict::Allow, "{d:?}");
    assert_eq!(mock.record_count(MOCK_BRAND.into()), 1, "uploaded once");
    println!(
        "recorded ONAY: ALLOW on replica B {took:?} after A answered ({:?} after the call was \
         sent), once İYS accepted it",
        sent.elapsed()
    );
    stop.cancel();
    leader.await.unwrap();
    wipe(&p).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A RET the recipient gave in İYS that no sync brought is found by the day's reconciliation
/// on replica A, and the repair reaches replica B through Redis like any change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_repair_on_one_replica_is_enforced_on_another() {
    use iysgate::domain::ManualClock;
    use iysgate::domain::{ConsentStatus as W, RecipientType as T};
    use iysgate::iys::mock::{Account, CitizenSource, MockConfig, MockIys};
    const ADMIN_KEY: &str = "iysk_replicas_admin";
    let p = prefix("reconcile-repair");
    let stop = CancellationToken::new();
    let dir = temp_dir("replicas-reconcile");
    let store = evidence_store(&dir).await;
    let yesterday = SystemClock.now_turkey().date() - chrono::Duration::days(1);
    let clock = Arc::new(ManualClock::at_turkey(
        yesterday.and_hms_opt(12, 0, 0).unwrap(),
    ));
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "mock",
            "mock",
            700_000,
            vec![700_000, MOCK_BRAND.into()],
        )],
        ..MockConfig::for_tests(clock.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener));
    let phone = "+905326000007";
    mock.citizen_change(
        MOCK_BRAND.into(),
        phone,
        T::Bireysel,
        DChannel::Mesaj,
        W::Ret,
        CitizenSource::KisaMesaj,
    )
    .unwrap();
    clock.set(SystemClock.now_utc());
    let flags = [
        "--iys-url".to_owned(),
        url,
        "--iys-code".into(),
        "700000".into(),
        "--iys-username".into(),
        "mock".into(),
        "--iys-password".into(),
        "mock".into(),
        "--admin-key-sha256".into(),
        to_hex(&hash_key(ADMIN_KEY)),
    ];
    let source = ListSource::default();
    let leader = leader(&redis_url(), &p, &source, &stop).await;
    let mut a = serving_replica(&redis_url(), &p, &store, &flags, &stop).await;
    let mut b = serving_replica(&redis_url(), &p, &store, &[], &stop).await;
    let limit = Duration::from_secs(20);
    b.wait_reason(MOCK_BRAND, phone, pb::Reason::NoConsent, limit)
        .await;

    let mut ask = Request::new(pb::ReconcileRequest {
        brand_code: MOCK_BRAND.into(),
        date: yesterday.format("%Y-%m-%d").to_string(),
        confirm: false,
    });
    ask.metadata_mut()
        .insert("x-api-key", ADMIN_KEY.parse().unwrap());
    let report = a.admin.reconcile(ask).await.unwrap().into_inner();
    let r = report.reconciliation.unwrap();
    assert_eq!((r.new_rets_from_iys, r.repaired), (1, 1), "{r:?}");
    let took = b
        .wait_reason(MOCK_BRAND, phone, pb::Reason::Rejected, limit)
        .await;
    println!("reconciliation repair on replica A: enforced on replica B {took:?} after A answered");
    stop.cancel();
    leader.await.unwrap();
    wipe(&p).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Events of one key that tie on as many fields as possible, so every step of the order is
/// exercised: equal consent dates, RET against ONAY, pending against registered, equal
/// creation dates, transaction ids that are prefixes of each other or hold spaces and
/// control characters, sources, retailer lists.
fn tricky_events() -> Vec<ConsentEvent> {
    let date = |s: &str| parse_iys(s).unwrap();
    let mut out = Vec::new();
    let registrations = [
        None,
        Some(("2026-05-01 10:00:00", "")),
        Some(("2026-05-01 10:00:00", "a")),
        Some(("2026-05-01 10:00:00", "a ")),
        Some(("2026-05-01 10:00:00", "a\u{0}")),
        Some(("2026-05-01 10:00:00", "a!")),
        Some(("2026-05-01 10:00:00", "ab")),
        Some(("2026-05-01 10:00:00", "ş")),
        Some(("2026-05-01 10:00:01", "a")),
    ];
    for consent_date in ["2026-05-01 09:00:00", "2026-05-01 09:00:01"] {
        for status in [ConsentStatus::Onay, ConsentStatus::Ret] {
            for registration in registrations {
                for source in [Source::HsWeb, Source::IysWeb] {
                    for retailers in [&[][..], &[7], &[7, 0], &[u32::MAX]] {
                        out.push(ConsentEvent {
                            status,
                            source,
                            consent_date: date(consent_date),
                            registration: registration.map_or(Registration::Pending, |(c, tx)| {
                                Registration::Registered {
                                    creation_date: date(c),
                                    transaction_id: tx.into(),
                                }
                            }),
                            retailer_access: retailers.to_vec(),
                        });
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_script_keeps_the_newer_record_exactly_as_rust_orders_them() {
    let p = prefix("script-order");
    let s = shared(&p).await;
    let events = tricky_events();
    // Pairs drawn with a fixed xorshift, each published in both orders under a key of its own.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let pairs: Vec<(usize, usize)> = (0..3_000)
        .map(|_| (next(events.len()), next(events.len())))
        .collect();
    let key = |i: usize| ConsentKey {
        brand: BRAND.brand_code,
        recipient: Recipient::Phone(
            PhoneNumber::from_e164_digits(905_330_000_000 + i as u64).unwrap(),
        ),
        recipient_type: RecipientType::Bireysel,
        channel: DChannel::Mesaj,
    };
    let record = |e: &ConsentEvent| ConsentRecord { current: e.clone() };
    let keys: Vec<ConsentKey> = (0..pairs.len() * 2).map(key).collect();
    let first: Vec<ConsentRecord> = pairs
        .iter()
        .flat_map(|&(x, y)| [record(&events[x]), record(&events[y])])
        .collect();
    let second: Vec<ConsentRecord> = pairs
        .iter()
        .flat_map(|&(x, y)| [record(&events[y]), record(&events[x])])
        .collect();
    let written = s.publish_many(keys.iter().zip(&first)).await.unwrap();
    assert_eq!(written, keys.len(), "every key was empty");
    let stream_len = || async {
        redis::cmd("XLEN")
            .arg(format!("{p}:changes"))
            .query_async::<usize>(&mut redis().await)
            .await
            .unwrap()
    };
    let before = stream_len().await;
    let written = s.publish_many(keys.iter().zip(&second)).await.unwrap();
    let expected = pairs
        .iter()
        .filter(|&&(x, y)| events[y].supersedes(&events[x]) || events[x].supersedes(&events[y]))
        .count();
    assert_eq!(written, expected, "only the newer of each pair is written");
    assert_eq!(
        stream_len().await - before,
        expected,
        "a change entry only for what was written"
    );

    // What Redis kept, loaded as a replica loads it, is the newer event of every pair.
    let loaded = Arc::new(Consents::new(
        Arc::new(iysgate::check::index::ConsentIndex::new()),
        Arc::new(iysgate::check::index::EmailKeyer::new([1; 16])),
    ));
    s.scan_records(&loaded).await.unwrap();
    for (i, &(x, y)) in pairs.iter().enumerate() {
        let newer = if events[y].supersedes(&events[x]) {
            &events[y]
        } else {
            &events[x]
        };
        for k in [&keys[2 * i], &keys[2 * i + 1]] {
            assert_eq!(
                &loaded.get(k).expect("stored").current,
                newer,
                "pair {i}: {:?} / {:?}",
                events[x],
                events[y]
            );
        }
    }
    // Publishing the same records again changes nothing and announces nothing.
    let before = stream_len().await;
    assert_eq!(s.publish_many(keys.iter().zip(&second)).await.unwrap(), 0);
    assert_eq!(stream_len().await, before);
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_past_trimmed_stream_entries_rescans_the_records() {
    let p = prefix("trimmed");
    let s = shared(&p).await;
    let record = |status, i: u64| {
        let key = ConsentKey {
            brand: BRAND.brand_code,
            recipient: Recipient::Phone(
                PhoneNumber::from_e164_digits(905_331_000_000 + i).unwrap(),
            ),
            recipient_type: RecipientType::Bireysel,
            channel: DChannel::Mesaj,
        };
        let event = ConsentEvent {
            status,
            source: Source::HsWeb,
            consent_date: parse_iys("2026-05-01 10:00:00").unwrap(),
            registration: Registration::Pending,
            retailer_access: vec![],
        };
        (key, ConsentRecord { current: event })
    };
    let published = [
        record(ConsentStatus::Ret, 1),
        record(ConsentStatus::Onay, 2),
    ];
    s.publish_many(published.iter().map(|(k, r)| (k, r)))
        .await
        .unwrap();
    // A leader that held nothing; the entries it would replay are trimmed away.
    let mut conn = redis().await;
    redis::cmd("XTRIM")
        .arg(format!("{p}:changes"))
        .arg("MAXLEN")
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let leader = Arc::new(Consents::new(
        Arc::new(iysgate::check::index::ConsentIndex::new()),
        Arc::new(iysgate::check::index::EmailKeyer::new([1; 16])),
    ));
    s.catch_up(&leader, "0-0").await.unwrap();
    for (key, record) in &published {
        assert_eq!(
            leader.get(key).as_ref(),
            Some(record),
            "rescanned from the hash"
        );
    }
    wipe(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ret_recorded_while_redis_is_away_is_answered_and_reaches_the_others_once_it_is_back() {
    let port = private_port(26_000);
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = start_redis(port);
    let p = "iysgate";
    let stop = CancellationToken::new();
    let dir = temp_dir("replicas-away");
    let store = evidence_store(&dir).await;
    let phone = "+905326000004";
    let source = ListSource::default();
    source.push(phone, "ONAY", 1);
    let leader = leader(&url, p, &source, &stop).await;
    let mut a = serving_replica(&url, p, &store, &[], &stop).await;
    let mut b = serving_replica(&url, p, &store, &[], &stop).await;
    let limit = Duration::from_secs(10);
    for r in [&mut a, &mut b] {
        r.wait_reason(
            BRAND.brand_code,
            phone,
            pb::Reason::ConsentRegistered,
            limit,
        )
        .await;
    }

    // Redis goes away: the RET is stored and answered all the same, without waiting long.
    server.kill().unwrap();
    server.wait().unwrap();
    let sent = Instant::now();
    let recorded = a
        .record(BRAND.brand_code, phone, pb::ConsentStatus::Ret, "away-1")
        .await;
    let answered = sent.elapsed();
    assert_eq!(recorded.decision.unwrap().reason(), pb::Reason::LocalRet);
    assert!(
        answered < Duration::from_secs(2),
        "answered in {answered:?}"
    );

    // Redis comes back empty: A republishes what is pending when it reloads, B gets it.
    let mut server = start_redis(port);
    let took = b
        .wait_reason(
            BRAND.brand_code,
            phone,
            pb::Reason::LocalRet,
            Duration::from_secs(20),
        )
        .await;
    println!(
        "RET recorded while Redis was away: answered in {answered:?}; DENY on replica B {took:?} \
         after Redis came back"
    );
    stop.cancel();
    leader.await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
