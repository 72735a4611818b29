//! How many bytes the consent index spends per record (target: ≤ 24 at 10 million).
//!
//! Builds N phone records (default 10 000 000) of random Turkish mobile numbers (+905xx…) for
//! four brands of different sizes, both recipient types, through the cold-start path
//! (`bulk_load_phones`), then streams 1 % of N updates through `set_phone` (they land in the
//! delta) and compacts. After each step it prints bytes per record measured two ways: the
//! index's own `heap_bytes() / len()`, and the growth of the process's resident set
//! (/proc/self/statm, 4 KiB pages) since before the index existed, divided by `len()`.
//!
//! Run: `cargo run --release --example index_memory -- 10000000`

#![allow(
    clippy::cast_precision_loss,
    reason = "byte counts are printed, not computed on"
)]

use std::time::Instant;

use iysgate::check::index::{ChannelState, ConsentIndex, IndexStatus};
use iysgate::domain::types::{Channel, RecipientType, Source};

/// Brands and their share of the records, in percent.
const BRANDS: [(u32, u64); 4] = [(600_001, 40), (600_002, 30), (600_003, 20), (600_004, 10)];
/// Mobile operator prefixes in use in Turkey (Türk Telekom 50x/55x, Turkcell 53x, Vodafone 54x).
const PREFIXES: [u64; 27] = [
    501, 505, 506, 507, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544,
    545, 546, 547, 548, 549, 551, 552, 555,
];
const PAGE_SIZE: usize = 4096;

/// Deterministic synthetic data.
struct Prng(iysgate::rng::SplitMix64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random mobile number as E.164 digits, e.g. 905321234567.
    fn mobile(&mut self) -> u64 {
        let prefix = PREFIXES[usize::try_from(self.below(PREFIXES.len() as u64)).unwrap_or(0)];
        90_000_000_000 * 10 + prefix * 10_000_000 + self.below(10_000_000)
    }

    fn rtype(&mut self) -> RecipientType {
        if self.below(100) < 15 {
            RecipientType::Tacir
        } else {
            RecipientType::Bireysel
        }
    }

    /// A channel state as İYS data looks: mostly ONAY, some RET, a few pending or absent.
    fn state(&mut self) -> ChannelState {
        let status = match self.below(100) {
            0..60 => IndexStatus::Onay,
            60..85 => IndexStatus::Ret,
            85..90 => IndexStatus::OnayPending,
            90..92 => IndexStatus::RetPending,
            _ => return ChannelState::EMPTY,
        };
        let source =
            Source::ALL[usize::try_from(self.below(Source::ALL.len() as u64)).unwrap_or(0)];
        // Minutes since 2015-01-01: anywhere from mid-2015 to 2025.
        let minute = 250_000 + u32::try_from(self.below(5_500_000)).unwrap_or(0);
        ChannelState::new(status, source, minute)
    }

    /// A phone record with at least one channel set.
    fn record(&mut self) -> [ChannelState; 2] {
        let mut states = [self.state(), self.state()];
        if states == [ChannelState::EMPTY; 2] {
            states[0] = ChannelState::new(IndexStatus::Onay, Source::HsWeb, 5_000_000);
        }
        states
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok());
    pages.unwrap_or(0) * PAGE_SIZE
}

fn report(step: &str, index: &ConsentIndex, rss_before: usize) {
    let len = index.len().max(1) as f64;
    let heap = index.heap_bytes();
    let rss = rss_bytes().saturating_sub(rss_before);
    println!(
        "{step:<28} records {:>11}  heap_bytes/len {:>6.2} B  RSS growth/len {:>6.2} B  \
         (heap {:.1} MiB, RSS +{:.1} MiB)",
        index.len(),
        heap as f64 / len,
        rss as f64 / len,
        heap as f64 / 1_048_576.0,
        rss as f64 / 1_048_576.0,
    );
}

fn main() {
    let n: u64 = match std::env::args().nth(1) {
        None => 10_000_000,
        Some(arg) => match arg.replace('_', "").parse() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("usage: index_memory [RECORDS]  ({arg:?}: {e})");
                std::process::exit(2);
            }
        },
    };

    let rss_before = rss_bytes();
    let index = ConsentIndex::new();
    let mut rng = Prng(iysgate::rng::SplitMix64::new(2024));

    let started = Instant::now();
    for (brand, percent) in BRANDS {
        let count = n * percent / 100;
        let records = (0..count).map(|_| (rng.rtype(), rng.mobile(), rng.record()));
        index.bulk_load_phones(brand, records);
    }
    println!(
        "bulk_load_phones: {n} generated records ({} distinct keys after duplicates) in {:.2} s",
        index.len(),
        started.elapsed().as_secs_f64()
    );
    report("after bulk load", &index, rss_before);

    let updates = n / 100;
    let started = Instant::now();
    for _ in 0..updates {
        let (brand, _) = BRANDS[usize::try_from(rng.below(BRANDS.len() as u64)).unwrap_or(0)];
        let channel = if rng.below(2) == 0 {
            Channel::Arama
        } else {
            Channel::Mesaj
        };
        index.set_phone(brand, rng.rtype(), rng.mobile(), channel, rng.state());
    }
    println!(
        "set_phone: {updates} updates in {:.2} s ({:.0} /s, compactions included)",
        started.elapsed().as_secs_f64(),
        updates as f64 / started.elapsed().as_secs_f64()
    );
    report("after 1 % updates (delta)", &index, rss_before);

    let started = Instant::now();
    index.compact();
    println!("compact: {:.2} s", started.elapsed().as_secs_f64());
    report("after compact", &index, rss_before);
}
