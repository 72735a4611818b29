//! The write path: consents the company collects, kept as evidence (PostgreSQL or an
//! append-only file), uploaded to İYS within the legal window, imported in bulk, reconciled
//! with İYS at the end of the day and reported. It never acknowledges an event before it is
//! durable.

pub mod accounts;
pub mod evidence;
pub mod import;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod uploader;
