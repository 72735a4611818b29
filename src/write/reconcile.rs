//! End-of-day reconciliation with İYS (API-NOTES §5.12). For one brand and one past day:
//! fetch İYS's agreement record and daily change file, verify the file's SHA-384 against the
//! record, then compare every row with what iysgate holds:
//!
//! - **the index** (what checks answer from): a row newer than the key's current record is a
//!   change iysgate missed (a RET the sync did not bring, say). It is applied at once, so the
//!   repair is in force before the report is written.
//! - **the company's own uploads** (the evidence store): an `HS_*` row with the transactionId
//!   of an upload must carry the same recipient, channel, type, status, source and consent
//!   date; an upload İYS registered that day whose transactionId is not in the file is
//!   missing at İYS. Neither can be repaired from here (İYS's record stands, and re-sending
//!   would be refused with H174): both are listed for a person to look at.
//!
//! The agreement is confirmed with İYS (`PUT …/agreements/{date}`) only when asked, the file
//! verified and this run found nothing: a run that repaired something reports it, and the
//! next run, finding the day clean, confirms. Recipients in the report are masked (KVKK): the
//! transactionId and the event id lead to the full record for those allowed to see it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::check::store::Consents;
use crate::domain::time::from_turkey;
use crate::domain::{ConsentEvent, ConsentKey};
use crate::iys::client::{IysClient, IysError};
use crate::sync::{Change, parse_daily_file, to_event};
use crate::write::evidence::{EvidenceError, EvidenceStore, StoredEvent, UploadState};

/// How far back of a day's end an upload registered that day may have been recorded: the
/// deadline is three business days after the consent, and the longest holiday run (a
/// bayram with its bridge days and weekends) keeps that under three weeks.
const RECORDED_BEFORE: Duration = Duration::days(21);

/// What iysgate's serving side holds, and how a missed change is put right.
pub trait Holdings: Send + Sync {
    /// The current event of a key, if any.
    fn current(&self, key: &ConsentKey) -> Option<ConsentEvent>;
    /// Applies a change the holdings missed (and, where replicas share state, publishes it).
    fn repair(&self, key: ConsentKey, event: ConsentEvent) -> impl Future<Output = ()> + Send;
}

impl Holdings for Consents {
    fn current(&self, key: &ConsentKey) -> Option<ConsentEvent> {
        self.get(key).map(|r| r.current)
    }

    fn repair(&self, key: ConsentKey, event: ConsentEvent) -> impl Future<Output = ()> + Send {
        // The key came from a validated change, so its recipient kind matches its channel.
        let _ = self.apply(key, event);
        std::future::ready(())
    }
}

/// A serving process's holdings: its own records and, on a replica (`--redis-url`), the
/// shared state a repair is published to, so that every replica enforces it.
#[derive(Clone)]
pub struct Serving {
    pub consents: std::sync::Arc<Consents>,
    pub shared: Option<crate::sync::redis::SharedState>,
}

impl Holdings for Serving {
    fn current(&self, key: &ConsentKey) -> Option<ConsentEvent> {
        self.consents.current(key)
    }

    async fn repair(&self, key: ConsentKey, event: ConsentEvent) {
        let _ = self.consents.apply(key.clone(), event);
        if let (Some(shared), Some(record)) = (&self.shared, self.consents.get(&key)) {
            crate::write::record::publish_for_replicas(
                shared,
                &[(key, record)],
                crate::write::record::Published::Reconciled,
            )
            .await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("İYS has not finished the file of {date} yet (processStatus {status}); try later")]
    NotReady { date: NaiveDate, status: String },
    #[error("İYS: {0}")]
    Iys(#[from] IysError),
    #[error("evidence store: {0}")]
    Store(#[from] EvidenceError),
    #[error("İYS keeps daily files for 7 days; {date} is {days} days back")]
    TooOld { date: NaiveDate, days: i64 },
    #[error("{date} is not over yet; İYS builds the file at the end of the day")]
    NotOver { date: NaiveDate },
}

/// Approvals and rejections in İYS's file for one (channel, type, side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub approvals: u64,
    pub rejections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// İYS's file has a change the index did not hold (repaired: applied).
    NotInIndex,
    /// An upload of the company that İYS's file shows with other content.
    Differs,
    /// An upload İYS registered that day (it gave a transactionId) that the file lacks.
    MissingAtIys,
    /// A row of the file iysgate cannot read (named field).
    Unreadable,
}

impl MismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::NotInIndex => "not_in_index",
            MismatchKind::Differs => "differs",
            MismatchKind::MissingAtIys => "missing_at_iys",
            MismatchKind::Unreadable => "unreadable",
        }
    }
}

