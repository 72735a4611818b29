//! `ConsentRecords` end to end on the embedded default: consents the company collected are
//! validated as İYS validates them, stored durably with their evidence before the answer, and
//! applied at once (a RET is DENY on the next check; an ONAY is pending, not ALLOW).

use std::sync::Arc;

use clap::Parser;
use iysgate::app::config::{Cli, Command};
use iysgate::app::{self, App};
use iysgate::auth::{hash_key, to_hex};
use iysgate::domain::time::parse_iys;
use iysgate::domain::{BrandPolicy, Clock, ManualClock};
use iysgate::pb;
use iysgate::pb::admin_client::AdminClient;
use iysgate::pb::consent_check_client::ConsentCheckClient;
use iysgate::pb::consent_records_client::ConsentRecordsClient;
use iysgate::write::evidence::EventId;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

const KEY: &str = "iysk_record_test";
const STORED_KEY: &str = "iysk_record_test_stored_client";
const ADMIN_KEY: &str = "iysk_record_test_admin";
const BRAND: u32 = 600_001;
const UNREGISTERED_BRAND: u32 = 600_009;
const NOW: &str = "2026-05-20 12:00:00";
const MOCK_BRAND: u32 = 700_001;

/// The clock shared by the server and the mock İYS.
struct ManualClockHandle(Arc<ManualClock>);

struct Server {
    records: ConsentRecordsClient<Channel>,
    admin: AdminClient<Channel>,
    checks: ConsentCheckClient<Channel>,
    channel: Channel,
    app: Arc<App>,
    _stop: tokio_util::sync::DropGuard,
}

async fn start() -> Server {
    start_with(&[], None).await
}

