//! The upload outbox: every recorded event's way to İYS, per brand, filtered by where it
//! stands (pending, at risk, expired, refused by H-code, registered), each with its strict
//! deadline and what was done about it (its attempts). Read from the evidence store's events
//! and attempts, as the uploader left them; "at risk" is the store's own rule
//! (`model::at_risk_before`: under one business day left on the strict calendar).

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{Panel, PanelError, State};
use crate::write::evidence::{StoredEvent, UploadState};

pub fn routes() -> Router<State> {
    Router::new().route("/uploads", get(list))
}

/// How far back the outbox is shown (uploads are due within 3 business days; refusals stay
/// to be acted on).
const DAYS: i64 = 30;
/// Most rows shown at once.
const LIMIT: usize = 500;

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    brand: Option<u32>,
    /// pending, at_risk, expired, rejected, registered, superseded, or all.
    #[serde(default)]
    state: Option<String>,
}

/// The filter word of an upload at `now` (at risk is a pending one near its deadline).
fn word(e: &StoredEvent, at_risk_before: chrono::NaiveDateTime) -> &'static str {
    match &e.upload.state {
        UploadState::Pending | UploadState::InFlight { .. }
            if e.upload.deadline < at_risk_before =>
        {
            "at_risk"
        }
        UploadState::Pending | UploadState::InFlight { .. } => "pending",
        other => other.as_str(),
    }
}

fn label(lang: Lang, word: &str) -> &'static str {
    match word {
        "pending" => lang.t("bekliyor", "pending"),
        "at_risk" => lang.t(
            "riskte (1 iş gününden az)",
            "at risk (under 1 business day)",
        ),
        "expired" => lang.t("süresi geçti", "expired"),
        "rejected" => lang.t("İYS reddetti", "refused by İYS"),
        "registered" => lang.t("İYS'ye kaydedildi", "registered in İYS"),
        "superseded" => lang.t(
            "İYS'de zaten aynı durum var",
            "İYS already holds the same status",
        ),
        _ => lang.t("tümü", "all"),
    }
}

/// `brand`'s events of the last [`DAYS`], newest first, each with its filter word now.
async fn classified(
    panel: &Panel,
    brand: u32,
) -> Result<Vec<(StoredEvent, &'static str)>, PanelError> {
    let now = panel.now();
    let at_risk_before = crate::domain::time::to_turkey(crate::write::evidence::at_risk_before(
        panel.service.checker().calendar(),
        now,
    ));
    let events = panel
        .evidence
        .events_between(
            brand,
            now - chrono::Duration::days(DAYS),
            now + chrono::Duration::days(1),
        )
        .await?;
    Ok(events
        .into_iter()
        .rev()
        .map(|e| {
            let w = word(&e, at_risk_before);
            (e, w)
        })
        .collect())
}

/// How `brand`'s uploads of the last [`DAYS`] stand, by filter word (for the home page).
///
/// # Errors
/// The evidence store failed.
pub(crate) async fn counts_of(
    panel: &Panel,
    brand: u32,
) -> Result<std::collections::BTreeMap<&'static str, u64>, PanelError> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, w) in classified(panel, brand).await? {
        *counts.entry(w).or_default() += 1;
    }
    Ok(counts)
}

async fn list(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(filter): Query<Filter>,
) -> Result<Markup, PanelError> {
    let brands: Vec<_> = panel.brands_of(&viewer).await?;
    let brand = match filter.brand {
        Some(b) if !viewer.user.may_see(b) => return Err(PanelError::Forbidden),
        Some(b) => Some(b),
        None => brands.first().map(|b| b.brand_code),
    };
    let state = filter.state.clone().unwrap_or_else(|| "all".into());
    let mut rows = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    if let Some(brand) = brand {
        for (e, w) in classified(&panel, brand).await? {
            *counts.entry(w).or_default() += 1;
            if (state == "all" || state == w) && rows.len() < LIMIT {
                let attempts = panel.evidence.upload_attempts(e.id).await?;
                rows.push((e, w, attempts));
            }
        }
    }
    let body = html! {
        form.inline method="get" action="/uploads" {
            label { (lang.t("Marka", "Brand"))
                select name="brand" { @for b in &brands {
                    option value=(b.brand_code) selected[brand == Some(b.brand_code)] { (b.brand_code) " " (b.name) }
                } }
            }
            label { (lang.t("Durum", "State"))
                select name="state" { @for w in ["all", "pending", "at_risk", "expired", "rejected", "registered", "superseded"] {
                    option value=(w) selected[state == w] { (label(lang, w)) " (" (counts.get(w).copied().unwrap_or(if w == "all" { counts.values().sum() } else { 0 })) ")" }
                } }
            }
            button type="submit" { (lang.t("Göster", "Show")) }
        }
        p.muted { (lang.t("Son 30 günde kaydedilenler; en yeni önce.", "Recorded in the last 30 days; newest first.")) }
        div.scroll { table {
            thead { tr {
                th scope="col" { "#" }
                th scope="col" { (lang.t("Alıcı", "Recipient")) }
                th scope="col" { (lang.t("Kanal", "Channel")) }
                th scope="col" { (lang.t("Durum", "Status")) }
                th scope="col" { (lang.t("Yükleme", "Upload")) }
                th scope="col" { (lang.t("Son tarih", "Deadline")) }
                th scope="col" { (lang.t("Yapılanlar", "What was done")) }
            } }
            tbody { @for (e, w, attempts) in &rows { tr {
                td { (e.id.0) }
                td { (layout::recipient(&e.event.recipient.to_string(), false)) }
                td { (e.event.channel.as_str()) " " (e.event.recipient_type.as_str()) }
                td { (e.event.status.as_str()) }
                td class=(if *w == "at_risk" || *w == "expired" || *w == "rejected" { "deny" } else { "" }) {
                    (label(lang, w))
                    @if let UploadState::Rejected { code, message } = &e.upload.state {
                        br; code { (code) } " " (message)
                    }
                    @if let UploadState::Registered { transaction_id, .. } = &e.upload.state {
                        br; span.muted { "transactionId " (transaction_id) }
                    }
                }
                td { (layout::turkey_local(e.upload.deadline)) }
                td {
                    @if attempts.is_empty() { span.muted { (lang.t("henüz denenmedi", "not tried yet")) } }
                    @for a in attempts {
                        (lang.t("deneme ", "attempt ")) (a.attempt) " · " (layout::turkey_time(a.finished_at)) " · " (a.answer.outcome.as_str())
                        @if let Some(s) = a.answer.http_status { " (HTTP " (s) ")" }
                        br;
                    }
                }
            } } }
        } }
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/uploads",
        lang.t("Yüklemeler", "Uploads"),
        &body,
    ))
}
