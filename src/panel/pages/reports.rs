//! (to be built)

use axum::Router;

use crate::panel::State;

pub fn routes() -> Router<State> {
    Router::new()
}
