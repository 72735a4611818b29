//! The file store's memory: everything the log says, rebuilt by applying its lines in order.
//! A write is planned against this state (validated, nothing changed), written to the log,
//! then applied by the same [`State::apply`] that replays the log at start, so the state after
//! a restart is the state before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};

use super::entry::{
    Entry, EntryError, EventLine, GrantLine, OutcomeLine, digest_from_hex, source_from_str,
};
use crate::auth::{RetailerGrant, to_hex};
use crate::domain::{BrandPolicy, BusinessCalendar, TurkeyTime};
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};
use crate::write::evidence::EvidenceError;
use crate::write::evidence::model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, NewEvent, Provider, Recorded, StoredEvent,
    Upload, UploadAnswer, UploadCounts, UploadState, after_answer, at_risk_before, check_text,
    claimable, count, expirable, micros, prepare,
};

#[derive(Debug, Default)]
pub(super) struct State {
    providers: BTreeMap<u32, Provider>,
    brands: BTreeMap<u32, Brand>,
    clients: BTreeMap<String, ApiClient>,
    /// Event `id` is at index `id - 1`.
    events: Vec<StoredEvent>,
    by_key: HashMap<(u32, String), EventId>,
    /// Open uploads (pending or in flight) by deadline, as the claim order wants them.
    open: BTreeSet<(TurkeyTime, EventId)>,
    attempts: HashMap<EventId, Vec<AttemptRecord>>,
    cursors: HashMap<(u32, u32, PullSource), Cursor>,
    reports: BTreeMap<(u32, NaiveDate), serde_json::Value>,
    /// Uploads marked expired (a final state, so only ever grows).
    expired: u64,
}

impl State {
    /// Applies one line. Lines were checked when written, so an error here means the file
    /// was changed by hand or by a bug; the reason says which reference does not hold.
    pub fn apply(&mut self, entry: Entry) -> Result<(), EntryError> {
        match entry {
            Entry::Provider {
                iys_code,
                name,
                credentials_ref,
                ..
            } => {
                let provider = Provider {
                    iys_code,
                    name,
                    credentials_ref,
                };
                self.providers.insert(iys_code, provider);
            }
            Entry::Brand {
                brand_code,
                iys_code,
                name,
                allow_unregistered_tacir,
                ..
            } => {
                let policy = BrandPolicy {
                    allow_unregistered_tacir,
                };
                let brand = Brand {
                    brand_code,
                    iys_code,
                    name,
                    policy,
                };
                self.brands.insert(brand_code, brand);
            }
            Entry::Policy {
                brand_code,
                allow_unregistered_tacir,
            } => {
                let brand = self
                    .brands
                    .get_mut(&brand_code)
                    .ok_or(EntryError::UnknownBrand(brand_code))?;
                brand.policy.allow_unregistered_tacir = allow_unregistered_tacir;
            }
            Entry::Client {
                name, key_sha256, ..
            } => {
                let key_sha256 = digest_from_hex(&key_sha256).ok_or(EntryError::ClientKey)?;
                let client = ApiClient {
                    name: name.clone(),
                    key_sha256,
                    grants: Vec::new(),
                };
                self.clients.insert(name, client);
            }
            Entry::Grant {
                client,
                brand_code,
                retailers,
                ..
            } => {
                let grants = &mut self.client_mut(&client)?.grants;
                grants.retain(|(brand, _)| *brand != brand_code);
                grants.push((brand_code, RetailerGrant::from(retailers)));
                grants.sort_by_key(|(brand, _)| *brand);
            }
            Entry::Revoke { client, brand_code } => {
                let grants = &mut self.client_mut(&client)?.grants;
                grants.retain(|(brand, _)| *brand != brand_code);
            }
            Entry::Events {
                recorded_at,
                events,
            } => {
                for line in events {
                    self.apply_event(&line, recorded_at)?;
                }
            }
            Entry::Claim {
                ids, lease_until, ..
            } => {
                for id in ids {
                    let upload = self.upload_mut(EventId(id))?;
                    upload.state = UploadState::InFlight { lease_until };
                    upload.attempts += 1;
                }
            }
            Entry::Finish {
                id,
                attempt,
                at,
                http_status,
                outcome,
            } => self.apply_finish(EventId(id), attempt, at, outcome.to_answer(http_status))?,
            Entry::Expire { ids, .. } => {
                for id in ids {
                    let id = EventId(id);
                    let upload = self.upload_mut(id)?;
                    if !upload.state.is_open() {
                        return Err(EntryError::ExpiryOfClosed(id));
                    }
                    upload.state = UploadState::Expired;
                    let deadline = upload.deadline;
                    self.open.remove(&(deadline, id));
                    self.expired += 1;
                }
            }
            Entry::Cursor {
                iys_code,
                brand_code,
                source,
                after,
                caught_up_at,
                ..
            } => {
                let source = source_from_str(&source).ok_or(EntryError::CursorSource)?;
                let cursor = Cursor {
                    after,
                    caught_up_at,
                };
                self.cursors.insert((iys_code, brand_code, source), cursor);
            }
            Entry::Report {
                brand_code,
                date,
                body,
                ..
            } => {
                self.reports.insert((brand_code, date), body);
            }
        }
        Ok(())
    }

