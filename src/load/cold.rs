//! The `cold-start` scenario: how long a starting replica takes to answer SERVING on the
//! standard gRPC health service, counted from when the process was started (the caller passes
//! that instant), and the records it loaded per second meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::LoadError;

#[derive(Debug, Clone, Serialize)]
pub struct ColdReport {
    pub scenario: &'static str,
    pub records: usize,
    /// From the process start to the first SERVING answer.
    pub seconds_to_serving: f64,
    /// From the process start to the first answer of any kind (listener up).
    pub seconds_to_listening: Option<f64>,
    pub records_per_second: f64,
}

impl ColdReport {
    pub fn summary(&self) -> String {
        format!(
            "cold start: SERVING after {:.2} s (listening after {}); {} records = {:.0} records/s",
            self.seconds_to_serving,
            self.seconds_to_listening
                .map_or("never".to_owned(), |s| format!("{s:.2} s")),
            self.records,
            self.records_per_second
        )
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Polls `addr`'s health every 10 ms until SERVING or `timeout`; `started_ms` is the process
/// start in Unix milliseconds.
pub async fn wait_serving(
    addr: &str,
    started_ms: u64,
    records: usize,
    timeout: Duration,
) -> Result<ColdReport, LoadError> {
    let since = |now: u64| now.saturating_sub(started_ms) as f64 / 1000.0;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut listening = None;
    loop {
        if tokio::time::Instant::now() > deadline {
            return Err(LoadError::Run(format!(
                "{addr} not SERVING after {} s",
                timeout.as_secs()
            )));
        }
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .map_err(|e| LoadError::Connect(addr.to_owned(), e))?
            .connect()
            .await
        {
            let mut client = HealthClient::new(channel);
            loop {
                let Ok(reply) = client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                else {
                    break;
                };
                let now = unix_ms();
                listening.get_or_insert(since(now));
                if reply.into_inner().status == ServingStatus::Serving as i32 {
                    let seconds = since(now);
                    return Ok(ColdReport {
                        scenario: "cold-start",
                        records,
                        seconds_to_serving: seconds,
                        seconds_to_listening: listening,
                        records_per_second: records as f64 / seconds.max(f64::EPSILON),
                    });
                }
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
