//! The `mixed-tenants` scenario: does one tenant flooding the server move another tenant's
//! latency? A steady tenant sends at a fixed rate (open loop) alone, then again while a
//! flooding tenant sends as fast as it can (closed loop) under its own API key. With a quota on
//! the flooder, its excess is refused with RESOURCE_EXHAUSTED and the steady tenant's p99
//! should barely move.

use serde::Serialize;

use super::{ClosedLoop, LoadError, Report, run_closed_loop, run_open_loop};

#[derive(Debug, Clone)]
pub struct TenantsRun {
    /// The steady tenant: its key, recipients and duration; sent at `steady_rate`.
    pub steady: ClosedLoop,
    pub steady_rate: u64,
    /// The flooding tenant: its own key, connections and calls in flight.
    pub flood: ClosedLoop,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantsReport {
    pub scenario: &'static str,
    pub steady_rate: u64,
    pub steady_alone: Report,
    pub steady_with_flood: Report,
    pub flood: Report,
}

impl TenantsReport {
    pub fn summary(&self) -> String {
        let (a, b) = (&self.steady_alone, &self.steady_with_flood);
        let flood_refused = self
            .flood
            .errors
            .get("ResourceExhausted")
            .copied()
            .unwrap_or(0);
        format!(
            "steady tenant at {}/s: alone p50 {} p99 {} p99.9 {} µs; with a flood p50 {} p99 {} p99.9 {} µs (p99 ×{:.2}); errors alone {:?}, with flood {:?}\n\
             flooding tenant: {} calls = {:.0}/s, {} refused RESOURCE_EXHAUSTED, {} answered",
            self.steady_rate,
            a.p50_us,
            a.p99_us,
            a.p999_us,
            b.p50_us,
            b.p99_us,
            b.p999_us,
            b.p99_us as f64 / a.p99_us.max(1) as f64,
            a.errors,
            b.errors,
            self.flood.requests,
            self.flood.per_second,
            flood_refused,
            self.flood
                .requests
                .saturating_sub(self.flood.errors.values().sum()),
        )
    }
}

/// Runs the steady tenant alone, then beside the flood, and reports both.
pub async fn run_tenants(run: TenantsRun) -> Result<TenantsReport, LoadError> {
    let steady_alone = run_open_loop(run.steady.clone(), run.steady_rate).await?;
    // The flood starts first and outlasts the steady tenant's window on both sides.
    let mut flood = run.flood.clone();
    flood.duration = run.steady.duration + std::time::Duration::from_secs(2);
    let flooding = tokio::spawn(run_closed_loop(flood));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let steady_with_flood = run_open_loop(run.steady.clone(), run.steady_rate).await?;
    let flood = flooding
        .await
        .map_err(|e| LoadError::Run(format!("flooding task: {e}")))??;
    Ok(TenantsReport {
        scenario: "mixed-tenants",
        steady_rate: run.steady_rate,
        steady_alone,
        steady_with_flood,
        flood,
    })
}
