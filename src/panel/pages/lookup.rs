//! "Why was this recipient filtered?": a phone number or an e-mail address, and for each
//! channel it can be sent on and each recipient type, what Check answers now and why, the
//! record behind it and its event trail. Every answer is `Checker::check` itself, asked as the
//! gRPC Check asks it (commercial purpose, no retailer). Recipients are masked unless a role
//! allowed to reveals one; each reveal is audited.

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::check::{CheckError, Query as CheckQuery};
use crate::domain::{Channel, ConsentKey, Purpose, Reason, RecipientType, Verdict};
use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{Panel, PanelError, Posted, State};

pub fn routes() -> Router<State> {
    Router::new().route("/lookup", get(form).post(reveal))
}

#[derive(Deserialize, Default)]
pub struct Ask {
    #[serde(default)]
    brand: Option<u32>,
    #[serde(default)]
    recipient: String,
}

/// A reason in plain words: what it means for sending, in the viewer's language.
pub fn explain(lang: Lang, reason: Reason) -> &'static str {
    match reason {
        Reason::ConsentRegistered => lang.t(
            "İYS'de kayıtlı bir ONAY var: gönderilebilir.",
            "An ONAY is registered in İYS: you may send.",
        ),
        Reason::ExemptPurpose => lang.t(
            "Bu amaç (ör. bilgilendirme) izin gerektirmez.",
            "This purpose (e.g. information) needs no consent.",
        ),
        Reason::TacirOptOutPolicy => lang.t(
            "TACIR alıcı, marka politikası gereği RET vermediği sürece gönderilebilir.",
            "A TACIR recipient may be sent to until they say RET (the brand's policy).",
        ),
        Reason::LocalRet => lang.t(
            "Bu marka bir RET kaydetti; İYS'ye yüklenmesi beklenirken de gönderim yapılmaz.",
            "The brand recorded a RET; nothing is sent while it waits for İYS, either.",
        ),
        Reason::Rejected => lang.t(
            "Alıcı RET vermiş: gönderilemez.",
            "The recipient said RET: do not send.",
        ),
        Reason::PendingRegistration => lang.t(
            "ONAY kaydedildi ama İYS'ye henüz yüklenmedi: yüklenene kadar gönderilemez.",
            "An ONAY was recorded but is not in İYS yet: do not send until it is.",
        ),
        Reason::RegistrationExpired => lang.t(
            "ONAY 3 iş günü içinde İYS'ye yüklenmedi: geçersiz, gönderilemez.",
            "The ONAY was not registered within 3 business days: void, do not send.",
        ),
        Reason::NoConsent => lang.t(
            "Bu alıcı için izin kaydı yok: gönderilemez.",
            "There is no consent for this recipient: do not send.",
        ),
        Reason::RetailerNotGranted => lang.t(
            "Bu bayiye erişim verilmemiş.",
            "This retailer is not granted access.",
        ),
    }
}

/// One row of the answer: a channel and a recipient type.
struct Row {
    channel: Channel,
    rtype: RecipientType,
    outcome: Result<crate::check::Answer, CheckError>,
    record: Option<crate::domain::ConsentRecord>,
}

fn rows(panel: &Panel, brand: u32, recipient: &str) -> Result<Vec<Row>, String> {
    let channels: &[Channel] = if recipient.contains('@') {
        &[Channel::Eposta]
    } else {
        &[Channel::Arama, Channel::Mesaj]
    };
    let checker = panel.service.checker();
    let mut out = Vec::new();
    for &channel in channels {
        for rtype in [RecipientType::Bireysel, RecipientType::Tacir] {
            let query = CheckQuery {
                brand,
                recipient,
                channel,
                recipient_type: rtype,
                retailer: None,
                purpose: Purpose::Commercial,
            };
            let outcome = checker.check(&query);
            if let Err(CheckError::Invalid(e)) = &outcome {
                return Err(e.to_string());
            }
            let record = crate::check::parse_recipient(recipient, channel)
                .ok()
                .and_then(|r| {
                    panel.service.consents().get(&ConsentKey {
                        brand,
                        recipient: r,
                        recipient_type: rtype,
                        channel,
                    })
                });
            out.push(Row {
                channel,
                rtype,
                outcome,
                record,
            });
        }
    }
    Ok(out)
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow | Verdict::AllowExempt => "allow",
        Verdict::Deny => "deny",
    }
}

