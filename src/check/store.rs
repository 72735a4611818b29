//! The current consent records and the one write path into the index. Every event, whatever
//! brought it (sync, a collected consent, the demo generator), goes through
//! [`Consents::apply`]: the record store decides by the latest-event rule, and only a change
//! reaches the index. In the embedded default the records live in memory; later backends
//! (Redis, PostgreSQL) plug in behind the same calls.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::check::index::{
    ChannelState, ConsentIndex, EmailKey, EmailKeyer, IndexAddress, IndexStatus,
};
use crate::domain::time::to_minute;
use crate::domain::{
    AddressKind, Applied, Channel, ConsentEvent, ConsentKey, ConsentRecord, ConsentStatus,
    Recipient, RecipientType,
};

const SHARDS: usize = 64;

type Shard = HashMap<ConsentKey, ConsentRecord, foldhash::fast::RandomState>;

/// Current records in memory, sharded so concurrent writers rarely meet.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl MemoryStore {
    fn shard(&self, key: &ConsentKey) -> MutexGuard<'_, Shard> {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        let i = (std::hash::Hasher::finish(&h) as usize) % SHARDS;
        // A poisoned shard means a writer panicked mid-insert of a HashMap entry, which
        // leaves the map itself valid: keep serving it.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn apply(&self, key: ConsentKey, event: ConsentEvent) -> Applied {
        self.apply_then(key, event, |_, _| {})
    }

    /// Applies `event` and, if it became the current record, calls `on_change` while the
    /// key's shard is still locked: whatever `on_change` derives (the index entry) is
    /// written in the same order as the records, so two writers of one key cannot leave
    /// the derived state on the older event.
    pub fn apply_then(
        &self,
        key: ConsentKey,
        event: ConsentEvent,
        on_change: impl FnOnce(&ConsentKey, &ConsentEvent),
    ) -> Applied {
        use std::collections::hash_map::Entry;
        let mut shard = self.shard(&key);
        // One hash lookup: the entry is decided in place.
        match shard.entry(key) {
            // The latest-event rule of `ConsentRecord::apply`, in place.
            Entry::Occupied(mut slot) => {
                if !event.supersedes(&slot.get().current) {
                    return Applied::Ignored;
                }
                on_change(slot.key(), &event);
                slot.get_mut().current = event;
                Applied::Changed
            }
            Entry::Vacant(slot) => {
                on_change(slot.key(), &event);
                slot.insert(ConsentRecord { current: event });
                Applied::Changed
            }
        }
    }

    /// Makes room for `additional` more records (a bulk load knows its size: growing the
    /// maps step by step would rehash them again and again).
    pub fn reserve(&self, additional: usize) {
        for shard in &*self.shards {
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .reserve(additional / SHARDS + 1);
        }
    }

    pub fn get(&self, key: &ConsentKey) -> Option<ConsentRecord> {
        self.shard(key).get(key).cloned()
    }

    /// Calls `f` with the key's record while its shard is locked, so what `f` writes is
    /// ordered with what `apply_then` derives from the same key's changes.
    fn with_record(&self, key: &ConsentKey, f: impl FnOnce(&ConsentRecord)) {
        if let Some(record) = self.shard(key).get(key) {
            f(record);
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every record, shard by shard.
    pub fn for_each(&self, mut f: impl FnMut(&ConsentKey, &ConsentRecord)) {
        for shard in &*self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (k, r) in shard.iter() {
                f(k, r);
            }
        }
    }
}

/// Current records of one brand and channel by status, for the panel's overview.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub onay: u64,
    pub ret: u64,
    /// Collected by the company, not yet accepted by İYS.
    pub onay_pending: u64,
    pub ret_pending: u64,
}

impl RecordCounts {
    pub fn total(&self) -> u64 {
        self.onay + self.ret + self.onay_pending + self.ret_pending
    }
}

impl MemoryStore {
    /// Current records by brand and channel and status. Read-only: it walks the record store
    /// shard by shard (never the index the checks read), so it costs checks nothing.
    pub fn counts(
        &self,
    ) -> std::collections::BTreeMap<u32, std::collections::BTreeMap<Channel, RecordCounts>> {
        let mut out: std::collections::BTreeMap<u32, std::collections::BTreeMap<_, RecordCounts>> =
            std::collections::BTreeMap::new();
        self.for_each(|key, record| {
            let c = out
                .entry(key.brand)
                .or_default()
                .entry(key.channel)
                .or_default();
            let e = &record.current;
            match (e.status, e.is_pending()) {
                (ConsentStatus::Onay, false) => c.onay += 1,
                (ConsentStatus::Onay, true) => c.onay_pending += 1,
                (ConsentStatus::Ret, false) => c.ret += 1,
                (ConsentStatus::Ret, true) => c.ret_pending += 1,
            }
        });
        out
    }
}

