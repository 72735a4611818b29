//! The in-memory consent index: for every (brand, recipientType, address) it holds the current
//! per-channel consent state, and answers "what is the state of channel C?" without leaving the
//! process: about 80–160 ns for one lookup, 30–60 ns per key in batches, at 1–10 million records
//! (`benches/index.rs`). The check path reads it; the sync worker writes it.
//!
//! # Keys
//!
//! - Phones: the E.164 digits as a `u64` (905321234567 < 10^15 < 2^50) with the recipientType in
//!   bit 63 (set for TACIR), so BIREYSEL and TACIR records of one number are independent keys.
//! - E-mails: [`EmailKey`], a 128-bit SipHash-1-3 of (recipientType, normalised address) under a
//!   random per-process key ([`EmailKeyer`]). The index never compares addresses, only these
//!   hashes, so it relies on them never colliding: a collision would give one recipient another's
//!   ONAY, a false ALLOW. For n keys the chance of any collision is about n²/2^129 (≈ 1.5·10^-25
//!   at 10 million), and because the key is secret and random per process nobody outside can
//!   search for a colliding address.
//!
//! One record per key holds every channel of that address kind: a phone record holds
//! [ARAMA, MESAJ], an e-mail record holds EPOSTA. Each channel is a [`ChannelState`] packed in a
//! `u32` (status, source, consentDate minute).
//!
//! # Memory layout, and why
//!
//! The target is ≤ 24 bytes per record at 10 million records, everything included. A hash map of
//! 16-byte entries costs 19–39 B/record depending on where it is in its doubling cycle (load
//! factor ≤ 7/8, one control byte per slot, power-of-two capacity), and briefly twice that while
//! it grows. So the bulk of the data lives in a **frozen table** per brand and address kind: a
//! flat, exactly sized array of entries (phones `{key: u64, states: [u32; 2]}` = 16 B, e-mails
//! `{key: [u32; 4], state: u32}` = 20 B, align 4), grouped into buckets by the top bits of a hash
//! of the key (phones: a multiplicative hash; e-mails: the key's own bits, already a keyed hash),
//! plus a directory of `u32` bucket start offsets. The bucket count is the next power of two
//! ≥ n/4, so a bucket holds about 4 entries (one cache line of phone entries) and the directory
//! costs 1–2 B/record. A lookup is one directory read (two adjacent words) and a linear scan of
//! one small bucket: no probing, no empty slots, no control bytes. Tables are built in O(n) by a
//! stable counting sort on the bucket number; duplicates (the later one wins) and tombstones are
//! dropped during the same pass. Measured at 10 M phone records: 17.2–17.4 B/record by the
//! index's own count, 19–20 B/record of process RSS (`examples/index_memory.rs`); e-mail
//! records cost 20 B plus the same directory share.
//!
//! A frozen table is never modified. Changes go to a **delta**: 64 shards of
//! `RwLock<hashbrown::HashMap>` holding the newest record per changed key; a record whose
//! channels are all EMPTY is a tombstone that hides the frozen entry. When the delta holds more
//! than max(65 536, `frozen_len` / 32) records, the next writer **compacts**: it merges the frozen
//! table and the delta into a new frozen table, publishes it, and removes the merged delta
//! entries. The delta is thus at most ~3 % of the table, about 1 B/record when full.
//!
//! # Concurrency
//!
//! - One `ArcSwap<HashMap<brand, BrandEntry>>` holds, per brand, its stores (deltas) and its
//!   current frozen tables. Adding a brand or publishing a table copies the map (a few Arcs per
//!   brand) under a mutex and swaps it in. A lookup loads it once and never locks for it. (The
//!   tables are not behind `ArcSwap`s of their own because each `ArcSwap` load costs two fenced
//!   atomics, about 25–40 ns a lookup on this machine: the fence stops the CPU overlapping one
//!   lookup's cache misses with the next one's.)
//! - A reader checks the delta shard of its key under that shard's read lock (skipped when the
//!   store's delta counter is 0), then, on a miss, the frozen table; if a newer table has been
//!   published since it loaded the map (a per-store generation number says so) it starts again.
//! - A writer does its read-modify-write of one record (setting ARAMA keeps MESAJ) inside the
//!   shard's write lock, reading the frozen table as the fallback. That makes every update of a
//!   key atomic without a store-wide writer mutex, so writers of different keys proceed in
//!   parallel and no writer waits for a compaction (another writer's compaction, that is: the
//!   writer that crosses the threshold runs the compaction itself, unless one is running).
//! - Compaction (one at a time per store, under a mutex that only compactions and bulk loads
//!   take): (1) copy every shard's entries under its read lock; (2) build the new frozen table
//!   from the old one plus that copy, holding no lock; (3) publish it, then raise the store's
//!   generation; (4) only then, shard by shard in chunks of 256 under the write lock, remove
//!   each copied entry whose delta value is still the copied one (a newer write stays),
//!   decrementing the counter inside the lock.
//!
//!   Why no reader ever sees a value older than one already visible: a delta entry is removed
//!   only after a table holding the same value is published and the generation raised. A reader
//!   that misses in the shard took the read lock after the removal, so it happens after both;
//!   if the map it loaded still had the old table, its generation check fails and it loads the
//!   map again, which now has the new table. A reader that skips the delta because the counter
//!   is 0 read that 0 from a decrement made (inside the lock) after the generation was raised;
//!   every change of the counter is a read-modify-write, so the acquire load synchronises with
//!   it. A writer's fallback read needs no check: it holds the shard lock the removal needs, so
//!   the map it loads already has the new table. The order delta-then-frozen and the order
//!   publish-raise-remove are what the argument rests on (`concurrent_reads_never_go_back`
//!   catches a change to either, though not on every run).
//! - Batch lookups ([`ConsentIndex::phones`], [`ConsentIndex::emails`]) take all 64 shard read
//!   locks of the store for a chunk of 256 keys, then load the brand map, then look up without
//!   any further atomics, in two passes (all directory reads, then all bucket reads) so the
//!   cache misses of many keys overlap. Single lookups cannot do that: the `ArcSwap` load and
//!   the read lock are fenced atomics, and each costs the overlap between consecutive lookups.
//!
//! # What it must never do
//!
//! No I/O, no logging, no allocation (batch lookups only grow the caller's `Vec`) and no waiting
//! on the read path beyond shard read locks: a writer holds a shard's write lock for one insert,
//! or for at most 256 removals during a compaction, and a batch holds read locks for at most
//! 256 lookups (std's `RwLock` queues new readers behind a waiting writer, so a reader can wait
//! that long too); all heavy work, building tables, happens holding no lock readers need. It does
//! not decide: policy (pending deadlines, TACIR defaults, staleness, exemptions) lives in the
//! decision code, and how old the data is belongs to the sync layer.
//!
//! Over 600 lines on purpose: one data structure (frozen table + delta) whose parts only make sense together, with its tests.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};

use arc_swap::ArcSwap;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::domain::types::{Channel, RecipientType, Source};

/// Number of delta shards per store: enough that readers and the writer rarely meet on one lock.
const DELTA_SHARDS: usize = 64;
/// A compaction never starts below this many delta records, so small brands compact rarely.
const MIN_COMPACTION_DELTA: usize = 65_536;
/// The delta may grow to `frozen_len / COMPACTION_DIVISOR` records before a compaction.
const COMPACTION_DIVISOR: usize = 32;
/// Delta entries removed per shard write-lock hold after a compaction (bounds reader waits).
const REMOVE_CHUNK: usize = 256;
/// Keys a batch lookup answers per hold of the delta read locks (bounds writer waits).
const BATCH_CHUNK: usize = 256;
/// Fibonacci hashing multiplier (2^64 / φ): spreads sequential phone numbers over the top bits.
const PHONE_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Bit of a stored phone key that marks a TACIR record.
const TACIR_BIT: u64 = 1 << 63;

// ---------------------------------------------------------------------------------------------
// Channel state
// ---------------------------------------------------------------------------------------------

/// The index's view of one channel's consent status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexStatus {
    /// No record.
    None = 0,
    /// ONAY registered in İYS.
    Onay = 1,
    /// RET registered in İYS.
    Ret = 2,
    /// ONAY collected by the company, not yet accepted by İYS.
    OnayPending = 3,
    /// RET collected by the company, not yet accepted by İYS.
    RetPending = 4,
}

