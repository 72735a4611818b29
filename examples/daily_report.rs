//! A day of the demo brand Anadolu Market (600001), end to end on the embedded default, and
//! the daily action report it ends with. Everything runs in this process on a manual clock
//! (so the report repeats run after run): the mock İYS over real HTTP, an evidence file, the
//! demo data set in the index, and the uploader.
//!
//! The day (Tuesday 2026-11-24, Turkey time):
//! - the demo data set (100 000 records, seed 2026) is what the index holds at the start;
//! - a CSV of 600 consents collected at the shop counters is imported, four rows of it bad;
//! - the uploader sends the good ones to the mock İYS (batches, polled) and each registered
//!   ONAY becomes ALLOW; İYS refuses the RETs of recipients it has no record of (H175: a
//!   key's first record cannot be a RET), which stay DENY here all the same;
//! - in İYS, 5 recipients whose ONAY was just registered withdraw it (a RET by SMS to 3338);
//!   nothing syncs them here: the index would still ALLOW them;
//! - at 02:30 the next day the day is reconciled: İYS's file verified, the 5 RETs found and
//!   enforced, the report stored; a second run finds the day clean and confirms the
//!   agreement with İYS.
//!
//! Run: `cargo run --release --example daily_report`. The README shows its output.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use iysgate::check::index::{ConsentIndex, EmailKeyer};
use iysgate::check::store::Consents;
use iysgate::domain::time::{format_iys, parse_iys};
use iysgate::domain::{BusinessCalendar, Clock, ManualClock};
use iysgate::domain::{Channel, ConsentStatus, RecipientType};
use iysgate::iys::client::{Credentials, IysClient, RetryPolicy};
use iysgate::iys::mock::{Account, CitizenSource, MockConfig, MockIys};
use iysgate::iys::token::MemoryTokenStore;
use iysgate::write::evidence::{EvidenceStore, FileStore, Recorder};
use iysgate::write::reconcile::Target;
use iysgate::write::uploader::{Backoff, Uploader, UploaderConfig};
use tokio_util::sync::CancellationToken;

const BRAND: u32 = 600_001;
const DAY: &str = "2026-11-24";

/// Row `i` of the shop counters' file: MESAJ ONAYs and a few RETs, some with the shop's
/// address (quoted: it holds a comma); rows 101, 202, 303 and 404 are bad.
fn counter_file(rows: usize) -> String {
    let mut csv = format!("{}\n", iysgate::write::import::HEADER);
    for i in 1..=rows {
        let (status, hour) = if i % 10 == 0 {
            ("RET", 11)
        } else {
            ("ONAY", 9)
        };
        let recipient = match i {
            101 => "+90532123".to_owned(),    // too short
            202 => "not-a-number".to_owned(), // not a phone number
            _ => format!("+90533{i:07}"),
        };
        let date = match i {
            303 => "2026-11-25 09:00:00".to_owned(), // in the future
            404 => "24.11.2026 09:00".to_owned(),    // not İYS's format
            _ => format!("{DAY} {hour:02}:{:02}:00", i % 60),
        };
        let (source, location) = if i % 3 == 0 {
            ("HS_FIZIKSEL_ORTAM", "\"Kadıköy mağazası, İstanbul\"")
        } else {
            ("HS_ISLAK_IMZA", "\"Çankaya mağazası, Ankara\"")
        };
        let _ = writeln!(
            csv,
            "{recipient},BIREYSEL,MESAJ,{status},{source},{date},,signed form,{location},form-{i},pos"
        );
    }
    csv
}