/// Locks a mutex whose holder cannot leave it half-written (a push, a take).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The index state of an event.
pub fn channel_state(event: &ConsentEvent) -> ChannelState {
    let status = match (event.status, event.is_pending()) {
        (ConsentStatus::Onay, false) => IndexStatus::Onay,
        (ConsentStatus::Onay, true) => IndexStatus::OnayPending,
        (ConsentStatus::Ret, false) => IndexStatus::Ret,
        (ConsentStatus::Ret, true) => IndexStatus::RetPending,
    };
    ChannelState::new(status, event.source, to_minute(event.consent_date))
}

/// The records and the index they feed, kept in step.
pub struct Consents {
    records: MemoryStore,
    index: Arc<ConsentIndex>,
    keyer: Arc<EmailKeyer>,
    /// Set while [`Self::rebuild_index`] runs. Its bulk load replaces whatever the index held,
    /// writes made meanwhile included, and on a replica `apply` may run then (a consent
    /// recorded while the snapshot reloads): such writes note their key in `rebuilt_late`,
    /// and the rebuild writes those keys' entries again once its bulk load is in.
    rebuilding: AtomicBool,
    rebuilt_late: Mutex<Vec<ConsentKey>>,
    /// Set while the index was loaded on its own (a replica's cold start from an index
    /// checkpoint) and the records are not all here yet. Meanwhile a write may find no
    /// record, or an older one, where the index holds a newer state; so it reaches the index
    /// only if it is not older than what the index holds ([`not_older`]), and
    /// [`Self::rebuild_index`], once the records are in, makes the index exact again.
    partial: AtomicBool,
}

impl Consents {
    pub fn new(index: Arc<ConsentIndex>, keyer: Arc<EmailKeyer>) -> Self {
        Self {
            records: MemoryStore::default(),
            index,
            keyer,
            rebuilding: AtomicBool::new(false),
            rebuilt_late: Mutex::default(),
            partial: AtomicBool::new(false),
        }
    }

    pub fn index(&self) -> &Arc<ConsentIndex> {
        &self.index
    }

    pub fn records(&self) -> &MemoryStore {
        &self.records
    }

    fn address(&self, recipient: &Recipient, rtype: RecipientType) -> IndexAddress {
        match recipient {
            Recipient::Phone(p) => IndexAddress::Phone(p.digits()),
            Recipient::Email(e) => self.email_address(rtype, e.as_str()),
        }
    }

    /// The index address of a normalised e-mail address (under this process's key).
    pub fn email_address(&self, rtype: RecipientType, normalised: &str) -> IndexAddress {
        IndexAddress::Email(self.keyer.key(rtype, normalised))
    }

    /// False while the index was loaded without the records and they are still loading
    /// ([`Self::load_index_only`]): `get` may then miss a record, or return an older one.
    pub fn records_complete(&self) -> bool {
        !self.partial.load(AtomicOrdering::SeqCst)
    }

    /// Applies one event: the record store decides, and a change is written to the index.
    pub fn apply(&self, key: ConsentKey, event: ConsentEvent) -> Result<Applied, KindMismatch> {
        if key.recipient.kind() != key.channel.address_kind() {
            return Err(KindMismatch {
                channel: key.channel,
            });
        }
        let (brand, rtype, channel) = (key.brand, key.recipient_type, key.channel);
        let address = self.address(&key.recipient, rtype);
        Ok(self.records.apply_then(key, event, |key, current| {
            // Read under the key's shard lock, which a rebuild takes after setting the flag:
            // a write that sees it unset is in the records the rebuild reads. Noted before
            // the index is written: a key noted after the rebuild took the list is written
            // after its bulk load, and needs nothing more.
            if self.rebuilding.load(AtomicOrdering::SeqCst) {
                lock(&self.rebuilt_late).push(key.clone());
            }
            let state = channel_state(current);
            if !self.index_may_take(brand, rtype, address, channel, state) {
                return;
            }
            self.write_index(
                brand,
                rtype,
                address,
                channel,
                state,
                &current.retailer_access,
            );
        }))
    }

