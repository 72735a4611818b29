//! `iysgate import`: a CSV with bad rows reports each by line and field, stores the rest, and a
//! run interrupted part way resumes without storing anything twice.

use std::fmt::Write as _;
use std::path::PathBuf;

use iysgate::domain::time::parse_iys;
use iysgate::domain::{BrandPolicy, BusinessCalendar};
use iysgate::write::evidence::{Brand, EvidenceStore, FileStore, Provider, Recorder};
use iysgate::write::import::{HEADER, import_file};

const BRAND: u32 = 600_001;
const NOW: &str = "2026-05-20 12:00:00";

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iysgate-import-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn store(dir: &std::path::Path) -> EvidenceStore {
    let store = EvidenceStore::from(
        FileStore::open(&dir.join("evidence.log"), BusinessCalendar::embedded())
            .await
            .unwrap(),
    );
    let now = chrono::Utc::now();
    store
        .add_provider(
            &Provider {
                iys_code: 600_000,
                name: "Anadolu".into(),
                credentials_ref: "env:IYSGATE_IYS_PASSWORD".into(),
            },
            now,
        )
        .await
        .unwrap();
    store
        .add_brand(
            &Brand {
                brand_code: BRAND,
                iys_code: 600_000,
                name: "Anadolu Market".into(),
                policy: BrandPolicy::default(),
            },
            now,
        )
        .await
        .unwrap();
    store
}

