//! What only the file store does: replay after a restart, a torn last line, a corrupt line,
//! the lock, the file's mode. The behaviour it shares with PostgreSQL is proven by the suite
//! in `tests/evidence_suite`, run against both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::super::Store;
use super::FileStore;
use crate::auth::{RetailerGrant, hash_key};
use crate::domain::recipient::normalise_recipient;
use crate::domain::time::{from_turkey, parse_iys};
use crate::domain::{BrandPolicy, BusinessCalendar, Channel, ConsentStatus, RecipientType, Source};
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};
use crate::write::evidence::{
    Brand, EventId, Evidence, EvidenceError, NewEvent, Provider, Recorded, Recorder, UploadAnswer,
    UploadOutcome,
};

const BRAND: u32 = 600_001;
const LEASE: Duration = Duration::from_mins(1);

/// A new directory of its own under the system temp dir, removed by the caller on success.
fn fresh_path(test: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "iysgate-evidence-unit-{test}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("evidence.jsonl")
}

fn cleanup(path: &Path) {
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

fn at(text: &str) -> DateTime<Utc> {
    from_turkey(parse_iys(text).unwrap())
}

fn onay(key: &str, phone: &str) -> NewEvent {
    NewEvent {
        brand: BRAND,
        recipient: normalise_recipient(phone, Channel::Mesaj.address_kind()).unwrap(),
        recipient_type: RecipientType::Bireysel,
        channel: Channel::Mesaj,
        status: ConsentStatus::Onay,
        source: Source::HsFizikselOrtam,
        consent_date: parse_iys("2026-05-20 09:00:00").unwrap(),
        retailer_access: vec![12_345_678],
        evidence: Evidence {
            method: "signed paper form".into(),
            location: "Kadıköy store".into(),
            document_ref: Some("scan-0042".into()),
            capturing_system: "pos".into(),
        },
        recorder: Recorder {
            client: "pos".into(),
            key_sha256: Some(hash_key("iysk_pos")),
        },
        idempotency_key: key.into(),
    }
}

async fn open(path: &Path) -> FileStore {
    FileStore::open(path, BusinessCalendar::embedded())
        .await
        .unwrap()
}

async fn setup(store: &FileStore) {
    let now = at("2026-05-20 08:00:00");
    let provider = Provider {
        iys_code: 600_000,
        name: "Örnek A.Ş.".into(),
        credentials_ref: "env:IYS_PASSWORD".into(),
    };
    store.add_provider(&provider, now).await.unwrap();
    let brand = Brand {
        brand_code: BRAND,
        iys_code: 600_000,
        name: "Örnek".into(),
        policy: BrandPolicy::default(),
    };
    store.add_brand(&brand, now).await.unwrap();
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

/// Everything a store can be asked, for comparing before and after a restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    events: Vec<(
        crate::write::evidence::StoredEvent,
        Vec<crate::write::evidence::AttemptRecord>,
    )>,
    brands: Vec<Brand>,
    providers: Vec<Provider>,
    clients: Vec<crate::write::evidence::ApiClient>,
    cursor: Option<Cursor>,
    report: Option<serde_json::Value>,
    counts: crate::write::evidence::UploadCounts,
}

impl Snapshot {
    async fn of(s: &FileStore, ids: &[EventId], brand: BrandRef, day: chrono::NaiveDate) -> Self {
        let mut events = Vec::new();
        for &id in ids {
            events.push((
                s.event(id).await.unwrap().unwrap(),
                s.upload_attempts(id).await.unwrap(),
            ));
        }
        Self {
            events,
            brands: s.brands().await.unwrap(),
            providers: s.providers().await.unwrap(),
            clients: s.clients().await.unwrap(),
            cursor: s.cursor(brand, PullSource::Hs).await.unwrap(),
            report: s.report(BRAND, day).await.unwrap(),
            counts: s.upload_counts(at("2026-05-24 00:00:00")).await.unwrap(),
        }
    }
}

