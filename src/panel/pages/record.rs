//! Recording a consent by hand (the shop counter's paper form): the fields and evidence of
//! RecordConsent, recorded by `write::record::record_consents` exactly as the gRPC call records
//! them: İYS's own validation, every refused field named with İYS's code and its Turkish text
//! next to the field, durable before the page answers, applied to the index at once.

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::Source;
use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{Panel, PanelError, Posted, State};
use crate::pb;
use crate::write::evidence::Recorder;
use crate::write::record::{RecordError, Violation, record_consents};

pub fn routes() -> Router<State> {
    Router::new().route("/record", get(form).post(record))
}

/// The form as typed (every field text, so a refused form comes back as it was sent).
#[derive(Deserialize, Default, Clone)]
pub struct Form {
    #[serde(default)]
    brand: Option<u32>,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    recipient_type: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    consent_date: String,
    #[serde(default)]
    retailer_access: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    document_ref: String,
    #[serde(default)]
    capturing_system: String,
    /// One per form shown: a double submit is the same event, stored once.
    #[serde(default)]
    idempotency_key: String,
}

impl Form {
    /// The RecordConsent input of this form; a field that does not parse is left unset, so
    /// the validation names it as İYS would.
    fn input(&self) -> Result<pb::ConsentInput, Violation> {
        let retailer_access = self
            .retailer_access
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Violation {
                field: "retailer_access".into(),
                description: "bayi kodları virgülle ayrılmış sayılar olmalıdır / retailer codes are numbers separated by commas".into(),
            })?;
        let channel = match self.channel.as_str() {
            "ARAMA" => pb::Channel::Arama,
            "MESAJ" => pb::Channel::Mesaj,
            "EPOSTA" => pb::Channel::Eposta,
            _ => pb::Channel::Unspecified,
        };
        let status = match self.status.as_str() {
            "ONAY" => pb::ConsentStatus::Onay,
            "RET" => pb::ConsentStatus::Ret,
            _ => pb::ConsentStatus::Unspecified,
        };
        let recipient_type = match self.recipient_type.as_str() {
            "TACIR" => pb::RecipientType::Tacir,
            _ => pb::RecipientType::Bireysel,
        };
        let source = Source::provider(&self.source).map_or(0, |s| i32::from(s.code()));
        Ok(pb::ConsentInput {
            recipient: self.recipient.trim().to_owned(),
            recipient_type: recipient_type.into(),
            channel: channel.into(),
            status: status.into(),
            source,
            // `datetime-local` sends `2026-12-02T14:05`; İYS wants `2026-12-02 14:05:00`.
            consent_date: iys_date(&self.consent_date),
            retailer_access,
            evidence: Some(pb::Evidence {
                method: self.method.trim().to_owned(),
                location: self.location.trim().to_owned(),
                document_ref: self.document_ref.trim().to_owned(),
                capturing_system: self.capturing_system.trim().to_owned(),
            }),
            idempotency_key: if self.idempotency_key.is_empty() {
                format!(
                    "panel:{}",
                    crate::panel::auth::random_token().unwrap_or_default()
                )
            } else {
                self.idempotency_key.clone()
            },
        })
    }
}

/// `2026-12-02T14:05` (a browser's `datetime-local`) as İYS's `2026-12-02 14:05:00`; other text
/// as typed, for İYS's validation to judge.
fn iys_date(text: &str) -> String {
    let text = text.trim();
    match chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M") {
        Ok(t) => crate::domain::time::format_iys(t),
        Err(_) => text.replace('T', " "),
    }
}

/// The violations of one form field (matched by the field's last path segment).
fn errors_of<'a>(violations: &'a [Violation], field: &str) -> Vec<&'a Violation> {
    violations
        .iter()
        .filter(|v| v.field.rsplit('.').next() == Some(field))
        .collect()
}

const FIELDS: [&str; 11] = [
    "recipient",
    "recipient_type",
    "channel",
    "status",
    "source",
    "consent_date",
    "retailer_access",
    "method",
    "location",
    "document_ref",
    "capturing_system",
];

