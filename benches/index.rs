//! Lookup cost of the consent index (`iysgate::check::index`), the innermost step of every check.
//!
//! What it measures, over a table of N phone (or e-mail) records in one brand (N = 1 M; also
//! 10 M with `IYSGATE_BENCH_BIG=1`), looking up random keys out of 65 536 prepared ones:
//! - `phone_hit` / `phone_miss`: one `phone()` call, right after a compaction (empty delta,
//!   readers skip it);
//! - `phone_hit_with_delta`: with N/64 pending updates in the delta (the steady state while the
//!   sync worker writes), so every lookup also takes a delta shard's read lock;
//! - `phone_hit_while_writing`: while another thread applies a steady stream of `set_phone`
//!   updates to random records (RATE per second, 0 = as fast as it can), compactions included.
//!   On a 2-core machine the writer has a core of its own; compare with `phone_hit_with_delta`
//!   to see that reads are not held up by writes;
//! - `phone_batch_hit*` / `email_batch_hit`: `phones()` / `emails()` with 1024 keys per call
//!   (the CheckBatch/Filter path); divan reports time per call and keys per second;
//! - `email_hit` / `email_miss`, and `email_keyer` (hashing one address, paid per e-mail check);
//! - `baseline_hashbrown_hit`: a plain `hashbrown::HashMap<u64, [u32; 2], foldhash RandomState>`
//!   holding the same keys, measured in the same run as the yardstick: no concurrency at all,
//!   and 19–39 B per record against the index's ≈ 17–18 (`examples/index_memory.rs`).
//!
//! Single lookups in a loop are throughput figures, not single-request latency: the baseline's
//! lookups overlap their cache misses; the index's cannot fully, because every `phone()` call
//! pays fenced atomics (one `ArcSwap` load, plus a read lock when the delta is not empty). The
//! batch calls pay those once per 256 keys and get the overlap back.
//!
//! Run: `cargo bench --bench index` (add `IYSGATE_BENCH_BIG=1` for 10 M records; building the
//! 10 M fixtures takes a few seconds and about 1.5 GB). On a shared machine compare rows of one
//! run, not runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use divan::Bencher;
use hashbrown::HashMap;
use iysgate::check::index::{ChannelState, ConsentIndex, EmailKey, EmailKeyer, IndexStatus};
use iysgate::domain::types::{Channel, RecipientType, Source};

const BRAND: u32 = 700_001;
/// Prepared keys per bench: more than the caches hold once their records are looked up.
const LOOKUPS: usize = 1 << 16;
/// Numbers per batch call in the batch benches.
const BATCH: usize = 1024;
const SMALL: usize = 1_000_000;
const BIG: usize = 10_000_000;
const PREFIXES: [u64; 12] = [501, 505, 506, 530, 532, 533, 535, 538, 541, 542, 544, 555];

fn main() {
    divan::main();
}

fn sizes() -> Vec<usize> {
    if std::env::var_os("IYSGATE_BENCH_BIG").is_some_and(|v| v == "1") {
        vec![SMALL, BIG]
    } else {
        vec![SMALL]
    }
}

/// Deterministic synthetic data.
struct Prng(iysgate::rng::SplitMix64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn mobile(&mut self) -> u64 {
        let prefix = PREFIXES[self.below(PREFIXES.len())];
        900_000_000_000 + prefix * 10_000_000 + self.next() % 10_000_000
    }

    fn rtype(&mut self) -> RecipientType {
        if self.below(100) < 15 {
            RecipientType::Tacir
        } else {
            RecipientType::Bireysel
        }
    }
}

fn onay(minute: u32) -> ChannelState {
    ChannelState::new(IndexStatus::Onay, Source::HsWeb, minute)
}

fn stored_key(rtype: RecipientType, digits: u64) -> u64 {
    match rtype {
        RecipientType::Bireysel => digits,
        RecipientType::Tacir => digits | 1 << 63,
    }
}

type Record = (RecipientType, u64, [ChannelState; 2]);

