//! Importing a CSV of consents from the browser: upload, live progress, then the summary with
//! the refused rows by line and field (downloadable as CSV).

use std::collections::BTreeSet;
use std::sync::Mutex;

use axum::Router;

use crate::panel::State;

pub fn routes() -> Router<State> {
    Router::new()
}

/// Imports of this process, by id.
#[derive(Debug, Default)]
pub struct Jobs {
    pub jobs: Mutex<BTreeSet<String>>,
}
