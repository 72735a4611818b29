//! The daily action report from the evidence store: what the company recorded on a day (by
//! channel, recipient type, status and source), how those uploads stand (registered, refused
//! with their codes, pending, expired), and the deployment's open deadlines (at risk, expired).
//! Reconciliation with İYS's daily file (mismatches found and repaired, new RETs from İYS) is
//! not part of it yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::time::from_turkey;
use crate::evidence::{EvidenceError, EvidenceStore, UploadState};

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
            UploadState::Registered { .. } => report.registered += 1,
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
        out
    }
}