struct PhoneFixture {
    records: Vec<Record>,
    index: ConsentIndex,
    with_delta: ConsentIndex,
    baseline: HashMap<u64, [u32; 2], foldhash::fast::RandomState>,
    hits: Vec<(RecipientType, u64)>,
    misses: Vec<(RecipientType, u64)>,
}

fn phone_fixture(n: usize) -> &'static PhoneFixture {
    static FIXTURES: [OnceLock<PhoneFixture>; 2] = [OnceLock::new(), OnceLock::new()];
    FIXTURES[usize::from(n == BIG)].get_or_init(|| {
        let mut rng = Prng(iysgate::rng::SplitMix64::new(n as u64));
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let minute = u32::try_from(i).unwrap_or(u32::MAX);
                (
                    rng.rtype(),
                    rng.mobile(),
                    [onay(minute), ChannelState::EMPTY],
                )
            })
            .collect();
        let index = ConsentIndex::new();
        index.bulk_load_phones(BRAND, records.iter().copied());
        let with_delta = ConsentIndex::new();
        with_delta.bulk_load_phones(BRAND, records.iter().copied());
        for _ in 0..n / 64 {
            let (rtype, digits, _) = records[rng.below(n)];
            with_delta.set_phone(BRAND, rtype, digits, Channel::Mesaj, onay(1));
        }
        let mut baseline = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for &(rtype, digits, [arama, mesaj]) in &records {
            baseline.insert(stored_key(rtype, digits), [arama.raw(), mesaj.raw()]);
        }
        let hits = (0..LOOKUPS)
            .map(|_| {
                let (rtype, digits, _) = records[rng.below(n)];
                (rtype, digits)
            })
            .collect();
        let mut misses = Vec::with_capacity(LOOKUPS);
        while misses.len() < LOOKUPS {
            let (rtype, digits) = (rng.rtype(), rng.mobile());
            if !baseline.contains_key(&stored_key(rtype, digits)) {
                misses.push((rtype, digits));
            }
        }
        PhoneFixture {
            records,
            index,
            with_delta,
            baseline,
            hits,
            misses,
        }
    })
}

struct EmailFixture {
    keyer: EmailKeyer,
    index: ConsentIndex,
    hits: Vec<EmailKey>,
    misses: Vec<EmailKey>,
}

fn email_fixture(n: usize) -> &'static EmailFixture {
    static FIXTURES: [OnceLock<EmailFixture>; 2] = [OnceLock::new(), OnceLock::new()];
    FIXTURES[usize::from(n == BIG)].get_or_init(|| {
        let keyer = EmailKeyer::new(*b"bench-secret-key");
        let mut rng = Prng(iysgate::rng::SplitMix64::new(n as u64 + 1));
        let address = |i: usize| format!("musteri.{i}@ornek-{}.com.tr", i % 97);
        let index = ConsentIndex::new();
        let records = (0..n).map(|i| (keyer.key(RecipientType::Bireysel, &address(i)), onay(1)));
        index.bulk_load_emails(BRAND, records);
        let hits = (0..LOOKUPS)
            .map(|_| keyer.key(RecipientType::Bireysel, &address(rng.below(n))))
            .collect();
        let misses = (0..LOOKUPS)
            .map(|i| keyer.key(RecipientType::Bireysel, &address(n + i)))
            .collect();
        EmailFixture {
            keyer,
            index,
            hits,
            misses,
        }
    })
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn phone_hit(bencher: Bencher, n: usize) {
    let f = phone_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        let (rtype, digits) = f.hits[i];
        f.index.phone(BRAND, rtype, digits)
    });
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn phone_miss(bencher: Bencher, n: usize) {
    let f = phone_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        let (rtype, digits) = f.misses[i];
        f.index.phone(BRAND, rtype, digits)
    });
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn phone_hit_with_delta(bencher: Bencher, n: usize) {
    let f = phone_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        let (rtype, digits) = f.hits[i];
        f.with_delta.phone(BRAND, rtype, digits)
    });
}

