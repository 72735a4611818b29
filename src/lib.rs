//! iysgate answers one question, millions of times a second: may brand B send a commercial
//! message on channel C to recipient R right now, under Turkey's İYS consent rules?
//!
//! Folders by path, lowest first; a folder imports only those before it in this list, never
//! one below (no two folders import each other):
//! - [`domain`]: the İYS vocabulary, recipient normalisation, consent ordering, the decision
//!   rules and the business-day calendar. Pure.
//! - [`rng`], [`clock`], [`backoff`], [`telemetry`], [`quota`], [`auth`], [`redis_client`]: leaves: a seeded generator;
//!   the system clock (the only read of the machine's time); the one retry backoff; logs without personal data and metrics; per-key rate limits; API
//!   keys and their grants (a leaf because the evidence store keeps clients too); opening a
//!   Redis client (TLS, its CA, AUTH) for every Redis connection.
//! - [`check`]: **the check path**: the compact index (`check::index`), the current records
//!   and the one write path into the index (`check::store`), and a check from input to
//!   decision reading only memory (`check::Checker`).
//! - [`iys`]: İYS's REST API: the client (token flow, retries, the halt), wire types, İYS's
//!   own validation and H-codes; the mock İYS under the `dev-tools` feature.
//! - [`pb`]: the generated protobuf code, its codec and the conversions to domain values.
//! - [`sync`]: **the sync path**: the worker pulling both sources per brand, its leaf types
//!   (`sync::types`), the daily file, the push receiver, and the shared state in Redis
//!   (`sync::redis`: publish, follow, leader).
//! - [`write`]: **the write path**: recorded consents (`write::record`), the evidence store,
//!   the uploader, the import, the reconciliation, the daily report, accounts.
//! - [`api`]: the gRPC services, one file each, over admission (`api::admission`) and one
//!   error-to-status table (`api::status`).
//! - [`app`]: **assembling and running a process**: the `App`, serving and the ordered
//!   shutdown, the schedules, the listener (TLS, lingering close), configuration.
//! - `load` (`dev-tools`): the load generator.
//! - [`cli`]: the commands besides serving (client, admin, import, keygen, the demo tour).
//!
//! Where each decision rule (DESIGN.md) lives:
//! 1. grants: `auth::Client::may`, asked by `api::admission::permission`;
//! 2. normalisation: `domain::recipient::normalise_recipient`, asked by `check::parse_recipient`
//!    and `write::record::new_event`;
//! 3. exempt purposes and 4–6 (own RET, latest event, retailer): `domain::decision::decide`,
//!    ordering in `domain::consent`;
//! 7. fresh data only: `check::Freshness` and `Checker::data_age`, health in `app::serving`;
//! 8. every answer says why: `pb::convert::decision_pb`.

pub mod api;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod check;
pub mod cli;
pub mod clock;
pub mod domain;
pub mod iys;
#[cfg(feature = "dev-tools")]
pub mod load;
pub mod panel;
pub mod pb;
pub mod quota;
pub mod redis_client;
pub mod rng;
pub mod sync;
pub mod telemetry;
pub mod write;