/// One disagreement. The recipient is masked; `transaction_id` and `event_id` identify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    pub transaction_id: String,
    pub recipient: String,
    pub channel: String,
    pub recipient_type: String,
    /// The evidence store's event, for the company's own uploads.
    pub event_id: Option<i64>,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agreement {
    /// This run confirmed the agreement with İYS.
    Confirmed,
    /// İYS already had the agreement recorded.
    AlreadyConfirmed,
    /// Clean, but confirmation was not asked for.
    NotRequested,
    /// Mismatches were found (or the file did not verify): not confirmed.
    Withheld,
    /// İYS has no file for the day (no movement): nothing to confirm.
    NoFile,
}

impl Agreement {
    pub fn as_str(self) -> &'static str {
        match self {
            Agreement::Confirmed => "confirmed",
            Agreement::AlreadyConfirmed => "already_confirmed",
            Agreement::NotRequested => "not_requested",
            Agreement::Withheld => "withheld",
            Agreement::NoFile => "no_file",
        }
    }
}

/// The reconciliation part of the daily report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub brand: u32,
    pub date: NaiveDate,
    pub reconciled_at: DateTime<Utc>,
    /// İYS's SHA-384 of the file (lower-case hex); none when İYS has no file for the day.
    pub sha384: Option<String>,
    /// The file fetched hashes to `sha384`. When false nothing was compared.
    pub file_verified: bool,
    pub file_rows: u64,
    /// İYS's changes of the day by "CHANNEL TYPE SIDE" (SIDE: HS, sent by a provider; IYS,
    /// made by the recipient in İYS).
    pub changes: BTreeMap<String, Tally>,
    /// RETs the recipients gave in İYS that day; every one is in force in the index after
    /// the run (those the index missed are among the repaired mismatches).
    pub new_rets_from_iys: u64,
    /// HS rows that are the company's uploads through iysgate.
    pub uploads_matched: u64,
    /// HS rows sent by another channel of the provider (İYS's web panel, another integrator).
    pub hs_from_elsewhere: u64,
    pub mismatches: Vec<Mismatch>,
    pub repaired: u64,
    pub agreement: Agreement,
}

impl Reconciliation {
    /// Whether iysgate and İYS agree on the day (nothing found, file verified).
    pub fn clean(&self) -> bool {
        (self.file_verified || self.sha384.is_none()) && self.mismatches.is_empty()
    }
}

/// What to reconcile.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub iys_code: u32,
    pub brand: u32,
    pub date: NaiveDate,
    /// Confirm the agreement with İYS when the day is clean.
    pub confirm: bool,
}

