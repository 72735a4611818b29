//! `iysgate import FILE`: consents collected elsewhere, loaded into the evidence store (from
//! where the uploader sends them to İYS). Every row is validated as `RecordConsent` validates
//! it; a bad row is reported by line and field and the rest go on. Each row's idempotency key
//! is the file's SHA-256 and its line number, so running the same file again after a crash
//! stores only what is missing: nothing twice.
//!
//! The file is CSV (RFC 4180 quoting: a field holding a comma or a quote is written in double
//! quotes, a quote inside doubled; one row per line) with this header, `retailer_access` a
//! `;`-separated list and `document_ref` possibly empty:
//! `recipient,recipient_type,channel,status,source,consent_date,retailer_access,method,location,document_ref,capturing_system`
//!
//! The file is read twice as a stream (once for its hash, once for the rows), so its size is
//! not bounded by memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{BusinessCalendar, Channel, RecipientType, Source, TurkeyTime};
use crate::pb;
use crate::write::evidence::{EvidenceError, EvidenceStore, NewEvent, Recorded, Recorder};
use crate::write::record::Recording;

/// The header a file must start with.
pub const HEADER: &str = "recipient,recipient_type,channel,status,source,consent_date,retailer_access,method,location,document_ref,capturing_system";

/// Rows stored per transaction.
pub const CHUNK: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the first line must be the header {HEADER:?}")]
    Header { path: String },
    #[error("storing rows: {0}")]
    Store(#[from] EvidenceError),
}

/// A refused row.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub rows: usize,
    /// Stored by this run.
    pub stored: usize,
    /// Already stored by an earlier run of the same file.
    pub already_stored: usize,
    pub refused: Vec<Refusal>,
}

impl ImportSummary {
    /// Refusals counted by reason (the H-code or the message), for the summary.
    pub fn refused_by_reason(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.refused {
            let key = r.reason.split(':').next().unwrap_or(&r.reason).to_owned();
            *out.entry(format!("{}: {key}", r.field)).or_default() += 1;
        }
        out
    }
}

fn enum_value<T: Into<i32>>(text: &str, parse: impl Fn(&str) -> Option<T>) -> i32 {
    // An unknown word becomes "unspecified", which İYS's validation then names.
    parse(text.trim()).map_or(0, Into::into)
}

/// One CSV row as the API's input, or why its retailer_access is not a list of codes (a
/// code too wide for İYS is refused by the API's own check, as over gRPC).
fn row_input(fields: &[Cow<'_, str>], key: String) -> Result<pb::ConsentInput, &'static str> {
    let get = |i: usize| fields.get(i).map_or("", |f| f.trim());
    let retailer_access = get(6)
        .split(';')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| "not a ';'-separated list of retailer codes")?;
    Ok(pb::ConsentInput {
        recipient: get(0).to_owned(),
        recipient_type: enum_value(get(1), |t| {
            t.parse::<RecipientType>()
                .ok()
                .map(crate::pb::convert::pb_rtype)
        }),
        channel: enum_value(get(2), |t| {
            t.parse::<Channel>()
                .ok()
                .map(crate::pb::convert::pb_channel)
        }),
        status: enum_value(get(3), |t| match t {
            "ONAY" => Some(pb::ConsentStatus::Onay),
            "RET" => Some(pb::ConsentStatus::Ret),
            _ => None,
        }),
        source: get(4).parse::<Source>().map_or(0, |s| i32::from(s.code())),
        consent_date: get(5).to_owned(),
        retailer_access,
        evidence: Some(pb::Evidence {
            method: get(7).to_owned(),
            location: get(8).to_owned(),
            document_ref: get(9).to_owned(),
            capturing_system: get(10).to_owned(),
        }),
        idempotency_key: key,
    })
}

/// How far an import has got, for a progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportProgress {
    pub rows: usize,
    pub bytes: u64,
    pub total_bytes: u64,
}

