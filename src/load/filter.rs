//! The `email` scenario: lists pushed through the `Filter` stream, the way an e-mail platform
//! filters a campaign of millions. It reports the total time, recipients per second end to end
//! (generator included), each chunk's round trip, and the server's peak memory when its pid is
//! known.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::Request;

use super::{LoadError, Progress, connect, new_histogram};
use crate::pb;

/// What the list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListKind {
    /// Phone numbers in the packed `phones` field (MESAJ).
    Phones,
    /// E-mail addresses in `recipient_lines`, one per line (EPOSTA).
    Emails,
    /// E-mail addresses as `repeated string`, for comparison (one allocation each to decode).
    EmailStrings,
}

/// One Filter run: `total` recipients split over `streams` concurrent streams of `chunk`-sized
/// messages. The chunks are built before the clock starts from `pool` (used round robin), so
/// the figure is the server's and the wire's, not the generator's string building.
#[derive(Debug, Clone)]
pub struct FilterRun {
    pub addr: String,
    pub api_key: String,
    pub brand: u32,
    pub kind: ListKind,
    pub total: usize,
    pub chunk: usize,
    pub streams: usize,
    /// Recipients to draw from, in the text form (`+90…` or an address).
    pub pool: Arc<Vec<String>>,
    /// The server's process id, to read its peak memory (Linux `/proc`).
    pub server_pid: Option<u32>,
    pub progress: Progress,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterReport {
    pub scenario: &'static str,
    pub kind: ListKind,
    pub recipients: u64,
    pub allowed: u64,
    pub streams: usize,
    pub chunk: usize,
    pub seconds: f64,
    pub recipients_per_second: f64,
    pub chunk_p50_us: u64,
    pub chunk_p99_us: u64,
    pub chunk_max_us: u64,
    /// The server's resident memory before the run and its high-water mark after, in MiB.
    pub server_rss_before_mib: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub errors: BTreeMap<String, u64>,
}

impl FilterReport {
    pub fn summary(&self) -> String {
        let memory = match (self.server_rss_before_mib, self.server_peak_rss_mib) {
            (Some(before), Some(peak)) => {
                format!("; server RSS {before:.0} MiB before, peak {peak:.0} MiB")
            }
            _ => String::new(),
        };
        format!(
            "Filter {:?}: {} recipients ({} allowed) in {:.2} s = {:.0}/s over {} streams of {}-recipient chunks; chunk round trip µs p50 {} p99 {} max {}{memory}; errors {:?}",
            self.kind,
            self.recipients,
            self.allowed,
            self.seconds,
            self.recipients_per_second,
            self.streams,
            self.chunk,
            self.chunk_p50_us,
            self.chunk_p99_us,
            self.chunk_max_us,
            self.errors
        )
    }
}

/// A line of `/proc/PID/status` in MiB (`VmRSS`, `VmHWM`).
fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn packed(phone: &str) -> Option<u64> {
    phone.strip_prefix('+')?.parse().ok()
}

/// The chunks of one stream, prebuilt; the first names the brand and channel.
fn chunks(run: &FilterRun, stream: usize, count: usize) -> Vec<pb::FilterRequest> {
    let chunk = run.chunk.max(1);
    let mut at = stream * 7919;
    let mut out = Vec::with_capacity(count.div_ceil(chunk));
    let mut left = count;
    while left > 0 {
        let n = left.min(chunk);
        let mut message = pb::FilterRequest::default();
        if out.is_empty() {
            message.brand_code = run.brand.into();
            message.channel = match run.kind {
                ListKind::Phones => pb::Channel::Mesaj.into(),
                ListKind::Emails | ListKind::EmailStrings => pb::Channel::Eposta.into(),
            };
        }
        let mut lines = String::new();
        for _ in 0..n {
            let r = &run.pool[at % run.pool.len()];
            at += 1;
            match run.kind {
                ListKind::Phones => message.phones.push(packed(r).unwrap_or(0)),
                ListKind::Emails => {
                    lines.push_str(r);
                    lines.push('\n');
                }
                ListKind::EmailStrings => message.recipients.push(r.clone()),
            }
        }
        message.recipient_lines = lines.into();
        out.push(message);
        left -= n;
    }
    out
}

/// Streams the whole list and reports.
pub async fn run_filter(run: FilterRun) -> Result<FilterReport, LoadError> {
    if run.pool.is_empty() {
        return Err(LoadError::Run("no recipients to send".into()));
    }
    let streams = run.streams.max(1);
    let server_rss_before_mib = run.server_pid.and_then(|p| proc_status_mib(p, "VmRSS:"));
    let mut prepared = Vec::with_capacity(streams);
    for s in 0..streams {
        let share = run.total / streams + usize::from(s < run.total % streams);
        let channel = connect(&run.addr).await?;
        prepared.push((channel, chunks(&run, s, share)));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (channel, messages) in prepared {
        let (api_key, progress) = (run.api_key.clone(), run.progress.clone());
        let mut histogram = new_histogram()?;
        tasks.push(tokio::spawn(async move {
            // Send times, read back in order: replies come in chunk order.
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let outgoing = tokio_stream::iter(messages).map(move |m| {
                let _ = sent_tx.send(Instant::now());
                m
            });
            let mut request = Request::new(outgoing);
            if let Ok(key) = api_key.parse() {
                request
                    .metadata_mut()
                    .insert(crate::api::API_KEY_HEADER, key);
            }
            let mut client = pb::consent_check_client::ConsentCheckClient::new(channel)
                .max_decoding_message_size(16 * 1024 * 1024)
                .max_encoding_message_size(16 * 1024 * 1024);
            let (mut allowed, mut seen) = (0u64, 0u64);
            let outcome: Result<(), tonic::Status> = async {
                let mut replies = client.filter(request).await?.into_inner();
                while let Some(reply) = replies.message().await? {
                    if let Some(sent) = sent_rx.recv().await {
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        histogram.saturating_record(micros.max(1));
                    }
                    allowed += u64::from(reply.allowed_count);
                    seen += u64::from(reply.count);
                    progress.add(u64::from(reply.count));
                }
                Ok(())
            }
            .await;
            (histogram, allowed, seen, outcome.err().map(|s| s.code()))
        }));
    }
    let mut all = new_histogram()?;
    let (mut allowed, mut seen) = (0, 0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let Ok((h, a, n, error)) = task.await else {
            *errors.entry("Panicked".into()).or_default() += 1;
            continue;
        };
        all.add(&h)
            .map_err(|e| LoadError::Histogram(e.to_string()))?;
        allowed += a;
        seen += n;
        if let Some(code) = error {
            *errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(FilterReport {
        scenario: "email",
        kind: run.kind,
        recipients: seen,
        allowed,
        streams,
        chunk: run.chunk,
        seconds,
        recipients_per_second: seen as f64 / seconds,
        chunk_p50_us: all.value_at_quantile(0.50),
        chunk_p99_us: all.value_at_quantile(0.99),
        chunk_max_us: all.max(),
        server_rss_before_mib,
        server_peak_rss_mib: run.server_pid.and_then(|p| proc_status_mib(p, "VmHWM:")),
        errors,
    })
}
