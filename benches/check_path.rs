//! The check path without the network: recipient normalisation, one unary check, and a
//! Filter chunk (phones in the packed numeric form, phones as text, e-mails as text).
//! Why: these are what every Check and every Filter item pays on the server; the gRPC
//! load tests measure the rest. A plain `HashMap<u64, u32>` lookup is measured in the same
//! run as the floor a decision cannot beat.
//!
//! Run: `cargo bench --bench check_path` (or `make bench`). The data set is the demo
//! generator's (`IYSGATE_BENCH_RECORDS`, default 1 000 000 records).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use divan::{Bencher, counter::ItemsCount};
use iysgate::app::demo;
use iysgate::check::index::{ConsentIndex, EmailKeyer};
use iysgate::check::store::Consents;
use iysgate::check::{Checker, FilterOutcome, FilterSpec, Freshness, Query};
use iysgate::clock::SystemClock;
use iysgate::domain::recipient::{normalise_email, normalise_phone};
use iysgate::domain::{BusinessCalendar, Channel, Clock, Purpose, RecipientType};

const CHUNK: usize = 10_000;

fn main() {
    divan::main();
}

struct Fixture {
    checker: Checker,
    phones: Vec<u64>,
    phone_texts: Vec<String>,
    emails: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let records = std::env::var("IYSGATE_BENCH_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let index = Arc::new(ConsentIndex::new());
        let keyer = Arc::new(EmailKeyer::new([7; 16]));
        let consents = Consents::new(Arc::clone(&index), Arc::clone(&keyer));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        demo::generate(&consents, records, 2026, clock.now_turkey());
        let freshness = Arc::new(Freshness::new());
        freshness.mark_confirmed(clock.now_utc() + chrono::Duration::days(1));
        let checker = Checker::new(
            index,
            keyer,
            freshness,
            Arc::new(BusinessCalendar::embedded()),
            clock,
            Duration::from_hours(1),
        );
        // Half of the chunk is recipients the brand has records for, half are misses.
        let (mut phones, mut emails) = (Vec::new(), Vec::new());
        consents.records().for_each(|key, _| {
            if key.brand != demo::BRANDS[0].code || key.recipient_type != RecipientType::Bireysel {
                return;
            }
            match &key.recipient {
                iysgate::domain::Recipient::Phone(p) if phones.len() < CHUNK / 2 => {
                    phones.push(p.digits());
                }
                iysgate::domain::Recipient::Email(e) if emails.len() < CHUNK / 2 => {
                    emails.push(e.as_str().to_owned());
                }
                _ => {}
            }
        });
        for i in 0..CHUNK / 2 {
            phones.push(905_000_000_000 + i as u64 * 7919);
            emails.push(format!("missing.{i}@example.com"));
        }
        let phone_texts = phones
            .iter()
            .map(|p| format!("0{}", p - 900_000_000_000))
            .collect();
        Fixture {
            checker,
            phones,
            phone_texts,
            emails,
        }
    })
}

fn spec(channel: Channel) -> FilterSpec {
    FilterSpec {
        brand: demo::BRANDS[0].code,
        channel,
        recipient_type: RecipientType::Bireysel,
        retailer: None,
        purpose: Purpose::Commercial,
    }
}

#[divan::bench(args = ["05321234567", "+90 (532) 123 45 67", "5321234567"])]
fn normalise_phone_text(input: &str) {
    black_box(normalise_phone(black_box(input))).ok();
}

#[divan::bench]
fn normalise_email_text() {
    black_box(normalise_email(black_box(
        "  Ayse.Yilmaz+news@Example.COM.tr ",
    )))
    .ok();
}

#[divan::bench(sample_count = 1000, sample_size = 64)]
fn check_one_phone(bencher: Bencher) {
    let f = fixture();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % f.phone_texts.len();
        let q = Query {
            brand: demo::BRANDS[0].code,
            recipient: &f.phone_texts[i],
            channel: Channel::Mesaj,
            recipient_type: RecipientType::Bireysel,
            retailer: None,
            purpose: Purpose::Commercial,
        };
        black_box(f.checker.check(&q)).ok();
    });
}

#[divan::bench]
fn filter_chunk_packed_phones(bencher: Bencher) {
    let f = fixture();
    let mut out = FilterOutcome::default();
    bencher
        .counter(ItemsCount::new(f.phones.len()))
        .bench_local(|| {
            f.checker
                .filter_phones(&spec(Channel::Mesaj), &f.phones, &mut out)
                .ok();
            black_box(out.allowed_count)
        });
}

#[divan::bench]
fn filter_chunk_phone_texts(bencher: Bencher) {
    let f = fixture();
    let mut out = FilterOutcome::default();
    bencher
        .counter(ItemsCount::new(f.phone_texts.len()))
        .bench_local(|| {
            f.checker
                .filter_recipients(&spec(Channel::Mesaj), &f.phone_texts, &mut out)
                .ok();
            black_box(out.allowed_count)
        });
}

#[divan::bench]
fn filter_chunk_emails(bencher: Bencher) {
    let f = fixture();
    let mut out = FilterOutcome::default();
    bencher
        .counter(ItemsCount::new(f.emails.len()))
        .bench_local(|| {
            f.checker
                .filter_recipients(&spec(Channel::Eposta), &f.emails, &mut out)
                .ok();
            black_box(out.allowed_count)
        });
}

/// The floor: one foldhash `HashMap<u64, u32>` probe per phone of the same chunk.
#[divan::bench]
fn baseline_hashmap_chunk(bencher: Bencher) {
    let f = fixture();
    let map: std::collections::HashMap<u64, u32, foldhash::fast::RandomState> =
        f.phones.iter().take(CHUNK / 2).map(|&p| (p, 1)).collect();
    bencher
        .counter(ItemsCount::new(f.phones.len()))
        .bench_local(|| {
            let mut allowed = 0u32;
            for p in &f.phones {
                allowed += map.get(p).copied().unwrap_or(0);
            }
            black_box(allowed)
        });
}
