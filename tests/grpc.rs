//! The server end to end: started on port 0 with a known data set and a manual clock, called
//! with the generated client. Covers every RPC, bad input naming its field, authentication
//! and brand grants, staleness, load shedding, deadlines and shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use clap::Parser;
use iysgate::app::config::{Cli, Command, ServeArgs};
use iysgate::app::{self, App};
use iysgate::auth::{hash_key, to_hex};
use iysgate::domain::time::parse_iys;
use iysgate::domain::{
    Channel, ConsentEvent, ConsentKey, ConsentStatus, ManualClock, RecipientType, Registration,
    Source, recipient::normalise_recipient,
};
use iysgate::pb;
use iysgate::pb::consent_check_client::ConsentCheckClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

const KEY: &str = "iysk_test_key_brand_600001";
const OTHER_KEY: &str = "iysk_test_key_brand_700001";
const BRAND: u32 = 600_001;
const FOREIGN_BRAND: u32 = 700_001;
const TACIR_BRAND: u32 = 620_001;
const RETAILER: u32 = 10_000_001;

const ONAY_PHONE: &str = "+905321111111";
const RET_PHONE: &str = "+905322222222";
const LOCAL_RET_PHONE: &str = "+905323333333";
const PENDING_PHONE: &str = "+905324444444";
const EXPIRED_PHONE: &str = "+905325555555";
const MIXED_PHONE: &str = "+905326666666";
const ONAY_EMAIL: &str = "ayse.yilmaz@example.com.tr";
const UNKNOWN_PHONE: &str = "+905329999999";

struct TestServer {
    addr: String,
    client: ConsentCheckClient<GrpcChannel>,
    channel: GrpcChannel,
    clock: Arc<ManualClock>,
    app: Arc<App>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), app::StartError>>,
}

/// "Now" in every test: Saturday 2026-05-23 12:00 Turkey time.
fn now() -> chrono::NaiveDateTime {
    parse_iys("2026-05-23 12:00:00").unwrap()
}

fn serve_args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec![
        "iysgate".to_owned(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
        "--max-staleness".into(),
        "30s".into(),
        "--grace".into(),
        "2s".into(),
        "--client".into(),
        format!(
            "name=gw;sha256={};brands={BRAND},{TACIR_BRAND};retailers={RETAILER}",
            to_hex(&hash_key(KEY))
        ),
        "--client".into(),
        format!(
            "name=other;sha256={};brands={FOREIGN_BRAND}",
            to_hex(&hash_key(OTHER_KEY))
        ),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Serve(args) => args,
        _ => unreachable!(),
    }
}

fn event(status: ConsentStatus, source: Source, date: &str, registered: bool) -> ConsentEvent {
    ConsentEvent {
        status,
        source,
        consent_date: parse_iys(date).unwrap(),
        registration: if registered {
            Registration::Registered {
                creation_date: parse_iys(date).unwrap() + ChronoDuration::minutes(5),
                transaction_id: format!("{:064x}", date.len() * 7919).into(),
            }
        } else {
            Registration::Pending
        },
        retailer_access: vec![],
    }
}

fn apply(
    app: &App,
    brand: u32,
    recipient: &str,
    rtype: RecipientType,
    channel: Channel,
    e: ConsentEvent,
) {
    let recipient = normalise_recipient(recipient, channel.address_kind()).unwrap();
    let key = ConsentKey {
        brand,
        recipient,
        recipient_type: rtype,
        channel,
    };
    app.consents.apply(key, e).unwrap();
}

fn seed(app: &App) {
    use ConsentStatus::{Onay, Ret};
    use RecipientType::{Bireysel, Tacir};
    let mut onay = event(Onay, Source::HsWeb, "2025-01-02 10:00:00", true);
    onay.retailer_access = vec![RETAILER];
    apply(app, BRAND, ONAY_PHONE, Bireysel, Channel::Mesaj, onay);
    apply(
        app,
        BRAND,
        ONAY_PHONE,
        Bireysel,
        Channel::Arama,
        event(Onay, Source::HsCagriMerkezi, "2025-01-02 10:00:00", true),
    );
    apply(
        app,
        BRAND,
        RET_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2025-01-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        RET_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Ret, Source::IysWeb, "2025-02-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        LOCAL_RET_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2025-01-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        LOCAL_RET_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Ret, Source::HsCagriMerkezi, "2026-05-23 11:00:00", false),
    );
    // Captured Wed 2026-05-20: deadline Sat 2026-05-23 23:59:59, still pending at "now".
    apply(
        app,
        BRAND,
        PENDING_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2026-05-20 09:00:00", false),
    );
    // Captured Tue 2026-05-19 (a holiday; day 0 all the same): deadline Fri 05-22 23:59:59.
    apply(
        app,
        BRAND,
        EXPIRED_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2026-05-19 09:00:00", false),
    );
    // The same number: BIREYSEL RET beside TACIR ONAY.
    apply(
        app,
        BRAND,
        MIXED_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2025-01-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        MIXED_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Ret, Source::IysMobil, "2025-03-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        MIXED_PHONE,
        Tacir,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2025-01-01 09:00:00", true),
    );
    apply(
        app,
        BRAND,
        ONAY_EMAIL,
        Bireysel,
        Channel::Eposta,
        event(Onay, Source::HsWeb, "2025-01-02 10:00:00", true),
    );
    // A record of the foreign brand, to prove PERMISSION_DENIED does not depend on it.
    apply(
        app,
        FOREIGN_BRAND,
        ONAY_PHONE,
        Bireysel,
        Channel::Mesaj,
        event(Onay, Source::HsWeb, "2025-01-02 10:00:00", true),
    );
}