/// Everything written is there after a restart, upload states and retry times included.
#[tokio::test]
async fn a_restart_replays_everything() {
    let path = fresh_path("replay");
    let now = at("2026-05-20 10:00:00");
    let store = open(&path).await;
    setup(&store).await;
    store
        .add_client("pos", hash_key("iysk_pos"), now)
        .await
        .unwrap();
    let only = RetailerGrant::Only(vec![12_345_678]);
    store.grant("pos", BRAND, &only, now).await.unwrap();
    let policy = BrandPolicy {
        allow_unregistered_tacir: true,
    };
    store.set_brand_policy(BRAND, policy).await.unwrap();
    let events = [onay("a", "+905321234567"), onay("b", "+905321234568")];
    let mut ids: Vec<EventId> = store
        .record(&events, now)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id())
        .collect();
    let claims = store.claim_uploads(2, LEASE, now).await.unwrap();
    assert_eq!(claims.len(), 2);
    let registered = UploadAnswer {
        http_status: Some(200),
        outcome: UploadOutcome::Registered {
            transaction_id: "e".repeat(64),
            creation_date: parse_iys("2026-05-20 10:00:01").unwrap(),
        },
    };
    store
        .finish_upload(ids[0], 1, &registered, now)
        .await
        .unwrap();
    let retry_at = now + chrono::TimeDelta::seconds(60);
    let retry = UploadAnswer {
        http_status: Some(503),
        outcome: UploadOutcome::Retry {
            retry_at,
            code: Some("H192".into()),
            message: "timeout".into(),
        },
    };
    store.finish_upload(ids[1], 1, &retry, now).await.unwrap();
    // c, captured Mon 2026-05-18, is due Fri 2026-05-22 23:59:59 (19 May is a holiday) and is
    // never uploaded; b is due a day later.
    let mut late = onay("c", "+905321234569");
    late.consent_date = parse_iys("2026-05-18 09:00:00").unwrap();
    ids.push(store.record(&[late], now).await.unwrap()[0].id());
    assert_eq!(
        store
            .expire_overdue(at("2026-05-23 00:00:00"))
            .await
            .unwrap(),
        1
    );
    let brand = BrandRef {
        iys_code: 600_000,
        brand_code: BRAND,
    };
    let cursor = Cursor {
        after: Some("1_x".into()),
        caught_up_at: Some(now),
    };
    store
        .set_cursor(brand, PullSource::Hs, &cursor, now)
        .await
        .unwrap();
    let day = now.date_naive();
    let body = serde_json::json!({"pending": 1});
    store.save_report(BRAND, day, &body, now).await.unwrap();

    let before = Snapshot::of(&store, &ids, brand, day).await;
    drop(store);
    let reopened = open(&path).await;
    let after = Snapshot::of(&reopened, &ids, brand, day).await;
    assert_eq!(before, after);
    let states: Vec<_> = after
        .events
        .iter()
        .map(|(e, _)| e.upload.state.as_str())
        .collect();
    assert_eq!(states, ["registered", "pending", "expired"]);

    // The retry time written before the restart still holds, then comes.
    let early = now + chrono::TimeDelta::seconds(59);
    assert!(
        reopened
            .claim_uploads(10, LEASE, early)
            .await
            .unwrap()
            .is_empty()
    );
    let again = reopened.claim_uploads(10, LEASE, retry_at).await.unwrap();
    assert_eq!((again[0].event.id, again[0].attempt), (ids[1], 2));
    drop(reopened);
    cleanup(&path);
}

/// The lock makes this store single-process, so the claims found in flight at open belong to
/// a process that is gone (a crash, a kill -9): they are claimable at once, not when their
/// lease runs out. A late answer of that process cannot come; İYS's own answer to a repeated
/// upload (v2 is idempotent) settles it.
#[tokio::test]
async fn claims_of_a_crashed_process_are_claimable_at_once_after_open() {
    let path = fresh_path("crashed");
    let now = at("2026-05-20 10:00:00");
    let store = open(&path).await;
    setup(&store).await;
    let events = [onay("a", "+905321234567"), onay("b", "+905321234568")];
    store.record(&events, now).await.unwrap();
    let claimed = store.claim_uploads(10, LEASE, now).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // The process dies holding both claims: nothing is finished.
    drop(store);

    let reopened = open(&path).await;
    let within_lease = now + chrono::TimeDelta::seconds(1);
    let again = reopened
        .claim_uploads(10, LEASE, within_lease)
        .await
        .unwrap();
    let got: Vec<_> = again.iter().map(|c| (c.event.id, c.attempt)).collect();
    let want: Vec<_> = claimed.iter().map(|c| (c.event.id, 2)).collect();
    assert_eq!(
        got, want,
        "released at open, claimed again as a second attempt"
    );
    drop(reopened);
    cleanup(&path);
}

