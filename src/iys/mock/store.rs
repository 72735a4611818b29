//! The mock's consent store: current record per key, a per-brand change log ordered by
//! (creationDate, transactionId), batches, v2 idempotency memory and push registrations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use foldhash::fast::RandomState;
use sha2::{Digest, Sha256};

use super::codes::entry;
use super::net::hex;
use super::validate::ValidConsent;
use crate::domain::time::{format_iys, from_turkey};
use crate::domain::{Channel, ConsentStatus, RecipientType, Source};
use crate::iys::wire::{ChangeItem, IysError, PollItem, PushConnection, StatusResponse};

pub type FoldMap<K, V> = HashMap<K, V, RandomState>;

/// The `IYS_*` sources the mock produces (citizen-side changes): a subset of
/// [`Source::ALL`], which also names sources the mock never makes (`IYS_3338`,
/// `IYS_KISA_LINK`, `IYS_OTHER`).
pub const CITIZEN_SOURCES: [Source; 9] = [
    Source::IysKisamesaj,
    Source::IysCm,
    Source::IysWeb,
    Source::IysWebYeni,
    Source::IysMobil,
    Source::IysEposta,
    Source::IysAhsHatKapatma,
    Source::IysFrameEposta,
    Source::IysFrameSms,
];

/// Every source the store knows: the provider (`HS_*`) ones and [`CITIZEN_SOURCES`].
pub fn source_index(name: &str) -> Option<Source> {
    Source::provider(name).or_else(|| CITIZEN_SOURCES.iter().copied().find(|s| s.as_str() == name))
}

/// Which side made a change: the provider (`HS`) or the recipient in İYS (`IYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Hs,
    Iys,
}

/// One consent movement. Shared (`Arc`) between the record's history and the brand's log.
#[derive(Debug)]
pub struct Event {
    pub recipient: Arc<str>,
    pub recipient_type: RecipientType,
    pub consent_type: Channel,
    pub status: ConsentStatus,
    /// One of [`source_index`]'s sources; `None` for a first TACIR record without source.
    pub source: Option<Source>,
    pub consent_date: Option<NaiveDateTime>,
    pub creation: NaiveDateTime,
    pub txid: [u8; 32],
    pub citizen_name: Option<Box<str>>,
    /// (requestId, subRequestId) when the event came from a batch.
    pub origin: Option<Box<(String, String)>>,
}

impl Event {
    pub fn side(&self) -> Side {
        match self.source {
            Some(s) if !s.is_provider() => Side::Iys,
            _ => Side::Hs,
        }
    }

    pub fn source_str(&self) -> &'static str {
        self.source.map_or("", Source::as_str)
    }

    pub fn epoch(&self) -> i64 {
        from_turkey(self.creation).timestamp()
    }

    pub fn txid_hex(&self) -> String {
        hex(&self.txid)
    }

    /// The pull cursor pointing at this event: `<epochSeconds>_<transactionId>`.
    pub fn cursor(&self) -> String {
        format!("{}_{}", self.epoch(), self.txid_hex())
    }

    pub fn to_change(&self) -> ChangeItem {
        ChangeItem {
            consent_date: self.consent_date.map(format_iys),
            creation_date: format_iys(self.creation),
            source: self.source_str().to_owned(),
            recipient: self.recipient.to_string(),
            recipient_type: self.recipient_type,
            status: self.status,
            consent_type: self.consent_type,
            transaction_id: self.txid_hex(),
            citizen_name: self.citizen_name.as_deref().map(str::to_owned),
        }
    }

    /// One line of the reconciliation CSV (no line end).
    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            format_iys(self.creation),
            self.txid_hex(),
            self.recipient,
            self.recipient_type.as_str(),
            self.consent_type.as_str(),
            self.status.as_str(),
            self.consent_date.map(format_iys).unwrap_or_default(),
            self.source_str()
        )
    }
}

