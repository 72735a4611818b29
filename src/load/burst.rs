//! The `sync-burst` scenario: many RETs arrive in İYS at once (the mock's `/_mock/burst`).
//! How long until every one is enforced (DENY) by the replica under test, and what happens to
//! check latency meanwhile? A steady open-loop Check load runs throughout; the targets are
//! polled with CheckBatch until all answer DENY.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

use super::{ClosedLoop, LoadError, Report, connect, run_open_loop};
use crate::pb;

#[derive(Debug, Clone)]
pub struct BurstRun {
    /// The steady load (its duration must cover the burst) and its rate.
    pub steady: ClosedLoop,
    pub steady_rate: u64,
    /// The recipients the burst turns to RET.
    pub targets: Arc<Vec<String>>,
    /// `http://host:port/path` and JSON body of the request that makes the burst.
    pub trigger_url: String,
    pub trigger_body: String,
    /// Give up after this long.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    pub scenario: &'static str,
    pub rets: usize,
    /// Since the burst was made: first DENY seen, half, 99 % and all enforced (ms).
    pub first_ms: Option<u64>,
    pub half_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub all_ms: Option<u64>,
    pub enforced: usize,
    /// Full CheckBatch passes over the targets.
    pub passes: u64,
    /// The steady Check load over the whole run (before, during and after the burst).
    pub steady: Report,
    pub errors: BTreeMap<String, u64>,
}

impl BurstReport {
    pub fn summary(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("never".to_owned(), |v| format!("{v} ms"));
        format!(
            "{} RETs at once: first enforced after {}, half {}, 99 % {}, all {} ({} enforced, {} polling passes)\n\
             steady Checks meanwhile at {:.0}/s: p50 {} p99 {} p99.9 {} max {} µs; errors {:?}",
            self.rets,
            ms(self.first_ms),
            ms(self.half_ms),
            ms(self.p99_ms),
            ms(self.all_ms),
            self.enforced,
            self.passes,
            self.steady.per_second,
            self.steady.p50_us,
            self.steady.p99_us,
            self.steady.p999_us,
            self.steady.max_us,
            self.steady.errors,
        )
    }
}

/// POSTs `body` to a plain-HTTP URL and returns the status code (the mock's admin route).
async fn post(url: &str, body: &str) -> Result<u16, LoadError> {
    let bad = |what: String| LoadError::Run(format!("trigger {url}: {what}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs".into()))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let status = String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no HTTP status in the answer".into()))?;
    Ok(status)
}

/// How many targets answer DENY now, by CheckBatch of up to 10 000.
async fn enforced(
    client: &mut pb::consent_check_client::ConsentCheckClient<tonic::transport::Channel>,
    run: &BurstRun,
    errors: &mut BTreeMap<String, u64>,
) -> usize {
    let mut denied = 0;
    for part in run.targets.chunks(crate::api::MAX_BATCH) {
        let mut request = Request::new(pb::CheckBatchRequest {
            brand_code: run.steady.brand.into(),
            items: part
                .iter()
                .map(|r| pb::CheckBatchItem {
                    recipient: r.clone(),
                    channel: pb::Channel::Mesaj.into(),
                    ..pb::CheckBatchItem::default()
                })
                .collect(),
        });
        if let Ok(key) = run.steady.api_key.parse() {
            request
                .metadata_mut()
                .insert(crate::api::API_KEY_HEADER, key);
        }
        match client.check_batch(request).await {
            Ok(reply) => {
                denied += reply
                    .into_inner()
                    .decisions
                    .iter()
                    .filter(|d| d.verdict == i32::from(pb::Verdict::Deny))
                    .count();
            }
            Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
        }
    }
    denied
}

/// Runs the steady load, makes the burst a second in, and polls until all are enforced.
pub async fn run_burst(run: BurstRun) -> Result<BurstReport, LoadError> {
    let steady = tokio::spawn(run_open_loop(run.steady.clone(), run.steady_rate));
    let mut client =
        pb::consent_check_client::ConsentCheckClient::new(connect(&run.steady.addr).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
    let mut errors = BTreeMap::new();
    let before = enforced(&mut client, &run, &mut errors).await;
    if before > 0 {
        return Err(LoadError::Run(format!(
            "{before} of the targets are already DENY before the burst"
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let made = Instant::now();
    let status = post(&run.trigger_url, &run.trigger_body).await?;
    if status != 200 {
        return Err(LoadError::Run(format!("trigger answered HTTP {status}")));
    }
    let total = run.targets.len();
    let ms = || u64::try_from(made.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (mut first, mut half, mut p99, mut all) = (None, None, None, None);
    let mut passes = 0;
    let mut count = 0;
    while all.is_none() && made.elapsed() < run.timeout {
        count = enforced(&mut client, &run, &mut errors).await;
        passes += 1;
        let now = ms();
        if count > 0 {
            first.get_or_insert(now);
        }
        if count * 2 >= total {
            half.get_or_insert(now);
        }
        if count * 100 >= total * 99 {
            p99.get_or_insert(now);
        }
        if count == total {
            all = Some(now);
        }
    }
    let steady = steady
        .await
        .map_err(|e| LoadError::Run(format!("steady load: {e}")))??;
    Ok(BurstReport {
        scenario: "sync-burst",
        rets: total,
        first_ms: first,
        half_ms: half,
        p99_ms: p99,
        all_ms: all,
        enforced: count,
        passes,
        steady,
        errors,
    })
}