impl IndexStatus {
    fn from_bits(bits: u32) -> Self {
        match bits {
            1 => IndexStatus::Onay,
            2 => IndexStatus::Ret,
            3 => IndexStatus::OnayPending,
            4 => IndexStatus::RetPending,
            _ => IndexStatus::None,
        }
    }
}

/// One channel's state packed in a `u32`: bits 0..3 [`IndexStatus`], bits 3..8
/// [`Source::code`], bits 8..32 the consentDate as minutes since 2015-01-01 00:00 Turkey time
/// (24 bits, enough until 2046).
///
/// A state whose status is [`IndexStatus::None`] carries nothing: [`ChannelState::new`] returns
/// [`ChannelState::EMPTY`] for it and the index stores it as EMPTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(transparent)]
pub struct ChannelState(u32);

impl ChannelState {
    /// No record for this channel.
    pub const EMPTY: ChannelState = ChannelState(0);
    /// The largest storable consent minute (2046-11-24 20:15); later minutes saturate to it.
    pub const MAX_MINUTE: u32 = (1 << 24) - 1;

    const STATUS_MASK: u32 = 0b111;
    const SOURCE_SHIFT: u32 = 3;
    const SOURCE_MASK: u32 = 0b1_1111;
    const MINUTE_SHIFT: u32 = 8;

    #[must_use]
    pub fn new(status: IndexStatus, source: Source, consent_minute: u32) -> Self {
        if status == IndexStatus::None {
            return Self::EMPTY;
        }
        let source = u32::from(source.code()) & Self::SOURCE_MASK;
        let minute = consent_minute.min(Self::MAX_MINUTE);
        Self(u32::from(status as u8) | source << Self::SOURCE_SHIFT | minute << Self::MINUTE_SHIFT)
    }

    /// The status; undefined status bits (5..=7, only reachable through `from_raw`) read as
    /// [`IndexStatus::None`].
    #[must_use]
    pub fn status(self) -> IndexStatus {
        IndexStatus::from_bits(self.0 & Self::STATUS_MASK)
    }

    #[must_use]
    pub fn source(self) -> Option<Source> {
        if self.is_empty() {
            return None;
        }
        Source::from_code(((self.0 >> Self::SOURCE_SHIFT) & Self::SOURCE_MASK) as u8)
    }

    #[must_use]
    pub fn consent_minute(self) -> u32 {
        self.0 >> Self::MINUTE_SHIFT
    }

    /// True when there is no record for this channel.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.status() == IndexStatus::None
    }

    #[must_use]
    pub fn raw(self) -> u32 {
        self.0
    }

    #[must_use]
    pub fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The form the index stores: every empty state is exactly EMPTY, so that a record of empty
    /// states is recognised as a tombstone and equal values compare equal.
    fn normalised(self) -> Self {
        if self.is_empty() { Self::EMPTY } else { self }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and addresses
// ---------------------------------------------------------------------------------------------

/// The index key of an e-mail address: a 128-bit keyed hash of (recipientType, normalised
/// address), made by [`EmailKeyer`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EmailKey(pub u128);

/// Turns normalised e-mail addresses into [`EmailKey`]s with SipHash-1-3 (128-bit output) under
/// a secret key. Give it a fresh random key per process; keys are never persisted, every replica
/// hashes the addresses it loads itself.
#[derive(Clone)]
pub struct EmailKeyer {
    hasher: SipHasher13,
}

impl EmailKeyer {
    #[must_use]
    pub fn new(key: [u8; 16]) -> Self {
        Self {
            hasher: SipHasher13::new_with_key(&key),
        }
    }

    /// The caller normalises the address first (the same code for checks and synced records).
    #[must_use]
    pub fn key(&self, rtype: RecipientType, normalised_email: &str) -> EmailKey {
        let mut hasher = self.hasher;
        // The fixed-width type tag comes first, so (type, address) pairs cannot run together.
        hasher.write_u8(match rtype {
            RecipientType::Bireysel => 0,
            RecipientType::Tacir => 1,
        });
        hasher.write(normalised_email.as_bytes());
        EmailKey(hasher.finish128().as_u128())
    }
}

impl std::fmt::Debug for EmailKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("EmailKeyer").finish_non_exhaustive()
    }
}

/// The address of a record. For e-mails the recipientType is already inside the [`EmailKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexAddress {
    /// E.164 digits without '+', e.g. 905321234567.
    Phone(u64),
    Email(EmailKey),
}

fn phone_key(rtype: RecipientType, digits: u64) -> u64 {
    debug_assert!(
        digits < TACIR_BIT,
        "phone digits {digits} do not fit below the type bit"
    );
    match rtype {
        RecipientType::Bireysel => digits,
        RecipientType::Tacir => digits | TACIR_BIT,
    }
}

/// Index of a phone channel in a phone record, `None` for EPOSTA.
fn phone_slot(channel: Channel) -> Option<usize> {
    match channel {
        Channel::Arama => Some(0),
        Channel::Mesaj => Some(1),
        Channel::Eposta => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Address kinds: how each kind's keys, values and table entries look
// ---------------------------------------------------------------------------------------------

/// What differs between the phone store and the e-mail store.
trait Kind: Sized + 'static {
    /// The key as the delta map and the hash see it.
    type Key: Copy + Eq + Hash + Send + Sync;
    /// One record: all channels of this address kind.
    type Value: Copy + Eq + Send + Sync;
    /// A frozen-table entry: key and value packed without padding.
    type Entry: Copy + Send + Sync;
    const EMPTY: Self::Value;
    /// Placeholder used to size a table before the counting sort fills it.
    const FILLER: Self::Entry;

    /// 64 well-mixed bits; the top bits pick the frozen bucket, bits 32.. the delta shard.
    fn hash(key: Self::Key) -> u64;
    fn entry(key: Self::Key, value: Self::Value) -> Self::Entry;
    fn key_of(entry: &Self::Entry) -> Self::Key;
    fn value_of(entry: &Self::Entry) -> Self::Value;
    fn is_tombstone(value: Self::Value) -> bool;

    /// This kind's store (delta and bookkeeping) in a brand.
    fn store(stores: &BrandStores) -> &Store<Self>;
    /// This kind's published frozen table in a brand entry.
    fn frozen(entry: &BrandEntry) -> &Arc<Frozen<Self>>;
    fn frozen_mut(entry: &mut BrandEntry) -> &mut Arc<Frozen<Self>>;
}

/// A frozen phone entry: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PhoneEntry {
    key: u64,
    states: [ChannelState; 2],
}

/// A frozen e-mail entry: 20 bytes, align 4 (a `u128` key would pad it to 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EmailEntry {
    key: [u32; 4],
    state: ChannelState,
}

struct Phones;
struct Emails;

impl Kind for Phones {
    type Key = u64;
    type Value = [ChannelState; 2];
    type Entry = PhoneEntry;
    const EMPTY: Self::Value = [ChannelState::EMPTY; 2];
    const FILLER: Self::Entry = PhoneEntry {
        key: 0,
        states: [ChannelState::EMPTY; 2],
    };

    #[inline]
    fn hash(key: u64) -> u64 {
        key.wrapping_mul(PHONE_MULTIPLIER)
    }
    #[inline]
    fn entry(key: u64, states: Self::Value) -> PhoneEntry {
        PhoneEntry { key, states }
    }
    #[inline]
    fn key_of(entry: &PhoneEntry) -> u64 {
        entry.key
    }
    #[inline]
    fn value_of(entry: &PhoneEntry) -> Self::Value {
        entry.states
    }
    #[inline]
    fn is_tombstone(value: Self::Value) -> bool {
        value == Self::EMPTY
    }
    #[inline]
    fn store(stores: &BrandStores) -> &Store<Self> {
        &stores.phones
    }
    #[inline]
    fn frozen(entry: &BrandEntry) -> &Arc<Frozen<Self>> {
        &entry.phones
    }
    fn frozen_mut(entry: &mut BrandEntry) -> &mut Arc<Frozen<Self>> {
        &mut entry.phones
    }
}

impl Kind for Emails {
    type Key = u128;
    type Value = ChannelState;
    type Entry = EmailEntry;
    const EMPTY: Self::Value = ChannelState::EMPTY;
    const FILLER: Self::Entry = EmailEntry {
        key: [0; 4],
        state: ChannelState::EMPTY,
    };