fn field_errors(lang: Lang, violations: &[Violation], field: &str) -> Markup {
    let mine = errors_of(violations, field);
    html! {
        @if !mine.is_empty() {
            span.field-error id={ (field) "-error" } role="alert" {
                @for v in mine {
                    (lang.t("İYS: ", "İYS: ")) (v.description) br;
                }
            }
        }
    }
}

fn select(name: &str, options: &[&str], current: &str) -> Markup {
    html! {
        select name=(name) id=(name) aria-describedby={ (name) "-error" } {
            @for o in options {
                option value=(o) selected[*o == current] { (o) }
            }
        }
    }
}

async fn page(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    f: &Form,
    violations: &[Violation],
    done: Option<Markup>,
) -> Result<Markup, PanelError> {
    if !viewer.user.role.writes() {
        return Err(PanelError::Forbidden);
    }
    let brands: Vec<_> = panel.brands_of(viewer).await?;
    let key =
        crate::panel::auth::random_token().map_err(|e| PanelError::Internal(e.to_string()))?;
    let sources: Vec<&str> = Source::ALL
        .iter()
        .map(|s| s.as_str())
        .filter(|s| s.starts_with("HS_"))
        .collect();
    let other: Vec<&Violation> = violations
        .iter()
        .filter(|v| {
            !FIELDS
                .iter()
                .any(|f| v.field.rsplit('.').next() == Some(*f))
        })
        .collect();
    let now = crate::domain::time::to_turkey(panel.now())
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let text = |name: &'static str,
                value: &str,
                tr: &'static str,
                en: &'static str,
                required: bool| {
        html! {
            label { (lang.t(tr, en))
                input name=(name) id=(name) value=(value) required[required] aria-describedby={ (name) "-error" };
                (field_errors(lang, violations, name))
            }
        }
    };
    let body = html! {
        @if let Some(done) = done { (done) }
        @if !violations.is_empty() {
            (layout::notice(false, lang.t("İYS bu kaydı kabul etmez; hiçbir şey kaydedilmedi. Alanların yanındaki açıklamalara bakın.",
                "İYS would refuse this record; nothing was stored. See the notes next to the fields.")))
            @for v in &other { p.field-error role="alert" { (v.field) ": " (v.description) } }
        }
        form.stack method="post" action="/record" {
            (layout::csrf_field(viewer))
            input type="hidden" name="idempotency_key" value={ "panel:" (key) };
            label { (lang.t("Marka", "Brand"))
                select name="brand" {
                    @for b in &brands {
                        option value=(b.brand_code) selected[f.brand == Some(b.brand_code)] { (b.brand_code) " " (b.name) }
                    }
                }
            }
            (text("recipient", &f.recipient, "Alıcı (telefon ya da e-posta)", "Recipient (phone or e-mail)", true))
            label { (lang.t("Kanal", "Channel")) (select("channel", &["MESAJ", "ARAMA", "EPOSTA"], &f.channel)) (field_errors(lang, violations, "channel")) }
            label { (lang.t("Alıcı tipi", "Recipient type")) (select("recipient_type", &["BIREYSEL", "TACIR"], &f.recipient_type)) (field_errors(lang, violations, "recipient_type")) }
            label { (lang.t("Durum", "Status")) (select("status", &["ONAY", "RET"], &f.status)) (field_errors(lang, violations, "status")) }
            label { (lang.t("Kaynak", "Source")) (select("source", &sources, &f.source)) (field_errors(lang, violations, "source")) }
            label { (lang.t("İzin tarihi (Türkiye saati)", "Consent date (Turkey time)"))
                input type="datetime-local" name="consent_date" id="consent_date" required
                    value=(if f.consent_date.is_empty() { now.as_str() } else { f.consent_date.as_str() }) aria-describedby="consent_date-error";
                (field_errors(lang, violations, "consent_date"))
            }
            (text("retailer_access", &f.retailer_access, "Bayi erişimi (virgülle bayi kodları, isteğe bağlı)", "Retailer access (comma-separated codes, optional)", false))
            (text("method", &f.method, "Nasıl alındı (ör. imzalı kağıt form)", "How it was captured (e.g. signed paper form)", true))
            (text("location", &f.location, "Nerede (mağaza, adres)", "Where (shop, address)", true))
            (text("document_ref", &f.document_ref, "Belge numarası (isteğe bağlı)", "Document reference (optional)", false))
            (text("capturing_system", &f.capturing_system, "Kaydeden sistem", "Capturing system", true))
            button type="submit" { (lang.t("Kaydet", "Record")) }
        }
    };
    Ok(layout::page(
        lang,
        viewer,
        "/record",
        lang.t("İzin kaydet", "Record a consent"),
        &body,
    ))
}