async fn start(extra: &[&str]) -> TestServer {
    start_with(extra, true).await
}

/// As [`start`]; `fresh` false starts it before any data was confirmed fresh (a replica
/// still loading).
async fn start_with(extra: &[&str], fresh: bool) -> TestServer {
    let args = serve_args(extra);
    let clock = Arc::new(ManualClock::at_turkey(now()));
    let app = Arc::new(App::embedded(&args, clock.clone()).unwrap());
    let brands = tempfile_with(
        r#"{"brands":[{"brand_code":620001,"name":"Ege Tekstil","allow_unregistered_tacir":true}]}"#,
    );
    app.checker
        .set_policies(app::load_policies(&brands).unwrap());
    seed(&app);
    if fresh {
        app.freshness.mark_confirmed(clock.now_utc_for_tests());
    }
    let listener = app::bind(args.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let served = {
        let app = Arc::clone(&app);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tasks = TaskTracker::new();
            app::serve_grpc(
                &app,
                &args,
                app::consent_service(&app, &args),
                listener,
                shutdown,
                &tasks,
            )
            .await
        })
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestServer {
        addr: format!("http://{addr}"),
        client: ConsentCheckClient::new(channel.clone()),
        channel,
        clock,
        app,
        shutdown,
        served,
    }
}

trait NowForTests {
    fn now_utc_for_tests(&self) -> chrono::DateTime<chrono::Utc>;
}

impl NowForTests for ManualClock {
    fn now_utc_for_tests(&self) -> chrono::DateTime<chrono::Utc> {
        iysgate::domain::Clock::now_utc(self)
    }
}