    /// Whether the index may take `state` for this channel: always, unless the records are
    /// partial and the index holds a state it knows to be newer ([`not_older`]).
    fn index_may_take(
        &self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
        state: ChannelState,
    ) -> bool {
        !self.partial.load(AtomicOrdering::SeqCst)
            || not_older(state, self.index.state(brand, rtype, address, channel))
    }

    fn write_index(
        &self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
        state: ChannelState,
        retailers: &[u32],
    ) {
        match address {
            IndexAddress::Phone(digits) => {
                self.index.set_phone(brand, rtype, digits, channel, state);
            }
            IndexAddress::Email(key) => self.index.set_email(brand, key, state),
        }
        self.index
            .set_retailers(brand, rtype, address, channel, retailers);
    }

    pub fn get(&self, key: &ConsentKey) -> Option<ConsentRecord> {
        self.records.get(key)
    }

    /// Rebuilds the index from the records in one pass per brand (cold start and the demo
    /// loader use this: much faster than one write at a time). Writes through
    /// [`Self::apply`] meanwhile are kept: their index entries are written again after the
    /// bulk load. (Writes to [`Self::records`] alone never reach the index; a rebuild is how
    /// they do.)
    ///
    /// The records are then taken as complete: a rebuild after [`Self::load_index_only`]
    /// is what ends its partial state. The flag is cleared after the rebuild's own flag is
    /// set, so a write that still saw it set either is in the records the bulk load reads or
    /// is written again after it.
    pub fn rebuild_index(&self) {
        lock(&self.rebuilt_late).clear();
        self.rebuilding.store(true, AtomicOrdering::SeqCst);
        self.partial.store(false, AtomicOrdering::SeqCst);
        let mut rows = IndexRows::default();
        self.records.for_each(|key, record| {
            let address = self.address(&key.recipient, key.recipient_type);
            rows.push(
                key.brand,
                key.recipient_type,
                address,
                key.channel,
                channel_state(&record.current),
                &record.current.retailer_access,
            );
        });
        rows.load_into(&self.index);
        self.rebuilding.store(false, AtomicOrdering::SeqCst);
        self.rewrite_late();
    }

    /// Loads the index alone from `rows` (a replica's cold start from an index checkpoint:
    /// it can answer checks before its records are decoded) and marks the records partial
    /// until the next [`Self::rebuild_index`]. Like a rebuild, the bulk load replaces what
    /// the index held; writes meanwhile are written again after it, by the partial rule.
    pub fn load_index_only(&self, rows: IndexRows) {
        lock(&self.rebuilt_late).clear();
        self.rebuilding.store(true, AtomicOrdering::SeqCst);
        self.partial.store(true, AtomicOrdering::SeqCst);
        rows.load_into(&self.index);
        self.rebuilding.store(false, AtomicOrdering::SeqCst);
        self.rewrite_late();
    }

    /// Writes again the index entries of the keys written while a bulk load ran.
    fn rewrite_late(&self) {
        let late = std::mem::take(&mut *lock(&self.rebuilt_late));
        for key in late {
            let address = self.address(&key.recipient, key.recipient_type);
            self.records.with_record(&key, |record| {
                let state = channel_state(&record.current);
                let (brand, rtype, channel) = (key.brand, key.recipient_type, key.channel);
                if !self.index_may_take(brand, rtype, address, channel, state) {
                    return;
                }
                self.write_index(
                    brand,
                    rtype,
                    address,
                    channel,
                    state,
                    &record.current.retailer_access,
                );
            });
        }
    }
}

/// Whether `new` may replace `old` in the index while the records are partial: not older by
/// what an index entry knows of the latest-event rule's order (the consent minute, then RET
/// over ONAY, then registered over pending). Within one minute this can keep an older state
/// over a newer one of a different status; it keeps the RET then, never the ONAY, and the
/// rebuild that ends the partial state corrects it.
fn not_older(new: ChannelState, old: ChannelState) -> bool {
    fn order(s: ChannelState) -> (u32, bool, bool) {
        let status = s.status();
        (
            s.consent_minute(),
            matches!(status, IndexStatus::Ret | IndexStatus::RetPending),
            matches!(status, IndexStatus::Onay | IndexStatus::Ret),
        )
    }
    old.is_empty() || order(new) >= order(old)
}

/// Index entries gathered for one bulk load: from the records ([`Consents::rebuild_index`])
/// or from an index checkpoint ([`Consents::load_index_only`]). Phones are kept as
/// (digits with the TACIR bit, channel slot, state) in a flat vector per brand, sorted and
/// merged per key at the load: one sort costs far less than a map of millions of entries.
#[derive(Default)]
pub struct IndexRows {
    phones: HashMap<u32, Vec<(u64, u8, ChannelState)>>,
    emails: HashMap<u32, Vec<(EmailKey, ChannelState)>>,
    retailers: Vec<(u32, RecipientType, IndexAddress, Channel, Vec<u32>)>,
}

