//! Daily reports per brand: a calendar of days (each with its reconciliation's agreement state),
//! charts of the last 30 days, each day's action report, its download as CSV and JSON, and a
//! reconciliation run from the page (confirming the agreement when asked and the day is clean).
//!
//! Every figure is `write::report::daily_report` (the own-data part recomputed, the stored
//! reconciliation with it); a run is `write::report::reconcile_day` with the serving process's
//! holdings, as `Admin.Reconcile` runs it.

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{Datelike, NaiveDate};
use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::calendar::DayKind;
use crate::panel::auth::Viewer;
use crate::panel::charts::{self, Series};
use crate::panel::layout::{self, Lang};
use crate::panel::pages::home::agreement_text;
use crate::panel::{Panel, PanelError, Posted, State};
use crate::write::evidence::Brand;
use crate::write::reconcile::{Agreement, Target};
use crate::write::report::{DailyReport, daily_report};

/// Days in the charts.
const CHART_DAYS: i64 = 30;
/// İYS keeps a day's change file this many days.
const IYS_KEEPS_DAYS: i64 = 7;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/reports", get(brands))
        .route("/reports/{brand}", get(month))
        .route("/reports/{brand}/{day}", get(day))
        .route("/reports/{brand}/{day}/reconcile", post(reconcile))
}

/// The brand `code` if it exists and the viewer may see it.
async fn brand_of(panel: &Panel, viewer: &Viewer, code: u32) -> Result<Brand, PanelError> {
    if !viewer.user.may_see(code) {
        return Err(PanelError::Forbidden);
    }
    panel
        .evidence
        .brands()
        .await?
        .into_iter()
        .find(|b| b.brand_code == code)
        .ok_or(PanelError::NotFound)
}

fn today(panel: &Panel) -> NaiveDate {
    crate::domain::time::to_turkey(panel.now()).date()
}

fn parse_date(text: &str) -> Result<NaiveDate, PanelError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| PanelError::BadRequest(format!("{text:?} is not a date (YYYY-MM-DD)")))
}

async fn brands(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
) -> Result<Response, PanelError> {
    let brands: Vec<Brand> = panel.brands_of(&viewer).await?;
    if let [only] = brands.as_slice() {
        return Ok(Redirect::to(&format!("/reports/{}", only.brand_code)).into_response());
    }
    let body = html! {
        p { (lang.t("Raporunu görmek istediğiniz markayı seçin.", "Choose the brand whose reports you want to see.")) }
        ul {
            @for b in &brands {
                li { a href={ "/reports/" (b.brand_code) } { (b.brand_code) " " (b.name) } }
            }
        }
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/reports",
        lang.t("Günlük raporlar", "Daily reports"),
        &body,
    )
    .into_response())
}

#[derive(Deserialize, Default)]
pub struct MonthQuery {
    /// `YYYY-MM`; this month without it.
    #[serde(default)]
    month: Option<String>,
}

/// The first day of the month named `YYYY-MM`.
fn first_of(text: &str) -> Result<NaiveDate, PanelError> {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .map_err(|_| PanelError::BadRequest(format!("{text:?} is not a month (YYYY-MM)")))
}

fn month_after(first: NaiveDate) -> NaiveDate {
    first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first)
}

/// The day's mark in the calendar: its agreement state when reconciled.
fn day_mark(lang: Lang, report: Option<&DailyReport>, day: NaiveDate, today: NaiveDate) -> Markup {
    match report.and_then(|r| r.reconciliation.as_ref()) {
        Some(r) => {
            let class = match r.agreement {
                Agreement::Withheld => "deny",
                Agreement::Confirmed | Agreement::AlreadyConfirmed => "allow",
                Agreement::NotRequested | Agreement::NoFile => "muted",
            };
            html! { span class=(class) { (agreement_text(lang, r.agreement)) } }
        }
        None if day < today && (today - day).num_days() <= IYS_KEEPS_DAYS => {
            html! { span.unknown { (lang.t("mutabakat yapılmadı", "not reconciled")) } }
        }
        None => html! {},
    }
}

