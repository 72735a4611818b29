//! The load-test kit's core: a bare gRPC echo server of the same messages as `Check` (the
//! floor iysgate cannot beat), and the load generator's scenarios: `sms` (unary `Check`,
//! closed or open loop; here), `email` ([`filter`]: lists through the Filter stream) and
//! `mixed-tenants` ([`tenants`]), `sync-burst` ([`burst`]) and `cold-start` ([`cold`]), all with HDR histograms, throughput, errors by status code and
//! a [`progress`] line. The side-by-side run is `load-tests/compare.sh`.

pub mod burst;
pub mod cold;
pub mod filter;
pub mod progress;
pub mod tenants;

pub use progress::Progress;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::pb;

/// The echo service's generated code, placed so its references to `iysgate.v1` resolve.
#[allow(clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod v1 {
        pub use crate::pb::*;
    }
    pub mod loadtest {
        pub mod v1 {
            tonic::include_proto!("iysgate.loadtest.v1");
        }
    }
}

use proto::loadtest::v1::echo_client::EchoClient;
use proto::loadtest::v1::echo_server::{Echo, EchoServer};

/// Answers every Check with the same, typical-size reply and does nothing else.
#[derive(Debug, Clone)]
pub struct EchoService {
    reply: pb::CheckResponse,
}

impl Default for EchoService {
    fn default() -> Self {
        // As large as a real ALLOW answer.
        let reply = pb::CheckResponse {
            decision: Some(pb::Decision {
                verdict: pb::Verdict::Allow.into(),
                reason: pb::Reason::ConsentRegistered.into(),
                status: pb::ConsentStatus::Onay.into(),
                source: pb::Source::HsWeb.into(),
                consent_date: "2025-06-02 11:09".into(),
                data_age_ms: 412,
                ..pb::Decision::default()
            }),
            recipient: "+905321234567".into(),
        };
        Self { reply }
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn check(
        &self,
        _request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }
}

/// Serves the echo baseline on `listener` until `shutdown` resolves.
pub async fn serve_echo(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(EchoService::default()))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Which server the generator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    Iysgate,
    Echo,
}

/// A closed-loop run: `connections` × `in_flight` callers, each sending its next call when
/// the previous one answered, for `duration`.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    pub addr: String,
    pub target: Target,
    pub api_key: String,
    pub brand: u32,
    pub connections: usize,
    pub in_flight: usize,
    pub duration: Duration,
    /// Recipients to ask about, used round robin (a mix of hits and misses).
    pub recipients: Arc<Vec<String>>,
    /// Counts answered calls for the progress line.
    pub progress: Progress,
    /// Closed loop: after a refusal carrying a RetryInfo, wait as told before the next call
    /// (what a well-behaved client does); otherwise call again at once.
    pub honour_retry_info: bool,
    /// Recipients per call: 0 sends `Check`, more a `CheckBatch` of that many (iysgate only).
    pub batch: usize,
}

/// The outcome of a run, as JSON and as a one-screen summary.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: Target,
    pub connections: usize,
    pub in_flight: usize,
    pub seconds: f64,
    pub requests: u64,
    pub per_second: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Calls answered with success, and their latency alone (under overload the refusals'
    /// fast answers would otherwise hide what the answered calls waited).
    pub answered: u64,
    pub answered_p50_us: u64,
    pub answered_p99_us: u64,
    /// Calls that failed, by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    pub fn summary(&self) -> String {
        let errors: u64 = self.errors.values().sum();
        format!(
            "{:?}: {} requests in {:.1} s = {:.0}/s ({} conns × {} in flight); latency µs p50 {} p90 {} p99 {} p99.9 {} max {}; answered {} (p50 {} p99 {}); errors {errors} {:?}",
            self.target,
            self.requests,
            self.seconds,
            self.per_second,
            self.connections,
            self.in_flight,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.answered,
            self.answered_p50_us,
            self.answered_p99_us,
            self.errors
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("connecting to {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("{0}")]
    Run(String),
}

fn request(run: &ClosedLoop, i: usize) -> Request<pb::CheckRequest> {
    let mut request = Request::new(pb::CheckRequest {
        brand_code: run.brand.into(),
        recipient: run.recipients[i % run.recipients.len()].clone(),
        channel: pb::Channel::Mesaj.into(),
        ..pb::CheckRequest::default()
    });
    if let Ok(key) = run.api_key.parse() {
        request
            .metadata_mut()
            .insert(crate::api::API_KEY_HEADER, key);
    }
    request
}

fn batch_request(run: &ClosedLoop, i: usize) -> Request<pb::CheckBatchRequest> {
    let n = run.recipients.len();
    let items = (0..run.batch)
        .map(|k| pb::CheckBatchItem {
            recipient: run.recipients[(i * run.batch + k) % n].clone(),
            channel: pb::Channel::Mesaj.into(),
            ..pb::CheckBatchItem::default()
        })
        .collect();
    let mut request = Request::new(pb::CheckBatchRequest {
        brand_code: run.brand.into(),
        items,
    });
    if let Ok(key) = run.api_key.parse() {
        request
            .metadata_mut()
            .insert(crate::api::API_KEY_HEADER, key);
    }
    request
}

fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| LoadError::Histogram(e.to_string()))
}