const TACIR_BIT: u64 = 1 << 63;

impl IndexRows {
    /// Adds one channel's entry. A channel that does not fit the address is skipped.
    pub fn push(
        &mut self,
        brand: u32,
        rtype: RecipientType,
        address: IndexAddress,
        channel: Channel,
        state: ChannelState,
        retailers: &[u32],
    ) {
        match (address, channel) {
            (IndexAddress::Phone(digits), Channel::Arama | Channel::Mesaj) => {
                let tacir = if rtype == RecipientType::Tacir {
                    TACIR_BIT
                } else {
                    0
                };
                let slot = u8::from(channel == Channel::Mesaj);
                self.phones
                    .entry(brand)
                    .or_default()
                    .push((digits | tacir, slot, state));
            }
            (IndexAddress::Email(key), Channel::Eposta) => {
                self.emails.entry(brand).or_default().push((key, state));
            }
            _ => return,
        }
        if !retailers.is_empty() {
            self.retailers
                .push((brand, rtype, address, channel, retailers.to_vec()));
        }
    }

    /// Channel entries held.
    pub fn len(&self) -> usize {
        self.phones.values().map(Vec::len).sum::<usize>()
            + self.emails.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `other`'s entries into these (rows decoded in parallel, merged for one load).
    pub fn append(&mut self, other: IndexRows) {
        for (brand, rows) in other.phones {
            self.phones.entry(brand).or_default().extend(rows);
        }
        for (brand, rows) in other.emails {
            self.emails.entry(brand).or_default().extend(rows);
        }
        self.retailers.extend(other.retailers);
    }

    /// Replaces each brand's tables in `index` with these entries.
    fn load_into(self, index: &ConsentIndex) {
        for (brand, mut rows) in self.phones {
            rows.sort_unstable_by_key(|&(key, slot, _)| (key, slot));
            let merged = rows.chunk_by(|a, b| a.0 == b.0).map(|run| {
                let mut states = [ChannelState::EMPTY; 2];
                for &(_, slot, state) in run {
                    states[usize::from(slot)] = state;
                }
                let key = run[0].0;
                let rtype = if key & TACIR_BIT == 0 {
                    RecipientType::Bireysel
                } else {
                    RecipientType::Tacir
                };
                (rtype, key & !TACIR_BIT, states)
            });
            index.bulk_load_phones(brand, merged);
        }
        for (brand, rows) in self.emails {
            index.bulk_load_emails(brand, rows);
        }
        for (brand, rtype, address, channel, codes) in self.retailers {
            index.set_retailers(brand, rtype, address, channel, &codes);
        }
    }
}

/// An event whose recipient is the wrong kind of address for its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{channel} needs a {}", match channel.address_kind() { AddressKind::Phone => "phone number", AddressKind::Email => "e-mail address" })]
pub struct KindMismatch {
    pub channel: Channel,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iys;
    use crate::domain::{PhoneNumber, Registration, Source};

    fn key(i: u64) -> ConsentKey {
        ConsentKey {
            brand: 600_001,
            recipient: Recipient::Phone(
                PhoneNumber::from_e164_digits(905_320_000_000 + i).unwrap(),
            ),
            recipient_type: RecipientType::Bireysel,
            channel: Channel::Mesaj,
        }
    }

    fn event(status: ConsentStatus, date: &str) -> ConsentEvent {
        ConsentEvent {
            status,
            source: Source::HsWeb,
            consent_date: parse_iys(date).unwrap(),
            registration: Registration::Pending,
            retailer_access: vec![],
        }
    }

