//! The home page: per brand at a glance, and what needs a person today first.
//!
//! Every figure comes from the library: current records from the record store
//! (`MemoryStore::counts`), today's consents and refusals from `write::report::daily_report`,
//! the open deadlines from the evidence store's `upload_counts`, data age from the checker,
//! sync cursors and stored reconciliations from the evidence store.

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::Channel;
use crate::iys::client::PullSource;
use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{PanelError, State};
use crate::sync::BrandRef;
use crate::write::evidence::Brand;
use crate::write::reconcile::{Agreement, Reconciliation};

/// How many days back the home page looks for the last reconciliation.
const RECONCILIATION_DAYS: i64 = 7;

pub fn routes() -> Router<State> {
    Router::new().route("/", get(home))
}

#[derive(Deserialize)]
pub struct Only {
    /// Show one brand only.
    brand: Option<u32>,
}

/// One brand's overview.
struct Overview {
    brand: Brand,
    records: std::collections::BTreeMap<Channel, crate::check::store::RecordCounts>,
    today: crate::write::report::DailyReport,
    syncs: Vec<(PullSource, Option<DateTime<Utc>>)>,
    /// The latest stored reconciliation in the last days, and its day.
    last: Option<(NaiveDate, Reconciliation)>,
    /// Whether yesterday's reconciliation is stored.
    yesterday_done: bool,
    /// The brand's uploads of the last 30 days by state word (`pending`, `at_risk`, …).
    uploads: std::collections::BTreeMap<&'static str, u64>,
}

/// A thing a person must look at today: (Turkish, English, link).
struct Todo {
    text: String,
    link: String,
}

fn age_text(lang: Lang, age: Option<std::time::Duration>) -> String {
    match age {
        None => lang.t("hiç eşitlenmedi", "never synced").to_owned(),
        Some(a) => {
            let minutes = a.as_secs() / 60;
            if minutes < 60 {
                format!("{minutes} {}", lang.t("dk", "min"))
            } else {
                format!(
                    "{} {} {} {}",
                    minutes / 60,
                    lang.t("sa", "h"),
                    minutes % 60,
                    lang.t("dk", "min")
                )
            }
        }
    }
}

pub(crate) fn agreement_text(lang: Lang, a: Agreement) -> &'static str {
    match a {
        Agreement::Confirmed => lang.t("mutabakat onaylandı", "agreement confirmed"),
        Agreement::AlreadyConfirmed => lang.t("mutabakat zaten onaylı", "already confirmed"),
        Agreement::NotRequested => lang.t("uyumlu, onay istenmedi", "clean, not confirmed"),
        Agreement::Withheld => lang.t("uyuşmazlık var: onaylanmadı", "mismatches: withheld"),
        Agreement::NoFile => lang.t("İYS'de o gün dosya yok", "no İYS file that day"),
    }
}