async fn form(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(f): Query<Form>,
) -> Result<Markup, PanelError> {
    let f = Form {
        capturing_system: if f.capturing_system.is_empty() {
            "iysgate-panel".into()
        } else {
            f.capturing_system
        },
        ..f
    };
    page(&panel, &viewer, lang, &f, &[], None).await
}

async fn record(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<Form>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form: f } = posted;
    let brand = f
        .brand
        .ok_or_else(|| PanelError::BadRequest("brand".into()))?;
    if !viewer.user.role.writes() || !viewer.user.may_see(brand) {
        return Err(PanelError::Forbidden);
    }
    let input = match f.input() {
        Ok(input) => input,
        Err(v) => {
            let page = page(&panel, &viewer, lang, &f, &[v], None).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let recorder = Recorder {
        client: format!("panel:{}", viewer.user.name),
        key_sha256: None,
    };
    let recording = panel.recording();
    match record_consents(&recording, brand, &|_| String::new(), &[input], &recorder).await {
        Ok(recorded) => {
            let r = recorded.into_iter().next().expect("one input, one answer");
            let masked = crate::write::reconcile::mask(&r.key.recipient.to_string());
            panel
                .audit(
                    &viewer,
                    "consent.record",
                    Some(brand),
                    format!(
                        "event {} {} {} {} {}",
                        r.id.0,
                        masked,
                        r.key.channel.as_str(),
                        f.status,
                        if r.duplicate { "(duplicate)" } else { "" }
                    ),
                )
                .await?;
            let answer = r.answer.as_ref().map_or_else(
                || "UNAVAILABLE".to_owned(),
                |a| {
                    format!("{:?} {}", a.decision.verdict, a.decision.reason.as_str())
                        .to_uppercase()
                },
            );
            let done = html! {
                div.notice.ok role="status" {
                    @if r.duplicate {
                        (lang.t("Bu form daha önce kaydedilmişti; ilk kayıt gösteriliyor.", "This form was recorded before; showing the first record."))
                    } @else {
                        (lang.t("Kaydedildi.", "Recorded."))
                    }
                    " " (lang.t("Olay", "Event")) " #" (r.id.0) " · " (masked) " · "
                    (lang.t("İYS'ye yükleme son tarihi: ", "Upload deadline: ")) (layout::turkey_local(r.deadline))
                    " · " (lang.t("Check şimdi: ", "Check now: ")) (answer)
                }
            };
            let fresh = Form {
                brand: Some(brand),
                capturing_system: f.capturing_system.clone(),
                method: f.method.clone(),
                location: f.location.clone(),
                ..Form::default()
            };
            Ok(page(&panel, &viewer, lang, &fresh, &[], Some(done))
                .await?
                .into_response())
        }
        Err(RecordError::Invalid(violations)) => {
            let page = page(&panel, &viewer, lang, &f, &violations, None).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(RecordError::Store(crate::write::evidence::EvidenceError::Invalid {
            field,
            reason,
            ..
        })) => {
            let v = Violation {
                field: field.to_owned(),
                description: reason.to_owned(),
            };
            let page = page(&panel, &viewer, lang, &f, &[v], None).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(RecordError::Store(e)) => Err(PanelError::Evidence(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_date_becomes_an_iys_date() {
        assert_eq!(iys_date("2026-12-02T14:05"), "2026-12-02 14:05:00");
        assert_eq!(iys_date("2026-12-02 14:05:00"), "2026-12-02 14:05:00");
    }
}