/// Splits one CSV line into fields (RFC 4180 quoting). `None` when a quote is not closed.
pub fn split_csv(line: &str) -> Option<Vec<Cow<'_, str>>> {
    let mut fields = Vec::with_capacity(11);
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut tail = quoted;
            loop {
                let end = tail.find('"')?;
                value.push_str(&tail[..end]);
                tail = &tail[end + 1..];
                if let Some(after) = tail.strip_prefix('"') {
                    value.push('"');
                    tail = after;
                } else {
                    break;
                }
            }
            fields.push(Cow::Owned(value));
            match tail.strip_prefix(',') {
                Some(next) => rest = next,
                // Text after the closing quote is not CSV.
                None if tail.trim().is_empty() => return Some(fields),
                None => return None,
            }
        } else {
            let Some(end) = rest.find(',') else {
                fields.push(Cow::Borrowed(rest));
                return Some(fields);
            };
            fields.push(Cow::Borrowed(&rest[..end]));
            rest = &rest[end + 1..];
        }
    }
}

/// The first 8 bytes of the file's SHA-256, in hex: the import's identity in idempotency keys.
fn file_id(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::auth::to_hex(&hasher.finalize()[..8]))
}

/// Imports `path` into `store` for `brand` (the CLI's import: the serving processes apply
/// the store when they start). `stop_after_chunks` ends the run early (as a crash would), for
/// tests; `progress` is called after each chunk.
///
/// # Errors
/// An unreadable file, a wrong header, or a store failure (what was stored before stays).
#[allow(clippy::too_many_arguments)]
pub async fn import_file(
    store: &EvidenceStore,
    path: &Path,
    brand: u32,
    recorder: &Recorder,
    now: TurkeyTime,
    calendar: &BusinessCalendar,
    stop_after_chunks: Option<usize>,
    progress: impl FnMut(ImportProgress),
) -> Result<ImportSummary, ImportError> {
    let run = Run {
        store,
        brand,
        recorder,
        now,
        calendar,
        stop_after_chunks,
        apply: None,
    };
    run.file(path, progress).await
}

/// Imports `path` inside a serving process (the panel's import): each chunk, once durable, is
/// applied to the index and published to the other replicas as RecordConsent applies what it
/// records ([`crate::write::record::apply_recorded`]), so an imported RET is enforced before
/// the import ends.
///
/// # Errors
/// As [`import_file`].
pub async fn import_serving(
    recording: &Recording<'_>,
    path: &Path,
    brand: u32,
    recorder: &Recorder,
    progress: impl FnMut(ImportProgress),
) -> Result<ImportSummary, ImportError> {
    let run = Run {
        store: recording.store,
        brand,
        recorder,
        now: recording.checker.clock().now_turkey(),
        calendar: recording.checker.calendar(),
        stop_after_chunks: None,
        apply: Some(recording),
    };
    run.file(path, progress).await
}

/// One import: where it stores, for whom, and whether the index is applied.
struct Run<'a> {
    store: &'a EvidenceStore,
    brand: u32,
    recorder: &'a Recorder,
    now: TurkeyTime,
    calendar: &'a BusinessCalendar,
    stop_after_chunks: Option<usize>,
    apply: Option<&'a Recording<'a>>,
}