/// Sums `tally` over the changes of a reconciliation by "CHANNEL SIDE" (the type folded in);
/// a series without any is left out.
fn by_channel_and_side(
    reports: &[DailyReport],
    tally: impl Fn(&crate::write::reconcile::Tally) -> u64,
) -> Vec<Series> {
    let mut keys = std::collections::BTreeSet::new();
    for r in reports.iter().filter_map(|r| r.reconciliation.as_ref()) {
        for key in r.changes.keys() {
            keys.insert(channel_side(key));
        }
    }
    keys.into_iter()
        .map(|key| Series {
            values: reports
                .iter()
                .map(|r| {
                    r.reconciliation.as_ref().map_or(0, |rec| {
                        rec.changes
                            .iter()
                            .filter(|(k, _)| channel_side(k) == key)
                            .map(|(_, t)| tally(t))
                            .sum()
                    })
                })
                .collect(),
            label: key,
        })
        .filter(|s| s.values.iter().any(|v| *v > 0))
        .collect()
}

/// "MESAJ BIREYSEL HS" → "MESAJ HS".
fn channel_side(key: &str) -> String {
    let words: Vec<&str> = key.split_whitespace().collect();
    match words.as_slice() {
        [channel, _, side] => format!("{channel} {side}"),
        _ => key.to_owned(),
    }
}

/// The four charts of `days` and their reports.
fn charts_of(lang: Lang, days: &[NaiveDate], reports: &[DailyReport]) -> Markup {
    let one = |label: &str, f: &dyn Fn(&DailyReport) -> u64| Series {
        label: label.to_owned(),
        values: reports.iter().map(f).collect(),
    };
    let uploads = [
        one(lang.t("İYS'ye kaydedildi", "registered"), &|r| {
            r.registered
        }),
        one(lang.t("İYS reddetti", "refused"), &|r| {
            r.refused.values().sum()
        }),
        one(lang.t("süresi geçti (geç)", "expired (late)"), &|r| {
            r.expired
        }),
        one(lang.t("bekliyor", "pending"), &|r| r.pending),
    ];
    let rets = [one(
        lang.t("İYS'den gelen yeni RET", "new RETs from İYS"),
        &|r| r.reconciliation.as_ref().map_or(0, |x| x.new_rets_from_iys),
    )];
    let reconciled = reports
        .iter()
        .filter(|r| r.reconciliation.is_some())
        .count();
    html! {
        p.muted { (lang.t("Son 30 gün; İYS tarafı yalnızca mutabakatı yapılmış günler için (", "The last 30 days; İYS's side only for reconciled days ("))
            (reconciled) "/" (days.len()) ")." }
        (charts::stacked_bars(lang, "chart-approvals", lang.t("İYS'deki onaylar (kanal ve taraf: HS hizmet sağlayıcı, IYS alıcı)", "Approvals in İYS (channel and side: HS provider, IYS recipient)"), days, &by_channel_and_side(reports, |t| t.approvals)))
        (charts::stacked_bars(lang, "chart-rejections", lang.t("İYS'deki retler (kanal ve taraf)", "Rejections in İYS (channel and side)"), days, &by_channel_and_side(reports, |t| t.rejections)))
        (charts::stacked_bars(lang, "chart-rets", lang.t("Alıcıların İYS'de verdiği yeni RET'ler", "New RETs recipients gave in İYS"), days, &rets))
        (charts::stacked_bars(lang, "chart-uploads", lang.t("O gün kaydedilen izinlerin yüklemeleri", "Uploads of the consents recorded each day"), days, &uploads))
    }
}