    #[test]
    fn counts_are_by_brand_channel_and_status_of_the_current_record() {
        let store = MemoryStore::default();
        store.apply(key(1), event(ConsentStatus::Onay, "2026-05-01 10:00:00"));
        store.apply(key(2), event(ConsentStatus::Onay, "2026-05-01 10:00:00"));
        // A later RET replaces key 2's ONAY: counted once, as RET pending.
        store.apply(key(2), event(ConsentStatus::Ret, "2026-05-02 10:00:00"));
        let mut registered = event(ConsentStatus::Ret, "2026-05-01 10:00:00");
        registered.registration = Registration::Registered {
            creation_date: parse_iys("2026-05-01 11:00:00").unwrap(),
            transaction_id: "t".repeat(64).into(),
        };
        store.apply(
            ConsentKey {
                brand: 600_002,
                channel: Channel::Arama,
                ..key(3)
            },
            registered,
        );
        let counts = store.counts();
        assert_eq!(
            counts[&600_001][&Channel::Mesaj],
            RecordCounts {
                onay_pending: 1,
                ret_pending: 1,
                ..RecordCounts::default()
            }
        );
        assert_eq!(counts[&600_001][&Channel::Mesaj].total(), 2);
        assert_eq!(counts[&600_002][&Channel::Arama].ret, 1);
        assert!(!counts[&600_002].contains_key(&Channel::Mesaj));
    }

    /// On a replica a consent may be recorded while the snapshot reloads: a write through
    /// `apply` during a rebuild must be in the index afterwards, not replaced by the bulk load.
    #[test]
    fn writes_during_a_rebuild_reach_the_index() {
        const N: u64 = 20_000;
        let consents = Arc::new(Consents::new(
            Arc::new(ConsentIndex::new()),
            Arc::new(EmailKeyer::new([3; 16])),
        ));
        for i in 0..N {
            consents
                .records()
                .apply(key(i), event(ConsentStatus::Onay, "2026-05-01 10:00:00"));
        }
        consents.rebuild_index();
        let done = Arc::new(AtomicBool::new(false));
        let rebuilder = {
            let (consents, done) = (Arc::clone(&consents), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rebuilds = 0;
                while !done.load(AtomicOrdering::SeqCst) || rebuilds == 0 {
                    consents.rebuild_index();
                    rebuilds += 1;
                }
                rebuilds
            })
        };
        for i in 0..N {
            consents
                .apply(key(i), event(ConsentStatus::Ret, "2026-05-02 10:00:00"))
                .unwrap();
        }
        done.store(true, AtomicOrdering::SeqCst);
        let rebuilds = rebuilder.join().unwrap();
        let lost = (0..N)
            .filter(|&i| {
                let Recipient::Phone(p) = key(i).recipient else {
                    unreachable!()
                };
                let [_, mesaj] =
                    consents
                        .index()
                        .phone(600_001, RecipientType::Bireysel, p.digits());
                mesaj.status() != IndexStatus::RetPending
            })
            .count();
        assert_eq!(
            lost, 0,
            "RETs written during {rebuilds} rebuilds lost from the index"
        );
    }

    #[test]
    fn while_partial_the_index_never_takes_a_state_it_knows_to_be_older() {
        let consents = Consents::new(
            Arc::new(ConsentIndex::new()),
            Arc::new(EmailKeyer::new([1; 16])),
        );
        let mesaj = |c: &Consents| {
            let Recipient::Phone(p) = key(1).recipient else {
                unreachable!()
            };
            c.index()
                .phone(600_001, RecipientType::Bireysel, p.digits())[1]
                .status()
        };
        // The index says RET (from a checkpoint); the records know nothing yet.
        let mut rows = IndexRows::default();
        let Recipient::Phone(p) = key(1).recipient else {
            unreachable!()
        };
        let ret = event(ConsentStatus::Ret, "2026-05-02 10:00:00");
        rows.push(
            600_001,
            RecipientType::Bireysel,
            IndexAddress::Phone(p.digits()),
            Channel::Mesaj,
            channel_state(&ret),
            &[],
        );
        consents.load_index_only(rows);
        assert!(!consents.records_complete());
        assert_eq!(mesaj(&consents), IndexStatus::RetPending);
        // An older ONAY (a day before) and an ONAY of the same minute are kept out.
        for date in ["2026-05-01 10:00:00", "2026-05-02 10:00:30"] {
            consents
                .apply(key(1), event(ConsentStatus::Onay, date))
                .unwrap();
            assert_eq!(mesaj(&consents), IndexStatus::RetPending, "ONAY of {date}");
        }
        // The records load: the RET is among them, and the rebuild makes the index exact:
        // the ONAY 30 s after the RET is the latest event.
        consents.records().apply(key(1), ret);
        consents.rebuild_index();
        assert!(consents.records_complete());
        assert_eq!(mesaj(&consents), IndexStatus::OnayPending);
        // A later minute passes the partial rule too.
        assert!(not_older(
            channel_state(&event(ConsentStatus::Onay, "2026-05-02 10:01:00")),
            channel_state(&event(ConsentStatus::Ret, "2026-05-02 10:00:00")),
        ));
    }
}