/// `good` valid rows (every other one with a quoted location holding a comma), with a future
/// date on line 3, a bad phone on line 6 and an unclosed quote on line 8.
fn csv(good: usize) -> String {
    let mut text = format!("{HEADER}\n");
    let mut n = 0;
    for line in 2.. {
        let row = match line {
            3 => "+905320000003,BIREYSEL,MESAJ,ONAY,HS_WEB,2026-06-01 10:00:00,,web form,https://ornek.com.tr,,crm".to_owned(),
            6 => "0000,BIREYSEL,MESAJ,RET,HS_WEB,2026-05-19 10:00:00,,web form,https://ornek.com.tr,,crm".to_owned(),
            8 => "+905320000008,BIREYSEL,MESAJ,ONAY,HS_WEB,2026-05-19 10:00:00,,web form,\"Kadıköy, İstanbul,,crm".to_owned(),
            _ if n < good => {
                n += 1;
                let location = if n % 2 == 0 {
                    "\"Kadıköy mağazası, İstanbul\""
                } else {
                    "https://ornek.com.tr"
                };
                format!("+9053210{n:05},BIREYSEL,MESAJ,ONAY,HS_WEB,2026-05-19 10:00:00,,web form,{location},form-7,crm")
            }
            _ => break,
        };
        text.push_str(&row);
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_an_interrupted_run_resumes_without_duplicates() {
    let dir = temp_dir();
    let file = dir.join("consents.csv");
    std::fs::write(&file, csv(2_500)).unwrap();
    let store = store(&dir).await;
    let recorder = Recorder {
        client: "import".into(),
        key_sha256: None,
    };
    let now = parse_iys(NOW).unwrap();
    let calendar = BusinessCalendar::embedded();

    // A run that stops after its first chunk of 1 000 stored rows, as a crash would.
    let first = import_file(
        &store,
        &file,
        BRAND,
        &recorder,
        now,
        &calendar,
        Some(1),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(first.stored, 1_000);
    assert_eq!(first.already_stored, 0);

    // Running the file again stores only the rest, and reports both bad rows by line.
    let mut seen = 0;
    let second = import_file(&store, &file, BRAND, &recorder, now, &calendar, None, |p| {
        seen = p.rows;
    })
    .await
    .unwrap();
    assert_eq!(second.rows, 2_503);
    assert_eq!(seen, 2_503, "progress reports every row read");
    assert_eq!(second.already_stored, 1_000);
    assert_eq!(second.stored, 1_500);
    let refused: Vec<(usize, &str)> = second
        .refused
        .iter()
        .map(|r| (r.line, r.field.as_str()))
        .collect();
    assert_eq!(
        refused,
        vec![(3, "consent_date"), (6, "recipient"), (8, "line")]
    );
    assert!(
        second.refused[0].reason.starts_with("H162"),
        "{:?}",
        second.refused[0]
    );

    // Everything is stored once.
    let day = chrono::Duration::days(1);
    let utc = iysgate::domain::time::from_turkey(now);
    let stored = store
        .events_between(BRAND, utc - day, utc + day)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2_500);
    let quoted = stored
        .iter()
        .filter(|e| e.event.evidence.location == "Kadıköy mağazası, İstanbul")
        .count();
    assert_eq!(quoted, 1_250, "quoted fields keep their commas");
    let third = import_file(
        &store,
        &file,
        BRAND,
        &recorder,
        now,
        &calendar,
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((third.stored, third.already_stored), (0, 2_500));
}

#[tokio::test]
async fn a_file_without_the_header_is_refused() {
    let dir = temp_dir();
    let file = dir.join("bad.csv");
    std::fs::write(&file, "recipient,status\n+905321234567,ONAY\n").unwrap();
    let store = store(&dir).await;
    let err = import_file(
        &store,
        &file,
        BRAND,
        &Recorder {
            client: "import".into(),
            key_sha256: None,
        },
        parse_iys(NOW).unwrap(),
        &BusinessCalendar::embedded(),
        None,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("header"), "{err}");
}

#[tokio::test]
async fn the_daily_report_counts_the_days_events_and_their_uploads() {
    use iysgate::write::evidence::{UploadAnswer, UploadOutcome};
    let dir = temp_dir();
    let file = dir.join("consents.csv");
    // Collected an hour ago (real time: the store records at the real now).
    let turkey_now = iysgate::domain::time::to_turkey(chrono::Utc::now());
    let collected = iysgate::domain::time::format_iys(turkey_now - chrono::Duration::hours(1));
    let mut text = format!("{HEADER}\n");
    for n in 0..30 {
        writeln!(
            text,
            "+9053220{n:05},BIREYSEL,MESAJ,ONAY,HS_WEB,{collected},,web form,https://ornek.com.tr,,crm"
        )
        .unwrap();
    }
    std::fs::write(&file, text).unwrap();
    let store = store(&dir).await;
    let recorder = Recorder {
        client: "import".into(),
        key_sha256: None,
    };
    let summary = import_file(
        &store,
        &file,
        BRAND,
        &recorder,
        turkey_now,
        &BusinessCalendar::embedded(),
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(summary.stored, 30);
    // İYS registers two and refuses one.
    let now = chrono::Utc::now();
    let claims = store
        .claim_uploads(3, std::time::Duration::from_mins(1), now)
        .await
        .unwrap();
    assert_eq!(claims.len(), 3);
    for (i, claim) in claims.iter().enumerate() {
        let outcome = if i == 0 {
            UploadOutcome::Rejected {
                code: "H175".into(),
                message: "already RET".into(),
            }
        } else {
            UploadOutcome::Registered {
                transaction_id: format!("{i:064x}"),
                creation_date: parse_iys(NOW).unwrap(),
            }
        };
        let answer = UploadAnswer {
            http_status: Some(200),
            outcome,
        };
        store
            .finish_upload(claim.event.id, claim.attempt, &answer, now)
            .await
            .unwrap();
    }
    let today = iysgate::domain::time::to_turkey(now).date();
    let report = iysgate::write::report::daily_report(&store, BRAND, today, now)
        .await
        .unwrap();
    assert_eq!(report.recorded_total, 30);
    assert_eq!(report.recorded.get("MESAJ BIREYSEL ONAY HS_WEB"), Some(&30));
    assert_eq!((report.registered, report.pending), (2, 27));
    assert_eq!(report.refused.get("H175"), Some(&1));
    assert!(
        report.table().contains("1  refused H175"),
        "{}",
        report.table()
    );
    assert!(report.csv().contains("uploads,registered,2\n"));
    // Another day holds none of them.
    let other =
        iysgate::write::report::daily_report(&store, BRAND, today - chrono::Duration::days(1), now)
            .await
            .unwrap();
    assert_eq!(other.recorded_total, 0);
}

/// Runs `rows` (after the header) through an import into a fresh store; the summary.
async fn import_rows(rows: &[&str]) -> (iysgate::write::import::ImportSummary, EvidenceStore) {
    let dir = temp_dir();
    let file = dir.join("rows.csv");
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let store = store(&dir).await;
    let summary = import_file(
        &store,
        &file,
        BRAND,
        &Recorder {
            client: "import".into(),
            key_sha256: None,
        },
        parse_iys(NOW).unwrap(),
        &BusinessCalendar::embedded(),
        None,
        |_| {},
    )
    .await
    .unwrap();
    (summary, store)
}

/// A retailer code that is not a number, or does not fit in 32 bits, is refused naming
/// retailer_access; neither is stored as retailer 0 (or as the code's low 32 bits).
#[tokio::test]
async fn retailer_codes_that_are_not_codes_are_refused_by_field() {
    let row = |access: &str| {
        format!(
            "+905320000011,BIREYSEL,MESAJ,ONAY,HS_WEB,2026-05-19 10:00:00,{access},web form,https://ornek.com.tr,,crm"
        )
    };
    let rows = [row("4294967297"), row("10000001;abc"), row("10000001")];
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let (summary, _) = import_rows(&rows).await;
    let refused: Vec<(usize, &str)> = summary
        .refused
        .iter()
        .map(|r| (r.line, r.field.as_str()))
        .collect();
    assert_eq!(
        refused,
        vec![(2, "retailer_access"), (3, "retailer_access")]
    );
    assert!(
        summary.refused[0].reason.contains("4294967295"),
        "{:?}",
        summary.refused[0]
    );
    assert_eq!(summary.stored, 1);
}

/// The import normalises recipients as RecordConsent and Check do.
#[tokio::test]
async fn the_import_stores_recipients_in_the_form_a_check_finds_them() {
    let (summary, store) = import_rows(&[
        "+90 532 999 12 34,BIREYSEL,MESAJ,ONAY,HS_WEB,2026-05-19 10:00:00,,web form,https://ornek.com.tr,,crm",
    ])
    .await;
    assert!(summary.refused.is_empty(), "{:?}", summary.refused);
    assert_eq!(summary.stored, 1);
    let utc = iysgate::domain::time::from_turkey(parse_iys(NOW).unwrap());
    let day = chrono::Duration::days(2);
    let stored = store
        .events_between(BRAND, utc - day, utc + day)
        .await
        .unwrap();
    assert_eq!(stored[0].event.recipient.to_string(), "+905329991234");
}
