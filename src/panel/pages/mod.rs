//! One file per page. Each page takes a [`Viewer`](super::auth::Viewer) (or a
//! [`Posted`](super::Posted) form), checks the brand against the viewer's grants, calls the
//! library functions the gRPC services call, and renders with [`super::layout`].

pub mod audit;
pub mod brands;
pub mod clients;
pub mod home;
pub mod import;
pub mod login;
pub mod lookup;
pub mod record;
pub mod reports;
pub mod uploads;
pub mod users;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::State;
use super::layout;

/// Every route of the panel.
pub fn routes() -> Router<State> {
    Router::new()
        .merge(login::routes())
        .merge(home::routes())
        .merge(brands::routes())
        .merge(clients::routes())
        .merge(users::routes())
        .merge(audit::routes())
        .merge(lookup::routes())
        .merge(record::routes())
        .merge(uploads::routes())
        .merge(import::routes())
        .merge(reports::routes())
        .route("/static/panel.css", get(css))
        .route("/static/panel.js", get(js))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        layout::CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        layout::JS,
    )
}