#[tokio::main]
async fn main() {
    let clock = Arc::new(ManualClock::at_turkey(
        parse_iys(&format!("{DAY} 12:00:00")).unwrap(),
    ));
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "demo",
            "demo-password",
            u64::from(iysgate::app::demo::IYS_CODE),
            iysgate::app::demo::BRANDS
                .iter()
                .map(|b| u64::from(b.code))
                .collect(),
        )],
        ..MockConfig::for_tests(clock.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener));

    let dir = std::env::temp_dir().join(format!("iysgate-daily-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calendar = BusinessCalendar::embedded();
    let store = EvidenceStore::from(
        FileStore::open(&dir.join("evidence.log"), calendar.clone())
            .await
            .unwrap(),
    );
    let brands: Vec<_> = iysgate::app::demo::BRANDS
        .iter()
        .map(|b| (b.code, b.name, b.policy))
        .collect();
    iysgate::app::ensure_brands(
        &store,
        iysgate::app::demo::IYS_CODE,
        &brands,
        clock.now_utc(),
    )
    .await
    .unwrap();

    let consents = Arc::new(Consents::new(
        Arc::new(ConsentIndex::new()),
        Arc::new(EmailKeyer::new([1; 16])),
    ));
    let demo = iysgate::app::demo::generate(&consents, 100_000, 2026, clock.now_turkey());
    eprintln!("demo data: {} records", demo.records);

    let file = dir.join("counters.csv");
    std::fs::write(&file, counter_file(600)).unwrap();
    let recorder = Recorder {
        client: "import".into(),
        key_sha256: None,
    };
    let summary = iysgate::write::import::import_file(
        &store,
        &file,
        BRAND,
        &recorder,
        clock.now_turkey(),
        &calendar,
        None,
        |_| {},
    )
    .await
    .unwrap();
    eprintln!(
        "import: {} rows, {} stored, {} refused",
        summary.rows,
        summary.stored,
        summary.refused.len()
    );
    for r in &summary.refused {
        eprintln!("  line {}: {}: {}", r.line, r.field, r.reason);
    }

    let client = IysClient::new(
        &url,
        Credentials {
            username: "demo".into(),
            password: "demo-password".into(),
        },
        Arc::new(MemoryTokenStore::new()),
        RetryPolicy::default(),
    )
    .unwrap();
    let applied = Arc::clone(&consents);
    let uploader = Uploader::new(
        store.clone(),
        HashMap::from([(iysgate::app::demo::IYS_CODE, client.clone())]),
        UploaderConfig {
            min_request_interval: Duration::ZERO,
            poll_delay: Duration::from_millis(200),
            poll_interval: Duration::from_millis(100),
            idle: Duration::from_millis(20),
            backoff: Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(200),
            },
            ..UploaderConfig::default()
        },
        clock.clone(),
        Arc::new(move |key, event| {
            let _ = applied.apply(key, event);
        }),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(uploader.run(stop.clone()));
    while store.upload_counts(clock.now_utc()).await.unwrap().pending > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap();

    // Five recipients withdraw in İYS in the afternoon; nothing syncs it here.
    clock.set_turkey(parse_iys(&format!("{DAY} 15:00:00")).unwrap());
    for i in [1, 2, 3, 4, 5] {
        mock.citizen_change(
            u64::from(BRAND),
            &format!("+90533{i:07}"),
            RecipientType::Bireysel,
            Channel::Mesaj,
            ConsentStatus::Ret,
            CitizenSource::KisaMesaj,
        )
        .unwrap();
    }

    clock.set_turkey(parse_iys("2026-11-25 02:30:00").unwrap());
    let target = Target {
        iys_code: iysgate::app::demo::IYS_CODE,
        brand: BRAND,
        date: DAY.parse().unwrap(),
        confirm: true,
    };
    let first =
        iysgate::write::report::reconcile_day(&client, &store, &*consents, target, clock.now_utc())
            .await
            .unwrap();
    println!("$ iysgate report --brand {BRAND} --date {DAY}   # after the 02:30 run");
    print!("{}", first.table());
    let second =
        iysgate::write::report::reconcile_day(&client, &store, &*consents, target, clock.now_utc())
            .await
            .unwrap();
    let r = second.reconciliation.unwrap();
    println!(
        "\nrun again at {}: {} mismatches; agreement with İYS: {}",
        format_iys(clock.now_turkey()),
        r.mismatches.len(),
        r.agreement.as_str()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