async fn render(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    ask: &Ask,
    reveal: bool,
) -> Result<Markup, PanelError> {
    let brands: Vec<_> = panel.brands_of(viewer).await?;
    let recipient = ask.recipient.trim();
    let mut error = None;
    let mut found = None;
    let mut trail = Vec::new();
    if let (Some(brand), false) = (ask.brand, recipient.is_empty()) {
        if !viewer.user.may_see(brand) {
            return Err(PanelError::Forbidden);
        }
        match rows(panel, brand, recipient) {
            Ok(rows) => {
                let normalised: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.outcome.as_ref().ok().map(|a| a.recipient.to_string()))
                    .collect();
                trail = panel
                    .evidence
                    .events_between(
                        brand,
                        chrono::DateTime::UNIX_EPOCH,
                        panel.now() + chrono::Duration::days(1),
                    )
                    .await?
                    .into_iter()
                    .filter(|e| normalised.contains(&e.event.recipient.to_string()))
                    .collect();
                found = Some(rows);
            }
            Err(e) => error = Some(e),
        }
    }
    let shown = |text: &str| layout::recipient(text, reveal);
    let body = html! {
        form.inline method="get" action="/lookup" {
            label { (lang.t("Marka", "Brand"))
                select name="brand" {
                    @for b in &brands {
                        option value=(b.brand_code) selected[ask.brand == Some(b.brand_code)] {
                            (b.brand_code) " " (b.name) }
                    }
                }
            }
            label { (lang.t("Telefon ya da e-posta", "Phone or e-mail"))
                input name="recipient" required value=(recipient)
                    placeholder="+905321234567" aria-describedby="recipient-error"; }
            button type="submit" { (lang.t("Sorgula", "Look up")) }
        }
        @if let Some(e) = &error {
            p.field-error #recipient-error role="alert" {
                (lang.t("recipient alanı geçersiz: ", "recipient field is invalid: ")) (e) }
        }
        @if let Some(rows) = &found {
            h2 { (lang.t("Check'in şu anki cevabı", "What Check answers now")) " — "
                (rows.first().and_then(|r| r.outcome.as_ref().ok()).map_or(String::new(), |a| shown(&a.recipient.to_string()))) }
            @if !reveal && viewer.user.role.reveals() {
                form method="post" action="/lookup" {
                    (layout::csrf_field(viewer))
                    input type="hidden" name="brand" value=(ask.brand.unwrap_or_default());
                    input type="hidden" name="recipient" value=(recipient);
                    button.secondary type="submit" { (lang.t("Açık göster (kayda geçer)", "Show in clear (audited)")) }
                }
            }
            div.scroll { table {
                thead { tr {
                    th scope="col" { (lang.t("Kanal", "Channel")) }
                    th scope="col" { (lang.t("Alıcı tipi", "Recipient type")) }
                    th scope="col" { (lang.t("Karar", "Verdict")) }
                    th scope="col" { (lang.t("Neden", "Reason")) }
                    th scope="col" { (lang.t("Kayıt", "Record")) }
                } }
                tbody {
                    @for row in rows {
                        tr {
                            td { (row.channel.as_str()) }
                            td { (row.rtype.as_str()) }
                            @match &row.outcome {
                                Ok(a) => {
                                    td class=(verdict_class(a.decision.verdict)) { (format!("{:?}", a.decision.verdict).to_uppercase()) }
                                    td { code { (a.decision.reason.as_str()) } br; (explain(lang, a.decision.reason))
                                        @if let Some(d) = a.decision.registration_deadline {
                                            br; span.muted { (lang.t("Yükleme son tarihi: ", "Upload deadline: ")) (layout::turkey_local(d)) }
                                        }
                                    }
                                }
                                Err(e) => {
                                    td.unknown { "UNAVAILABLE" }
                                    td { (e.to_string()) }
                                }
                            }
                            td {
                                @if let Some(r) = &row.record {
                                    (r.current.status.as_str()) " · " (r.current.source.as_str())
                                    " · " (layout::turkey_local(r.current.consent_date))
                                    br; span.muted { (format!("{:?}", r.current.registration)) }
                                } @else {
                                    span.muted { (lang.t("kayıt yok", "no record")) }
                                }
                            }
                        }
                    }
                }
            } }
            h2 { (lang.t("Olay geçmişi (bu markanın kaydettikleri)", "Event trail (recorded by this brand)")) }
            @if trail.is_empty() {
                p.muted { (lang.t("Bu alıcı için kaydedilmiş olay yok.", "No event recorded for this recipient.")) }
            } @else {
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (lang.t("Kaydedildi", "Recorded")) }
                        th scope="col" { (lang.t("Kanal", "Channel")) }
                        th scope="col" { (lang.t("Durum", "Status")) }
                        th scope="col" { (lang.t("Kaynak", "Source")) }
                        th scope="col" { (lang.t("İzin tarihi", "Consent date")) }
                        th scope="col" { (lang.t("Kanıt", "Evidence")) }
                        th scope="col" { (lang.t("Yükleme", "Upload")) }
                    } }
                    tbody { @for e in &trail { tr {
                        td { (e.id.0) }
                        td { (layout::turkey_time(e.recorded_at)) }
                        td { (e.event.channel.as_str()) " " (e.event.recipient_type.as_str()) }
                        td { (e.event.status.as_str()) }
                        td { (e.event.source.as_str()) }
                        td { (layout::turkey_local(e.event.consent_date)) }
                        td { (e.event.evidence.method) " · " (e.event.evidence.location) " · " (e.event.recorder.client) }
                        td { (e.upload.state.as_str()) " · " (lang.t("son tarih ", "deadline ")) (layout::turkey_local(e.upload.deadline)) }
                    } } }
                } }
            }
        }
    };
    Ok(layout::page(
        lang,
        viewer,
        "/lookup",
        lang.t("Alıcı sorgula", "Look up a recipient"),
        &body,
    ))
}

async fn form(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(ask): Query<Ask>,
) -> Result<Markup, PanelError> {
    render(&panel, &viewer, lang, &ask, false).await
}

/// Shows the recipient in clear to a role allowed to, after writing the reveal to the audit
/// log.
async fn reveal(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<Ask>,
) -> Result<Markup, PanelError> {
    let Posted { viewer, form: ask } = posted;
    let brand = ask
        .brand
        .ok_or_else(|| PanelError::BadRequest("brand".into()))?;
    if !viewer.user.role.reveals() || !viewer.user.may_see(brand) {
        return Err(PanelError::Forbidden);
    }
    panel
        .audit(
            &viewer,
            "recipient.reveal",
            Some(brand),
            crate::write::reconcile::mask(ask.recipient.trim()),
        )
        .await?;
    render(&panel, &viewer, lang, &ask, true).await
}