async fn month(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Path(code): Path<u32>,
    Query(q): Query<MonthQuery>,
) -> Result<Markup, PanelError> {
    let brand = brand_of(&panel, &viewer, code).await?;
    let today = today(&panel);
    let first = match q.month.as_deref() {
        Some(m) if !m.is_empty() => first_of(m)?,
        _ => today.with_day(1).unwrap_or(today),
    };
    let next = month_after(first);
    let now = panel.now();
    // The reports of the calendar's month and of the 30 days of the charts, each day once.
    let days: Vec<NaiveDate> = (0..CHART_DAYS)
        .rev()
        .map(|back| today - chrono::Duration::days(back))
        .collect();
    let month_days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d < next).collect();
    let mut by_day = std::collections::BTreeMap::new();
    for d in days.iter().chain(&month_days).filter(|d| **d <= today) {
        if !by_day.contains_key(d) {
            by_day.insert(*d, daily_report(&panel.evidence, code, *d, now).await?);
        }
    }
    let in_month: Vec<(NaiveDate, Option<DailyReport>)> = month_days
        .iter()
        .map(|d| (*d, by_day.get(d).cloned()))
        .collect();
    let reports: Vec<DailyReport> = days.iter().filter_map(|d| by_day.remove(d)).collect();
    let calendar = panel.service.checker().calendar();
    let lead = first.weekday().num_days_from_monday() as usize;
    let mut cells: Vec<Option<&(NaiveDate, Option<DailyReport>)>> = vec![None; lead];
    cells.extend(in_month.iter().map(Some));
    while !cells.len().is_multiple_of(7) {
        cells.push(None);
    }
    let previous = first
        .checked_sub_months(chrono::Months::new(1))
        .unwrap_or(first);
    let weekdays = if lang == Lang::Tr {
        ["Pzt", "Sal", "Çar", "Per", "Cum", "Cmt", "Paz"]
    } else {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    };
    let body = html! {
        p { (brand.brand_code) " " strong { (brand.name) } " · "
            a href={ "/reports/" (code) "/" (today.pred_opt().unwrap_or(today)) } { (lang.t("Dünün raporu", "Yesterday's report")) } " · "
            a href={ "/reports/" (code) "/" (today) } { (lang.t("Bugün şimdiye kadar", "Today so far")) } }
        nav aria-label=(lang.t("Ay", "Month")) {
            a href={ "/reports/" (code) "?month=" (previous.format("%Y-%m")) } { "← " (previous.format("%m.%Y")) }
            " · " strong { (first.format("%m.%Y")) } " · "
            a href={ "/reports/" (code) "?month=" (next.format("%Y-%m")) } { (next.format("%m.%Y")) " →" }
        }
        div.scroll {
            table.calendar {
                caption.muted { (lang.t("Günlerin mutabakat durumu; hafta sonları ve resmî tatiller gri.", "Each day's reconciliation state; weekends and public holidays grey.")) }
                thead { tr { @for w in weekdays { th scope="col" { (w) } } } }
                tbody {
                    @for week in cells.chunks(7) {
                        tr {
                            @for cell in week {
                                @match cell {
                                    None => td {},
                                    Some((d, report)) => {
                                        @let off = d.weekday().num_days_from_monday() >= 5 || calendar.day_kind(*d) == DayKind::FullHoliday;
                                        td class={ @if off { "off" } @if *d == today { " today" } } {
                                            @if *d <= today {
                                                a.day href={ "/reports/" (code) "/" (d) } { (d.day()) }
                                                br;
                                                @if let Some(r) = report {
                                                    span.muted { (layout::number(r.recorded_total)) " " (lang.t("kayıt", "recorded")) } br;
                                                }
                                                (day_mark(lang, report.as_ref(), *d, today))
                                            } @else {
                                                span.day.muted { (d.day()) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { (lang.t("Son 30 gün", "The last 30 days")) }
        (charts_of(lang, &days, &reports))
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/reports",
        &format!(
            "{} · {}",
            lang.t("Günlük raporlar", "Daily reports"),
            brand.name
        ),
        &body,
    ))
}

#[derive(Deserialize, Default)]
pub struct DayQuery {
    /// Set after a reconciliation run: say so on the page.
    #[serde(default)]
    ran: Option<String>,
}

async fn day(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Path((code, day)): Path<(u32, String)>,
    Query(q): Query<DayQuery>,
) -> Result<Response, PanelError> {
    let brand = brand_of(&panel, &viewer, code).await?;
    let (date, format) = match day.rsplit_once('.') {
        Some((date, ext @ ("csv" | "json"))) => (parse_date(date)?, Some(ext)),
        _ => (parse_date(&day)?, None),
    };
    let report = daily_report(&panel.evidence, code, date, panel.now()).await?;
    if let Some(ext) = format {
        return Ok(download(&report, ext));
    }
    let notice = q.ran.is_some().then(|| {
        layout::notice(
            true,
            lang.t(
                "Mutabakat çalıştı; sonuç aşağıda.",
                "The reconciliation ran; its result is below.",
            ),
        )
    });
    let body = day_body(&panel, &viewer, lang, &brand, &report, notice, None);
    Ok(layout::page(
        lang,
        &viewer,
        "/reports",
        &format!(
            "{} · {} · {}",
            lang.t("Günlük rapor", "Daily report"),
            brand.name,
            date.format("%d.%m.%Y")
        ),
        &body,
    )
    .into_response())
}

fn download(report: &DailyReport, ext: &str) -> Response {
    let (content_type, body) = if ext == "csv" {
        ("text/csv; charset=utf-8", report.csv())
    } else {
        (
            "application/json",
            // String-keyed maps and plain values: encoding cannot fail.
            serde_json::to_string_pretty(report).expect("a report always encodes"),
        )
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"iysgate-{}-{}.{ext}\"",
                    report.brand, report.date
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// Why this server cannot reconcile `brand`, if it cannot.
fn cannot_reconcile(panel: &Panel, lang: Lang, brand: &Brand) -> Option<String> {
    match &panel.iys {
        None => Some(lang.t(
            "Bu sunucuda İYS hesabı tanımlı değil (--iys-url, --iys-code): mutabakat İYS'nin gün sonu dosyasıyla yapılır, o yüzden burada çalıştırılamaz. Rapordaki kendi verileriniz yine de günceldir.",
            "This server has no İYS account (--iys-url, --iys-code): a reconciliation compares with İYS's end-of-day file, so it cannot run here. Your own figures in the report are current all the same.").to_owned()),
        Some(iys) if iys.iys_code != brand.iys_code => Some(format!(
            "{} {} {} {}.",
            lang.t("Bu marka", "This brand belongs to provider"),
            brand.iys_code,
            lang.t("hizmet sağlayıcısına ait; bu sunucuda İYS hesabı olan:", "; this server holds the İYS account of"),
            iys.iys_code
        )),
        Some(_) => None,
    }
}

#[allow(clippy::too_many_lines)]
fn day_body(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    brand: &Brand,
    report: &DailyReport,
    notice: Option<Markup>,
    failure: Option<&str>,
) -> Markup {
    let code = brand.brand_code;
    let date = report.date;
    let base = format!("/reports/{code}/{date}");
    let today = today(panel);
    let refused: u64 = report.refused.values().sum();
    html! {
        @if let Some(n) = notice { (n) }
        @if let Some(why) = failure { (layout::notice(false, &format!("{} {why}", lang.t("Mutabakat yapılamadı:", "The reconciliation did not run:")))) }
        p {
            a href={ "/reports/" (code) "?month=" (date.format("%Y-%m")) } { "← " (lang.t("Takvim", "Calendar")) } " · "
            a href={ "/reports/" (code) "/" (date.pred_opt().unwrap_or(date)) } { (lang.t("Önceki gün", "Previous day")) }
            @if date < today { " · " a href={ "/reports/" (code) "/" (date.succ_opt().unwrap_or(date)) } { (lang.t("Sonraki gün", "Next day")) } }
            " · " (lang.t("İndir: ", "Download: "))
            a href={ (base) ".csv" } download { "CSV" } " · " a href={ (base) ".json" } download { "JSON" }
        }
        h2 { (lang.t("O gün kaydedilenler", "Recorded that day")) ": " (layout::number(report.recorded_total)) }
        @if !report.recorded.is_empty() {
            table {
                thead { tr { th { (lang.t("Kanal · alıcı tipi · durum · kaynak", "Channel · recipient type · status · source")) } th.num { (lang.t("Adet", "Count")) } } }
                tbody { @for (what, n) in &report.recorded { tr { td { (what) } td.num { (layout::number(*n)) } } } }
            }
        }
        h2 { (lang.t("Bu kayıtların İYS'ye yüklenmesi", "How those uploads stand")) }
        table {
            tbody {
                tr { td { (lang.t("İYS'ye kaydedildi", "registered in İYS")) } td.num { (report.registered) } }
                tr { td { (lang.t("bekliyor", "pending")) } td.num { (report.pending) } }
                tr { td { (lang.t("süresi geçti", "expired")) } td.num { (report.expired) } }
                tr { td { (lang.t("İYS reddetti", "refused by İYS")) } td.num { (refused) } }
                @for (c, n) in &report.refused { tr { td { "  " (c) } td.num { (n) } } }
            }
        }
        p.muted { (lang.t("Şu an tüm kurulumda: ", "Across the deployment now: "))
            (report.at_risk_now) " " (lang.t("riskte (1 iş gününden az)", "at risk (under one business day)")) ", "
            (report.expired_now) " " (lang.t("süresi geçmiş", "expired")) " · "
            a href={ "/uploads?brand=" (code) } { (lang.t("Yüklemeler", "Uploads")) } }
        h2 { (lang.t("İYS ile mutabakat", "Reconciliation with İYS")) }
        @match &report.reconciliation {
            None => p { (lang.t("Bu gün için mutabakat yapılmadı.", "Not reconciled for this day.")) },
            Some(r) => {
                p {
                    @match (&r.sha384, r.file_verified) {
                        (None, _) => (lang.t("İYS'de bu gün için değişiklik dosyası yok.", "İYS has no change file for this day.")),
                        (Some(_), true) => { (r.file_rows) " " (lang.t("satır, SHA-384 doğrulandı.", "rows, SHA-384 verified.")) }
                        (Some(_), false) => span.deny { (lang.t("Dosya İYS'nin SHA-384 değeriyle uyuşmadı: hiçbir şey karşılaştırılmadı.", "The file did NOT match İYS's SHA-384: nothing was compared.")) },
                    }
                    " " (lang.t("Çalıştı: ", "Ran: ")) (layout::turkey_time(r.reconciled_at))
                }
                @if !r.changes.is_empty() {
                    table {
                        thead { tr { th { (lang.t("Kanal · alıcı tipi · taraf", "Channel · recipient type · side")) } th.num { (lang.t("Onay", "Approvals")) } th.num { (lang.t("Ret", "Rejections")) } } }
                        tbody { @for (k, t) in &r.changes { tr { td { (k) } td.num { (t.approvals) } td.num { (t.rejections) } } } }
                    }
                }
                ul {
                    li { (lang.t("İYS'den gelen yeni RET (hepsi uygulanıyor): ", "New RETs from İYS (all in force): ")) (r.new_rets_from_iys) }
                    li { (lang.t("iysgate üzerinden yüklenenlerle eşleşen: ", "Matched with uploads through iysgate: ")) (r.uploads_matched) }
                    li { (lang.t("Başka kanaldan gönderilen HS değişiklikleri: ", "HS changes sent elsewhere: ")) (r.hs_from_elsewhere) }
                    li { (lang.t("Uyuşmazlık: ", "Mismatches: ")) (r.mismatches.len()) ", " (lang.t("giderilen: ", "repaired: ")) (r.repaired) }
                    li { (lang.t("Mutabakat: ", "Agreement: ")) strong { (agreement_text(lang, r.agreement)) } }
                }
                @if !r.mismatches.is_empty() {
                    div.scroll { table {
                        thead { tr {
                            th { (lang.t("Tür", "Kind")) } th { (lang.t("Alıcı", "Recipient")) } th { (lang.t("Kanal", "Channel")) }
                            th { "transactionId" } th { (lang.t("Olay", "Event")) } th { (lang.t("Ayrıntı", "Detail")) }
                        } }
                        tbody { @for m in &r.mismatches { tr {
                            td { (m.kind.as_str()) } td { (m.recipient) } td { (m.channel) " " (m.recipient_type) }
                            td { (m.transaction_id) } td { @if let Some(id) = m.event_id { (id) } }
                            td { (m.detail) @if m.repaired { " " span.allow { (lang.t("(giderildi)", "(repaired)")) } } }
                        } } }
                    } }
                }
            }
        }
        @if viewer.user.role.writes() {
            @if let Some(why) = cannot_reconcile(panel, lang, brand) {
                p.muted { (why) }
            } @else if date >= today {
                p.muted { (lang.t("Gün bitmeden mutabakat yapılamaz: İYS dosyayı gün sonunda hazırlar.", "A day is reconciled once it is over: İYS builds the file at the end of the day.")) }
            } @else if (today - date).num_days() > IYS_KEEPS_DAYS {
                p.muted { (lang.t("İYS günlük dosyaları 7 gün saklar; bu gün için mutabakat artık yapılamaz.", "İYS keeps daily files for 7 days; this day can no longer be reconciled.")) }
            } @else {
                form.inline method="post" action={ (base) "/reconcile" } {
                    (layout::csrf_field(viewer))
                    label.check { input type="checkbox" name="confirm" value="1"; (lang.t("Uyuşmazlık yoksa mutabakatı İYS'ye onayla", "Confirm the agreement with İYS if nothing differs")) }
                    button type="submit" { (lang.t("Mutabakatı çalıştır", "Run the reconciliation")) }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ReconcileForm {
    #[serde(default)]
    confirm: Option<String>,
}

async fn reconcile(
    Extract(panel): Extract<State>,
    lang: Lang,
    Path((code, day)): Path<(u32, String)>,
    posted: Posted<ReconcileForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    let brand = brand_of(&panel, &viewer, code).await?;
    if !viewer.user.role.writes() {
        return Err(PanelError::Forbidden);
    }
    let date = parse_date(&day)?;
    let failed = |why: String, report: DailyReport| {
        let body = day_body(&panel, &viewer, lang, &brand, &report, None, Some(&why));
        let page = layout::page(
            lang,
            &viewer,
            "/reports",
            lang.t("Günlük rapor", "Daily report"),
            &body,
        );
        (StatusCode::CONFLICT, page).into_response()
    };
    if let Some(why) = cannot_reconcile(&panel, lang, &brand) {
        let report = daily_report(&panel.evidence, code, date, panel.now()).await?;
        return Ok(failed(why, report));
    }
    let iys = panel.iys.as_ref().expect("checked by cannot_reconcile");
    let target = Target {
        iys_code: iys.iys_code,
        brand: code,
        date,
        confirm: form.confirm.is_some(),
    };
    match crate::write::report::reconcile_day(
        &iys.client,
        &panel.evidence,
        &panel.holdings,
        target,
        panel.now(),
    )
    .await
    {
        Ok(report) => {
            let r = report
                .reconciliation
                .as_ref()
                .expect("a reconciled report holds its reconciliation");
            panel
                .audit(
                    &viewer,
                    "report.reconcile",
                    Some(code),
                    format!(
                        "{date}: {} mismatches, {} repaired, agreement {}{}",
                        r.mismatches.len(),
                        r.repaired,
                        r.agreement.as_str(),
                        if target.confirm {
                            " (confirmation asked)"
                        } else {
                            ""
                        }
                    ),
                )
                .await?;
            Ok(Redirect::to(&format!("/reports/{code}/{date}?ran=1")).into_response())
        }
        Err(e) => {
            tracing::warn!(brand = code, %date, error = %e, "panel reconciliation did not run");
            let report = daily_report(&panel.evidence, code, date, panel.now()).await?;
            Ok(failed(e.to_string(), report))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_fold_the_recipient_type_into_channel_and_side() {
        assert_eq!(channel_side("MESAJ BIREYSEL HS"), "MESAJ HS");
        assert_eq!(channel_side("EPOSTA TACIR IYS"), "EPOSTA IYS");
        assert_eq!(channel_side("odd"), "odd");
    }

    #[test]
    fn a_month_is_named_by_its_first_day() {
        assert_eq!(
            first_of("2026-12").unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            month_after(first_of("2026-12").unwrap()),
            NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
        );
        assert!(first_of("2026-13").is_err());
    }
}