impl Run<'_> {
    async fn file(
        &self,
        path: &Path,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportSummary, ImportError> {
        let Run {
            brand,
            recorder,
            now,
            calendar,
            stop_after_chunks,
            ..
        } = *self;
        let io = |source| ImportError::Io {
            path: path.display().to_string(),
            source,
        };
        let file_id = file_id(path).map_err(io)?;
        let file = std::fs::File::open(path).map_err(io)?;
        let mut position = ImportProgress {
            total_bytes: file.metadata().map_err(io)?.len(),
            ..ImportProgress::default()
        };
        let mut lines = BufReader::with_capacity(1 << 20, file).lines().enumerate();
        match lines.next() {
            Some((_, Ok(header))) if header.trim() == HEADER => {
                position.bytes = header.len() as u64 + 1;
            }
            Some((_, Err(e))) => return Err(io(e)),
            _ => {
                return Err(ImportError::Header {
                    path: path.display().to_string(),
                });
            }
        }
        let mut summary = ImportSummary::default();
        let mut chunk: Vec<(usize, NewEvent)> = Vec::with_capacity(CHUNK);
        let mut chunks = 0;
        let utc_now = crate::domain::time::from_turkey(now);
        for (index, line) in lines {
            let line = line.map_err(io)?;
            position.bytes += line.len() as u64 + 1;
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            summary.rows += 1;
            let Some(fields) = split_csv(&line) else {
                summary.refused.push(Refusal {
                    line: number,
                    field: "line".into(),
                    reason: "a quoted field is not closed (or text follows its closing quote)"
                        .into(),
                });
                continue;
            };
            let input = match row_input(&fields, format!("import:{file_id}:{number}")) {
                Ok(input) => input,
                Err(reason) => {
                    summary.refused.push(Refusal {
                        line: number,
                        field: "retailer_access".into(),
                        reason: reason.into(),
                    });
                    continue;
                }
            };
            match crate::write::record::new_event(brand, "", &input, recorder, now, calendar) {
                Ok(event) => chunk.push((number, event)),
                Err(violations) => {
                    summary
                        .refused
                        .extend(violations.into_iter().map(|v| Refusal {
                            line: number,
                            field: v.field,
                            reason: v.description,
                        }));
                }
            }
            if chunk.len() == CHUNK {
                self.store_chunk(&mut chunk, &mut summary, utc_now).await?;
                chunks += 1;
                position.rows = summary.rows;
                progress(position);
                if stop_after_chunks == Some(chunks) {
                    return Ok(summary);
                }
            }
        }
        self.store_chunk(&mut chunk, &mut summary, utc_now).await?;
        position.rows = summary.rows;
        position.bytes = position.total_bytes;
        progress(position);
        Ok(summary)
    }

    /// Stores a chunk in one transaction (an item the store refuses is reported and the rest
    /// stored), then applies it to the index when the run serves one.
    async fn store_chunk(
        &self,
        chunk: &mut Vec<(usize, NewEvent)>,
        summary: &mut ImportSummary,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ImportError> {
        while !chunk.is_empty() {
            let events: Vec<NewEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
            match self.store.record(&events, now).await {
                Ok(recorded) => {
                    for r in &recorded {
                        match r {
                            Recorded::New(_) => summary.stored += 1,
                            Recorded::Duplicate(_) => summary.already_stored += 1,
                        }
                    }
                    chunk.clear();
                    if let Some(recording) = self.apply {
                        crate::write::record::apply_recorded(
                            recording, self.brand, events, recorded,
                        )
                        .await;
                    }
                }
                Err(EvidenceError::Invalid {
                    index,
                    field,
                    reason,
                }) => {
                    let (line, _) = chunk.remove(index);
                    summary.refused.push(Refusal {
                        line,
                        field: field.to_owned(),
                        reason: reason.to_owned(),
                    });
                }
                Err(EvidenceError::IdempotencyConflict { index, .. }) => {
                    let (line, _) = chunk.remove(index);
                    summary.refused.push(Refusal {
                        line,
                        field: "line".into(),
                        reason: "stored earlier from this file with different content".into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180_quoting() {
        let f =
            split_csv(r#"+905321234567,BIREYSEL,"Kadıköy, İstanbul","say ""evet""",,x"#).unwrap();
        assert_eq!(
            f,
            [
                "+905321234567",
                "BIREYSEL",
                "Kadıköy, İstanbul",
                r#"say "evet""#,
                "",
                "x"
            ]
        );
        assert_eq!(split_csv(r#""a,b""#).unwrap(), ["a,b"]);
        assert_eq!(split_csv("a,").unwrap(), ["a", ""]);
        assert!(split_csv(r#""open,b"#).is_none());
        assert!(split_csv(r#""a"b,c"#).is_none());
    }
}
