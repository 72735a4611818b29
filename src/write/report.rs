//! The daily action report from the evidence store: what the company recorded on a day (by
//! channel, recipient type, status and source), how those uploads stand (registered, refused
//! with their codes, pending, expired), and the deployment's open deadlines (at risk, expired).
//! After the day's reconciliation with İYS ([`reconcile_day`]) it also carries that: İYS's
//! approvals and rejections by channel, type and side (HS/IYS), new RETs from İYS, the
//! mismatches found and repaired, and whether the agreement was confirmed. The reconciliation
//! is stored with the report (`daily_reports`); the own-data part is recomputed when read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::time::from_turkey;
use crate::iys::client::IysClient;
use crate::write::evidence::{EvidenceError, EvidenceStore, UploadState};
use crate::write::reconcile::{Holdings, ReconcileError, Reconciliation, Target};

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DailyReport {
    pub brand: u32,
    pub date: NaiveDate,
    /// Events recorded that day (Turkey time), by "CHANNEL RECIPIENTTYPE STATUS SOURCE".
    pub recorded: BTreeMap<String, u64>,
    pub recorded_total: u64,
    /// How the day's uploads stand now.
    pub registered: u64,
    pub pending: u64,
    pub expired: u64,
    /// Refused by İYS, by code.
    pub refused: BTreeMap<String, u64>,
    /// Across the deployment, now: uploads with under one business day left, and past due.
    pub at_risk_now: u64,
    pub expired_now: u64,
    /// The day's reconciliation with İYS, once run.
    pub reconciliation: Option<Reconciliation>,
}

/// The UTC instants of a Turkey-time calendar day.
fn day_bounds(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = from_turkey(date.and_hms_opt(0, 0, 0).unwrap_or_default());
    (start, start + chrono::Duration::days(1))
}

