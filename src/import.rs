//! `iysgate import FILE`: consents collected elsewhere, loaded into the evidence store (from
//! where the uploader sends them to İYS). Every row is validated as `RecordConsent` validates
//! it; a bad row is reported by line and field and the rest go on. Each row's idempotency key
//! is the file's SHA-256 and its line number, so running the same file again after a crash
//! stores only what is missing: nothing twice.
//!
//! The file is CSV with this header (no quoted fields; commas are not allowed in values;
//! `retailer_access` is a `;`-separated list; `document_ref` may be empty):
//! `recipient,recipient_type,channel,status,source,consent_date,retailer_access,method,location,document_ref,capturing_system`

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::pb;
use crate::domain::{BusinessCalendar, Channel, RecipientType, Source, TurkeyTime};
use crate::evidence::{EvidenceError, EvidenceStore, NewEvent, Recorded, Recorder};

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

/// One CSV row as the API's input.
fn row_input(fields: &[&str], key: String) -> pb::ConsentInput {
    let get = |i: usize| fields.get(i).map_or("", |f| f.trim());
    pb::ConsentInput {
        recipient: get(0).to_owned(),
        recipient_type: enum_value(get(1), |t| {
            t.parse::<RecipientType>().ok().map(crate::api::pb_rtype)
        }),
        channel: enum_value(get(2), |t| {
            t.parse::<Channel>().ok().map(crate::api::pb_channel)
        }),
        status: enum_value(get(3), |t| match t {
            "ONAY" => Some(pb::ConsentStatus::Onay),
            "RET" => Some(pb::ConsentStatus::Ret),
            _ => None,
        }),
        source: get(4).parse::<Source>().map_or(0, |s| i32::from(s.code())),
        consent_date: get(5).to_owned(),
        retailer_access: get(6)
            .split(';')
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.trim().parse().unwrap_or(0))
            .collect(),
        evidence: Some(pb::Evidence {
            method: get(7).to_owned(),
            location: get(8).to_owned(),
            document_ref: get(9).to_owned(),
            capturing_system: get(10).to_owned(),
        }),
        idempotency_key: key,
    }
}

/// Imports `path` into `store` for `brand`. `stop_after_chunks` ends the run early (as a
/// crash would), for tests; `progress` is called after each chunk with rows read so far.
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
    mut progress: impl FnMut(usize),
) -> Result<ImportSummary, ImportError> {
    let io = |source| ImportError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file_id = crate::auth::to_hex(&Sha256::digest(text.as_bytes())[..8]);
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == HEADER => {}
        _ => {
            return Err(ImportError::Header {
                path: path.display().to_string(),
            });
        }
    }
    let mut summary = ImportSummary::default();
    let mut chunk: Vec<(usize, NewEvent)> = Vec::with_capacity(CHUNK);
    let mut chunks = 0;
    let utc_now = chrono::Utc::now();
    for (index, line) in lines {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        summary.rows += 1;
        let fields: Vec<&str> = line.split(',').collect();
        let input = row_input(&fields, format!("import:{file_id}:{number}"));
        match crate::record::new_event(brand, "", &input, recorder, now, calendar) {
            Ok(event) => chunk.push((number, event)),
            Err(violations) => summary
                .refused
                .extend(violations.into_iter().map(|v| Refusal {
                    line: number,
                    field: v.field,
                    reason: v.description,
                })),
        }
        if chunk.len() == CHUNK {
            store_chunk(store, &mut chunk, &mut summary, utc_now).await?;
            chunks += 1;
            progress(summary.rows);
            if stop_after_chunks == Some(chunks) {
                return Ok(summary);
            }
        }
    }
    store_chunk(store, &mut chunk, &mut summary, utc_now).await?;
    progress(summary.rows);
    Ok(summary)
}

/// Stores a chunk in one transaction; an item the store refuses is reported and the rest
/// stored.
async fn store_chunk(
    store: &EvidenceStore,
    chunk: &mut Vec<(usize, NewEvent)>,
    summary: &mut ImportSummary,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ImportError> {
    while !chunk.is_empty() {
        let events: Vec<NewEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
        match store.record(&events, now).await {
            Ok(recorded) => {
                for r in recorded {
                    match r {
                        Recorded::New(_) => summary.stored += 1,
                        Recorded::Duplicate(_) => summary.already_stored += 1,
                    }
                }
                chunk.clear();
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