/// Batch lookups (`ConsentIndex::phones`), BATCH numbers per call: the Filter/CheckBatch path.
#[divan::bench(args = sizes(), sample_count = 200)]
fn phone_batch_hit(bencher: Bencher, n: usize) {
    phone_batch(bencher, &phone_fixture(n).index, n);
}

#[divan::bench(args = sizes(), sample_count = 200)]
fn phone_batch_hit_with_delta(bencher: Bencher, n: usize) {
    phone_batch(bencher, &phone_fixture(n).with_delta, n);
}

fn phone_batch(bencher: Bencher, index: &ConsentIndex, n: usize) {
    let f = phone_fixture(n);
    // One record type per call, as a Filter request has; the hits hold both types.
    let numbers: Vec<u64> = f.hits.iter().map(|&(_, digits)| digits).collect();
    let mut out = Vec::with_capacity(BATCH);
    let mut i = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            i = (i + BATCH) % LOOKUPS;
            out.clear();
            index.phones(
                BRAND,
                RecipientType::Bireysel,
                &numbers[i..i + BATCH],
                &mut out,
            );
            out.len()
        });
}

/// RATE = updates per second applied by the writer thread (0 = unthrottled).
#[divan::bench(consts = [100_000, 0], args = sizes(), sample_size = 1024, min_time = 2)]
fn phone_hit_while_writing<const RATE: u64>(bencher: Bencher, n: usize) {
    let f = phone_fixture(n);
    let index = Arc::new(ConsentIndex::new());
    index.bulk_load_phones(BRAND, f.records.iter().copied());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (index, stop) = (Arc::clone(&index), Arc::clone(&stop));
        // Updates of random existing records, as the sync stream mostly brings. (Not the
        // reader's keys: the writer would warm the caches for the reader.)
        let keys: Vec<(RecipientType, u64)> = f
            .records
            .iter()
            .map(|&(rtype, digits, _)| (rtype, digits))
            .collect();
        std::thread::spawn(move || {
            let mut rng = Prng(iysgate::rng::SplitMix64::new(99));
            let batch = (RATE / 1000).max(1);
            let mut next_tick = Instant::now();
            let mut minute = 0_u32;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..batch {
                    let (rtype, digits) = keys[rng.below(keys.len())];
                    minute = minute.wrapping_add(1) & 0x00FF_FFFF;
                    index.set_phone(BRAND, rtype, digits, Channel::Arama, onay(minute));
                }
                if RATE > 0 {
                    next_tick += Duration::from_millis(1);
                    std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
                }
            }
        })
    };
    // Let the writer fill the delta first.
    std::thread::sleep(Duration::from_millis(200));
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        let (rtype, digits) = f.hits[i];
        index.phone(BRAND, rtype, digits)
    });
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .expect("the bench writer thread does not panic");
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn email_hit(bencher: Bencher, n: usize) {
    let f = email_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        f.index.email(BRAND, f.hits[i])
    });
}

#[divan::bench(args = sizes(), sample_count = 200)]
fn email_batch_hit(bencher: Bencher, n: usize) {
    let f = email_fixture(n);
    let mut out = Vec::with_capacity(BATCH);
    let mut i = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            i = (i + BATCH) % LOOKUPS;
            out.clear();
            f.index.emails(BRAND, &f.hits[i..i + BATCH], &mut out);
            out.len()
        });
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn email_miss(bencher: Bencher, n: usize) {
    let f = email_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        f.index.email(BRAND, f.misses[i])
    });
}

#[divan::bench(sample_size = 1024, sample_count = 200)]
fn email_keyer(bencher: Bencher) {
    let f = email_fixture(SMALL);
    bencher.bench_local(|| {
        f.keyer.key(
            RecipientType::Bireysel,
            divan::black_box("musteri.123456@ornek-42.com.tr"),
        )
    });
}

#[divan::bench(args = sizes(), sample_size = 1024, sample_count = 200)]
fn baseline_hashbrown_hit(bencher: Bencher, n: usize) {
    let f = phone_fixture(n);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % LOOKUPS;
        let (rtype, digits) = f.hits[i];
        f.baseline.get(&stored_key(rtype, digits)).copied()
    });
}