    #[inline]
    fn hash(key: u128) -> u64 {
        // Already a keyed hash: its high half is as good as any mix of it.
        (key >> 64) as u64
    }
    #[inline]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "splitting the key into 32-bit words"
    )]
    fn entry(key: u128, state: ChannelState) -> EmailEntry {
        EmailEntry {
            key: [
                key as u32,
                (key >> 32) as u32,
                (key >> 64) as u32,
                (key >> 96) as u32,
            ],
            state,
        }
    }
    #[inline]
    fn key_of(entry: &EmailEntry) -> u128 {
        let [a, b, c, d] = entry.key;
        u128::from(a) | u128::from(b) << 32 | u128::from(c) << 64 | u128::from(d) << 96
    }
    #[inline]
    fn value_of(entry: &EmailEntry) -> ChannelState {
        entry.state
    }
    #[inline]
    fn is_tombstone(value: ChannelState) -> bool {
        value == ChannelState::EMPTY
    }
    #[inline]
    fn store(stores: &BrandStores) -> &Store<Self> {
        &stores.emails
    }
    #[inline]
    fn frozen(entry: &BrandEntry) -> &Arc<Frozen<Self>> {
        &entry.emails
    }
    fn frozen_mut(entry: &mut BrandEntry) -> &mut Arc<Frozen<Self>> {
        &mut entry.emails
    }
}

// ---------------------------------------------------------------------------------------------
// Frozen table
// ---------------------------------------------------------------------------------------------

/// An immutable bucketed table; see the module doc.
struct Frozen<K: Kind> {
    /// Entries ordered by bucket; within a bucket in no particular order. Only live records.
    entries: Box<[K::Entry]>,
    /// `dir[b]..dir[b + 1]` is bucket `b`'s range in `entries`; `buckets + 1` words.
    dir: Box<[u32]>,
    /// `64 - log2(buckets)`: `hash >> shift` is the bucket.
    shift: u32,
    /// Counts the tables published for this brand and kind; see [`Store::generation`].
    generation: u64,
}

impl<K: Kind> Frozen<K> {
    fn empty() -> Self {
        build::<K, _>(0, 0, std::iter::empty)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    fn get(&self, hash: u64, key: K::Key) -> Option<K::Value> {
        self.find(self.bucket(hash), key)
    }

    /// The entry range of the bucket `hash` falls in.
    #[inline]
    fn bucket(&self, hash: u64) -> (u32, u32) {
        let bucket = bucket_of(hash, self.shift);
        (self.dir[bucket], self.dir[bucket + 1])
    }

    #[inline]
    fn find(&self, (start, end): (u32, u32), key: K::Key) -> Option<K::Value> {
        self.entries[start as usize..end as usize]
            .iter()
            .find(|e| K::key_of(e) == key)
            .map(K::value_of)
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of_val::<[K::Entry]>(&self.entries)
            + std::mem::size_of_val::<[u32]>(&self.dir)
    }
}

/// The bucket of `hash` in a table with `64 - shift` bucket bits.
#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "at most 32 bucket bits (n < 2^32)"
)]
fn bucket_of(hash: u64, shift: u32) -> usize {
    (hash >> shift) as usize
}

/// log2 of the bucket count for `n` records: the next power of two ≥ n/4, at least 2 buckets.
fn bucket_bits(n: usize) -> u32 {
    n.div_ceil(4).next_power_of_two().trailing_zeros().max(1)
}

/// Builds a frozen table in O(n) by a stable counting sort on the bucket number. `source` is
/// called twice (count, then scatter) and must yield the same entries both times; when a key
/// appears more than once the last one wins, and tombstones are dropped. `expected` (the number
/// of live records, or an estimate) only sizes the directory.
///
/// # Panics
/// If `source` yields 2^32 entries or more (64 GiB of phone entries for one brand).
fn build<K: Kind, I: Iterator<Item = K::Entry>>(
    generation: u64,
    expected: usize,
    source: impl Fn() -> I,
) -> Frozen<K> {
    let bits = bucket_bits(expected);
    let shift = 64 - bits;
    let buckets = 1_usize << bits;
    let bucket = |entry: &K::Entry| bucket_of(K::hash(K::key_of(entry)), shift);

    // Pass 1: bucket sizes, stored one slot to the right so the prefix sum gives start offsets.
    let mut dir = vec![0_u32; buckets + 1];
    let mut total = 0_usize;
    for entry in source() {
        dir[bucket(&entry) + 1] += 1;
        total += 1;
    }
    assert!(
        u32::try_from(total).is_ok(),
        "a frozen table holds fewer than 2^32 entries"
    );
    for b in 1..=buckets {
        dir[b] += dir[b - 1];
    }

    // Pass 2: scatter, keeping the source order within each bucket (so the later value wins).
    let mut cursor = dir[..buckets].to_vec();
    let mut entries = vec![K::FILLER; total];
    for entry in source() {
        let slot = &mut cursor[bucket(&entry)];
        entries[*slot as usize] = entry;
        *slot += 1;
    }
    drop(cursor);

    // Pass 3, in place: per bucket, keep the last entry of each key unless it is a tombstone.
    let mut kept = 0_u32;
    for b in 0..buckets {
        let (start, end) = (dir[b] as usize, dir[b + 1] as usize);
        dir[b] = kept;
        for i in start..end {
            let entry = entries[i];
            let key = K::key_of(&entry);
            if K::is_tombstone(K::value_of(&entry))
                || entries[i + 1..end]
                    .iter()
                    .any(|later| K::key_of(later) == key)
            {
                continue;
            }
            entries[kept as usize] = entry;
            kept += 1;
        }
    }
    dir[buckets] = kept;
    entries.truncate(kept as usize);

    Frozen {
        entries: entries.into_boxed_slice(),
        dir: dir.into_boxed_slice(),
        shift,
        generation,
    }
}

// ---------------------------------------------------------------------------------------------
// Store: the delta of one brand and address kind
// ---------------------------------------------------------------------------------------------

/// The delta shard of a key hash: bits 32.., away from the top bits that pick frozen buckets.
#[inline]
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % DELTA_SHARDS
}

type DeltaMap<K> = HashMap<<K as Kind>::Key, <K as Kind>::Value, FixedState>;

/// A delta shard on its own cache lines (128 B: x86 prefetches line pairs), so readers taking
/// one shard's lock do not slow readers of its neighbours.
#[repr(align(128))]
struct Shard<K: Kind>(RwLock<DeltaMap<K>>);

