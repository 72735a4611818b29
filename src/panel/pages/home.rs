//! The home page: per brand at a glance, and what needs a person today first.

use axum::Router;
use axum::extract::State as Extract;
use axum::routing::get;
use maud::{Markup, html};

use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{PanelError, State};

pub fn routes() -> Router<State> {
    Router::new().route("/", get(home))
}

async fn home(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
) -> Result<Markup, PanelError> {
    let brands: Vec<_> = panel
        .evidence
        .brands()
        .await?
        .into_iter()
        .filter(|b| viewer.user.may_see(b.brand_code))
        .collect();
    Ok(layout::page(
        lang,
        &viewer,
        "/",
        lang.t("Özet", "Home"),
        &html! {
            div.cards {
                @for b in &brands {
                    section.card {
                        h2 { (b.name) " " span.muted { (b.brand_code) } }
                    }
                }
            }
        },
    ))
}