    /// Puts every upload in flight back to pending, due when it was due before its claim,
    /// and returns how many. Only [`super::Log::open`] calls it: the file's lock means no
    /// other process runs, so whoever claimed them is gone and their leases protect nothing.
    /// Memory only: every open finds the same claims in the log and releases them again, and
    /// an answer or expiry written later applies to the released upload as to a lapsed one.
    pub fn release_claims(&mut self) -> usize {
        let mut released = 0;
        for &(_, id) in &self.open {
            let upload = &mut self.events[index_of(id)].upload;
            if matches!(upload.state, UploadState::InFlight { .. }) {
                upload.state = UploadState::Pending;
                released += 1;
            }
        }
        released
    }

    fn apply_event(
        &mut self,
        line: &EventLine,
        recorded_at: DateTime<Utc>,
    ) -> Result<(), EntryError> {
        let id = EventId(line.id);
        if usize::try_from(line.id).ok() != Some(self.events.len() + 1) {
            return Err(EntryError::OutOfSequence(id));
        }
        let event = line.to_event()?;
        self.by_key
            .insert((event.brand, event.idempotency_key.clone()), id);
        self.open.insert((line.deadline, id));
        self.events.push(StoredEvent {
            id,
            event,
            recorded_at,
            upload: Upload {
                state: UploadState::Pending,
                deadline: line.deadline,
                attempts: 0,
                next_attempt_at: recorded_at,
            },
        });
        Ok(())
    }

    fn apply_finish(
        &mut self,
        id: EventId,
        attempt: u32,
        at: DateTime<Utc>,
        answer: UploadAnswer,
    ) -> Result<(), EntryError> {
        let upload = self.upload_mut(id)?;
        if let Some((state, next_attempt_at)) = after_answer(upload, attempt, &answer.outcome) {
            let deadline = upload.deadline;
            let open = state.is_open();
            // İYS may accept an upload after it was marked expired (a slow uploader).
            let was_expired = upload.state == UploadState::Expired;
            upload.state = state;
            upload.next_attempt_at = next_attempt_at;
            if !open {
                self.open.remove(&(deadline, id));
            }
            if was_expired {
                self.expired -= 1;
            }
        }
        self.attempts.entry(id).or_default().push(AttemptRecord {
            attempt,
            finished_at: at,
            answer,
        });
        Ok(())
    }

    fn client_mut(&mut self, name: &str) -> Result<&mut ApiClient, EntryError> {
        self.clients.get_mut(name).ok_or(EntryError::UnknownClient)
    }

    fn upload_mut(&mut self, id: EventId) -> Result<&mut Upload, EntryError> {
        let index = usize::try_from(id.0 - 1).map_err(|_| EntryError::UnknownEvent(id))?;
        self.events
            .get_mut(index)
            .map(|e| &mut e.upload)
            .ok_or(EntryError::UnknownEvent(id))
    }

    // ---- plans: validate a write against the state and say what to log, changing nothing ----