/// The mutable half of one brand's records of one address kind: the delta and its bookkeeping.
/// The frozen half is published in the brand map ([`BrandEntry`]).
struct Store<K: Kind> {
    delta: Box<[Shard<K>]>,
    /// Records in the delta (tombstones included). Changed only by read-modify-writes made while
    /// holding the lock of the shard that changed; see the module doc for why.
    delta_len: AtomicUsize,
    /// Generation of the newest published frozen table. Raised after the table is published and
    /// before any merged entry leaves the delta, so a reader that holds an older table and
    /// misses in the delta can tell that its miss may be stale.
    generation: AtomicU64,
    /// Delta size above which the next writer compacts.
    compact_at: AtomicUsize,
    min_delta: usize,
    /// Live (non-tombstone) records; exact unless writers race a bulk load.
    live: AtomicIsize,
    /// Held by compactions and bulk loads, never by readers or plain writers.
    rebuild: Mutex<()>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding a shard lock cannot leave a hash map half-updated; keep serving.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Kind> Store<K> {
    fn new(min_delta: usize) -> Self {
        Self {
            delta: (0..DELTA_SHARDS)
                .map(|_| Shard(RwLock::new(HashMap::with_hasher(FixedState::default()))))
                .collect(),
            delta_len: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            compact_at: AtomicUsize::new(min_delta),
            min_delta,
            live: AtomicIsize::new(0),
            rebuild: Mutex::new(()),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<DeltaMap<K>> {
        &self.delta[shard_index(hash)].0
    }

    /// The delta's record for `key`, if it has one.
    #[inline]
    fn delta_get(&self, hash: u64, key: K::Key) -> Option<K::Value> {
        if self.delta_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        read(self.shard(hash)).get(&key).copied()
    }

    fn threshold(&self, frozen_len: usize) -> usize {
        self.min_delta.max(frozen_len / COMPACTION_DIVISOR)
    }

    /// A copy of every shard's entries, shard by shard (writers may go on meanwhile).
    fn snapshot(&self) -> Vec<Vec<(K::Key, K::Value)>> {
        self.delta
            .iter()
            .map(|shard| read(&shard.0).iter().map(|(k, v)| (*k, *v)).collect())
            .collect()
    }

    /// Removes the snapshot's entries that still hold the snapshotted value (a newer write
    /// stays), a few at a time so that readers of a shard never wait long.
    fn remove_merged(&self, snapshot: &[Vec<(K::Key, K::Value)>]) {
        for (shard, entries) in self.delta.iter().zip(snapshot) {
            for chunk in entries.chunks(REMOVE_CHUNK) {
                let mut map = write(&shard.0);
                let mut removed = 0;
                for (key, value) in chunk {
                    if let Entry::Occupied(slot) = map.entry(*key)
                        && slot.get() == value
                    {
                        slot.remove();
                        removed += 1;
                    }
                }
                // Inside the lock: see the module doc.
                self.delta_len.fetch_sub(removed, Ordering::AcqRel);
            }
        }
    }

    /// Empties the delta and gives its memory back.
    fn clear(&self) {
        for shard in &self.delta {
            let mut map = write(&shard.0);
            let removed = map.len();
            map.clear();
            map.shrink_to_fit();
            self.delta_len.fetch_sub(removed, Ordering::AcqRel);
        }
    }

    fn len(&self) -> usize {
        usize::try_from(self.live.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn heap_bytes(&self) -> usize {
        let maps: usize = self
            .delta
            .iter()
            .map(|shard| read(&shard.0).allocation_size())
            .sum();
        std::mem::size_of_val::<[Shard<K>]>(&self.delta) + maps
    }
}

// ---------------------------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------------------------

/// The stores of one brand; they live as long as the brand.
struct BrandStores {
    phones: Store<Phones>,
    emails: Store<Emails>,
}

/// One brand as readers find it: its stores and its current frozen tables. The tables sit here
/// rather than behind their own `ArcSwap` so that a lookup pays for one `ArcSwap` load (the
/// brand map), not two: each load costs 25–40 ns of fenced atomics in a stream of lookups.
#[derive(Clone)]
struct BrandEntry {
    stores: Arc<BrandStores>,
    phones: Arc<Frozen<Phones>>,
    emails: Arc<Frozen<Emails>>,
}

type BrandMap = HashMap<u32, BrandEntry, FixedState>;

/// Key of the retailer side table: brand, channel and the stored key of the address (a phone
/// key with its type bit, or the e-mail key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct RetailerKey {
    brand: u32,
    channel: Channel,
    key: u128,
}

/// The consent index; share it as `Arc<ConsentIndex>`. See the module doc.
pub struct ConsentIndex {
    /// Every brand's stores and current frozen tables, replaced as a whole (copy on write) when
    /// a brand is added or a table is published.
    brands: ArcSwap<BrandMap>,
    /// Serialises replacing `brands`.
    publish: Mutex<()>,
    /// Retailer codes each consent grants access to; rare, so one lock is enough.
    retailers: RwLock<HashMap<RetailerKey, Box<[u32]>, FixedState>>,
    min_delta: usize,
}

impl Default for ConsentIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsentIndex {
    #[must_use]
    pub fn new() -> Self {
        Self::with_min_delta(MIN_COMPACTION_DELTA)
    }

    /// An index whose stores compact once their delta exceeds max(`min_delta`,
    /// `frozen_len` / 32) records. Tests use a tiny value to exercise compaction.
    fn with_min_delta(min_delta: usize) -> Self {
        Self {
            brands: ArcSwap::from_pointee(HashMap::with_hasher(FixedState::default())),
            publish: Mutex::new(()),
            retailers: RwLock::new(HashMap::with_hasher(FixedState::default())),
            min_delta,
        }
    }

    /// The states [ARAMA, MESAJ] of a phone number; EMPTY when unknown.
    #[inline]
    pub fn phone(&self, brand: u32, rtype: RecipientType, digits: u64) -> [ChannelState; 2] {
        self.get::<Phones>(brand, phone_key(rtype, digits))
    }

    /// The EPOSTA state of an e-mail address; EMPTY when unknown.
    #[inline]
    pub fn email(&self, brand: u32, key: EmailKey) -> ChannelState {
        self.get::<Emails>(brand, key.0)
    }

    /// Many phone lookups at once (`CheckBatch`, `Filter`): appends the states [ARAMA, MESAJ] of
    /// each number to `out`, in order. Same answers as [`Self::phone`] one by one, at a
    /// fraction of the cost for large batches: the fenced atomics a lookup needs (brand map
    /// load, delta read lock) are paid once per 256 numbers instead of once per number, so the
    /// CPU overlaps the numbers' cache misses. Each group of 256 is answered from one
    /// consistent state; writers to the brand wait for at most one group.
    pub fn phones(
        &self,
        brand: u32,
        rtype: RecipientType,
        digits: &[u64],
        out: &mut Vec<[ChannelState; 2]>,
    ) {
        self.get_many::<Phones, _>(brand, digits, |d| phone_key(rtype, d), out);
    }

    /// Many e-mail lookups at once; see [`Self::phones`].
    pub fn emails(&self, brand: u32, keys: &[EmailKey], out: &mut Vec<ChannelState>) {
        self.get_many::<Emails, _>(brand, keys, |key| key.0, out);
    }

    /// One channel's state. A channel that does not fit the address (EPOSTA on a phone, ARAMA
    /// or MESAJ on an e-mail) is EMPTY. For e-mails `rtype` is ignored: it is inside the key.
    pub fn state(
        &self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
    ) -> ChannelState {
        match (address, channel) {
            (IndexAddress::Phone(digits), _) => match phone_slot(channel) {
                Some(slot) => self.phone(brand, rtype, digits)[slot],
                None => ChannelState::EMPTY,
            },
            (IndexAddress::Email(key), Channel::Eposta) => self.email(brand, key),
            (IndexAddress::Email(_), Channel::Arama | Channel::Mesaj) => ChannelState::EMPTY,
        }
    }

    /// Sets one phone channel, keeping the other. `channel` must be ARAMA or MESAJ; EPOSTA is a
    /// caller bug (debug assertion; ignored in release builds). Setting every channel EMPTY
    /// deletes the record.
    pub fn set_phone(
        &self,
        brand: u32,
        rtype: RecipientType,
        digits: u64,
        channel: Channel,
        state: ChannelState,
    ) {
        let Some(slot) = phone_slot(channel) else {
            debug_assert!(false, "set_phone with channel {channel}");
            return;
        };
        let state = state.normalised();
        self.update::<Phones>(brand, phone_key(rtype, digits), |mut states| {
            states[slot] = state;
            states
        });
    }

    /// Sets the EPOSTA state of an e-mail address; EMPTY deletes the record.
    pub fn set_email(&self, brand: u32, key: EmailKey, state: ChannelState) {
        let state = state.normalised();
        self.update::<Emails>(brand, key.0, |_| state);
    }

    /// Records which retailers (bayi codes) the consent of this address and channel grants
    /// access to; an empty slice removes the grant. A channel that does not fit the address is
    /// a caller bug (debug assertion; ignored in release builds).
    pub fn set_retailers(
        &self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
        retailers: &[u32],
    ) {
        let Some(key) = retailer_key(brand, rtype, address, channel) else {
            debug_assert!(
                false,
                "set_retailers with {address:?} and channel {channel}"
            );
            return;
        };
        if retailers.is_empty() {
            // The common case (most consents name no retailer): look before taking the write
            // lock, so that plain writes do not serialise readers of this table.
            if read(&self.retailers).contains_key(&key) {
                write(&self.retailers).remove(&key);
            }
        } else {
            let mut codes = retailers.to_vec();
            codes.sort_unstable();
            codes.dedup();
            write(&self.retailers).insert(key, codes.into_boxed_slice());
        }
    }

    /// Whether the consent of this address and channel grants `retailer` access. Only the grant
    /// is looked up here; whether the consent itself allows sending is [`Self::state`]'s answer.
    pub fn retailer_allowed(
        &self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
        retailer: u32,
    ) -> bool {
        let Some(key) = retailer_key(brand, rtype, address, channel) else {
            return false;
        };
        read(&self.retailers)
            .get(&key)
            .is_some_and(|codes| codes.binary_search(&retailer).is_ok())
    }

    /// Cold start: builds the brand's phone table directly from `records` (much faster than
    /// `set_phone` one by one) and replaces everything the brand held for phones, including
    /// changes written meanwhile. When a key repeats, the later record wins; records whose
    /// channels are all EMPTY are skipped. Peak memory is about twice the final table.
    ///
    /// # Panics
    /// If one brand is given 2^32 phone records or more.
    pub fn bulk_load_phones(
        &self,
        brand: u32,
        records: impl IntoIterator<Item = (RecipientType, u64, [ChannelState; 2])>,
    ) {
        let entries: Vec<PhoneEntry> = records
            .into_iter()
            .map(|(rtype, digits, [arama, mesaj])| {
                Phones::entry(
                    phone_key(rtype, digits),
                    [arama.normalised(), mesaj.normalised()],
                )
            })
            .collect();
        self.bulk_load::<Phones>(brand, entries);
    }

    /// Cold start for e-mails; see [`Self::bulk_load_phones`].
    ///
    /// # Panics
    /// If one brand is given 2^32 e-mail records or more.
    pub fn bulk_load_emails(
        &self,
        brand: u32,
        records: impl IntoIterator<Item = (EmailKey, ChannelState)>,
    ) {
        let entries: Vec<EmailEntry> = records
            .into_iter()
            .map(|(key, state)| Emails::entry(key.0, state.normalised()))
            .collect();
        self.bulk_load::<Emails>(brand, entries);
    }

    /// Merges every brand's delta into its frozen tables now (tests, and after a cold start
    /// followed by catching up with the change stream). Waits for running compactions.
    pub fn compact(&self) {
        let brands = self.brands.load_full();
        for (&brand, entry) in brands.iter() {
            self.compact_kind::<Phones>(brand, &entry.stores, true);
            self.compact_kind::<Emails>(brand, &entry.stores, true);
        }
    }

    /// Live records (not tombstones) over all brands. Exact, except that writes racing a bulk
    /// load of the same brand may leave it off by the number of such writes.
    pub fn len(&self) -> usize {
        self.brands
            .load()
            .values()
            .map(|e| e.stores.phones.len() + e.stores.emails.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the index: frozen tables and directories, delta maps (by capacity), shard
    /// and brand bookkeeping, and the retailer table (by capacity, plus the code lists).
    pub fn heap_bytes(&self) -> usize {
        let brands = self.brands.load();
        let per_brand: usize = brands
            .values()
            .map(|e| {
                std::mem::size_of::<BrandStores>()
                    + e.stores.phones.heap_bytes()
                    + e.stores.emails.heap_bytes()
                    + e.phones.heap_bytes()
                    + e.emails.heap_bytes()
            })
            .sum();
        let retailers = read(&self.retailers);
        let retailer_lists: usize = retailers
            .values()
            .map(|codes| std::mem::size_of_val::<[u32]>(codes))
            .sum();
        per_brand + brands.allocation_size() + retailers.allocation_size() + retailer_lists
    }

    /// Brands that have (or had) records, in no particular order.
    pub fn brands(&self) -> Vec<u32> {
        self.brands.load().keys().copied().collect()
    }

    /// The current record, EMPTY when unknown.
    #[inline]
    fn get<K: Kind>(&self, brand: u32, key: K::Key) -> K::Value {
        let hash = K::hash(key);
        loop {
            let brands = self.brands.load();
            let Some(entry) = brands.get(&brand) else {
                return K::EMPTY;
            };
            let store = K::store(&entry.stores);
            // Delta first, frozen second: the order the module doc's argument depends on.
            if let Some(value) = store.delta_get(hash, key) {
                return value;
            }
            let frozen = K::frozen(entry);
            if frozen.generation >= store.generation.load(Ordering::Acquire) {
                return frozen.get(hash, key).unwrap_or(K::EMPTY);
            }
            // A compaction published a newer table after we loaded the brand map and may have
            // moved our key out of the delta since: look again (rare, and never twice in a row
            // unless compactions follow each other within nanoseconds).
        }
    }

    /// The current records of many keys, appended to `out`. Per chunk: take every delta shard's
    /// read lock (unless the delta is empty), *then* load the brand map, then look up freely.
    /// No removal can happen while the locks are held, and a removal made before we took them
    /// came after its table was published, so the map we load has that table: the delta plus
    /// that table is the state as of the moment the locks were taken. (Loading the map first
    /// would need `get`'s generation check.)
    fn get_many<K: Kind, T: Copy>(
        &self,
        brand: u32,
        items: &[T],
        key_of: impl Fn(T) -> K::Key,
        out: &mut Vec<K::Value>,
    ) {
        out.reserve(items.len());
        let Some(stores) = self
            .brands
            .load()
            .get(&brand)
            .map(|e| Arc::clone(&e.stores))
        else {
            out.extend(items.iter().map(|_| K::EMPTY));
            return;
        };
        let store = K::store(&stores);
        for chunk in items.chunks(BATCH_CHUNK) {
            let delta = (store.delta_len.load(Ordering::Acquire) != 0)
                .then(|| std::array::from_fn::<_, DELTA_SHARDS, _>(|i| read(&store.delta[i].0)));
            let brands = self.brands.load();
            let Some(frozen) = brands.get(&brand).map(K::frozen) else {
                out.extend(chunk.iter().map(|_| K::EMPTY));
                continue;
            };
            // Two passes, so that the directory reads of all keys are in flight together,
            // and then the bucket reads, instead of each key's two dependent cache misses
            // one after the other.
            let mut ranges = [(0_u32, 0_u32); BATCH_CHUNK];
            for (&item, range) in chunk.iter().zip(&mut ranges) {
                *range = frozen.bucket(K::hash(key_of(item)));
            }
            out.extend(chunk.iter().zip(&ranges).map(|(&item, &range)| {
                let key = key_of(item);
                let in_delta = delta
                    .as_ref()
                    .and_then(|d| d[shard_index(K::hash(key))].get(&key));
                match in_delta {
                    Some(value) => *value,
                    None => frozen.find(range, key).unwrap_or(K::EMPTY),
                }
            }));
        }
    }

    /// Read-modify-write of one record. `change` gets the current record (EMPTY when unknown)
    /// and returns the new one, already normalised.
    fn update<K: Kind>(&self, brand: u32, key: K::Key, change: impl FnOnce(K::Value) -> K::Value) {
        let stores = self.brand_stores(brand);
        let store = K::store(&stores);
        let hash = K::hash(key);
        let mut shard = write(store.shard(hash));
        let (old, new) = match shard.entry(key) {
            Entry::Occupied(mut slot) => {
                let old = *slot.get();
                let new = change(old);
                slot.insert(new);
                (old, new)
            }
            Entry::Vacant(slot) => {
                // Not in the delta, so the newest published table holds the current value, and
                // the brand map we load now has it: a compaction takes a key out of the delta
                // only after publishing, and needs the shard lock we hold to do so.
                let brands = self.brands.load();
                let frozen = brands.get(&brand).and_then(|e| K::frozen(e).get(hash, key));
                let old = frozen.unwrap_or(K::EMPTY);
                let new = change(old);
                if new == old {
                    return;
                }
                slot.insert(new);
                store.delta_len.fetch_add(1, Ordering::AcqRel);
                (old, new)
            }
        };
        match (K::is_tombstone(old), K::is_tombstone(new)) {
            (true, false) => store.live.fetch_add(1, Ordering::Relaxed),
            (false, true) => store.live.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        drop(shard);
        if store.delta_len.load(Ordering::Relaxed) > store.compact_at.load(Ordering::Relaxed) {
            self.compact_kind::<K>(brand, &stores, false);
        }
    }

    /// Merges one store's delta into a new frozen table. Unless `wait`, gives up at once when a
    /// compaction or bulk load of that store is already running (the delta simply grows a
    /// little further and the next writer tries again).
    fn compact_kind<K: Kind>(&self, brand: u32, stores: &BrandStores, wait: bool) {
        let store = K::store(stores);
        let guard = if wait {
            lock(&store.rebuild)
        } else {
            match store.rebuild.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        // 1. Snapshot the delta; writers may go on changing it meanwhile.
        let snapshot = store.snapshot();
        if snapshot.iter().all(Vec::is_empty) {
            return;
        }
        // The published table is the newest: only holders of `rebuild` publish.
        let Some(old) = self
            .brands
            .load()
            .get(&brand)
            .map(|e| Arc::clone(K::frozen(e)))
        else {
            return;
        };

        // 2. Build the new table, holding no lock. Its exact size sizes the directory.
        let mut expected = old.len();
        for &(key, value) in snapshot.iter().flatten() {
            if old.get(K::hash(key), key).is_some() {
                expected -= 1;
            }
            if !K::is_tombstone(value) {
                expected += 1;
            }
        }
        let generation = old.generation + 1;
        let merged = build::<K, _>(generation, expected, || {
            let delta = snapshot
                .iter()
                .flatten()
                .map(|&(key, value)| K::entry(key, value));
            old.entries.iter().copied().chain(delta)
        });
        debug_assert_eq!(merged.len(), expected);
        drop(old);
        store
            .compact_at
            .store(store.threshold(merged.len()), Ordering::Relaxed);

        // 3. Publish it, then raise the generation, before anything leaves the delta.
        self.publish::<K>(brand, Arc::new(merged));
        store.generation.store(generation, Ordering::Release);

        // 4. Remove what was merged, unless a writer changed it since the snapshot.
        store.remove_merged(&snapshot);
        drop(guard);
    }

    fn bulk_load<K: Kind>(&self, brand: u32, entries: Vec<K::Entry>) {
        let stores = self.brand_stores(brand);
        let store = K::store(&stores);
        let guard = lock(&store.rebuild);
        let generation = store.generation.load(Ordering::Relaxed) + 1;
        let live = entries
            .iter()
            .filter(|e| !K::is_tombstone(K::value_of(e)))
            .count();
        let table = build::<K, _>(generation, live, || entries.iter().copied());
        drop(entries);
        let live = table.len();
        store
            .compact_at
            .store(store.threshold(live), Ordering::Relaxed);
        self.publish::<K>(brand, Arc::new(table));
        store.generation.store(generation, Ordering::Release);
        store.clear();
        store.live.store(
            isize::try_from(live).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        drop(guard);
    }

    /// Makes `frozen` the brand's table of kind `K` for every later lookup.
    fn publish<K: Kind>(&self, brand: u32, frozen: Arc<Frozen<K>>) {
        let guard = lock(&self.publish);
        let mut next = BrandMap::clone(&self.brands.load());
        if let Some(entry) = next.get_mut(&brand) {
            *K::frozen_mut(entry) = frozen;
        }
        self.brands.store(Arc::new(next));
        drop(guard);
    }

    /// The brand's stores, created on first write.
    fn brand_stores(&self, brand: u32) -> Arc<BrandStores> {
        if let Some(entry) = self.brands.load().get(&brand) {
            return Arc::clone(&entry.stores);
        }
        let guard = lock(&self.publish);
        let current = self.brands.load_full();
        if let Some(entry) = current.get(&brand) {
            return Arc::clone(&entry.stores);
        }
        let stores = Arc::new(BrandStores {
            phones: Store::new(self.min_delta),
            emails: Store::new(self.min_delta),
        });
        let mut next = BrandMap::clone(&current);
        let entry = BrandEntry {
            stores: Arc::clone(&stores),
            phones: Arc::new(Frozen::empty()),
            emails: Arc::new(Frozen::empty()),
        };
        next.insert(brand, entry);
        self.brands.store(Arc::new(next));
        drop(guard);
        stores
    }
}

fn retailer_key(
    brand: u32,
    rtype: RecipientType,
    address: IndexAddress,
    channel: Channel,
) -> Option<RetailerKey> {
    let key = match (address, channel) {
        (IndexAddress::Phone(digits), Channel::Arama | Channel::Mesaj) => {
            u128::from(phone_key(rtype, digits))
        }
        (IndexAddress::Email(key), Channel::Eposta) => key.0,
        _ => return None,
    };
    Some(RetailerKey {
        brand,
        channel,
        key,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test sizes are small")]
mod tests {
    use super::*;
    use std::collections::HashMap as StdHashMap;
    use std::sync::atomic::AtomicBool;

    const BRAND: u32 = 7001;
    const NUMBER: u64 = 905_321_234_567;

    use crate::rng::SplitMix64 as Prng;

    fn onay(minute: u32) -> ChannelState {
        ChannelState::new(IndexStatus::Onay, Source::HsWeb, minute)
    }
    fn ret(minute: u32) -> ChannelState {
        ChannelState::new(IndexStatus::Ret, Source::IysMobil, minute)
    }
    fn keyer() -> EmailKeyer {
        EmailKeyer::new(*b"0123456789abcdef")
    }

    #[test]
    fn entry_sizes() {
        assert_eq!(std::mem::size_of::<ChannelState>(), 4);
        assert_eq!(std::mem::size_of::<PhoneEntry>(), 16);
        assert_eq!(std::mem::size_of::<EmailEntry>(), 20);
        assert_eq!(std::mem::align_of::<EmailEntry>(), 4);
        assert_eq!(std::mem::align_of::<Shard<Phones>>(), 128);
    }

    #[test]
    fn index_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<ConsentIndex>();
        shared::<EmailKeyer>();
    }

    #[test]
    fn channel_state_packs_and_saturates() {
        let s = ChannelState::new(IndexStatus::OnayPending, Source::IysOther, 1_234_567);
        assert_eq!(s.status(), IndexStatus::OnayPending);
        assert_eq!(s.source(), Some(Source::IysOther));
        assert_eq!(s.consent_minute(), 1_234_567);
        assert!(!s.is_empty());
        assert_eq!(ChannelState::from_raw(s.raw()), s);
        for source in Source::ALL {
            for status in [IndexStatus::Onay, IndexStatus::Ret, IndexStatus::RetPending] {
                let s = ChannelState::new(status, *source, ChannelState::MAX_MINUTE);
                assert_eq!((s.status(), s.source()), (status, Some(*source)));
                assert_eq!(s.consent_minute(), ChannelState::MAX_MINUTE);
            }
        }
        let late = ChannelState::new(IndexStatus::Ret, Source::HsWeb, u32::MAX);
        assert_eq!(late.consent_minute(), ChannelState::MAX_MINUTE);
        assert_eq!(
            ChannelState::new(IndexStatus::None, Source::HsWeb, 5),
            ChannelState::EMPTY
        );
        assert_eq!(ChannelState::EMPTY.source(), None);
        assert!(ChannelState::default().is_empty());
        // Undefined status bits read as no record.
        assert_eq!(
            ChannelState::from_raw(7 | 3 << 3).status(),
            IndexStatus::None
        );
    }

    #[test]
    fn email_keys_depend_on_type_address_and_secret() {
        let k = keyer();
        let a = k.key(RecipientType::Bireysel, "ayse@example.com.tr");
        assert_eq!(a, k.key(RecipientType::Bireysel, "ayse@example.com.tr"));
        assert_ne!(a, k.key(RecipientType::Tacir, "ayse@example.com.tr"));
        assert_ne!(a, k.key(RecipientType::Bireysel, "ayse@example.com"));
        let other = EmailKeyer::new(*b"fedcba9876543210");
        assert_ne!(a, other.key(RecipientType::Bireysel, "ayse@example.com.tr"));
        assert!(!format!("{k:?}").contains("0123"));
    }

    #[test]
    fn phone_round_trip_types_and_channels_independent() {
        let index = ConsentIndex::new();
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Arama,
            onay(10),
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [onay(10), ChannelState::EMPTY]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, NUMBER),
            [ChannelState::EMPTY; 2]
        );

        index.set_phone(BRAND, RecipientType::Tacir, NUMBER, Channel::Mesaj, ret(20));
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Mesaj,
            ret(30),
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [onay(10), ret(30)]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, NUMBER),
            [ChannelState::EMPTY, ret(20)]
        );

        let addr = IndexAddress::Phone(NUMBER);
        let state = |rtype, channel| index.state(BRAND, rtype, addr, channel);
        assert_eq!(state(RecipientType::Bireysel, Channel::Arama), onay(10));
        assert_eq!(state(RecipientType::Bireysel, Channel::Mesaj), ret(30));
        assert_eq!(
            state(RecipientType::Bireysel, Channel::Eposta),
            ChannelState::EMPTY
        );
        assert_eq!(index.len(), 2);

        index.compact();
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [onay(10), ret(30)]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, NUMBER),
            [ChannelState::EMPTY, ret(20)]
        );
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn email_round_trip_and_channel_mismatch() {
        let index = ConsentIndex::new();
        let k = keyer();
        let bireysel = k.key(RecipientType::Bireysel, "ayse@example.com.tr");
        let tacir = k.key(RecipientType::Tacir, "ayse@example.com.tr");
        index.set_email(BRAND, bireysel, onay(5));
        assert_eq!(index.email(BRAND, bireysel), onay(5));
        assert_eq!(index.email(BRAND, tacir), ChannelState::EMPTY);
        let addr = IndexAddress::Email(bireysel);
        assert_eq!(
            index.state(BRAND, RecipientType::Bireysel, addr, Channel::Eposta),
            onay(5)
        );
        assert_eq!(
            index.state(BRAND, RecipientType::Bireysel, addr, Channel::Mesaj),
            ChannelState::EMPTY
        );
        index.compact();
        assert_eq!(index.email(BRAND, bireysel), onay(5));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn overwrite_and_tombstone_hide_frozen_values() {
        let index = ConsentIndex::new();
        let k = keyer().key(RecipientType::Bireysel, "mehmet@example.org");
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Arama,
            onay(1),
        );
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Mesaj,
            onay(1),
        );
        index.set_email(BRAND, k, onay(1));
        index.compact();

        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Arama,
            ret(2),
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [ret(2), onay(1)]
        );

        // Deleting both channels hides the frozen record, before and after compaction.
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Arama,
            ChannelState::EMPTY,
        );
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Mesaj,
            ChannelState::EMPTY,
        );
        index.set_email(BRAND, k, ChannelState::EMPTY);
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [ChannelState::EMPTY; 2]
        );
        assert_eq!(index.email(BRAND, k), ChannelState::EMPTY);
        assert_eq!(index.len(), 0);
        index.compact();
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, NUMBER),
            [ChannelState::EMPTY; 2]
        );
        assert_eq!(index.email(BRAND, k), ChannelState::EMPTY);
        assert_eq!(index.len(), 0);
        let brands = index.brands.load();
        assert_eq!(
            brands[&BRAND].phones.len(),
            0,
            "compaction drops tombstones"
        );
        assert_eq!(
            brands[&BRAND]
                .stores
                .phones
                .delta_len
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn unknown_brand_is_empty() {
        let index = ConsentIndex::new();
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            NUMBER,
            Channel::Arama,
            onay(1),
        );
        assert_eq!(
            index.phone(BRAND + 1, RecipientType::Bireysel, NUMBER),
            [ChannelState::EMPTY; 2]
        );
        let k = keyer().key(RecipientType::Bireysel, "a@b.co");
        assert_eq!(index.email(BRAND + 1, k), ChannelState::EMPTY);
        let addr = IndexAddress::Phone(NUMBER);
        assert_eq!(
            index.state(BRAND + 1, RecipientType::Bireysel, addr, Channel::Arama),
            ChannelState::EMPTY
        );
        assert!(!index.retailer_allowed(
            BRAND + 1,
            RecipientType::Bireysel,
            addr,
            Channel::Arama,
            1
        ));
        assert_eq!(index.brands(), vec![BRAND]);
    }