/// A crash mid-write leaves a torn last line, never acknowledged: the open drops it (a whole
/// batch with it, since a batch is one line), keeps every whole line, and writes go on.
#[tokio::test]
async fn a_torn_last_line_is_dropped() {
    let path = fresh_path("torn");
    let now = at("2026-05-20 10:00:00");
    let store = open(&path).await;
    setup(&store).await;
    let first = store
        .record(&[onay("a", "+905321234567")], now)
        .await
        .unwrap()[0]
        .id();
    store
        .record(
            &[onay("b", "+905321234568"), onay("c", "+905321234569")],
            now,
        )
        .await
        .unwrap();
    drop(store);
    assert_eq!(lines(&path), 4, "provider, brand, and one line per batch");

    // Cut the last batch short, as a crash during its write would.
    let text = std::fs::read(&path).unwrap();
    let last_start = text[..text.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let torn_len = last_start + (text.len() - last_start) / 2;
    std::fs::write(&path, &text[..torn_len]).unwrap();

    let store = open(&path).await;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
    assert!(store.event(first).await.unwrap().is_some());
    assert_eq!(
        store.event(EventId(2)).await.unwrap(),
        None,
        "the torn batch is gone whole"
    );
    assert_eq!(store.event(EventId(3)).await.unwrap(), None);
    // The store goes on writing where the whole lines end; ids continue from there.
    let next = store
        .record(&[onay("b", "+905321234568")], now)
        .await
        .unwrap();
    assert_eq!(next, vec![Recorded::New(EventId(2))]);
    drop(store);
    let store = open(&path).await;
    assert_eq!(
        store
            .event(EventId(2))
            .await
            .unwrap()
            .unwrap()
            .event
            .idempotency_key,
        "b"
    );
    drop(store);
    cleanup(&path);
}

/// A whole line that does not read stops the open, naming the line and not its content.
#[tokio::test]
async fn a_corrupt_whole_line_stops_the_open() {
    let path = fresh_path("corrupt");
    let now = at("2026-05-20 10:00:00");
    let store = open(&path).await;
    setup(&store).await;
    store
        .record(&[onay("a", "+905321234567")], now)
        .await
        .unwrap();
    store
        .record(&[onay("b", "+905321234568")], now)
        .await
        .unwrap();
    drop(store);

    let text = std::fs::read_to_string(&path).unwrap();
    let damaged = text.replacen("\"t\":\"events\"", "\"t\":\"evnets\"", 1);
    std::fs::write(&path, damaged).unwrap();
    let err = FileStore::open(&path, BusinessCalendar::embedded())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EvidenceError::CorruptLog { line: 3, .. }),
        "{err}"
    );
    assert!(
        !err.to_string().contains("532"),
        "no recipient in the error: {err}"
    );

    let unknown = text.replacen("\"channel\":\"MESAJ\"", "\"channel\":\"EPOSTA\"", 1);
    std::fs::write(&path, unknown).unwrap();
    let err = FileStore::open(&path, BusinessCalendar::embedded())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EvidenceError::CorruptLog { line: 3, .. }),
        "{err}"
    );
    assert!(
        !err.to_string().contains("532"),
        "no recipient in the error: {err}"
    );
    cleanup(&path);
}

/// One process owns the log; its file is readable by the service's user only.
#[tokio::test]
async fn the_log_is_locked_and_private() {
    let path = fresh_path("lock");
    let store = open(&path).await;
    let err = FileStore::open(&path, BusinessCalendar::embedded())
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::Locked(_)), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(store);
    let reopened = open(&path).await;
    drop(reopened);
    cleanup(&path);
}

/// Reads that find nothing to write leave the file alone: a duplicate batch, an empty claim,
/// an idle expiry and a repeated answer add no line.
#[tokio::test]
async fn nothing_new_writes_nothing() {
    let path = fresh_path("quiet");
    let now = at("2026-05-20 10:00:00");
    let store = open(&path).await;
    setup(&store).await;
    let id = store
        .record(&[onay("a", "+905321234567")], now)
        .await
        .unwrap()[0]
        .id();
    let claim = store.claim_uploads(10, LEASE, now).await.unwrap();
    assert_eq!(claim.len(), 1);
    let retry = UploadAnswer {
        http_status: None,
        outcome: UploadOutcome::Retry {
            retry_at: now,
            code: None,
            message: "connection reset".into(),
        },
    };
    store.finish_upload(id, 1, &retry, now).await.unwrap();
    let written = lines(&path);
    store
        .record(&[onay("a", "+905321234567")], now)
        .await
        .unwrap();
    store.finish_upload(id, 1, &retry, now).await.unwrap();
    assert!(
        store
            .claim_uploads(10, LEASE, at("2026-05-20 09:00:00"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.expire_overdue(now).await.unwrap(), 0);
    assert!(!store.revoke("nobody", BRAND).await.unwrap());
    // A write the plan refuses reaches no line either.
    let mut bad = onay("b", "+905321234568");
    bad.evidence.method = String::new();
    assert!(store.record(&[bad], now).await.is_err());
    assert_eq!(lines(&path), written);
    drop(store);
    cleanup(&path);
}
