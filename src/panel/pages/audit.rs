//! The audit log (`/audit`, admins only): who did what, when (Turkey time) and to which
//! brand, newest first, filtered by actor, action and brand. The log is append-only; this
//! page only reads it.

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::store::{AuditEntry, Role};
use crate::panel::{PanelError, State};

pub fn routes() -> Router<State> {
    Router::new().route("/audit", get(audit))
}

/// How many of the newest entries the filters look through, and how many are shown.
pub const SCANNED: usize = 20_000;
pub const SHOWN: usize = 500;

#[derive(Deserialize, Default)]
pub struct Filter {
    actor: Option<String>,
    action: Option<String>,
    brand: Option<String>,
}

impl Filter {
    fn actor(&self) -> Option<&str> {
        self.actor
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn action(&self) -> Option<&str> {
        self.action
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn brand(&self) -> Result<Option<u32>, PanelError> {
        match self
            .brand
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| PanelError::BadRequest(format!("brand {text:?}"))),
        }
    }

    /// Whether `entry` passes: the actor exactly, the action as a prefix (`user.` finds every
    /// account change), the brand exactly.
    fn keeps(&self, entry: &AuditEntry, brand: Option<u32>) -> bool {
        self.actor().is_none_or(|a| entry.actor == a)
            && self.action().is_none_or(|a| entry.action.starts_with(a))
            && brand.is_none_or(|b| entry.brand == Some(b))
    }
}

async fn audit(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(filter): Query<Filter>,
) -> Result<Markup, PanelError> {
    if viewer.user.role != Role::Admin {
        return Err(PanelError::Forbidden);
    }
    let brand = filter.brand()?;
    let scanned = panel.store.audit_log(SCANNED).await?;
    let total = scanned.len();
    let entries: Vec<&AuditEntry> = scanned
        .iter()
        .filter(|e| filter.keeps(e, brand))
        .take(SHOWN)
        .collect();
    let body = html! {
        form.inline method="get" action="/audit" role="search" {
            label { (lang.t("Kim", "Actor"))
                input name="actor" value=(filter.actor().unwrap_or("")) autocomplete="off"; }
            label { (lang.t("İşlem (başı)", "Action (prefix)"))
                input name="action" value=(filter.action().unwrap_or("")) placeholder="user." autocomplete="off"; }
            label { (lang.t("Marka", "Brand"))
                input name="brand" value=(brand.map_or(String::new(), |b| b.to_string())) inputmode="numeric" autocomplete="off"; }
            button type="submit" { (lang.t("Süz", "Filter")) }
            a href="/audit" { (lang.t("Temizle", "Clear")) }
        }
        p.muted {
            (entries.len()) " " (lang.t("kayıt gösteriliyor; en yeni önce, Türkiye saati.",
                "entries shown; newest first, Turkey time."))
            @if total >= SCANNED { " " (lang.t("Yalnızca en yeni", "Only the newest")) " " (layout::number(SCANNED as u64)) " " (lang.t("kayıt arandı.", "entries were searched.")) }
        }
        @if entries.is_empty() {
            p { (lang.t("Bu süzgece uyan kayıt yok.", "No entry matches this filter.")) }
        } @else {
            div.scroll {
                table {
                    caption.muted { (lang.t("Denetim kaydı", "Audit log")) }
                    thead { tr {
                        th scope="col" { (lang.t("Zaman", "When")) }
                        th scope="col" { (lang.t("Kim", "Actor")) }
                        th scope="col" { (lang.t("İşlem", "Action")) }
                        th scope="col" { (lang.t("Marka", "Brand")) }
                        th scope="col" { (lang.t("Ayrıntı", "Detail")) }
                    } }
                    tbody {
                        @for e in &entries {
                            tr {
                                td { time datetime=(e.at.to_rfc3339()) { (layout::turkey_time(e.at)) } }
                                td { (e.actor) }
                                td { code { (e.action) } }
                                td { @if let Some(b) = e.brand { (b) } }
                                td { (e.detail) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/audit",
        lang.t("Denetim kaydı", "Audit log"),
        &body,
    ))
}