fn tempfile_with(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "iysgate-test-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

fn check_req(recipient: &str, channel: pb::Channel) -> pb::CheckRequest {
    pb::CheckRequest {
        brand_code: BRAND.into(),
        recipient: recipient.into(),
        channel: channel.into(),
        ..Default::default()
    }
}

async fn decide(s: &mut TestServer, req: pb::CheckRequest) -> pb::Decision {
    s.client
        .check(keyed(req, KEY))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

#[tokio::test]
async fn check_answers_every_rule_with_its_reason() {
    let mut s = start(&[]).await;
    let d = decide(&mut s, check_req("0532 111 11 11", pb::Channel::Mesaj)).await;
    assert_eq!(
        (d.verdict(), d.reason()),
        (pb::Verdict::Allow, pb::Reason::ConsentRegistered)
    );
    assert_eq!(
        (d.status(), d.source()),
        (pb::ConsentStatus::Onay, pb::Source::HsWeb)
    );
    assert_eq!(d.consent_date, "2025-01-02 10:00");
    assert!(d.data_age_ms < 1000, "data age {}", d.data_age_ms);

    let cases = [
        (RET_PHONE, pb::Verdict::Deny, pb::Reason::Rejected),
        (LOCAL_RET_PHONE, pb::Verdict::Deny, pb::Reason::LocalRet),
        (
            PENDING_PHONE,
            pb::Verdict::Deny,
            pb::Reason::PendingRegistration,
        ),
        (
            EXPIRED_PHONE,
            pb::Verdict::Deny,
            pb::Reason::RegistrationExpired,
        ),
        (UNKNOWN_PHONE, pb::Verdict::Deny, pb::Reason::NoConsent),
        (MIXED_PHONE, pb::Verdict::Deny, pb::Reason::Rejected),
    ];
    for (phone, verdict, reason) in cases {
        let d = decide(&mut s, check_req(phone, pb::Channel::Mesaj)).await;
        assert_eq!((d.verdict(), d.reason()), (verdict, reason), "{phone}");
    }
    let d = decide(&mut s, check_req(PENDING_PHONE, pb::Channel::Mesaj)).await;
    assert!(d.pending_registration);
    assert_eq!(d.registration_deadline, "2026-05-23 23:59:59");

    // Channels are independent: the ONAY is for MESAJ and ARAMA, not EPOSTA of another address.
    let d = decide(&mut s, check_req(RET_PHONE, pb::Channel::Arama)).await;
    assert_eq!(d.reason(), pb::Reason::NoConsent);

    // BIREYSEL RET beside TACIR ONAY for the same number.
    let mut tacir = check_req(MIXED_PHONE, pb::Channel::Mesaj);
    tacir.recipient_type = pb::RecipientType::Tacir.into();
    assert_eq!(decide(&mut s, tacir).await.verdict(), pb::Verdict::Allow);

    // E-mail, upper case and padded: normalised like İYS does.
    let d = decide(
        &mut s,
        check_req("  Ayse.Yilmaz@Example.COM.tr ", pb::Channel::Eposta),
    )
    .await;
    assert_eq!(d.verdict(), pb::Verdict::Allow);

    // Retailer access.
    let mut with_retailer = check_req(ONAY_PHONE, pb::Channel::Mesaj);
    with_retailer.retailer_code = RETAILER.into();
    assert_eq!(
        decide(&mut s, with_retailer.clone()).await.verdict(),
        pb::Verdict::Allow
    );
    let mut arama = with_retailer;
    arama.channel = pb::Channel::Arama.into();
    let d = decide(&mut s, arama).await;
    assert_eq!(
        (d.verdict(), d.reason()),
        (pb::Verdict::Deny, pb::Reason::RetailerNotGranted)
    );

    // Exempt purpose: allowed over a RET, and says so.
    let mut exempt = check_req(RET_PHONE, pb::Channel::Mesaj);
    exempt.purpose = pb::Purpose::DeliveryNotice.into();
    let d = decide(&mut s, exempt).await;
    assert_eq!(
        (d.verdict(), d.reason()),
        (pb::Verdict::AllowExempt, pb::Reason::ExemptPurpose)
    );

    // TACIR with no record: denied by default, allowed where the brand's policy says so.
    let mut t = check_req(UNKNOWN_PHONE, pb::Channel::Mesaj);
    t.recipient_type = pb::RecipientType::Tacir.into();
    assert_eq!(
        decide(&mut s, t.clone()).await.reason(),
        pb::Reason::NoConsent
    );
    t.brand_code = TACIR_BRAND.into();
    assert_eq!(
        decide(&mut s, t).await.reason(),
        pb::Reason::TacirOptOutPolicy
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let mut s = start(&[]).await;
    let cases: Vec<(pb::CheckRequest, &str)> = vec![
        (
            pb::CheckRequest {
                brand_code: 0,
                ..check_req(ONAY_PHONE, pb::Channel::Mesaj)
            },
            "brand_code",
        ),
        (check_req(ONAY_PHONE, pb::Channel::Unspecified), "channel"),
        (
            pb::CheckRequest {
                channel: 42,
                ..check_req(ONAY_PHONE, pb::Channel::Mesaj)
            },
            "channel",
        ),
        (check_req("05321", pb::Channel::Mesaj), "recipient"),
        (check_req(ONAY_PHONE, pb::Channel::Eposta), "recipient"),
        (
            check_req("ayşe@example.com", pb::Channel::Eposta),
            "recipient",
        ),
        (
            pb::CheckRequest {
                recipient_type: 9,
                ..check_req(ONAY_PHONE, pb::Channel::Mesaj)
            },
            "recipient_type",
        ),
        (
            pb::CheckRequest {
                purpose: 77,
                ..check_req(ONAY_PHONE, pb::Channel::Mesaj)
            },
            "purpose",
        ),
    ];
    for (req, field) in cases {
        let err = s.client.check(keyed(req, KEY)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
        let details = err.get_details_bad_request().expect("field details");
        assert_eq!(details.field_violations[0].field, field);
        assert!(!err.message().contains("0532"), "no personal data echoed");
    }
}

#[tokio::test]
async fn keys_and_grants_are_enforced_before_any_lookup() {
    let mut s = start(&[]).await;
    let err = s
        .client
        .check(Request::new(check_req(ONAY_PHONE, pb::Channel::Mesaj)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = s
        .client
        .check(keyed(
            check_req(ONAY_PHONE, pb::Channel::Mesaj),
            "iysk_nope",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The foreign brand: the same answer whether or not the recipient has a record there.
    let with_record = pb::CheckRequest {
        brand_code: FOREIGN_BRAND.into(),
        ..check_req(ONAY_PHONE, pb::Channel::Mesaj)
    };
    let without = pb::CheckRequest {
        brand_code: FOREIGN_BRAND.into(),
        ..check_req(UNKNOWN_PHONE, pb::Channel::Mesaj)
    };
    let a = s
        .client
        .check(keyed(with_record.clone(), KEY))
        .await
        .unwrap_err();
    let b = s.client.check(keyed(without, KEY)).await.unwrap_err();
    assert_eq!(
        (a.code(), b.code()),
        (Code::PermissionDenied, Code::PermissionDenied)
    );
    assert_eq!(a.message(), b.message());
    // ...and the key that is granted it gets an answer.
    let ok = s
        .client
        .check(keyed(with_record, OTHER_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.decision.unwrap().verdict(), pb::Verdict::Allow);

    // A retailer the key is not granted is refused like a brand.
    let mut r = check_req(ONAY_PHONE, pb::Channel::Mesaj);
    r.retailer_code = 99_999_999;
    assert_eq!(
        s.client.check(keyed(r, KEY)).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // In a batch too: one item naming a retailer the key is not granted refuses the call.
    let batch = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: vec![
            pb::CheckBatchItem {
                recipient: ONAY_PHONE.into(),
                channel: pb::Channel::Mesaj.into(),
                ..Default::default()
            },
            pb::CheckBatchItem {
                recipient: ONAY_PHONE.into(),
                channel: pb::Channel::Mesaj.into(),
                retailer_code: 99_999_999,
                ..Default::default()
            },
        ],
    };
    assert_eq!(
        s.client
            .check_batch(keyed(batch, KEY))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Verified keys are remembered; an unknown one is still refused afterwards.
    let err = s
        .client
        .check(keyed(
            check_req(ONAY_PHONE, pb::Channel::Mesaj),
            "iysk_nope",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Every RPC authenticates.
    let gc = pb::GetConsentRequest {
        brand_code: FOREIGN_BRAND.into(),
        recipient: ONAY_PHONE.into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    };
    assert_eq!(
        s.client
            .get_consent(keyed(gc, KEY))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let batch = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: vec![],
    };
    assert_eq!(
        s.client
            .check_batch(keyed(batch, "bad"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn batch_answers_the_good_items_and_marks_the_bad() {
    let mut s = start(&[]).await;
    let item = |r: &str, c: pb::Channel| pb::CheckBatchItem {
        recipient: r.into(),
        channel: c.into(),
        ..Default::default()
    };
    let req = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: vec![
            item(ONAY_PHONE, pb::Channel::Mesaj),
            item("not a number", pb::Channel::Mesaj),
            item(RET_PHONE, pb::Channel::Mesaj),
            item(ONAY_PHONE, pb::Channel::Unspecified),
            item(ONAY_EMAIL, pb::Channel::Eposta),
        ],
    };
    let d = s
        .client
        .check_batch(keyed(req, KEY))
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(d.len(), 5);
    assert_eq!(d[0].verdict(), pb::Verdict::Allow);
    assert_eq!(
        (d[1].verdict(), d[1].reason()),
        (pb::Verdict::Invalid, pb::Reason::InvalidRecipient)
    );
    assert!(d[1].error.starts_with("recipient"), "{}", d[1].error);
    assert_eq!(d[2].reason(), pb::Reason::Rejected);
    assert!(d[3].error.starts_with("channel"), "{}", d[3].error);
    assert_eq!(d[4].verdict(), pb::Verdict::Allow);

    let too_big = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: vec![item(ONAY_PHONE, pb::Channel::Mesaj); 10_001],
    };
    let err = s.client.check_batch(keyed(too_big, KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("items"), "{}", err.message());
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

/// The error a Filter stream of the one `chunk` ends with.
async fn refused_chunk(s: &mut TestServer, chunk: pb::FilterRequest) -> tonic::Status {
    s.client
        .filter(keyed(tokio_stream::iter(vec![chunk]), KEY))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_filter_chunk_over_its_limit_is_refused_naming_the_field_sent() {
    let mut s = start(&[]).await;
    let too_many = 100_001;
    let cases = [
        (
            pb::FilterRequest {
                phones: vec![905_321_111_111; too_many],
                ..Default::default()
            },
            "phones",
        ),
        (
            pb::FilterRequest {
                recipient_lines: "+905321111111\n".repeat(too_many).into_bytes().into(),
                ..Default::default()
            },
            "recipient_lines",
        ),
        (
            pb::FilterRequest {
                recipients: vec![ONAY_PHONE.into(); too_many],
                ..Default::default()
            },
            "recipients",
        ),
    ];
    for (chunk, field) in cases {
        let chunk = pb::FilterRequest {
            brand_code: BRAND.into(),
            channel: pb::Channel::Mesaj.into(),
            ..chunk
        };
        let mut replies = s
            .client
            .filter(keyed(tokio_stream::iter(vec![chunk]), KEY))
            .await
            .unwrap()
            .into_inner();
        let err = replies.message().await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        let details = err.get_details_bad_request().expect("field details");
        // Before the fix every form was refused as `recipients`.
        assert_eq!(
            details.field_violations[0].field,
            field,
            "{}",
            err.message()
        );
    }
}

#[tokio::test]
async fn filter_answers_reasons_as_one_byte_per_item_or_not_at_all_when_asked() {
    let mut s = start(&[]).await;
    let phones = vec![905_321_111_111, 905_324_444_444, 12, 905_329_999_999];
    let chunks = |form: pb::RejectionForm| {
        vec![
            pb::FilterRequest {
                brand_code: BRAND.into(),
                channel: pb::Channel::Mesaj.into(),
                rejections: form.into(),
                phones: phones.clone(),
                ..Default::default()
            },
            // A later chunk keeps the first chunk's form, as it keeps its brand.
            pb::FilterRequest {
                phones: phones.clone(),
                ..Default::default()
            },
        ]
    };
    let mut replies = s
        .client
        .filter(keyed(
            tokio_stream::iter(chunks(pb::RejectionForm::RejectionCodes)),
            KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let a = replies.message().await.unwrap().unwrap();
        assert_eq!((a.count, a.allowed_count), (4, 1));
        assert!(a.rejected.is_empty(), "no Rejection messages in this form");
        let want = [
            0,
            pb::Reason::PendingRegistration as u8,
            pb::Reason::InvalidRecipient as u8,
            pb::Reason::NoConsent as u8,
        ];
        assert_eq!(&a.reason_codes[..], &want);
        assert!(bit(&a.allowed, 0) && !bit(&a.allowed, 1));
    }
    let mut replies = s
        .client
        .filter(keyed(
            tokio_stream::iter(chunks(pb::RejectionForm::RejectionNone)),
            KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    let a = replies.message().await.unwrap().unwrap();
    assert_eq!(a.allowed_count, 1);
    assert!(a.rejected.is_empty() && a.reason_codes.is_empty());
    // A form this server does not know is refused, naming the field.
    let unknown = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Mesaj.into(),
        rejections: 7,
        phones: phones.clone(),
        ..Default::default()
    };
    let err = refused_chunk(&mut s, unknown).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "rejections"
    );
}

#[tokio::test]
async fn filter_streams_bitmaps_and_reasons_per_chunk() {
    let mut s = start(&[]).await;
    let first = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Mesaj.into(),
        recipients: vec![
            ONAY_PHONE.into(),
            RET_PHONE.into(),
            "garbage".into(),
            "0532 111 11 11".into(),
        ],
        ..Default::default()
    };
    // Later chunks keep the first chunk's brand and channel; this one uses the packed form.
    let second = pb::FilterRequest {
        phones: vec![905_321_111_111, 905_324_444_444, 12, 905_329_999_999],
        ..Default::default()
    };
    let stream = tokio_stream::iter(vec![first, second]);
    let mut replies = s
        .client
        .filter(keyed(stream, KEY))
        .await
        .unwrap()
        .into_inner();
    let a = replies.message().await.unwrap().unwrap();
    assert_eq!((a.chunk, a.count, a.allowed_count), (0, 4, 2));
    assert!(bit(&a.allowed, 0) && !bit(&a.allowed, 1) && !bit(&a.allowed, 2) && bit(&a.allowed, 3));
    let reasons: Vec<(u32, pb::Reason)> =
        a.rejected.iter().map(|r| (r.index, r.reason())).collect();
    assert_eq!(
        reasons,
        vec![(1, pb::Reason::Rejected), (2, pb::Reason::InvalidRecipient)]
    );
    let b = replies.message().await.unwrap().unwrap();
    assert_eq!((b.chunk, b.count, b.allowed_count), (1, 4, 1));
    let reasons: Vec<(u32, pb::Reason)> =
        b.rejected.iter().map(|r| (r.index, r.reason())).collect();
    assert_eq!(
        reasons,
        vec![
            (1, pb::Reason::PendingRegistration),
            (2, pb::Reason::InvalidRecipient),
            (3, pb::Reason::NoConsent)
        ]
    );
    assert!(replies.message().await.unwrap().is_none());

    // E-mails as lines: item i is line i, "\r\n" endings and a final newline are fine.
    let lines = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Eposta.into(),
        recipient_lines: format!("{ONAY_EMAIL}\r\nnot-an-address\nnobody@example.com\n").into(),
        ..Default::default()
    };
    let mut replies = s
        .client
        .filter(keyed(tokio_stream::iter(vec![lines]), KEY))
        .await
        .unwrap()
        .into_inner();
    let c = replies.message().await.unwrap().unwrap();
    assert_eq!((c.count, c.allowed_count), (3, 1));
    assert!(bit(&c.allowed, 0));
    let reasons: Vec<(u32, pb::Reason)> =
        c.rejected.iter().map(|r| (r.index, r.reason())).collect();
    assert_eq!(
        reasons,
        vec![
            (1, pb::Reason::InvalidRecipient),
            (2, pb::Reason::NoConsent)
        ]
    );
    // Lines that are not UTF-8 are refused naming the field.
    let broken = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Eposta.into(),
        recipient_lines: vec![b'a', 0xff, b'\n'].into(),
        ..Default::default()
    };
    let err = refused_chunk(&mut s, broken).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("recipient_lines"),
        "{}",
        err.message()
    );

    // A chunk with both forms is refused, naming the field.
    let both = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Mesaj.into(),
        recipients: vec![ONAY_PHONE.into()],
        phones: vec![905_321_111_111],
        ..Default::default()
    };
    let mut replies = s
        .client
        .filter(keyed(tokio_stream::iter(vec![both]), KEY))
        .await
        .unwrap()
        .into_inner();
    let err = replies.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("phones"), "{}", err.message());

    // Packed phones on an e-mail channel are refused.
    let wrong = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Eposta.into(),
        phones: vec![905_321_111_111],
        ..Default::default()
    };
    let mut replies = s
        .client
        .filter(keyed(tokio_stream::iter(vec![wrong]), KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replies.message().await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // E-mails filter too.
    let emails = pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Eposta.into(),
        recipients: vec![ONAY_EMAIL.to_uppercase(), "nobody@example.com".into()],
        ..Default::default()
    };
    let mut replies = s
        .client
        .filter(keyed(tokio_stream::iter(vec![emails]), KEY))
        .await
        .unwrap()
        .into_inner();
    let c = replies.message().await.unwrap().unwrap();
    assert_eq!(c.allowed_count, 1);
    assert!(bit(&c.allowed, 0));
}

#[tokio::test]
async fn get_consent_shows_the_record_behind_the_decision() {
    let mut s = start(&[]).await;
    let req = |r: &str| pb::GetConsentRequest {
        brand_code: BRAND.into(),
        recipient: r.into(),
        channel: pb::Channel::Mesaj.into(),
        ..Default::default()
    };
    let reply = s
        .client
        .get_consent(keyed(req(RET_PHONE), KEY))
        .await
        .unwrap()
        .into_inner();
    let record = reply.record.unwrap();
    assert_eq!(record.status(), pb::ConsentStatus::Ret);
    assert_eq!(record.source(), pb::Source::IysWeb);
    assert_eq!(record.consent_date, "2025-02-01 09:00:00");
    assert_eq!(record.creation_date, "2025-02-01 09:05:00");
    assert_eq!(record.transaction_id.len(), 64);
    assert_eq!(reply.decision.unwrap().reason(), pb::Reason::Rejected);

    let reply = s
        .client
        .get_consent(keyed(req(PENDING_PHONE), KEY))
        .await
        .unwrap()
        .into_inner();
    let record = reply.record.unwrap();
    assert!(record.pending_registration && record.transaction_id.is_empty());
    assert_eq!(record.registration_deadline, "2026-05-23 23:59:59");

    let reply = s
        .client
        .get_consent(keyed(req(ONAY_PHONE), KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.record.unwrap().retailer_access, vec![RETAILER]);

    let reply = s
        .client
        .get_consent(keyed(req(UNKNOWN_PHONE), KEY))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.record.is_none());
    assert_eq!(reply.decision.unwrap().reason(), pb::Reason::NoConsent);

    let err = s
        .client
        .get_consent(keyed(req("x"), KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A replica serving from its index while the full records still load (a cold start
    // from the index checkpoint) answers checks but not records, which could be missing.
    s.app
        .consents
        .load_index_only(iysgate::check::store::IndexRows::default());
    let err = s
        .client
        .get_consent(keyed(req(RET_PHONE), KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("still loading"), "{}", err.message());
    let decision = decide(&mut s, check_req(RET_PHONE, pb::Channel::Mesaj)).await;
    assert_eq!(decision.reason(), pb::Reason::Rejected);
    s.app.consents.rebuild_index();
    let reply = s
        .client
        .get_consent(keyed(req(RET_PHONE), KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.record.unwrap().status(), pb::ConsentStatus::Ret);
}

#[tokio::test]
async fn stale_data_never_allows_and_health_says_not_serving() {
    let mut s = start(&[]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let hreq = || tonic_health::pb::HealthCheckRequest {
        service: "iysgate.v1.ConsentCheck".into(),
    };
    let status = health.check(hreq()).await.unwrap().into_inner().status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    s.clock.advance(ChronoDuration::seconds(31));
    let err = s
        .client
        .check(keyed(check_req(ONAY_PHONE, pb::Channel::Mesaj), KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // A DENY may still be served from stale data.
    let d = decide(&mut s, check_req(RET_PHONE, pb::Channel::Mesaj)).await;
    assert_eq!(d.reason(), pb::Reason::Rejected);
    assert!(d.data_age_ms >= 31_000);
    // A batch that would allow from stale data is retryable as a whole.
    let batch = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: vec![pb::CheckBatchItem {
            recipient: ONAY_PHONE.into(),
            channel: pb::Channel::Mesaj.into(),
            ..Default::default()
        }],
    };
    assert_eq!(
        s.client
            .check_batch(keyed(batch, KEY))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );

    let mut not_serving = false;
    for _ in 0..40 {
        let status = health.check(hreq()).await.unwrap().into_inner().status();
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        not_serving,
        "health must turn NOT_SERVING when the data is stale"
    );

    // Fresh again: allowed again.
    s.app.freshness.mark_confirmed(s.clock.now_utc_for_tests());
    assert_eq!(
        decide(&mut s, check_req(ONAY_PHONE, pb::Channel::Mesaj))
            .await
            .verdict(),
        pb::Verdict::Allow
    );
}

#[tokio::test]
async fn a_server_whose_data_is_not_fresh_yet_is_not_serving_from_its_first_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let s = start_with(&[], false).await;
    let health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    // The very first answers: before the watcher's first tick, which once let a replica
    // still loading say SERVING for a moment.
    assert_eq!(status("").await, ServingStatus::NotServing);
    assert_eq!(
        status("iysgate.v1.ConsentCheck").await,
        ServingStatus::NotServing
    );
    s.app.freshness.mark_confirmed(s.clock.now_utc_for_tests());
    let mut serving = false;
    for _ in 0..40 {
        if status("").await == ServingStatus::Serving {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving, "fresh data must turn health SERVING");
}

#[tokio::test]
async fn an_open_stream_holds_no_slot_while_it_waits_and_capacity_sheds_at_once() {
    // One slot for the whole server.
    let mut s = start(&["--max-in-flight", "1"]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::FilterRequest>(1);
    let mut open = s
        .client
        .clone()
        .filter(keyed(tokio_stream::wrappers::ReceiverStream::new(rx), KEY))
        .await
        .unwrap()
        .into_inner();
    // The stream waits for its client: it holds nothing, so a Check beside it is answered
    // (before the fix, the open stream held the one slot and this was RESOURCE_EXHAUSTED).
    let answer = s
        .client
        .check(keyed(check_req(ONAY_PHONE, pb::Channel::Mesaj), KEY))
        .await
        .unwrap();
    assert_eq!(
        answer.into_inner().decision.unwrap().verdict(),
        pb::Verdict::Allow
    );
    // Its chunks are still answered.
    tx.send(pb::FilterRequest {
        brand_code: BRAND.into(),
        channel: pb::Channel::Mesaj.into(),
        recipients: vec![ONAY_PHONE.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(open.message().await.unwrap().unwrap().allowed_count, 1);
    drop(tx);

    // No slot at all: every call is refused.
    let mut none = start(&["--max-in-flight", "0"]).await;
    let err = none
        .client
        .check(keyed(check_req(ONAY_PHONE, pb::Channel::Mesaj), KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("capacity"), "{}", err.message());
}

#[tokio::test]
async fn a_client_over_its_quota_is_refused_and_others_are_not() {
    const QUOTA_KEY: &str = "iysk_test_key_with_quota";
    let flag = format!(
        "name=limited;sha256={};brands={BRAND};quota=2/5",
        to_hex(&hash_key(QUOTA_KEY))
    );
    let mut s = start(&["--client", &flag]).await;
    let req = || check_req(ONAY_PHONE, pb::Channel::Mesaj);
    // The burst of 5 passes, the next is refused with a RetryInfo of about half a second.
    for _ in 0..5 {
        s.client.check(keyed(req(), QUOTA_KEY)).await.unwrap();
    }
    let refused_at = std::time::Instant::now();
    let err = s.client.check(keyed(req(), QUOTA_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // The refusal is held (default 50 ms) so a client ignoring RetryInfo is slowed.
    let held = refused_at.elapsed();
    assert!(held >= Duration::from_millis(45), "{held:?}");
    assert!(
        err.message().contains("quota of 2 decisions/s"),
        "{}",
        err.message()
    );
    let retry = err.get_details_retry_info().expect("RetryInfo").retry_delay;
    let retry = retry.expect("a delay");
    assert!(
        retry > Duration::from_millis(100) && retry <= Duration::from_millis(500),
        "{retry:?}"
    );
    // Another client, without a quota, is untouched.
    for _ in 0..20 {
        s.client.check(keyed(req(), KEY)).await.unwrap();
    }
    // A batch larger than the burst can never fit and says so.
    let batch = pb::CheckBatchRequest {
        brand_code: BRAND.into(),
        items: (0..6)
            .map(|_| pb::CheckBatchItem {
                recipient: ONAY_PHONE.into(),
                channel: pb::Channel::Mesaj.into(),
                ..Default::default()
            })
            .collect(),
    };
    let err = s
        .client
        .check_batch(keyed(batch, QUOTA_KEY))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("burst of 5"), "{}", err.message());
    // After the refill the client is served again.
    tokio::time::sleep(retry).await;
    s.client.check(keyed(req(), QUOTA_KEY)).await.unwrap();
}

#[tokio::test]
async fn a_quota_paces_a_filter_stream_instead_of_failing_it() {
    const QUOTA_KEY: &str = "iysk_test_key_with_filter_quota";
    let flag = format!(
        "name=lists;sha256={};brands={BRAND};quota=200/100",
        to_hex(&hash_key(QUOTA_KEY))
    );
    let mut s = start(&["--client", &flag]).await;
    let chunk = |first: bool| pb::FilterRequest {
        brand_code: if first { BRAND.into() } else { 0 },
        channel: if first { pb::Channel::Mesaj.into() } else { 0 },
        phones: vec![905_321_111_111; 100],
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut replies = s
        .client
        .filter(keyed(
            tokio_stream::iter(vec![chunk(true), chunk(false), chunk(false)]),
            QUOTA_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut allowed = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        allowed += reply.allowed_count;
    }
    // 300 decisions at 200/s with a burst of 100: the last chunk waits about a second.
    assert_eq!(allowed, 300);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn deadlines_are_honoured() {
    let mut s = start(&[]).await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::FilterRequest>(1);
    let mut req = keyed(tokio_stream::wrappers::ReceiverStream::new(rx), KEY);
    req.set_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let outcome = match s.client.filter(req).await {
        Ok(resp) => resp.into_inner().message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = outcome.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn shutdown_turns_health_off_first_then_drains() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let s = start(&["--shutdown-delay", "300ms"]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let req = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    assert_eq!(
        health.check(req()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );
    s.shutdown.cancel();
    // During the shutdown delay the server still answers, and says it is going away.
    let mut seen_not_serving = false;
    for _ in 0..20 {
        match health.check(req()).await {
            Ok(r) if r.get_ref().status() == ServingStatus::NotServing => {
                seen_not_serving = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(
        seen_not_serving,
        "health turns NOT_SERVING before the listener closes"
    );
    let finished = tokio::time::timeout(Duration::from_secs(5), s.served).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "server stops within the grace period: {finished:?}"
    );
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let s = start(&[]).await;
    let mut client = ServerReflectionClient::new(s.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("list expected")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"iysgate.v1.ConsentCheck".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn cli_filter_streams_a_file_in_chunks() {
    let s = start(&[]).await;
    let file = tempfile_with(&format!(
        "{ONAY_PHONE}\n{RET_PHONE}\n\nnot-a-phone\n0532 111 11 11\n{PENDING_PHONE}\n"
    ));
    let argv = [
        "iysgate",
        "filter",
        "--addr",
        &s.addr,
        "--api-key",
        KEY,
        "--brand",
        "600001",
        "--channel",
        "MESAJ",
        "--chunk",
        "2",
        file.to_str().unwrap(),
    ];
    let Command::Filter(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let (items, allowed) = iysgate::cli::client::filter(&args).await.unwrap();
    assert_eq!(
        (items, allowed),
        (5, 2),
        "blank lines are skipped; chunks of 2 stay in order"
    );
}
