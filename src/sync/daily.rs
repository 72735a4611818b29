//! İYS's daily change file (`…/changes/{date}/file`): the gap repair re-applies the last 7
//! days from it, and the reconciliation compares a day with it.

use super::types::{Change, PullError};

/// Parses İYS's daily change file (`…/changes/{date}/file`): a header row naming the columns
/// (creationDate, transactionId, recipient, recipientType, type, status, consentDate, source),
/// then one change per line.
pub fn parse_daily_file(text: &str) -> Result<Vec<Change>, PullError> {
    // RFC 4180 quoting (a source or recipient may hold a comma); blank lines are skipped and
    // rows may be short, so a missing column is reported by name below rather than by `csv`.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(row) => row.map_err(|e| PullError(format!("daily file header: {e}")))?,
        None => csv::StringRecord::new(),
    };
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
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
    records
        .enumerate()
        .map(|(i, row)| {
            let f = row.map_err(|e| PullError(format!("daily file line {}: {e}", i + 2)))?;
            let get = |k: usize| {
                f.get(k)
                    .map(str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::parse_daily_file;

    const HEADER: &str =
        "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source";

    /// A quoted field holding a comma is one field; splitting on every comma (the reader
    /// before `csv`) shifted every later column and read `status` from the wrong place.
    #[test]
    fn a_quoted_field_with_a_comma_is_one_field() {
        let text = format!(
            "{HEADER}\n2026-05-20 10:00:00,\"tx,1\",+905551112233,BIREYSEL,MESAJ,ONAY,,HS_WEB\n"
        );
        let changes = parse_daily_file(&text).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].transaction_id, "tx,1");
        assert_eq!(changes[0].status, "ONAY");
        assert_eq!(changes[0].consent_date, None);
        assert_eq!(changes[0].source, "HS_WEB");
    }

    #[test]
    fn blank_lines_are_skipped_and_a_short_row_names_its_line() {
        let text = format!("{HEADER}\n\n2026-05-20 10:00:00,tx\n");
        let err = parse_daily_file(&text).unwrap_err();
        assert_eq!(err.0, "daily file line 2: too few columns");
    }
}