async fn connect(addr: &str) -> Result<tonic::transport::Channel, LoadError> {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .map_err(|e| LoadError::Connect(addr.to_owned(), e))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| LoadError::Connect(addr.to_owned(), e))
}

/// Clients of both targets over one connection; a caller keeps its pair for the whole run.
struct Clients {
    iysgate: pb::consent_check_client::ConsentCheckClient<tonic::transport::Channel>,
    echo: EchoClient<tonic::transport::Channel>,
}

impl Clients {
    fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            iysgate: pb::consent_check_client::ConsentCheckClient::new(channel.clone()),
            echo: EchoClient::new(channel),
        }
    }

    /// One Check (or CheckBatch) against the run's target.
    async fn call(&mut self, run: &ClosedLoop, i: usize) -> Result<(), Status> {
        match run.target {
            Target::Iysgate if run.batch > 0 => self
                .iysgate
                .check_batch(batch_request(run, i))
                .await
                .map(|_| ()),
            Target::Iysgate => self.iysgate.check(request(run, i)).await.map(|_| ()),
            Target::Echo => self.echo.check(request(run, i)).await.map(|_| ()),
        }
    }
}

fn report(
    run: &ClosedLoop,
    in_flight: usize,
    seconds: f64,
    (all, answered): (&Histogram<u64>, &Histogram<u64>),
    errors: BTreeMap<String, u64>,
) -> Report {
    Report {
        target: run.target,
        connections: run.connections.max(1),
        in_flight,
        seconds,
        requests: all.len(),
        per_second: all.len() as f64 / seconds,
        p50_us: all.value_at_quantile(0.50),
        p90_us: all.value_at_quantile(0.90),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
        answered: answered.len(),
        answered_p50_us: answered.value_at_quantile(0.50),
        answered_p99_us: answered.value_at_quantile(0.99),
        errors,
    }
}

/// Runs a closed-loop load and reports what it measured.
pub async fn run_closed_loop(run: ClosedLoop) -> Result<Report, LoadError> {
    let run = Arc::new(run);
    let started = Instant::now();
    let deadline = started + run.duration;
    let mut tasks = Vec::new();
    for c in 0..run.connections.max(1) {
        let channel = connect(&run.addr).await?;
        for m in 0..run.in_flight.max(1) {
            let (run, channel) = (Arc::clone(&run), channel.clone());
            let mut histogram = new_histogram()?;
            let mut answered = new_histogram()?;
            tasks.push(tokio::spawn(async move {
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut clients = Clients::new(channel);
                let mut i = (c * 7919 + m * 104_729) % run.recipients.len().max(1);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let outcome = clients.call(&run, i).await;
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    histogram.saturating_record(micros.max(1));
                    if outcome.is_ok() {
                        answered.saturating_record(micros.max(1));
                    }
                    run.progress.add(1);
                    if let Err(status) = outcome {
                        run.progress.fail();
                        *errors.entry(format!("{:?}", status.code())).or_default() += 1;
                        if run.honour_retry_info {
                            use tonic_types::StatusExt;
                            if let Some(wait) =
                                status.get_details_retry_info().and_then(|r| r.retry_delay)
                            {
                                tokio::time::sleep(wait).await;
                            }
                        }
                    }
                    i += 1;
                }
                (histogram, answered, errors)
            }));
        }
    }
    let mut all = new_histogram()?;
    let mut ok = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let Ok((h, a, e)) = task.await else { continue };
        all.add(&h)
            .map_err(|e| LoadError::Histogram(e.to_string()))?;
        ok.add(&a)
            .map_err(|e| LoadError::Histogram(e.to_string()))?;
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(report(&run, run.in_flight, seconds, (&all, &ok), errors))
}