    /// The line recording a batch (none when every event is a duplicate), and what recording
    /// each event does.
    pub fn plan_record(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
        calendar: &BusinessCalendar,
    ) -> Result<(Option<Entry>, Vec<Recorded>), EvidenceError> {
        let events = prepare(events)?;
        if let Some(missing) = events.iter().find(|e| !self.brands.contains_key(&e.brand)) {
            return Err(EvidenceError::UnknownBrand(missing.brand));
        }
        let mut lines: Vec<EventLine> = Vec::new();
        let mut in_batch: HashMap<(u32, &str), usize> = HashMap::new();
        let mut recorded = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let key = (event.brand, event.idempotency_key.as_str());
            let earlier = match self
                .by_key
                .get(&(event.brand, event.idempotency_key.clone()))
            {
                Some(&id) => Some((id, &self.events[index_of(id)].event)),
                None => in_batch
                    .get(&key)
                    .map(|&i| (EventId(lines[i].id), &events[i])),
            };
            if let Some((id, original)) = earlier {
                if !original.same_event(event) {
                    return Err(EvidenceError::IdempotencyConflict {
                        index,
                        brand: event.brand,
                    });
                }
                recorded.push(Recorded::Duplicate(id));
                continue;
            }
            let id = EventId(next_id(self.events.len() + lines.len()));
            let deadline = calendar.registration_deadline(event.consent_date);
            in_batch.insert(key, lines.len());
            lines.push(EventLine::new(id, event, deadline));
            recorded.push(Recorded::New(id));
        }
        let entry = (!lines.is_empty()).then(|| Entry::Events {
            recorded_at: micros(now),
            events: lines,
        });
        Ok((entry, recorded))
    }

    pub fn plan_claim(
        &self,
        limit: u32,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Entry> {
        let ids: Vec<i64> = self
            .open
            .iter()
            .map(|&(_, id)| id)
            .filter(|&id| claimable(&self.events[index_of(id)].upload, now))
            .take(limit as usize)
            .map(|id| id.0)
            .collect();
        (!ids.is_empty()).then(|| Entry::Claim {
            ids,
            lease_until: micros(lease_until),
            at: micros(now),
        })
    }

    /// The claims a [`State::plan_claim`] line made, once applied.
    pub fn claims(&self, ids: &[i64]) -> Vec<Claim> {
        ids.iter()
            .map(|&id| {
                let event = self.events[index_of(EventId(id))].clone();
                let attempt = event.upload.attempts;
                Claim { event, attempt }
            })
            .collect()
    }

    /// The line recording an answer; none when this attempt was answered before.
    pub fn plan_finish(
        &self,
        id: EventId,
        attempt: u32,
        answer: &UploadAnswer,
        now: DateTime<Utc>,
    ) -> Result<Option<Entry>, EvidenceError> {
        let stored = self.event_ref(id).ok_or(EvidenceError::UnknownEvent(id))?;
        if attempt == 0 || attempt > stored.upload.attempts {
            return Err(EvidenceError::UnknownAttempt { id, attempt });
        }
        let answered = self
            .attempts
            .get(&id)
            .is_some_and(|list| list.iter().any(|a| a.attempt == attempt));
        Ok((!answered).then(|| Entry::Finish {
            id: id.0,
            attempt,
            at: micros(now),
            http_status: answer.http_status,
            outcome: OutcomeLine::new(&answer.outcome),
        }))
    }

    pub fn plan_expire(&self, now: DateTime<Utc>) -> Option<Entry> {
        let ids: Vec<i64> = self
            .open
            .iter()
            .map(|&(_, id)| id)
            .filter(|&id| expirable(&self.events[index_of(id)].upload, now))
            .map(|id| id.0)
            .collect();
        (!ids.is_empty()).then(|| Entry::Expire {
            ids,
            at: micros(now),
        })
    }

    pub fn plan_provider(&self, p: &Provider, now: DateTime<Utc>) -> Result<Entry, EvidenceError> {
        check_text("name", &p.name)?;
        check_text("credentials_ref", &p.credentials_ref)?;
        if self.providers.contains_key(&p.iys_code) {
            return Err(EvidenceError::AlreadyExists {
                what: "service provider (iysCode)",
                key: p.iys_code.to_string(),
            });
        }
        Ok(Entry::Provider {
            iys_code: p.iys_code,
            name: p.name.clone(),
            credentials_ref: p.credentials_ref.clone(),
            at: micros(now),
        })
    }

    pub fn plan_brand(&self, b: &Brand, now: DateTime<Utc>) -> Result<Entry, EvidenceError> {
        check_text("name", &b.name)?;
        if self.brands.contains_key(&b.brand_code) {
            return Err(EvidenceError::AlreadyExists {
                what: "brand",
                key: b.brand_code.to_string(),
            });
        }
        if !self.providers.contains_key(&b.iys_code) {
            return Err(EvidenceError::UnknownProvider(b.iys_code));
        }
        Ok(Entry::Brand {
            brand_code: b.brand_code,
            iys_code: b.iys_code,
            name: b.name.clone(),
            allow_unregistered_tacir: b.policy.allow_unregistered_tacir,
            at: micros(now),
        })
    }

    pub fn plan_policy(&self, brand: u32, policy: BrandPolicy) -> Result<Entry, EvidenceError> {
        if !self.brands.contains_key(&brand) {
            return Err(EvidenceError::UnknownBrand(brand));
        }
        Ok(Entry::Policy {
            brand_code: brand,
            allow_unregistered_tacir: policy.allow_unregistered_tacir,
        })
    }

    pub fn plan_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Entry, EvidenceError> {
        check_text("name", name)?;
        if self.clients.contains_key(name) {
            return Err(EvidenceError::AlreadyExists {
                what: "API client",
                key: format!("{name:?}"),
            });
        }
        if self.clients.values().any(|c| c.key_sha256 == key_sha256) {
            return Err(EvidenceError::KeyInUse(name.to_owned()));
        }
        Ok(Entry::Client {
            name: name.to_owned(),
            key_sha256: to_hex(&key_sha256),
            at: micros(now),
        })
    }

    pub fn plan_grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<Entry, EvidenceError> {
        if !self.clients.contains_key(client) {
            return Err(EvidenceError::UnknownClient(client.to_owned()));
        }
        if !self.brands.contains_key(&brand) {
            return Err(EvidenceError::UnknownBrand(brand));
        }
        Ok(Entry::Grant {
            client: client.to_owned(),
            brand_code: brand,
            retailers: GrantLine::from(retailers),
            at: micros(now),
        })
    }

    /// The revoking line; none when there is no such grant.
    pub fn plan_revoke(&self, client: &str, brand: u32) -> Option<Entry> {
        let granted = self
            .clients
            .get(client)
            .is_some_and(|c| c.grants.iter().any(|(b, _)| *b == brand));
        granted.then(|| Entry::Revoke {
            client: client.to_owned(),
            brand_code: brand,
        })
    }

    pub fn plan_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Entry, EvidenceError> {
        if !self.brands.contains_key(&brand) {
            return Err(EvidenceError::UnknownBrand(brand));
        }
        Ok(Entry::Report {
            brand_code: brand,
            date,
            body: body.clone(),
            at: micros(now),
        })
    }

    // ---- reads ----

    fn event_ref(&self, id: EventId) -> Option<&StoredEvent> {
        usize::try_from(id.0 - 1)
            .ok()
            .and_then(|index| self.events.get(index))
    }

    pub fn event(&self, id: EventId) -> Option<StoredEvent> {
        self.event_ref(id).cloned()
    }

    pub fn events_between(
        &self,
        brand: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<StoredEvent> {
        // A scan: the embedded default holds what one process collects, and recording times
        // need not grow along the log (they are the callers' `now`).
        self.events
            .iter()
            .filter(|e| e.event.brand == brand && from <= e.recorded_at && e.recorded_at < to)
            .cloned()
            .collect()
    }

    pub fn upload_attempts(&self, id: EventId) -> Vec<AttemptRecord> {
        let mut list = self.attempts.get(&id).cloned().unwrap_or_default();
        list.sort_by_key(|a| a.attempt);
        list
    }

    pub fn upload_counts(&self, now: DateTime<Utc>, calendar: &BusinessCalendar) -> UploadCounts {
        let open = self
            .open
            .iter()
            .map(|&(_, id)| &self.events[index_of(id)].upload);
        let mut counts = count(open, now, at_risk_before(calendar, now));
        // Marked expired: closed, so not in `open`.
        counts.expired += self.expired;
        counts
    }

    pub fn cursor(&self, brand: BrandRef, source: PullSource) -> Option<Cursor> {
        self.cursors
            .get(&(brand.iys_code, brand.brand_code, source))
            .cloned()
    }

    pub fn providers(&self) -> Vec<Provider> {
        self.providers.values().cloned().collect()
    }

    pub fn brands(&self) -> Vec<Brand> {
        self.brands.values().cloned().collect()
    }

    pub fn clients(&self) -> Vec<ApiClient> {
        self.clients.values().cloned().collect()
    }

    pub fn report(&self, brand: u32, date: NaiveDate) -> Option<serde_json::Value> {
        self.reports.get(&(brand, date)).cloned()
    }
}

/// The index of a known event in `State::events`.
fn index_of(id: EventId) -> usize {
    usize::try_from(id.0 - 1).expect("ids in the state's own indexes are at least 1")
}

fn next_id(count: usize) -> i64 {
    i64::try_from(count + 1).expect("fewer than 2^63 events")
}
