//! İYS's daily change file (`…/changes/{date}/file`): the gap repair re-applies the last 7
//! days from it, and the reconciliation compares a day with it.

use super::types::{Change, PullError};

/// Parses İYS's daily change file (`…/changes/{date}/file`): a header row naming the columns
/// (creationDate, transactionId, recipient, recipientType, type, status, consentDate, source),
/// then one change per line.
pub fn parse_daily_file(text: &str) -> Result<Vec<Change>, PullError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|h| h.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| PullError(format!("daily file has no {name} column")))
    };
    let (cd, tx, r, rt, ty, st, d, src) = (
        column("creationDate")?,
        column("transactionId")?,
        column("recipient")?,
        column("recipientType")?,
        column("type")?,
        column("status")?,
        column("consentDate")?,
        column("source")?,
    );
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |k: usize| {
                f.get(k)
                    .map(|v| (*v).to_owned())
                    .ok_or_else(|| PullError(format!("daily file line {}: too few columns", i + 2)))
            };
            Ok(Change {
                creation_date: get(cd)?,
                transaction_id: get(tx)?,
                recipient: get(r)?,
                recipient_type: get(rt)?,
                channel: get(ty)?,
                status: get(st)?,
                consent_date: Some(get(d)?).filter(|v| !v.is_empty()),
                source: get(src)?,
            })
        })
        .collect()
}
