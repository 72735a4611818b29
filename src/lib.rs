//! iysgate answers one question, millions of times a second: may brand B send a commercial
//! message on channel C to recipient R right now, under Turkey's İYS consent rules?
//!
//! The modules, each with one job:
//! - [`domain`]: the İYS vocabulary, recipient normalisation, consent ordering, the decision
//!   rules and the business-day calendar. Pure: no I/O.
//! - [`index`]: the compact in-memory index of current records that answers every check.
//! - [`store`]: current records and the one write path that keeps the index in step.
//! - [`check`]: a check from input to decision, reading only memory.
//! - [`auth`]: API keys (stored hashed) and their brand grants.
//! - [`quota`]: per-client rate limits, so one tenant cannot take another's capacity.
//! - [`evidence`]: the system of record for collected consents, their evidence and their
//!   upload to İYS (PostgreSQL, or an append-only file in the embedded default).
//! - [`uploader`]: drains the evidence store's upload outbox into İYS (single and batch
//!   add), exactly once, within the registration deadline.
//! - [`api`]: the tonic gRPC services and the mapping to status codes.
//! - [`import`]: consents collected elsewhere, from a CSV file into the evidence store.
//! - [`report`]: the daily action report from the evidence store.
//! - [`record`]: `ConsentRecords`, consents the company collected: validated, stored, applied.
//! - [`server`]: assembling and running a process; shutdown in order.
//! - [`listener`]: accepting connections (TLS, lingering close, queueing stamps, idle
//!   request timeouts) for the gRPC port and the HTTP listeners.
//! - [`tls`]: certificates for every listener, re-read when their files change.
//! - [`demo`]: the generated data set of the embedded default.
//! - [`client`]: the command-line client.
//! - [`config`]: command line and environment.
//! - [`telemetry`]: logs without personal data, and metrics.

pub mod api;
pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod domain;
pub mod iys;
#[cfg(feature = "dev-tools")]
pub mod load;
pub mod pb;
pub mod quota;
pub mod rng;
pub mod sync;
pub mod telemetry;
pub mod write;