/// A recipient shown without most of it: `+90532*****67`, `a***@example.com`.
pub fn mask(recipient: &str) -> String {
    if let Some((local, domain)) = recipient.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = recipient.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

/// Reconciles `target` at `now` and returns the result (the daily report stores it:
/// [`crate::write::report::reconcile_day`]).
///
/// # Errors
/// İYS not ready or unreachable after the client's retries, the day not over or too old,
/// or a store failure. Nothing was repaired when the file could not be fetched.
pub async fn reconcile<H: Holdings>(
    client: &IysClient,
    store: &EvidenceStore,
    holdings: &H,
    target: Target,
    now: DateTime<Utc>,
) -> Result<Reconciliation, ReconcileError> {
    let today = crate::domain::time::to_turkey(now).date();
    if target.date >= today {
        return Err(ReconcileError::NotOver { date: target.date });
    }
    let days = (today - target.date).num_days();
    if days > 7 {
        return Err(ReconcileError::TooOld {
            date: target.date,
            days,
        });
    }
    let (iys, brand) = (u64::from(target.iys_code), u64::from(target.brand));
    let mut result = Reconciliation {
        brand: target.brand,
        date: target.date,
        reconciled_at: now,
        sha384: None,
        file_verified: false,
        file_rows: 0,
        changes: BTreeMap::new(),
        new_rets_from_iys: 0,
        uploads_matched: 0,
        hs_from_elsewhere: 0,
        mismatches: Vec::new(),
        repaired: 0,
        agreement: Agreement::NoFile,
    };
    let record = client.agreement(iys, brand, target.date).await?;
    let rows = match &record {
        None => Vec::new(),
        Some(a) if a.process_status != "completed" => {
            return Err(ReconcileError::NotReady {
                date: target.date,
                status: a.process_status.clone(),
            });
        }
        Some(a) => {
            let expected = a.hash_value.clone().unwrap_or_default().to_lowercase();
            result.sha384 = Some(expected.clone());
            // A file cut in transit fails the hash: fetch once more before giving up.
            let mut verified = None;
            for _ in 0..2 {
                let text = client
                    .daily_changes_file(iys, brand, target.date)
                    .await?
                    .unwrap_or_default();
                if crate::auth::to_hex(&Sha384::digest(text.as_bytes())) == expected {
                    verified = Some(text);
                    break;
                }
                tracing::warn!(brand = target.brand, date = %target.date,
                    "daily change file does not match İYS's SHA-384");
            }
            let Some(text) = verified else {
                result.agreement = Agreement::Withheld;
                return Ok(result);
            };
            result.file_verified = true;
            match parse_daily_file(&text) {
                Ok(rows) => rows,
                Err(e) => {
                    result.mismatches.push(Mismatch {
                        kind: MismatchKind::Unreadable,
                        transaction_id: String::new(),
                        recipient: String::new(),
                        channel: String::new(),
                        recipient_type: String::new(),
                        event_id: None,
                        detail: e.to_string(),
                        repaired: false,
                    });
                    result.agreement = Agreement::Withheld;
                    return Ok(result);
                }
            }
        }
    };
    let mut uploads = registered_uploads(store, target).await?;
    for row in &rows {
        compare_row(row, target.brand, holdings, &mut uploads, &mut result).await;
    }
    // Uploads İYS registered that day that its file does not list.
    let mut missing: Vec<_> = uploads
        .into_values()
        .filter(|u| u.registered_on == target.date)
        .collect();
    missing.sort_by_key(|u| u.stored.id.0);
    for u in missing {
        let e = &u.stored.event;
        result.mismatches.push(Mismatch {
            kind: MismatchKind::MissingAtIys,
            transaction_id: u.transaction_id,
            recipient: mask(&e.recipient.to_string()),
            channel: e.channel.as_str().to_owned(),
            recipient_type: e.recipient_type.as_str().to_owned(),
            event_id: Some(u.stored.id.0),
            detail: "İYS gave this transactionId that day, but its file does not list it".into(),
            repaired: false,
        });
    }
    result.agreement = match &record {
        _ if !result.mismatches.is_empty() => Agreement::Withheld,
        None => Agreement::NoFile,
        Some(a) if a.agreement_status => Agreement::AlreadyConfirmed,
        Some(_) if !target.confirm => Agreement::NotRequested,
        Some(_) => {
            if client.confirm_agreement(iys, brand, target.date).await? {
                Agreement::Confirmed
            } else {
                Agreement::Withheld
            }
        }
    };
    Ok(result)
}

/// An upload of the company that İYS registered.
struct Upload {
    stored: StoredEvent,
    transaction_id: String,
    registered_on: NaiveDate,
}

/// The brand's uploads registered by İYS, recorded up to the end of `target.date`, by
/// transactionId.
async fn registered_uploads(
    store: &EvidenceStore,
    target: Target,
) -> Result<HashMap<String, Upload>, EvidenceError> {
    let end = from_turkey(
        (target.date + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default(),
    );
    let mut out = HashMap::new();
    for stored in store
        .events_between(target.brand, end - RECORDED_BEFORE, end)
        .await?
    {
        if let UploadState::Registered {
            transaction_id,
            creation_date,
        } = &stored.upload.state
        {
            out.insert(
                transaction_id.clone(),
                Upload {
                    transaction_id: transaction_id.clone(),
                    registered_on: creation_date.date(),
                    stored,
                },
            );
        }
    }
    Ok(out)
}

fn side(source: &str) -> &'static str {
    if source.starts_with("HS_") {
        "HS"
    } else {
        "IYS"
    }
}

/// Compares one row of İYS's file with the index and the company's uploads.
async fn compare_row<H: Holdings>(
    row: &Change,
    brand: u32,
    holdings: &H,
    uploads: &mut HashMap<String, Upload>,
    result: &mut Reconciliation,
) {
    result.file_rows += 1;
    let side = side(&row.source);
    let tally = result
        .changes
        .entry(format!("{} {} {side}", row.channel, row.recipient_type))
        .or_default();
    match row.status.as_str() {
        "ONAY" => tally.approvals += 1,
        "RET" => {
            tally.rejections += 1;
            if side == "IYS" {
                result.new_rets_from_iys += 1;
            }
        }
        _ => {}
    }
    let mismatch = |kind, detail: String| Mismatch {
        kind,
        transaction_id: row.transaction_id.clone(),
        recipient: mask(&row.recipient),
        channel: row.channel.clone(),
        recipient_type: row.recipient_type.clone(),
        event_id: None,
        detail,
        repaired: false,
    };
    let (key, event) = match to_event(brand, row) {
        Ok(pair) => pair,
        Err(e) => {
            result.mismatches.push(mismatch(
                MismatchKind::Unreadable,
                format!("{}: {}", e.field, e.reason),
            ));
            return;
        }
    };
    if side == "HS" {
        match uploads.remove(&row.transaction_id) {
            Some(upload) => {
                result.uploads_matched += 1;
                let differs = differing_fields(&upload.stored, &key, &event);
                if !differs.is_empty() {
                    result.mismatches.push(Mismatch {
                        event_id: Some(upload.stored.id.0),
                        ..mismatch(
                            MismatchKind::Differs,
                            format!("İYS holds other {}", differs.join(", ")),
                        )
                    });
                }
            }
            None => result.hs_from_elsewhere += 1,
        }
    }
    let current = holdings.current(&key);
    if current.as_ref().is_none_or(|c| event.supersedes(c)) {
        let detail = match current {
            None => "the index held no record of this key".to_owned(),
            Some(c) => format!(
                "the index held an older {} of {}",
                c.status.as_str(),
                crate::domain::time::format_iys(c.consent_date)
            ),
        };
        holdings.repair(key, event).await;
        result.repaired += 1;
        result.mismatches.push(Mismatch {
            repaired: true,
            ..mismatch(MismatchKind::NotInIndex, format!("{detail}; applied"))
        });
    }
}

/// The fields in which İYS's row differs from the upload it answers.
fn differing_fields(
    upload: &StoredEvent,
    key: &ConsentKey,
    event: &ConsentEvent,
) -> Vec<&'static str> {
    let e = &upload.event;
    let mut out = Vec::new();
    if e.recipient != key.recipient {
        out.push("recipient");
    }
    if e.channel != key.channel {
        out.push("type");
    }
    if e.recipient_type != key.recipient_type {
        out.push("recipientType");
    }
    if e.status != event.status {
        out.push("status");
    }
    if e.source != event.source {
        out.push("source");
    }
    if e.consent_date != event.consent_date {
        out.push("consentDate");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_enough_to_tell_records_apart() {
        assert_eq!(mask("+905321234567"), "+90532*****67");
        assert_eq!(mask("ayse.yilmaz@example.com"), "a***@example.com");
        assert_eq!(mask("12345"), "*****");
        assert!(!mask("+905321234567").contains("12345"));
    }

    #[test]
    fn sides_follow_the_source_prefix() {
        assert_eq!(side("HS_WEB"), "HS");
        assert_eq!(side("IYS_MOBIL"), "IYS");
        assert_eq!(side("IYS_AHS_HAT_KAPATMA"), "IYS");
    }
}