/// A movement's transactionId: 64 hex characters, one per movement, as in İYS (two changes
/// of one key in one second get two ids; the reconciliation keys uploads by them).
///
/// İYS's ids are opaque. The mock's start with the brand's movement number (big-endian), so
/// within a second they sort in the order the changes were made: the pull cursor
/// `<epochSeconds>_<transactionId>` then never falls behind a change made later in the second
/// it points into, and pull can serve the current second. The rest is a hash of the movement.
fn transaction_id(
    brand: u64,
    movement: u64,
    recipient: &str,
    recipient_type: RecipientType,
    consent_type: Channel,
    creation: NaiveDateTime,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(brand.to_be_bytes());
    hasher.update(movement.to_be_bytes());
    hasher.update(recipient.as_bytes());
    hasher.update([0, recipient_type as u8, consent_type as u8]);
    hasher.update(from_turkey(creation).timestamp().to_be_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut txid = [0; 32];
    txid[..8].copy_from_slice(&movement.to_be_bytes());
    txid[8..].copy_from_slice(&digest[..24]);
    txid
}

/// Current state of one key plus its movements, oldest first.
#[derive(Debug)]
pub struct Record {
    pub history: Vec<Arc<Event>>,
    pub retailer_code: Option<u64>,
    pub retailer_access: Option<Vec<u64>>,
}

impl Record {
    pub fn current(&self) -> Option<&Arc<Event>> {
        self.history.last()
    }

    pub fn to_status(&self) -> Option<StatusResponse> {
        let e = self.current()?;
        Some(StatusResponse {
            recipient: e.recipient.to_string(),
            recipient_type: e.recipient_type,
            consent_type: e.consent_type,
            status: e.status,
            source: e.source_str().to_owned(),
            consent_date: e.consent_date.map(format_iys),
            creation_date: format_iys(e.creation),
            transaction_id: e.txid_hex(),
            retailer_code: self.retailer_code,
            retailer_title: None,
            retailer_access_count: self.retailer_access.as_ref().map_or(0, |a| a.len() as u64),
            retailer_access: self.retailer_access.clone(),
        })
    }
}

fn slot(recipient_type: RecipientType, consent_type: Channel) -> usize {
    recipient_type as usize * 3 + consent_type as usize
}

/// A registered push connection.
#[derive(Debug, Clone)]
pub struct PushReg {
    pub connection: PushConnection,
    pub status: String,
    pub register_time: NaiveDateTime,
}

/// Everything stored for one brand.
#[derive(Debug, Default)]
pub struct BrandState {
    consents: [FoldMap<Arc<str>, Record>; 6],
    /// Sorted by (creation, txid); equal keys keep insertion order.
    pub log: Vec<Arc<Event>>,
    /// v2 single add: canonical request body → (transactionId, creationDate).
    pub v2_seen: FoldMap<String, (String, String)>,
    pub push: Vec<PushReg>,
    pub agreements: HashSet<NaiveDate>,
    /// Last changes page served per side (for the "repeat page" fault).
    pub last_page: HashMap<Side, Vec<u8>>,
    /// Movements given a transactionId so far (see [`transaction_id`]).
    movements: u64,
}

impl BrandState {
    pub fn record(
        &self,
        recipient: &str,
        recipient_type: RecipientType,
        consent_type: Channel,
    ) -> Option<&Record> {
        self.consents[slot(recipient_type, consent_type)].get(recipient)
    }

    /// The transactionId of the brand's next movement.
    pub fn next_txid(
        &mut self,
        brand: u64,
        recipient: &str,
        recipient_type: RecipientType,
        consent_type: Channel,
        creation: NaiveDateTime,
    ) -> [u8; 32] {
        self.movements += 1;
        transaction_id(
            brand,
            self.movements,
            recipient,
            recipient_type,
            consent_type,
            creation,
        )
    }

    pub fn len(&self) -> usize {
        self.consents.iter().map(HashMap::len).sum()
    }

    pub fn reserve(&mut self, recipient_type: RecipientType, consent_type: Channel, n: usize) {
        self.consents[slot(recipient_type, consent_type)].reserve(n);
        self.log.reserve(n);
    }

    /// Appends an event to the record and the log. Returns the stored event.
    pub fn insert(
        &mut self,
        event: Event,
        retailer: Option<(Option<u64>, Option<Vec<u64>>)>,
    ) -> Arc<Event> {
        let event = Arc::new(event);
        let map = &mut self.consents[slot(event.recipient_type, event.consent_type)];
        let record = map
            .entry(Arc::clone(&event.recipient))
            .or_insert_with(|| Record {
                history: Vec::with_capacity(1),
                retailer_code: None,
                retailer_access: None,
            });
        record.history.push(Arc::clone(&event));
        if let Some((code, access)) = retailer {
            if code.is_some() {
                record.retailer_code = code;
            }
            if access.is_some() {
                record.retailer_access = access;
            }
        }
        self.push_log(Arc::clone(&event));
        event
    }

    fn push_log(&mut self, event: Arc<Event>) {
        let key = (event.creation, event.txid);
        if self
            .log
            .last()
            .is_none_or(|last| (last.creation, last.txid) <= key)
        {
            self.log.push(event);
        } else {
            let pos = self.log.partition_point(|e| (e.creation, e.txid) <= key);
            self.log.insert(pos, event);
        }
    }

    /// Re-sorts the log after a bulk append (seeding).
    pub fn sort_log(&mut self) {
        self.log.sort_by_key(|e| (e.creation, e.txid));
    }

    /// Business rules (the 400 layer), in İYS's order, then the write.
    /// `origin` is the batch (requestId, subRequestId) if any.
    pub fn apply(
        &mut self,
        brand: u64,
        consent: &ValidConsent,
        creation: NaiveDateTime,
        origin: Option<(String, String)>,
    ) -> Result<Arc<Event>, IysError> {
        let existing = self
            .record(
                &consent.recipient,
                consent.recipient_type,
                consent.consent_type,
            )
            .and_then(Record::current);
        match existing {
            None => {
                if consent.source == Some("HS_KARAR") {
                    // "HS_KARAR cannot be used on a first insert" (SPEC), reported as H408.
                    return Err(entry("H408"));
                }
                if consent.status == ConsentStatus::Ret {
                    return Err(entry("H175"));
                }
            }
            Some(current) => {
                if consent.recipient_type == RecipientType::Tacir {
                    if consent.source.is_none() {
                        return Err(entry("H463"));
                    }
                    if consent.consent_date.is_none() {
                        return Err(entry("H462"));
                    }
                }
                if current.status == consent.status {
                    let mut error = entry("H174");
                    error.message = format!(
                        "İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. \
                         İzin durumu: {}",
                        current.status.as_str()
                    );
                    return Err(error);
                }
                if let (Some(stored), Some(new)) = (current.consent_date, consent.consent_date)
                    && new < stored
                {
                    return Err(entry("H178"));
                }
            }
        }
        let recipient: Arc<str> = Arc::from(consent.recipient.as_str());
        let txid = self.next_txid(
            brand,
            &recipient,
            consent.recipient_type,
            consent.consent_type,
            creation,
        );
        let event = Event {
            recipient,
            recipient_type: consent.recipient_type,
            consent_type: consent.consent_type,
            status: consent.status,
            source: consent.source.and_then(source_index),
            consent_date: consent.consent_date,
            creation,
            txid,
            citizen_name: None,
            origin: origin.map(Box::new),
        };
        Ok(self.insert(
            event,
            Some((consent.retailer_code, consent.retailer_access.clone())),
        ))
    }

    /// One page of pull: events of `side` after `cursor`, inside `[lower, upper]`.
    pub fn changes(
        &self,
        side: Side,
        cursor: Option<(NaiveDateTime, [u8; 32])>,
        lower: NaiveDateTime,
        upper: NaiveDateTime,
        limit: usize,
    ) -> Vec<&Arc<Event>> {
        let from_cursor = cursor.map_or(0, |key| {
            self.log.partition_point(|e| (e.creation, e.txid) <= key)
        });
        let from_window = self.log.partition_point(|e| e.creation < lower);
        self.log[from_cursor.max(from_window)..]
            .iter()
            .take_while(|e| e.creation <= upper)
            .filter(|e| e.side() == side)
            .take(limit)
            .collect()
    }

    /// The events created on `day` (Turkey date), in reconciliation order.
    pub fn day_events(&self, day: NaiveDate) -> &[Arc<Event>] {
        let start = day.and_hms_opt(0, 0, 0).unwrap_or_default();
        let end = start + TimeDelta::days(1);
        let a = self.log.partition_point(|e| e.creation < start);
        let b = self.log.partition_point(|e| e.creation < end);
        &self.log[a..b]
    }
}

/// One item of an accepted batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub sub_request_id: String,
    pub consent: ValidConsent,
}

/// An accepted batch (`POST …/consents/request`).
#[derive(Debug)]
pub struct Batch {
    pub brand: u64,
    pub v2: bool,
    pub accepted: NaiveDateTime,
    pub due: NaiveDateTime,
    pub items: Vec<BatchItem>,
    /// Filled when processed.
    pub results: Option<Vec<PollItem>>,
}

/// The daily reconciliation CSV of some events (header, one line each, final `\n`).
pub fn reconciliation_csv(events: &[Arc<Event>]) -> String {
    let mut csv = String::with_capacity(64 + events.len() * 160);
    csv.push_str(crate::iys::wire::RECONCILIATION_CSV_HEADER);
    csv.push('\n');
    for e in events {
        csv.push_str(&e.csv_line());
        csv.push('\n');
    }
    csv
}