async fn overview(
    panel: &crate::panel::Panel,
    brand: Brand,
    records: &std::collections::BTreeMap<
        u32,
        std::collections::BTreeMap<Channel, crate::check::store::RecordCounts>,
    >,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Overview, PanelError> {
    let code = brand.brand_code;
    let report = crate::write::report::daily_report(&panel.evidence, code, today, now).await?;
    let mut syncs = Vec::new();
    for source in PullSource::BOTH {
        let at = panel
            .evidence
            .cursor(
                BrandRef {
                    iys_code: brand.iys_code,
                    brand_code: code,
                },
                source,
            )
            .await?
            .and_then(|c| c.caught_up_at);
        syncs.push((source, at));
    }
    let mut last = None;
    let mut yesterday_done = false;
    for back in 1..=RECONCILIATION_DAYS {
        let day = today - chrono::Duration::days(back);
        let found = panel
            .evidence
            .report(code, day)
            .await?
            .and_then(|body| body.get("reconciliation").cloned())
            .and_then(|r| serde_json::from_value::<Reconciliation>(r).ok());
        if let Some(r) = found {
            yesterday_done |= back == 1;
            last = Some((day, r));
            break;
        }
    }
    Ok(Overview {
        uploads: super::uploads::counts_of(panel, code).await?,
        records: records.get(&code).cloned().unwrap_or_default(),
        brand,
        today: report,
        syncs,
        last,
        yesterday_done,
    })
}

fn todos(
    lang: Lang,
    panel: &crate::panel::Panel,
    fresh: bool,
    age: Option<std::time::Duration>,
    brands: &[Overview],
) -> Vec<Todo> {
    let mut out = Vec::new();
    for o in brands {
        let code = o.brand.brand_code;
        let name = format!("{} ({code})", o.brand.name);
        for (word, tr, en) in [
            (
                "expired",
                "yüklemenin süresi geçti (3 iş günü içinde İYS'ye kaydedilmedi)",
                "uploads expired (not registered in İYS within 3 business days)",
            ),
            (
                "at_risk",
                "yüklemenin süresinin dolmasına bir iş gününden az kaldı",
                "uploads have under one business day left",
            ),
            (
                "rejected",
                "yüklemeyi İYS reddetti",
                "uploads were refused by İYS",
            ),
        ] {
            let n = o.uploads.get(word).copied().unwrap_or(0);
            if n > 0 {
                out.push(Todo {
                    text: format!("{name}: {} {}", layout::number(n), lang.t(tr, en)),
                    link: format!("/uploads?brand={code}&state={word}"),
                });
            }
        }
    }
    if !fresh {
        out.push(Todo {
            text: format!(
                "{} ({})",
                lang.t(
                    "İzin verisi eski: kontroller İZİN VERMEZ cevabı veriyor",
                    "Consent data is stale: checks do not ALLOW"
                ),
                age_text(lang, age)
            ),
            link: "/".into(),
        });
    }
    if let Some(until) = panel
        .iys
        .as_ref()
        .and_then(|i| i.client.token_halted_until())
    {
        out.push(Todo {
            text: format!(
                "{} {}",
                lang.t(
                    "İYS token çağrıları durduruldu (H084), şu saate kadar:",
                    "İYS token calls are halted (H084) until"
                ),
                layout::turkey_time(until)
            ),
            link: "/brands".into(),
        });
    }
    let yesterday = crate::domain::time::to_turkey(panel.now()).date() - chrono::Duration::days(1);
    for o in brands {
        let code = o.brand.brand_code;
        let name = format!("{} ({code})", o.brand.name);
        match &o.last {
            Some((day, r)) if r.agreement == Agreement::Withheld => out.push(Todo {
                text: format!(
                    "{name}: {} {}",
                    day.format("%d.%m.%Y"),
                    lang.t(
                        "mutabakatında uyuşmazlık var, onaylanmadı",
                        "reconciliation found mismatches and was not confirmed"
                    )
                ),
                link: format!("/reports/{code}/{day}"),
            }),
            _ => {}
        }
        if !o.yesterday_done {
            out.push(Todo {
                text: format!(
                    "{name}: {}",
                    lang.t(
                        "dünün mutabakatı yapılmadı",
                        "yesterday's reconciliation is missing"
                    )
                ),
                link: format!("/reports/{code}/{yesterday}"),
            });
        }
    }
    out
}

fn card(lang: Lang, o: &Overview, fresh: bool, age: Option<std::time::Duration>) -> Markup {
    let code = o.brand.brand_code;
    let refused: u64 = o.today.refused.values().sum();
    html! {
        section.card aria-labelledby={ "b" (code) } {
            h2 #{ "b" (code) } { (o.brand.name) " " span.muted { (code) } }
            table {
                caption { (lang.t("Güncel kayıtlar", "Current records")) }
                thead { tr {
                    th scope="col" { (lang.t("Kanal", "Channel")) }
                    th.num scope="col" { "ONAY" }
                    th.num scope="col" { "RET" }
                    th.num scope="col" { (lang.t("ONAY (İYS bekliyor)", "ONAY (pending İYS)")) }
                    th.num scope="col" { (lang.t("RET (İYS bekliyor)", "RET (pending İYS)")) }
                } }
                tbody {
                    @for channel in Channel::ALL {
                        @let c = o.records.get(&channel).copied().unwrap_or_default();
                        tr {
                            th scope="row" { (channel.as_str()) }
                            td.num { (layout::number(c.onay)) }
                            td.num { (layout::number(c.ret)) }
                            td.num { (layout::number(c.onay_pending)) }
                            td.num { (layout::number(c.ret_pending)) }
                        }
                    }
                }
            }
            dl {
                dt { (lang.t("Bugün kaydedilen izinler", "Consents recorded today")) }
                dd.today { (layout::number(o.today.recorded_total)) }
                dt { (lang.t("Bugünkü kayıtlardan İYS'nin reddettiği", "Of today's, refused by İYS")) }
                dd { (layout::number(refused))
                    @for (h, n) in &o.today.refused { " " span.tag { (h) ": " (n) } } }
                dt { (lang.t("Veri yaşı", "Data age")) }
                dd { (age_text(lang, age))
                    @if !fresh { " " span.deny { (lang.t("eski", "stale")) } } }
                @for (source, at) in &o.syncs {
                    dt { (lang.t("Son eşitleme", "Last sync")) " " (source.as_str()) }
                    dd { @match at {
                        Some(at) => { (layout::turkey_time(*at)) }
                        None => { span.muted { (lang.t("henüz yok", "not yet")) } }
                    } }
                }
                dt { (lang.t("Son mutabakat", "Last reconciliation")) }
                dd { @match &o.last {
                    Some((day, r)) => {
                        (day.format("%d.%m.%Y")) ": "
                        @if r.agreement == Agreement::Withheld {
                            span.deny { (agreement_text(lang, r.agreement)) }
                        } @else {
                            span.allow { (agreement_text(lang, r.agreement)) }
                        }
                    }
                    None => { span.unknown { (lang.t("son 7 günde yok", "none in the last 7 days")) } }
                } }
            }
            h3 { (lang.t("Yüklemeler (son 30 günün kayıtları)", "Uploads (the last 30 days' records)")) }
            ul.uploads {
                @for (word, tr, en) in [
                    ("pending", "bekliyor", "pending"),
                    ("at_risk", "riskte (1 iş gününden az)", "at risk (under 1 business day)"),
                    ("expired", "süresi geçti", "expired"),
                    ("rejected", "İYS reddetti", "refused by İYS"),
                ] {
                    @let n = o.uploads.get(word).copied().unwrap_or(0);
                    li { a href={ "/uploads?brand=" (code) "&state=" (word) } { (lang.t(tr, en)) } ": "
                        @if n > 0 && word != "pending" { span.deny { (layout::number(n)) } } @else { (layout::number(n)) } }
                }
            }
            p { a href={ "/reports/" (code) } { (lang.t("Günlük raporlar", "Daily reports")) } " · "
                a href={ "/uploads?brand=" (code) } { (lang.t("Yüklemeler", "Uploads")) } }
        }
    }
}

async fn home(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(only): Query<Only>,
) -> Result<Markup, PanelError> {
    if let Some(b) = only.brand
        && !viewer.user.may_see(b)
    {
        return Err(PanelError::Forbidden);
    }
    let now = panel.now();
    let today = panel.service.checker().clock().now_turkey().date();
    let (age, fresh) = panel.service.checker().data_age();
    let records = panel.service.consents().records().counts();
    let uploads = panel.evidence.upload_counts(now).await?;
    let mut brands = Vec::new();
    for brand in panel.evidence.brands().await? {
        if viewer.user.may_see(brand.brand_code) && only.brand.is_none_or(|b| b == brand.brand_code)
        {
            brands.push(overview(&panel, brand, &records, today, now).await?);
        }
    }
    if let Some(b) = only.brand
        && brands.is_empty()
    {
        let _ = b;
        return Err(PanelError::NotFound);
    }
    let todo = todos(lang, &panel, fresh, age, &brands);
    let admin = viewer.user.role == crate::panel::store::Role::Admin;
    Ok(layout::page(
        lang,
        &viewer,
        "/",
        lang.t("Özet", "Home"),
        &html! {
            section.card.todo aria-labelledby="todo" {
                h2 #todo { (lang.t("Bugün bir kişinin bakması gerekenler", "Needs a person today")) }
                @if todo.is_empty() {
                    p.allow { (lang.t("Bugün bekleyen bir iş yok.", "Nothing needs a person today.")) }
                } @else {
                    ul.todo-list { @for t in &todo { li { a href=(t.link) { (t.text) } } } }
                }
            }
            @if admin { section aria-labelledby="uploads" {
                h2 #uploads { (lang.t("Yüklemeler (tüm markalar)", "Uploads (all brands)")) }
                table {
                    thead { tr {
                        th.num scope="col" { (lang.t("Bekleyen", "Pending")) }
                        th.num scope="col" { (lang.t("Riskte (1 iş gününden az)", "At risk (under 1 business day)")) }
                        th.num scope="col" { (lang.t("Süresi geçmiş", "Expired")) }
                    } }
                    tbody { tr {
                        td.num { (layout::number(uploads.pending)) }
                        td.num { (layout::number(uploads.at_risk)) }
                        td.num { (layout::number(uploads.expired)) }
                    } }
                }
                p.muted { (lang.t(
                    "Her markanınkiler kendi kartında.",
                    "Each brand's are on its card.")) }
            } }
            @if brands.is_empty() {
                p { (lang.t("Size açık bir marka yok.", "No brand is granted to you.")) }
            }
            div.cards {
                @for o in &brands { (card(lang, o, fresh, age)) }
            }
        },
    ))
}