    #[test]
    fn bulk_load_then_set() {
        let index = ConsentIndex::new();
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            905_000_000_001,
            Channel::Arama,
            onay(1),
        );
        let records = (0..10_000_u64).map(|i| {
            let rtype = if i % 3 == 0 {
                RecipientType::Tacir
            } else {
                RecipientType::Bireysel
            };
            (rtype, 905_320_000_000 + i, [onay(i as u32), ret(i as u32)])
        });
        // A repeated key (the later wins) and an all-empty record (skipped).
        let extra = [
            (RecipientType::Bireysel, 905_320_000_001, [ret(99), ret(99)]),
            (
                RecipientType::Bireysel,
                905_329_999_999,
                [ChannelState::EMPTY; 2],
            ),
        ];
        index.bulk_load_phones(BRAND, records.chain(extra));
        assert_eq!(index.len(), 10_000);
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, 905_000_000_001),
            [ChannelState::EMPTY; 2],
            "bulk load replaces the brand's phones"
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, 905_320_000_001),
            [ret(99), ret(99)]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, 905_320_000_003),
            [onay(3), ret(3)]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, 905_320_000_003),
            [ChannelState::EMPTY; 2]
        );

        index.set_phone(
            BRAND,
            RecipientType::Tacir,
            905_320_000_003,
            Channel::Arama,
            ret(50),
        );
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            905_320_000_004,
            Channel::Arama,
            ChannelState::EMPTY,
        );
        index.set_phone(
            BRAND,
            RecipientType::Bireysel,
            905_320_000_004,
            Channel::Mesaj,
            ChannelState::EMPTY,
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, 905_320_000_003),
            [ret(50), ret(3)]
        );
        assert_eq!(index.len(), 9_999);
        index.compact();
        assert_eq!(
            index.phone(BRAND, RecipientType::Tacir, 905_320_000_003),
            [ret(50), ret(3)]
        );
        assert_eq!(
            index.phone(BRAND, RecipientType::Bireysel, 905_320_000_004),
            [ChannelState::EMPTY; 2]
        );
        assert_eq!(index.len(), 9_999);

        let k = keyer();
        let emails: Vec<_> = (0..1000)
            .map(|i| {
                (
                    k.key(RecipientType::Bireysel, &format!("u{i}@example.com")),
                    onay(i),
                )
            })
            .collect();
        index.bulk_load_emails(BRAND, emails.iter().copied());
        assert_eq!(index.len(), 10_999);
        for (key, state) in &emails {
            assert_eq!(index.email(BRAND, *key), *state);
        }
    }

    #[test]
    fn retailer_access() {
        let index = ConsentIndex::new();
        let phone = IndexAddress::Phone(NUMBER);
        let b = RecipientType::Bireysel;
        index.set_retailers(BRAND, b, phone, Channel::Mesaj, &[30, 10, 20, 10]);
        assert!(index.retailer_allowed(BRAND, b, phone, Channel::Mesaj, 20));
        assert!(!index.retailer_allowed(BRAND, b, phone, Channel::Mesaj, 25));
        assert!(
            !index.retailer_allowed(BRAND, b, phone, Channel::Arama, 20),
            "per channel"
        );
        assert!(!index.retailer_allowed(BRAND, RecipientType::Tacir, phone, Channel::Mesaj, 20));
        assert!(!index.retailer_allowed(BRAND + 1, b, phone, Channel::Mesaj, 20));
        assert!(!index.retailer_allowed(BRAND, b, phone, Channel::Eposta, 20));

        let email = IndexAddress::Email(keyer().key(b, "x@y.com"));
        index.set_retailers(BRAND, b, email, Channel::Eposta, &[20]);
        assert!(index.retailer_allowed(BRAND, b, email, Channel::Eposta, 20));

        index.set_retailers(BRAND, b, phone, Channel::Mesaj, &[]);
        assert!(!index.retailer_allowed(BRAND, b, phone, Channel::Mesaj, 20));
        assert!(index.retailer_allowed(BRAND, b, email, Channel::Eposta, 20));
    }

    /// Random sets and deletes against a plain `HashMap` model, with compactions both forced and
    /// triggered by a tiny threshold, checking every key of the (small) key space as we go.
    #[test]
    fn compaction_keeps_every_value_model() {
        for seed in [42, 7, 2024] {
            model_run(seed);
        }
    }

    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    fn model_run(seed: u64) {
        let index = ConsentIndex::with_min_delta(40);
        let k = keyer();
        let mut rng = Prng::new(seed);
        let mut phones: StdHashMap<(u32, RecipientType, u64), [ChannelState; 2]> =
            StdHashMap::new();
        let mut emails: StdHashMap<(u32, EmailKey), ChannelState> = StdHashMap::new();
        let brands = [1_u32, 2];
        let rtypes = [RecipientType::Bireysel, RecipientType::Tacir];
        let numbers: Vec<u64> = (0..300)
            .map(|_| 905_000_000_000 + rng.below(1_000_000_000))
            .collect();
        let mails: Vec<EmailKey> = (0..200)
            .map(|i| k.key(rtypes[i % 2], &format!("kisi{i}@ornek.com.tr")))
            .collect();

        // Start from a bulk load, as a replica does.
        let initial: Vec<_> = numbers
            .iter()
            .take(150)
            .map(|&n| (RecipientType::Bireysel, n, [onay(1), ChannelState::EMPTY]))
            .collect();
        index.bulk_load_phones(1, initial.iter().copied());
        for &(rtype, n, states) in &initial {
            phones.insert((1, rtype, n), states);
        }

        let random_state = |rng: &mut Prng| -> ChannelState {
            let status = match rng.below(5) {
                0 => IndexStatus::None,
                1 => IndexStatus::Onay,
                2 => IndexStatus::Ret,
                3 => IndexStatus::OnayPending,
                _ => IndexStatus::RetPending,
            };
            let source = Source::ALL[rng.below(Source::ALL.len() as u64) as usize];
            ChannelState::new(status, source, rng.below(1 << 25) as u32)
        };

        let check_all =
            |index: &ConsentIndex, phones: &StdHashMap<_, _>, emails: &StdHashMap<_, _>| {
                let (mut phone_batch, mut email_batch) = (Vec::new(), Vec::new());
                for brand in [1, 2, 3] {
                    for &rtype in &rtypes {
                        phone_batch.clear();
                        index.phones(brand, rtype, &numbers, &mut phone_batch);
                        for (&n, batch) in numbers.iter().zip(&phone_batch) {
                            let want = phones
                                .get(&(brand, rtype, n))
                                .copied()
                                .unwrap_or([ChannelState::EMPTY; 2]);
                            assert_eq!(index.phone(brand, rtype, n), want, "{brand} {rtype:?} {n}");
                            assert_eq!(*batch, want, "batch {brand} {rtype:?} {n}");
                        }
                    }
                    email_batch.clear();
                    index.emails(brand, &mails, &mut email_batch);
                    for (&m, batch) in mails.iter().zip(&email_batch) {
                        let want = emails
                            .get(&(brand, m))
                            .copied()
                            .unwrap_or(ChannelState::EMPTY);
                        assert_eq!(index.email(brand, m), want);
                        assert_eq!(*batch, want, "batch {brand} {m:?}");
                    }
                }
                let live = phones
                    .values()
                    .filter(|s| **s != [ChannelState::EMPTY; 2])
                    .count()
                    + emails.values().filter(|s| !s.is_empty()).count();
                assert_eq!(index.len(), live);
            };

        for step in 0..30_000 {
            let brand = brands[rng.below(2) as usize];
            if rng.below(3) == 0 {
                let m = mails[rng.below(mails.len() as u64) as usize];
                let state = random_state(&mut rng);
                index.set_email(brand, m, state);
                emails.insert((brand, m), state.normalised());
                assert_eq!(index.email(brand, m), state.normalised());
            } else {
                let rtype = rtypes[rng.below(2) as usize];
                let n = numbers[rng.below(numbers.len() as u64) as usize];
                let channel = if rng.below(2) == 0 {
                    Channel::Arama
                } else {
                    Channel::Mesaj
                };
                let state = random_state(&mut rng);
                index.set_phone(brand, rtype, n, channel, state);
                let record = phones
                    .entry((brand, rtype, n))
                    .or_insert([ChannelState::EMPTY; 2]);
                record[phone_slot(channel).unwrap()] = state.normalised();
                assert_eq!(index.phone(brand, rtype, n), *record);
            }
            if step % 2_500 == 0 {
                index.compact();
            }
            if step % 1_000 == 0 {
                check_all(&index, &phones, &emails);
            }
        }
        check_all(&index, &phones, &emails);
        index.compact();
        check_all(&index, &phones, &emails);
        assert!(index.heap_bytes() > 0);
    }

    #[test]
    fn build_sizes_directory_and_finds_every_entry() {
        let mut rng = Prng::new(7);
        let entries: Vec<PhoneEntry> = (0..100_000)
            .map(|i| {
                Phones::entry(
                    905_000_000_000 + rng.below(1 << 30),
                    [onay(i), ChannelState::EMPTY],
                )
            })
            .collect();
        let table = build::<Phones, _>(1, entries.len(), || entries.iter().copied());
        assert_eq!(
            table.dir.len(),
            (1 << 15) + 1,
            "next power of two ≥ n/4 buckets"
        );
        let mut last = StdHashMap::new();
        for e in &entries {
            last.insert(e.key, e.states);
        }
        assert_eq!(table.len(), last.len());
        for (key, states) in &last {
            assert_eq!(table.get(Phones::hash(*key), *key), Some(*states));
        }
        let max_bucket = table.dir.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(max_bucket < 24, "largest bucket {max_bucket}");
    }

    /// A reader must never see a value older than one it has already seen, whatever
    /// compactions run meanwhile: the writer only ever raises consent minutes.
    #[test]
    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    fn concurrent_reads_never_go_back() {
        const KEYS: u64 = 1_000;
        const ROUNDS: u32 = 150;
        let index = Arc::new(ConsentIndex::with_min_delta(500));
        let k = keyer();
        let mails: Arc<Vec<EmailKey>> = Arc::new(
            (0..KEYS)
                .map(|i| k.key(RecipientType::Bireysel, &format!("m{i}@x.com")))
                .collect(),
        );
        index.bulk_load_phones(
            BRAND,
            (0..KEYS).map(|i| (RecipientType::Tacir, 905_000_000_000 + i, [onay(0); 2])),
        );
        let done = Arc::new(AtomicBool::new(false));

        let writer = {
            let (index, mails) = (Arc::clone(&index), Arc::clone(&mails));
            std::thread::spawn(move || {
                for round in 1..=ROUNDS {
                    for i in 0..KEYS {
                        let n = 905_000_000_000 + i;
                        index.set_phone(
                            BRAND,
                            RecipientType::Tacir,
                            n,
                            Channel::Arama,
                            onay(round),
                        );
                        index.set_phone(
                            BRAND,
                            RecipientType::Tacir,
                            n,
                            Channel::Mesaj,
                            onay(round),
                        );
                        index.set_email(BRAND, mails[i as usize], onay(round));
                    }
                }
            })
        };
        let compactor = {
            let (index, done) = (Arc::clone(&index), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut compactions = 0_u32;
                while !done.load(Ordering::Relaxed) {
                    index.compact();
                    compactions += 1;
                }
                compactions
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|seed| {
                let (index, mails, done) =
                    (Arc::clone(&index), Arc::clone(&mails), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut rng = Prng::new(seed);
                    let mut seen = vec![[0_u32; 3]; KEYS as usize];
                    let mut reads = 0_u64;
                    while !done.load(Ordering::Relaxed) {
                        let i = rng.below(KEYS) as usize;
                        let [arama, mesaj] =
                            index.phone(BRAND, RecipientType::Tacir, 905_000_000_000 + i as u64);
                        let email = index.email(BRAND, mails[i]);
                        let now = [
                            arama.consent_minute(),
                            mesaj.consent_minute(),
                            email.consent_minute(),
                        ];
                        for c in 0..3 {
                            assert!(
                                now[c] >= seen[i][c],
                                "key {i} channel {c} went back: {now:?} after {:?}",
                                seen[i]
                            );
                        }
                        assert!(!arama.is_empty() && !mesaj.is_empty(), "a record vanished");
                        // One record is read at once, and the writer sets ARAMA before MESAJ.
                        assert!(mesaj.consent_minute() <= arama.consent_minute());
                        seen[i] = now;
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();

        // A batch reader: windows of 300 keys, so each batch spans two lock-holding chunks.
        let batch_reader = {
            let (index, mails, done) = (Arc::clone(&index), Arc::clone(&mails), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rng = Prng::new(7);
                let mut seen = vec![[0_u32; 3]; KEYS as usize];
                let (mut phones, mut emails) = (Vec::new(), Vec::new());
                let mut batches = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    let start = rng.below(KEYS - 300);
                    let numbers: Vec<u64> =
                        (start..start + 300).map(|i| 905_000_000_000 + i).collect();
                    let window = start as usize..start as usize + 300;
                    phones.clear();
                    emails.clear();
                    index.phones(BRAND, RecipientType::Tacir, &numbers, &mut phones);
                    index.emails(BRAND, &mails[window.clone()], &mut emails);
                    for (j, i) in window.enumerate() {
                        let [arama, mesaj] = phones[j];
                        let now = [
                            arama.consent_minute(),
                            mesaj.consent_minute(),
                            emails[j].consent_minute(),
                        ];
                        for c in 0..3 {
                            assert!(now[c] >= seen[i][c], "batch: key {i} channel {c} went back");
                        }
                        assert!(mesaj.consent_minute() <= arama.consent_minute());
                        seen[i] = now;
                    }
                    batches += 1;
                }
                batches
            })
        };

        writer.join().unwrap();
        done.store(true, Ordering::Relaxed);
        let compactions = compactor.join().unwrap();
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        assert!(batch_reader.join().unwrap() > 0);
        assert!(compactions > 1);
        for i in 0..KEYS {
            assert_eq!(
                index.phone(BRAND, RecipientType::Tacir, 905_000_000_000 + i),
                [onay(ROUNDS); 2]
            );
            assert_eq!(index.email(BRAND, mails[i as usize]), onay(ROUNDS));
        }
        assert_eq!(index.len(), 2 * KEYS as usize);
    }
}