/// The open loop's pacing granularity: calls due within it are released together (each is
/// still timed from its own intended send time).
const PACER_TICK: Duration = Duration::from_micros(100);

/// An open-loop run: calls sent at a fixed total `rate` per second whatever the answers do,
/// latency measured from each call's *intended* send time, so queueing in the server (or the
/// generator) is not hidden the way a closed loop hides it.
///
/// The schedule is kept by a plain thread sleeping to each send time (`nanosleep`, tens of
/// microseconds late at worst), not by tokio's timer, whose 1 ms resolution would add up to a
/// millisecond to every figure. Calls that fall due together are released together.
pub async fn run_open_loop(run: ClosedLoop, rate: u64) -> Result<Report, LoadError> {
    let run = Arc::new(run);
    let connections = run.connections.max(1);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(&run.addr).await?);
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let started = Instant::now();
    let end = started + run.duration;
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<(usize, Instant)>>();
    let pacer = std::thread::spawn(move || {
        let mut intended = started;
        let mut i = 0usize;
        let mut woke = started;
        while intended < end {
            // At most one wake-up per PACER_TICK: each costs the generator's core two context
            // switches, and at high rates those, not the calls, would saturate it.
            let wake = intended.max(woke + PACER_TICK);
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
            // Everything due by now goes out at once.
            let now = Instant::now();
            woke = now;
            let mut due = Vec::new();
            while intended <= now && intended < end {
                due.push((i, intended));
                intended += interval;
                i += 1;
            }
            if !due.is_empty() && due_tx.send(due).is_err() {
                return;
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Option<tonic::Code>)>();
    while let Some(due) = due_rx.recv().await {
        for (i, intended) in due {
            let (run, tx) = (Arc::clone(&run), tx.clone());
            let channel = channels[i % connections].clone();
            tokio::spawn(async move {
                let outcome = Clients::new(channel).call(&run, i).await;
                run.progress.add(1);
                if outcome.is_err() {
                    run.progress.fail();
                }
                let micros = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = tx.send((micros.max(1), outcome.err().map(|s| s.code())));
            });
        }
    }
    let _ = pacer.join();
    drop(tx);
    let mut all = new_histogram()?;
    let mut ok = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some((micros, error)) = rx.recv().await {
        all.saturating_record(micros);
        match error {
            Some(code) => *errors.entry(format!("{code:?}")).or_default() += 1,
            None => ok.saturating_record(micros),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(report(&run, 0, seconds, (&all, &ok), errors))
}

/// Recipients for a run against the demo: `hits` of the demo data set's `channel` records
/// (regenerated from the same seed, so they exist on the server) and as many that do not.
pub fn demo_recipients(
    records: usize,
    seed: u64,
    hits: usize,
    channel: crate::domain::Channel,
) -> Vec<String> {
    let index = Arc::new(crate::check::index::ConsentIndex::new());
    let keyer = Arc::new(crate::check::index::EmailKeyer::new([0; 16]));
    let consents = crate::check::store::Consents::new(index, keyer);
    let now = crate::domain::Clock::now_turkey(&crate::clock::SystemClock);
    crate::app::demo::generate(&consents, records, seed, now);
    let mut out = Vec::with_capacity(hits * 2);
    consents.records().for_each(|key, _| {
        if out.len() < hits
            && key.brand == crate::app::demo::BRANDS[0].code
            && key.channel == channel
        {
            out.push(key.recipient.to_string());
        }
    });
    let found = out.len();
    for i in 0..found.max(1) {
        let n = (i as u64 * 7_919) % 100_000_000;
        out.push(if channel == crate::domain::Channel::Eposta {
            format!("musteri.{n}@ornek-olmayan.com.tr")
        } else {
            format!("+9055{n:08}")
        });
    }
    out
}