/// Builds `brand`'s report for `date` from what the store holds at `now`.
///
/// # Errors
/// A store failure.
pub async fn daily_report(
    store: &EvidenceStore,
    brand: u32,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<DailyReport, EvidenceError> {
    let (from, to) = day_bounds(date);
    let mut report = DailyReport {
        brand,
        date,
        ..DailyReport::default()
    };
    for stored in store.events_between(brand, from, to).await? {
        let e = &stored.event;
        let key = format!(
            "{} {} {} {}",
            e.channel.as_str(),
            e.recipient_type.as_str(),
            e.status.as_str(),
            e.source.as_str()
        );
        *report.recorded.entry(key).or_default() += 1;
        report.recorded_total += 1;
        match &stored.upload.state {
            // Superseded: İYS holds the consent from its own earlier record; for the day's
            // figures that is as registered as an upload İYS took.
            UploadState::Registered { .. } | UploadState::Superseded { .. } => {
                report.registered += 1;
            }
            UploadState::Pending | UploadState::InFlight { .. } => report.pending += 1,
            UploadState::Expired => report.expired += 1,
            UploadState::Rejected { code, .. } => {
                *report.refused.entry(code.clone()).or_default() += 1;
            }
        }
    }
    let counts = store.upload_counts(now).await?;
    report.at_risk_now = counts.at_risk;
    report.expired_now = counts.expired;
    report.reconciliation = store
        .report(brand, date)
        .await?
        .and_then(|body| body.get("reconciliation").cloned())
        .and_then(|r| serde_json::from_value(r).ok());
    Ok(report)
}

/// Reconciles `target` with İYS (repairing what the holdings missed), stores the day's
/// report with the reconciliation, and returns it. Run again, it replaces the stored one.
///
/// # Errors
/// As [`crate::write::reconcile::reconcile`]; nothing is stored then.
pub async fn reconcile_day<H: Holdings>(
    client: &IysClient,
    store: &EvidenceStore,
    holdings: &H,
    target: Target,
    now: DateTime<Utc>,
) -> Result<DailyReport, ReconcileError> {
    let reconciliation =
        crate::write::reconcile::reconcile(client, store, holdings, target, now).await?;
    let mut report = daily_report(store, target.brand, target.date, now).await?;
    report.reconciliation = Some(reconciliation);
    // String-keyed maps and plain values: encoding cannot fail.
    let body = serde_json::to_value(&report).expect("a report always encodes");
    store
        .save_report(target.brand, target.date, &body, now)
        .await?;
    Ok(report)
}

impl DailyReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "daily action report: brand {} on {}\n\nrecorded that day: {}\n",
            self.brand, self.date, self.recorded_total
        );
        for (what, n) in &self.recorded {
            let _ = writeln!(out, "  {n:>8}  {what}");
        }
        let _ = writeln!(
            out,
            "\nuploads of that day: {} registered, {} pending, {} expired, {} refused",
            self.registered,
            self.pending,
            self.expired,
            self.refused.values().sum::<u64>()
        );
        for (code, n) in &self.refused {
            let _ = writeln!(out, "  {n:>8}  refused {code}");
        }
        let _ = writeln!(
            out,
            "\nopen deadlines now: {} at risk (under one business day left), {} expired",
            self.at_risk_now, self.expired_now
        );
        match &self.reconciliation {
            None => out.push_str("\nreconciliation with İYS: not run for this day\n"),
            Some(r) => r.write_table(&mut out),
        }
        out
    }

    /// CSV rows `section,key,count`.
    pub fn csv(&self) -> String {
        let mut out = String::from("section,key,count\n");
        for (what, n) in &self.recorded {
            let _ = writeln!(out, "recorded,{what},{n}");
        }
        for (key, n) in [
            ("registered", self.registered),
            ("pending", self.pending),
            ("expired", self.expired),
        ] {
            let _ = writeln!(out, "uploads,{key},{n}");
        }
        for (code, n) in &self.refused {
            let _ = writeln!(out, "refused,{code},{n}");
        }
        let _ = writeln!(out, "deadlines,at_risk_now,{}", self.at_risk_now);
        let _ = writeln!(out, "deadlines,expired_now,{}", self.expired_now);
        if let Some(r) = &self.reconciliation {
            for (key, t) in &r.changes {
                let _ = writeln!(out, "iys_approvals,{key},{}", t.approvals);
                let _ = writeln!(out, "iys_rejections,{key},{}", t.rejections);
            }
            for (key, n) in [
                ("file_rows", r.file_rows),
                ("file_verified", u64::from(r.file_verified)),
                ("new_rets_from_iys", r.new_rets_from_iys),
                ("uploads_matched", r.uploads_matched),
                ("hs_from_elsewhere", r.hs_from_elsewhere),
                ("mismatches", r.mismatches.len() as u64),
                ("repaired", r.repaired),
            ] {
                let _ = writeln!(out, "reconciliation,{key},{n}");
            }
            let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
            for m in &r.mismatches {
                *kinds.entry(m.kind.as_str()).or_default() += 1;
            }
            for (kind, n) in kinds {
                let _ = writeln!(out, "mismatch,{kind},{n}");
            }
            let _ = writeln!(out, "agreement,{},1", r.agreement.as_str());
        }
        out
    }
}

impl Reconciliation {
    fn write_table(&self, out: &mut String) {
        let verified = match (&self.sha384, self.file_verified) {
            (None, _) => "İYS has no change file for the day".to_owned(),
            (Some(_), true) => format!("{} rows, SHA-384 verified", self.file_rows),
            (Some(_), false) => "the file did NOT match İYS's SHA-384: nothing compared".into(),
        };
        let _ = writeln!(out, "\nreconciliation with İYS: {verified}");
        for (key, t) in &self.changes {
            let _ = writeln!(
                out,
                "  {:>8} approvals  {:>8} rejections  {key}",
                t.approvals, t.rejections
            );
        }
        let _ = writeln!(
            out,
            "  new RETs from İYS: {} (all in force)\n  uploads through iysgate matched: {}; \
             HS changes sent elsewhere: {}",
            self.new_rets_from_iys, self.uploads_matched, self.hs_from_elsewhere
        );
        let _ = writeln!(
            out,
            "  mismatches: {} found, {} repaired",
            self.mismatches.len(),
            self.repaired
        );
        for m in &self.mismatches {
            let event = m
                .event_id
                .map(|id| format!(" event {id}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {:<14} {} {} {} tx {}{event}: {}{}",
                m.kind.as_str(),
                m.channel,
                m.recipient_type,
                m.recipient,
                if m.transaction_id.is_empty() {
                    "-"
                } else {
                    &m.transaction_id
                },
                m.detail,
                if m.repaired { " (repaired)" } else { "" }
            );
        }
        let _ = writeln!(out, "  agreement with İYS: {}", self.agreement.as_str());
    }
}