/// With `extra` flags, and the mock İYS's provider 700000 and brand 700001 when `mock` is set
/// (its clock is the server's).
async fn start_with(extra: &[String], mock: Option<&ManualClockHandle>) -> Server {
    let dir = std::env::temp_dir().join(format!(
        "iysgate-record-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let argv = [
        "iysgate".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
        "--evidence-file".into(),
        dir.join("evidence.log").display().to_string(),
        "--client".into(),
        format!(
            "name=crm;sha256={};brands={BRAND},{UNREGISTERED_BRAND},{MOCK_BRAND}",
            to_hex(&hash_key(KEY))
        ),
        "--admin-key-sha256".into(),
        to_hex(&hash_key(ADMIN_KEY)),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect::<Vec<_>>();
    let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let clock = mock.map_or_else(
        || Arc::new(ManualClock::at_turkey(parse_iys(NOW).unwrap())),
        |c| Arc::clone(&c.0),
    );
    let mut app = App::embedded(&args, clock.clone()).unwrap();
    let store = app::open_evidence(
        args.database_url.as_deref(),
        &args.evidence_file,
        app.checker.calendar().clone(),
    )
    .await
    .unwrap();
    app::ensure_brands(
        &store,
        600_000,
        &[(BRAND, "Anadolu Market", BrandPolicy::default())],
        clock.now_utc(),
    )
    .await
    .unwrap();
    if mock.is_some() {
        app::ensure_brands(
            &store,
            700_000,
            &[(MOCK_BRAND, "Mock Marka", BrandPolicy::default())],
            clock.now_utc(),
        )
        .await
        .unwrap();
    }
    // A client kept in the store (`iysgate client add/grant`), loaded as `serve` loads it.
    store
        .add_client("stored", hash_key(STORED_KEY), clock.now_utc())
        .await
        .unwrap();
    store
        .grant(
            "stored",
            BRAND,
            &iysgate::auth::RetailerGrant::None,
            clock.now_utc(),
        )
        .await
        .unwrap();
    app::add_stored_clients(&mut app, &store).await.unwrap();
    app.evidence = Some(Arc::new(store));
    app.freshness.mark_confirmed(clock.now_utc());
    let app = Arc::new(app);
    let listener = app::bind(args.listen).await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    {
        let (app, stop) = (Arc::clone(&app), stop.clone());
        tokio::spawn(async move {
            let tasks = TaskTracker::new();
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
    Server {
        records: ConsentRecordsClient::new(channel.clone()),
        admin: AdminClient::new(channel.clone()),
        checks: ConsentCheckClient::new(channel.clone()),
        channel,
        app,
        _stop: stop.drop_guard(),
    }
}

/// A server uploading to a mock İYS (provider 700000, brands 700000 and 700001) that shares
/// its manual clock.
async fn start_with_mock() -> (Server, iysgate::iys::mock::MockIys, ManualClockHandle) {
    use iysgate::iys::mock::{Account, MockConfig, MockIys};
    let clock = ManualClockHandle(Arc::new(ManualClock::at_turkey(parse_iys(NOW).unwrap())));
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "mock",
            "mock",
            700_000,
            vec![700_000, 700_001],
        )],
        ..MockConfig::for_tests(clock.0.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener));
    let extra = [
        "--iys-url".to_owned(),
        url,
        "--iys-code".into(),
        "700000".into(),
        "--iys-username".into(),
        "mock".into(),
        "--iys-password".into(),
        "mock".into(),
    ];
    let s = start_with(&extra, Some(&clock)).await;
    (s, mock, clock)
}

fn keyed<T>(message: T) -> Request<T> {
    with_key(message, KEY)
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

fn input(recipient: &str, status: pb::ConsentStatus, date: &str, key: &str) -> pb::ConsentInput {
    pb::ConsentInput {
        recipient: recipient.into(),
        channel: pb::Channel::Mesaj.into(),
        status: status.into(),
        source: pb::Source::HsWeb.into(),
        consent_date: date.into(),
        evidence: Some(pb::Evidence {
            method: "web form checkbox".into(),
            location: "https://example.com.tr/uyelik".into(),
            document_ref: "form-v3".into(),
            capturing_system: "crm-web".into(),
        }),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

async fn record(
    s: &mut Server,
    consent: pb::ConsentInput,
) -> Result<pb::RecordedConsent, tonic::Status> {
    s.records
        .record_consent(keyed(pb::RecordConsentRequest {
            brand_code: BRAND.into(),
            consent: Some(consent),
        }))
        .await
        .map(|r| r.into_inner().recorded.unwrap())
}

async fn check(s: &mut Server, recipient: &str) -> pb::Decision {
    check_brand(s, BRAND, recipient).await
}

async fn check_brand(s: &mut Server, brand: u32, recipient: &str) -> pb::Decision {
    s.checks
        .check(keyed(pb::CheckRequest {
            brand_code: brand.into(),
            recipient: recipient.into(),
            channel: pb::Channel::Mesaj.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

#[tokio::test]
async fn a_recorded_ret_denies_at_once_and_an_onay_stays_pending() {
    let mut s = start().await;
    let phone = "+905321230001";
    let onay = record(
        &mut s,
        input(
            phone,
            pb::ConsentStatus::Onay,
            "2026-05-20 09:00:00",
            "crm-1",
        ),
    )
    .await
    .unwrap();
    assert!(!onay.duplicate);
    // Wednesday 20 May + 3 business days on the strict calendar (Saturdays count, Sundays and
    // holidays do not) = Saturday 23 May, end of day.
    assert_eq!(onay.upload_deadline, "2026-05-23 23:59:59");
    let d = onay.decision.unwrap();
    assert_eq!(
        d.verdict(),
        pb::Verdict::Deny,
        "an ONAY is not ALLOW until İYS accepts it"
    );
    assert_eq!(d.reason(), pb::Reason::PendingRegistration);
    assert_eq!(
        check(&mut s, phone).await.reason(),
        pb::Reason::PendingRegistration
    );

    let ret = record(
        &mut s,
        input(
            phone,
            pb::ConsentStatus::Ret,
            "2026-05-20 11:00:00",
            "crm-2",
        ),
    )
    .await
    .unwrap();
    assert_eq!(ret.decision.unwrap().verdict(), pb::Verdict::Deny);
    let d = check(&mut s, phone).await;
    assert_eq!(
        (d.verdict(), d.status()),
        (pb::Verdict::Deny, pb::ConsentStatus::Ret)
    );

    // Stored with its evidence and who recorded it, before the answer.
    let stored = s
        .app
        .evidence
        .as_ref()
        .unwrap()
        .event(EventId(i64::try_from(ret.event_id).unwrap()))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.event.evidence.capturing_system, "crm-web");
    assert_eq!(
        stored.event.evidence.document_ref.as_deref(),
        Some("form-v3")
    );
    assert_eq!(stored.event.recorder.client, "crm");
    assert_eq!(stored.event.recorder.key_sha256, Some(hash_key(KEY)));
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_the_same_event() {
    let mut s = start().await;
    let first = record(
        &mut s,
        input(
            "+905321230002",
            pb::ConsentStatus::Ret,
            "2026-05-19 10:00:00",
            "crm-9",
        ),
    )
    .await
    .unwrap();
    let again = record(
        &mut s,
        input(
            "+905321230002",
            pb::ConsentStatus::Ret,
            "2026-05-19 10:00:00",
            "crm-9",
        ),
    )
    .await
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event_id, first.event_id);
    // The same key for a different event is refused, naming the field.
    let err = record(
        &mut s,
        input(
            "+905321230003",
            pb::ConsentStatus::Ret,
            "2026-05-19 10:00:00",
            "crm-9",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("consent.idempotency_key"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn bad_input_is_refused_as_iys_would_naming_each_field_and_nothing_is_stored() {
    let mut s = start().await;
    // A date in the future (H162) and no source (H113).
    let mut bad = input(
        "+905321230004",
        pb::ConsentStatus::Onay,
        "2026-05-21 09:00:00",
        "b-1",
    );
    bad.source = 0;
    let err = record(&mut s, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<(String, String)> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect();
    assert!(
        fields
            .iter()
            .any(|(f, d)| f == "consent.source" && d.starts_with("H113")),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|(f, d)| f == "consent.consent_date" && d.starts_with("H162")),
        "{fields:?}"
    );
    // Past the 3-business-day window İYS would refuse it (H467), so it is refused here.
    let err = record(
        &mut s,
        input(
            "+905321230004",
            pb::ConsentStatus::Onay,
            "2026-05-01 09:00:00",
            "b-2",
        ),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("H467"), "{}", err.message());

    // A batch with one bad item stores nothing, and names the item.
    let batch = pb::RecordConsentsRequest {
        brand_code: BRAND.into(),
        consents: vec![
            input(
                "+905321230005",
                pb::ConsentStatus::Ret,
                "2026-05-20 10:00:00",
                "b-3",
            ),
            input(
                "not a phone",
                pb::ConsentStatus::Ret,
                "2026-05-20 10:00:00",
                "b-4",
            ),
        ],
    };
    let err = s.records.record_consents(keyed(batch)).await.unwrap_err();
    assert!(
        err.message().starts_with("consents[1].recipient"),
        "{}",
        err.message()
    );
    assert_eq!(
        check(&mut s, "+905321230005").await.reason(),
        pb::Reason::NoConsent
    );
    let day = chrono::Duration::days(1);
    let now = chrono::Utc::now();
    let stored = s
        .app
        .evidence
        .as_ref()
        .unwrap()
        .events_between(BRAND, now - day * 3650, now + day * 3650)
        .await
        .unwrap();
    assert!(stored.is_empty(), "nothing stored");

    // A brand not registered for recording, and evidence left out.
    let err = s
        .records
        .record_consent(keyed(pb::RecordConsentRequest {
            brand_code: UNREGISTERED_BRAND.into(),
            consent: Some(input(
                "+905321230006",
                pb::ConsentStatus::Ret,
                "2026-05-20 10:00:00",
                "b-5",
            )),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut no_evidence = input(
        "+905321230006",
        pb::ConsentStatus::Ret,
        "2026-05-20 10:00:00",
        "b-6",
    );
    no_evidence.evidence = None;
    let err = record(&mut s, no_evidence).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("consent."), "{}", err.message());
}

#[tokio::test]
async fn a_recorded_onay_becomes_allow_only_once_iys_accepts_it() {
    let (mut s, mock, _clock) = start_with_mock().await;
    let phone = "+905321239999";
    let recorded = s
        .records
        .record_consent(keyed(pb::RecordConsentRequest {
            brand_code: MOCK_BRAND.into(),
            consent: Some(input(
                phone,
                pb::ConsentStatus::Onay,
                "2026-05-20 09:00:00",
                "up-1",
            )),
        }))
        .await
        .unwrap()
        .into_inner()
        .recorded
        .unwrap();
    assert_eq!(
        recorded.decision.unwrap().reason(),
        pb::Reason::PendingRegistration
    );
    let ask = pb::CheckRequest {
        brand_code: MOCK_BRAND.into(),
        recipient: phone.into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let decision = loop {
        let d = s
            .checks
            .check(keyed(ask.clone()))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        if d.verdict() == pb::Verdict::Allow
            || started.elapsed() > std::time::Duration::from_secs(20)
        {
            break d;
        }
        assert_eq!(
            d.reason(),
            pb::Reason::PendingRegistration,
            "pending until İYS accepts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(decision.verdict(), pb::Verdict::Allow, "{decision:?}");
    assert_eq!(decision.reason(), pb::Reason::ConsentRegistered);
    assert_eq!(mock.record_count(700_001), 1, "uploaded once");
}

#[tokio::test]
async fn clients_kept_in_the_store_are_served_with_their_grants() {
    let mut s = start().await;
    let ask = |brand| {
        let mut r = Request::new(pb::CheckRequest {
            brand_code: brand,
            recipient: "+905321234567".into(),
            channel: pb::Channel::Mesaj.into(),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("x-api-key", STORED_KEY.parse().unwrap());
        r
    };
    let d = s
        .checks
        .check(ask(BRAND.into()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(d.reason(), pb::Reason::NoConsent);
    let err = s.checks.check(ask(MOCK_BRAND.into())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

fn admin<T>(message: T) -> Request<T> {
    with_key(message, ADMIN_KEY)
}

async fn check_mock_brand(s: &mut Server, phone: &str) -> pb::Decision {
    check_brand(s, MOCK_BRAND, phone).await
}

/// Records an ONAY of the mock brand (consent at 09:00 of the test day) and waits until the
/// uploader got it registered and it is ALLOW.
async fn record_registered_onay(s: &mut Server, phone: &str, key: &str) {
    s.records
        .record_consent(keyed(pb::RecordConsentRequest {
            brand_code: MOCK_BRAND.into(),
            consent: Some(input(
                phone,
                pb::ConsentStatus::Onay,
                "2026-05-20 09:00:00",
                key,
            )),
        }))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while check_mock_brand(s, phone).await.verdict() != pb::Verdict::Allow {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "uploaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reconcile_finds_a_ret_the_index_missed_enforces_it_and_confirms_the_clean_day() {
    use iysgate::domain::{Channel as DChannel, ConsentStatus, RecipientType};
    use iysgate::iys::mock::CitizenSource;
    let (mut s, mock, clock) = start_with_mock().await;
    let phone = "+905321238888";
    record_registered_onay(&mut s, phone, "rc-1").await;
    // The recipient withdraws in İYS; nothing syncs it here (no sync worker): the index would
    // still ALLOW. This is the mismatch the day's reconciliation must find.
    clock
        .0
        .set_turkey(parse_iys("2026-05-20 15:00:00").unwrap());
    mock.citizen_change(
        u64::from(MOCK_BRAND),
        phone,
        RecipientType::Bireysel,
        DChannel::Mesaj,
        ConsentStatus::Ret,
        CitizenSource::KisaMesaj,
    )
    .unwrap();
    clock
        .0
        .set_turkey(parse_iys("2026-05-21 02:30:00").unwrap());
    s.app.freshness.mark_confirmed(clock.0.now_utc());
    assert_eq!(
        check_mock_brand(&mut s, phone).await.verdict(),
        pb::Verdict::Allow
    );
    let ask = pb::ReconcileRequest {
        brand_code: MOCK_BRAND.into(),
        date: "2026-05-20".into(),
        confirm: true,
    };
    let err = s.admin.reconcile(keyed(ask.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "not an admin key");

    let report = s
        .admin
        .reconcile(admin(ask.clone()))
        .await
        .unwrap()
        .into_inner();
    let r = report.reconciliation.unwrap();
    assert!(r.file_verified);
    assert_eq!(
        (r.file_rows, r.uploads_matched, r.new_rets_from_iys),
        (2, 1, 1)
    );
    assert_eq!(r.mismatches.len(), 1, "{:?}", r.mismatches);
    assert_eq!(r.mismatches[0].kind, "not_in_index");
    assert!(r.mismatches[0].repaired);
    assert_eq!(r.mismatches[0].recipient_masked, "+90532*****88");
    assert_eq!(r.agreement, "withheld");
    let d = check_mock_brand(&mut s, phone).await;
    assert_eq!(d.verdict(), pb::Verdict::Deny, "{d:?}");

    let clean = s.admin.reconcile(admin(ask)).await.unwrap().into_inner();
    let r = clean.reconciliation.unwrap();
    assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
    assert_eq!(r.agreement, "confirmed");

    // Compliance staff of the brand read the stored report with their own key.
    let stored = s
        .admin
        .get_daily_report(keyed(pb::GetDailyReportRequest {
            brand_code: MOCK_BRAND.into(),
            date: "2026-05-20".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.recorded_total, stored.registered), (1, 1));
    assert_eq!(stored.reconciliation.unwrap().agreement, "confirmed");
    let err = s
        .admin
        .get_daily_report(keyed(pb::GetDailyReportRequest {
            brand_code: 600_002,
            date: "2026-05-20".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "not granted that brand");
    let err = s
        .admin
        .get_daily_report(admin(pb::GetDailyReportRequest {
            brand_code: MOCK_BRAND.into(),
            date: "20.05.2026".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "date"
    );
}

#[tokio::test]
async fn clients_added_granted_and_revoked_through_admin_take_effect_at_once() {
    let mut s = start().await;
    let added = s
        .admin
        .add_client(admin(pb::AddClientRequest {
            name: "ops".into(),
            grants: vec![pb::BrandGrant {
                brand_code: BRAND.into(),
                retailers: None,
            }],
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(added.api_key.starts_with("iysk_"));
    assert_eq!(added.client.unwrap().grants[0].brand_code, u64::from(BRAND));
    let ask = |key: &str| {
        let mut r = Request::new(pb::CheckRequest {
            brand_code: BRAND.into(),
            recipient: "+905321234567".into(),
            channel: pb::Channel::Mesaj.into(),
            ..Default::default()
        });
        r.metadata_mut().insert("x-api-key", key.parse().unwrap());
        r
    };
    let d = s.checks.check(ask(&added.api_key)).await.unwrap();
    assert_eq!(
        d.into_inner().decision.unwrap().reason(),
        pb::Reason::NoConsent
    );
    let revoked = s
        .admin
        .revoke_brand(admin(pb::RevokeBrandRequest {
            client: "ops".into(),
            brand_code: BRAND.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let err = s.checks.check(ask(&added.api_key)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "revoked at once");

    let clients = s
        .admin
        .list_clients(admin(pb::ListClientsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .clients;
    let names: Vec<_> = clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ops", "stored"]);
    let dup = s
        .admin
        .add_brand(admin(pb::AddBrandRequest {
            iys_code: 600_000,
            brand_code: BRAND.into(),
            name: "again".into(),
            allow_unregistered_tacir: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let err = s
        .admin
        .list_brands(keyed(pb::ListBrandsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn recorded_events_are_enforced_again_after_a_restart_of_the_embedded_default() {
    use iysgate::domain::{ConsentStatus, Registration};
    let (mut s, _mock, clock) = start_with_mock().await;
    let (ret_phone, onay_phone) = ("+905321237771", "+905321237772");
    record_registered_onay(&mut s, onay_phone, "restart-1").await;
    record(
        &mut s,
        input(
            ret_phone,
            pb::ConsentStatus::Ret,
            "2026-05-20 10:00:00",
            "restart-2",
        ),
    )
    .await
    .unwrap();

    // A restarted process starts with an empty index; `serve` applies the store to it.
    let fresh = iysgate::check::store::Consents::new(
        Arc::new(iysgate::check::index::ConsentIndex::new()),
        Arc::new(iysgate::check::index::EmailKeyer::new([3; 16])),
    );
    let store = s.app.evidence.clone().unwrap();
    let n = app::apply_recorded(&store, &fresh, clock.0.now_utc())
        .await
        .unwrap();
    assert_eq!(n, 2);
    let key = |brand, phone: &str| iysgate::domain::ConsentKey {
        brand,
        recipient: iysgate::domain::recipient::normalise_recipient(
            phone,
            iysgate::domain::AddressKind::Phone,
        )
        .unwrap(),
        recipient_type: iysgate::domain::RecipientType::Bireysel,
        channel: iysgate::domain::Channel::Mesaj,
    };
    let ret = fresh.get(&key(BRAND, ret_phone)).unwrap().current;
    assert_eq!(ret.status, ConsentStatus::Ret, "the recorded RET holds");
    let onay = fresh.get(&key(MOCK_BRAND, onay_phone)).unwrap().current;
    assert!(
        matches!(onay.registration, Registration::Registered { .. }),
        "the ONAY İYS accepted is ALLOW again: {onay:?}"
    );
}

/// Hand-built protobuf bytes, sent as they are: what a buggy or hostile client puts on the
/// wire, which the generated client would never produce.
mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct Bytes;

    pub struct Enc;
    pub struct Dec;

    impl Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Enc;
        type Decoder = Dec;
        fn encoder(&mut self) -> Enc {
            Enc
        }
        fn decoder(&mut self) -> Dec {
            Dec
        }
    }

    impl Encoder for Enc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Dec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
    }

    /// Calls `path` (e.g. `/iysgate.v1.ConsentCheck/Check`) with `body` as the message.
    pub async fn unary(
        channel: &tonic::transport::Channel,
        path: &'static str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let request = super::with_key(body, key);
        grpc.unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            Bytes,
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// Opens the Filter stream with `body` as its only chunk; the first answer.
    pub async fn filter(
        channel: &tonic::transport::Channel,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let request = super::with_key(tokio_stream::iter([body]), key);
        let mut answers = grpc
            .streaming(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/iysgate.v1.ConsentCheck/Filter",
                ),
                Bytes,
            )
            .await?
            .into_inner();
        match answers.message().await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Ok(Vec::new()),
            Err(status) => Err(status),
        }
    }
}

/// A message that is not protobuf at all is the caller's fault, on every service of ours:
/// INVALID_ARGUMENT, not INTERNAL (tonic-prost's default).
#[tokio::test]
async fn a_malformed_message_is_invalid_argument_on_every_service() {
    let s = start().await;
    // Field 1 as a varint whose continuation bit promises a byte that never comes.
    let malformed = vec![0x08, 0xff];
    let calls: [(&'static str, &str); 8] = [
        ("/iysgate.v1.ConsentCheck/Check", KEY),
        ("/iysgate.v1.ConsentCheck/CheckBatch", KEY),
        ("/iysgate.v1.ConsentCheck/GetConsent", KEY),
        ("/iysgate.v1.ConsentRecords/RecordConsent", KEY),
        ("/iysgate.v1.ConsentRecords/RecordConsents", KEY),
        ("/iysgate.v1.Admin/AddBrand", ADMIN_KEY),
        ("/iysgate.v1.Admin/ListBrands", ADMIN_KEY),
        ("/iysgate.v1.Admin/GetDailyReport", ADMIN_KEY),
    ];
    for (path, key) in calls {
        let err = raw::unary(&s.channel, path, key, malformed.clone())
            .await
            .expect_err(path);
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().contains("malformed"), "{path}: {err:?}");
    }
    let err = raw::filter(&s.channel, KEY, malformed).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "Filter: {err:?}");
}

/// `v` with `field` (a code field number) appended as a 64-bit varint: the last value of a
/// scalar field wins, so this is the message with that field set to `wide`.
fn with_wide(message: &impl prost::Message, field: u32, wide: u64) -> Vec<u8> {
    let mut buf = message.encode_to_vec();
    prost::encoding::uint64::encode(field, &wide, &mut buf);
    buf
}

/// `outer` with `inner` appended as the length-delimited message field `field`.
fn with_message(outer: &impl prost::Message, field: u32, inner: &[u8]) -> Vec<u8> {
    let mut buf = outer.encode_to_vec();
    prost::encoding::bytes::encode(field, &inner.to_vec(), &mut buf);
    buf
}

/// The bad-request field a refusal names (the first violation).
fn refused_field(status: &tonic::Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_else(|| panic!("no field named: {status:?}"))
}

/// A code wider than 32 bits is refused naming its field, never truncated: 2^32 + 600001 is
/// not brand 600001. uint32 and uint64 varints are the same on the wire, so a caller can send
/// one; the bytes here are built by hand.
#[tokio::test]
async fn a_code_wider_than_32_bits_is_refused_naming_the_field_never_truncated() {
    let mut s = start().await;
    // Brand 600001 has a consent for this phone, recorded here: a truncating server would
    // answer about it.
    record(
        &mut s,
        input(
            "+905321230077",
            pb::ConsentStatus::Ret,
            "2026-05-20 09:00:00",
            "wide-1",
        ),
    )
    .await
    .unwrap();
    let wide = (1u64 << 32) + u64::from(BRAND);
    let check_req = pb::CheckRequest {
        recipient: "+905321230077".into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    };
    let consent = input(
        "+905321230078",
        pb::ConsentStatus::Onay,
        "2026-05-20 09:00:00",
        "wide-2",
    );
    let in_brand = pb::RecordConsentRequest {
        brand_code: BRAND.into(),
        consent: None,
    };
    let batch_item = pb::CheckBatchItem {
        recipient: "+905321230077".into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    };
    let with_brand = |m: &pb::CheckRequest| {
        let mut m = m.clone();
        m.brand_code = BRAND.into();
        m
    };
    let cases: Vec<(&'static str, &str, Vec<u8>, &str)> = vec![
        (
            "/iysgate.v1.ConsentCheck/Check",
            KEY,
            with_wide(&check_req, 1, wide),
            "brand_code",
        ),
        (
            "/iysgate.v1.ConsentCheck/Check",
            KEY,
            with_wide(&with_brand(&check_req), 5, (1 << 32) + 1),
            "retailer_code",
        ),
        (
            "/iysgate.v1.ConsentCheck/GetConsent",
            KEY,
            with_wide(
                &pb::GetConsentRequest {
                    recipient: "+905321230077".into(),
                    channel: pb::Channel::Mesaj.into(),
                    ..Default::default()
                },
                1,
                wide,
            ),
            "brand_code",
        ),
        (
            "/iysgate.v1.ConsentCheck/CheckBatch",
            KEY,
            with_message(
                &pb::CheckBatchRequest::default(),
                2,
                &batch_item.encode_to_vec(),
            )
            .into_iter()
            .chain(with_wide(&pb::CheckBatchRequest::default(), 1, wide))
            .collect(),
            "brand_code",
        ),
        (
            "/iysgate.v1.ConsentRecords/RecordConsent",
            KEY,
            with_message(
                &pb::RecordConsentRequest::default(),
                2,
                &consent.encode_to_vec(),
            )
            .into_iter()
            .chain(with_wide(&pb::RecordConsentRequest::default(), 1, wide))
            .collect(),
            "brand_code",
        ),
        (
            "/iysgate.v1.ConsentRecords/RecordConsent",
            KEY,
            with_message(&in_brand, 2, &with_wide(&consent, 7, (1 << 32) + 5)),
            "consent.retailer_access",
        ),
        (
            "/iysgate.v1.ConsentRecords/RecordConsents",
            KEY,
            with_message(
                &pb::RecordConsentsRequest {
                    brand_code: BRAND.into(),
                    consents: vec![],
                },
                2,
                &with_wide(&consent, 7, (1 << 32) + 5),
            ),
            "consents[0].retailer_access",
        ),
        (
            "/iysgate.v1.Admin/AddBrand",
            ADMIN_KEY,
            with_wide(
                &pb::AddBrandRequest {
                    iys_code: 600_000,
                    name: "Geniş".into(),
                    ..Default::default()
                },
                2,
                (1 << 32) + 600_002,
            ),
            "brand_code",
        ),
        (
            "/iysgate.v1.Admin/AddBrand",
            ADMIN_KEY,
            with_wide(
                &pb::AddBrandRequest {
                    brand_code: 600_002,
                    name: "Geniş".into(),
                    ..Default::default()
                },
                1,
                (1 << 32) + 600_000,
            ),
            "iys_code",
        ),
        (
            "/iysgate.v1.Admin/RevokeBrand",
            ADMIN_KEY,
            with_wide(
                &pb::RevokeBrandRequest {
                    client: "stored".into(),
                    ..Default::default()
                },
                2,
                wide,
            ),
            "brand_code",
        ),
        (
            "/iysgate.v1.Admin/GetDailyReport",
            ADMIN_KEY,
            with_wide(&pb::GetDailyReportRequest::default(), 1, wide),
            "brand_code",
        ),
        (
            "/iysgate.v1.Admin/Reconcile",
            ADMIN_KEY,
            with_wide(&pb::ReconcileRequest::default(), 1, wide),
            "brand_code",
        ),
        (
            "/iysgate.v1.Admin/GrantBrand",
            ADMIN_KEY,
            with_message(
                &pb::GrantBrandRequest {
                    client: "stored".into(),
                    grant: None,
                },
                2,
                &with_wide(&pb::BrandGrant::default(), 1, wide),
            ),
            "grant.brand_code",
        ),
        (
            "/iysgate.v1.Admin/AddClient",
            ADMIN_KEY,
            with_message(
                &pb::AddClientRequest {
                    name: "wide".into(),
                    grants: vec![],
                },
                2,
                &with_message(
                    &pb::BrandGrant {
                        brand_code: BRAND.into(),
                        retailers: None,
                    },
                    2,
                    &with_wide(&pb::RetailerGrant::default(), 2, (1 << 32) + 7),
                ),
            ),
            "grants[0].retailers.codes",
        ),
    ];
    for (path, key, body, field) in cases {
        let status = raw::unary(&s.channel, path, key, body)
            .await
            .expect_err(&format!("{path} {field}: answered"));
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{path} {field}: {status:?}"
        );
        assert_eq!(refused_field(&status), field, "{path}: {status:?}");
        assert!(
            status.message().contains("4294967295"),
            "{path}: {status:?}"
        );
    }
    // CheckBatch: an item's code that does not fit is that item's INVALID, the rest answered.
    let batch = with_message(
        &pb::CheckBatchRequest {
            brand_code: BRAND.into(),
            items: vec![batch_item.clone()],
        },
        2,
        &with_wide(&batch_item, 4, (1 << 32) + 1),
    );
    let answer = raw::unary(
        &s.channel,
        "/iysgate.v1.ConsentCheck/CheckBatch",
        KEY,
        batch,
    )
    .await
    .unwrap();
    let decisions = <pb::CheckBatchResponse as prost::Message>::decode(&answer[..])
        .unwrap()
        .decisions;
    assert_eq!(decisions[0].reason(), pb::Reason::LocalRet);
    assert_eq!(decisions[1].verdict(), pb::Verdict::Invalid);
    assert!(
        decisions[1].error.contains("retailer_code"),
        "{:?}",
        decisions[1]
    );
    // Filter: the first chunk's brand.
    let chunk = pb::FilterRequest {
        channel: pb::Channel::Mesaj.into(),
        recipients: vec!["+905321230077".into()],
        ..Default::default()
    };
    let status = raw::filter(&s.channel, KEY, with_wide(&chunk, 1, wide))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "Filter: {status:?}");
    assert_eq!(refused_field(&status), "brand_code");
    // Nothing was stored for the truncated brand by the wide RecordConsent.
    let d = check(&mut s, "+905321230078").await;
    assert_eq!(d.reason(), pb::Reason::NoConsent);
}

/// The idempotency key's limit is the proto's: at most 128 bytes, refused past it naming the
/// field, nothing stored.
#[tokio::test]
async fn an_idempotency_key_is_at_most_128_bytes() {
    let mut s = start().await;
    let date = "2026-05-20 09:00:00";
    let longest = "k".repeat(128);
    record(
        &mut s,
        input("+905321230091", pb::ConsentStatus::Ret, date, &longest),
    )
    .await
    .unwrap();
    let too_long = "k".repeat(129);
    let status = record(
        &mut s,
        input("+905321230092", pb::ConsentStatus::Ret, date, &too_long),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(refused_field(&status), "consent.idempotency_key");
    assert!(status.message().contains("128 bytes"), "{status:?}");
    assert_eq!(
        check(&mut s, "+905321230092").await.reason(),
        pb::Reason::NoConsent
    );
    // The one constant the validation, both stores and the docs use.
    assert_eq!(iysgate::write::evidence::MAX_IDEMPOTENCY_KEY, 128);
}

/// RecordConsent normalises the recipient with the same code as Check, GetConsent and Filter,
/// before İYS's validation: what a check finds is what was recorded.
#[tokio::test]
async fn a_recipient_is_recorded_in_the_form_a_check_finds_it() {
    let mut s = start().await;
    let date = "2026-05-20 09:00:00";
    let recorded = record(
        &mut s,
        input("+90 532 999 12 34", pb::ConsentStatus::Ret, date, "norm-1"),
    )
    .await
    .unwrap();
    assert_eq!(recorded.stored_recipient, "+905329991234");
    assert_eq!(recorded.decision.unwrap().reason(), pb::Reason::LocalRet);
    let d = check(&mut s, "+905329991234").await;
    assert_eq!(d.reason(), pb::Reason::LocalRet);
    let d = check(&mut s, "0532 999 12 34").await;
    assert_eq!(d.reason(), pb::Reason::LocalRet);
    // Refused by the normalisation: named once, in its words, nothing stored.
    let status = record(
        &mut s,
        input("+90 532 999 12 3", pb::ConsentStatus::Ret, date, "norm-2"),
    )
    .await
    .unwrap_err();
    let bad = status.get_details_bad_request().unwrap();
    assert_eq!(bad.field_violations.len(), 1, "{status:?}");
    assert_eq!(bad.field_violations[0].field, "consent.recipient");
    assert!(
        bad.field_violations[0].description.contains("9 digits"),
        "{status:?}"
    );
}
