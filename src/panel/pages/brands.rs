//! Brands: the list (provider, TACIR policy, whether İYS answers for the provider), adding a
//! brand and editing its policy (admin). Adding calls `write::accounts::add_brand`, as the
//! Admin service's AddBrand does; a policy change `write::accounts::set_brand_policy`, which
//! stores it and applies it to this replica's checks.

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::BrandPolicy;
use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::store::Role;
use crate::panel::{Panel, PanelError, Posted, State};
use crate::write::evidence::{Brand, EvidenceError};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/brands", get(list).post(add))
        .route("/brands/{code}", get(show))
        .route("/brands/{code}/policy", post(policy))
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

/// The add form as typed, and what is wrong with it, by field.
#[derive(Deserialize, Default)]
pub struct AddForm {
    #[serde(default)]
    iys_code: String,
    #[serde(default)]
    brand_code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    allow_unregistered_tacir: Option<String>,
}

#[derive(Default)]
struct Errors {
    iys_code: Option<String>,
    brand_code: Option<String>,
    name: Option<String>,
}

impl Errors {
    fn any(&self) -> bool {
        self.iys_code.is_some() || self.brand_code.is_some() || self.name.is_some()
    }
}

fn field_error(error: Option<&String>) -> Markup {
    html! { @if let Some(e) = error { span.field-error { (e) } } }
}

/// What İYS answers for the provider, from this server's İYS client.
fn iys_state(lang: Lang, panel: &Panel, iys_code: u32) -> Markup {
    match &panel.iys {
        None => html! { span.muted { (lang.t(
        "Bu sunucuda İYS hesabı tanımlı değil",
        "No İYS account is configured on this server")) } },
        Some(i) if i.iys_code != iys_code => html! { span.muted { (lang.t(
        "Bu sunucu başka bir sağlayıcının İYS bilgileriyle çalışıyor",
        "This server holds another provider's İYS credentials")) } },
        Some(i) => {
            if let Some(until) = i.client.token_halted_until() {
                html! { span.deny { (lang.t(
                "İYS token çağrıları durduruldu (H084), şu saate kadar: ",
                "İYS token calls halted (H084) until ")) (layout::turkey_time(until)) } }
            } else {
                html! { span.allow { (lang.t("İYS cevap veriyor", "İYS answers")) } }
            }
        }
    }
}

fn tacir(lang: Lang, policy: BrandPolicy) -> &'static str {
    if policy.allow_unregistered_tacir {
        lang.t(
            "İYS'de kaydı olmayan TACIR'e gönderilebilir",
            "May send to a TACIR without an İYS record",
        )
    } else {
        lang.t(
            "İYS'de kaydı olmayan TACIR'e gönderilmez",
            "No sending to a TACIR without an İYS record",
        )
    }
}

async fn list_page(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    done: Option<&str>,
    form: &AddForm,
    errors: &Errors,
) -> Result<Markup, PanelError> {
    let brands = panel.brands_of(viewer).await?;
    let providers = panel.evidence.providers().await?;
    let done = match done {
        Some("added") => Some(lang.t("Marka eklendi.", "Brand added.")),
        _ => None,
    };
    Ok(layout::page(
        lang,
        viewer,
        "/brands",
        lang.t("Markalar", "Brands"),
        &html! {
            @if let Some(d) = done { (layout::notice(true, d)) }
            @if errors.any() { (layout::notice(false, lang.t(
                "Marka eklenemedi: alanların yanındaki hataları düzeltin.",
                "The brand was not added: correct the fields marked."))) }
            div.scroll { table {
                thead { tr {
                    th scope="col" { (lang.t("Marka kodu", "Brand code")) }
                    th scope="col" { (lang.t("Ad", "Name")) }
                    th scope="col" { (lang.t("Sağlayıcı (İYS kodu)", "Provider (İYS code)")) }
                    th scope="col" { (lang.t("TACIR kuralı", "TACIR rule")) }
                    th scope="col" { (lang.t("İYS durumu", "İYS state")) }
                } }
                tbody {
                    @for b in &brands {
                        tr {
                            td { a href={ "/brands/" (b.brand_code) } { (b.brand_code) } }
                            td.brand-name { (b.name) }
                            td { (b.iys_code)
                                @if let Some(p) = providers.iter().find(|p| p.iys_code == b.iys_code) {
                                    " " span.muted { (p.name) } } }
                            td { (tacir(lang, b.policy)) }
                            td { (iys_state(lang, panel, b.iys_code)) }
                        }
                    }
                }
            } }
            @if brands.is_empty() { p { (lang.t("Size açık bir marka yok.", "No brand is granted to you.")) } }
            @if viewer.user.role == Role::Admin {
                h2 #add { (lang.t("Marka ekle", "Add a brand")) }
                form.stack method="post" action="/brands" {
                    (layout::csrf_field(viewer))
                    label { (lang.t("Sağlayıcının İYS kodu (iysCode)", "Provider's İYS code (iysCode)"))
                        input name="iys_code" inputmode="numeric" required value=(form.iys_code);
                        (field_error(errors.iys_code.as_ref())) }
                    label { (lang.t("Marka kodu (brandCode)", "Brand code (brandCode)"))
                        input name="brand_code" inputmode="numeric" required value=(form.brand_code);
                        (field_error(errors.brand_code.as_ref())) }
                    label { (lang.t("Marka adı", "Brand name"))
                        input name="name" required value=(form.name);
                        (field_error(errors.name.as_ref())) }
                    label.check {
                        input type="checkbox" name="allow_unregistered_tacir" value="on"
                            checked[form.allow_unregistered_tacir.is_some()];
                        (lang.t("İYS'de kaydı olmayan TACIR'e gönderilebilir", "May send to a TACIR without an İYS record"))
                    }
                    button type="submit" { (lang.t("Ekle", "Add")) }
                }
                p.muted { (lang.t(
                    "Sağlayıcı kayıtlı değilse önce o eklenir.",
                    "The provider is registered first when missing.")) }
            }
        },
    ))
}

async fn list(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(q): Query<Done>,
) -> Result<Markup, PanelError> {
    list_page(
        &panel,
        &viewer,
        lang,
        q.done.as_deref(),
        &AddForm::default(),
        &Errors::default(),
    )
    .await
}

/// A code field: a positive number.
fn code_field(lang: Lang, text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(lang
            .t(
                "Pozitif bir sayı olmalı.",
                "Must be a positive whole number.",
            )
            .to_owned()),
    }
}

async fn add(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<AddForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    if viewer.user.role != Role::Admin {
        return Err(PanelError::Forbidden);
    }
    let mut errors = Errors::default();
    let iys_code = code_field(lang, &form.iys_code).map_err(|e| errors.iys_code = Some(e));
    let brand_code = code_field(lang, &form.brand_code).map_err(|e| errors.brand_code = Some(e));
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        errors.name = Some(lang.t("Gerekli.", "Required.").to_owned());
    }
    if let (Ok(iys_code), Ok(brand_code), false) = (iys_code, brand_code, errors.any()) {
        let brand = Brand {
            brand_code,
            iys_code,
            name,
            policy: BrandPolicy {
                allow_unregistered_tacir: form.allow_unregistered_tacir.is_some(),
            },
        };
        match crate::write::accounts::add_brand(&panel.evidence, &brand, panel.now()).await {
            Ok(()) => {
                crate::write::accounts::set_brand_policy(
                    &panel.evidence,
                    panel.service.checker(),
                    brand_code,
                    brand.policy,
                )
                .await?;
                panel
                    .audit(
                        &viewer,
                        "brand.add",
                        Some(brand_code),
                        format!(
                            "provider {iys_code}, name {:?}, allow_unregistered_tacir {}",
                            brand.name, brand.policy.allow_unregistered_tacir
                        ),
                    )
                    .await?;
                return Ok(Redirect::to("/brands?done=added").into_response());
            }
            Err(EvidenceError::AlreadyExists { .. }) => {
                errors.brand_code = Some(
                    lang.t(
                        "Bu marka kodu zaten kayıtlı.",
                        "This brand code is already registered.",
                    )
                    .to_owned(),
                );
            }
            Err(EvidenceError::InvalidField { field, reason }) => {
                errors.name = Some(format!("{field}: {reason}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let page = list_page(&panel, &viewer, lang, None, &form, &errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

async fn show(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Path(code): Path<u32>,
    Query(q): Query<Done>,
) -> Result<Markup, PanelError> {
    if !viewer.user.may_see(code) {
        return Err(PanelError::Forbidden);
    }
    let brand = panel
        .evidence
        .brands()
        .await?
        .into_iter()
        .find(|b| b.brand_code == code)
        .ok_or(PanelError::NotFound)?;
    let title = format!("{} ({})", brand.name, brand.brand_code);
    Ok(layout::page(
        lang,
        &viewer,
        "/brands",
        &title,
        &html! {
            @if q.done.as_deref() == Some("policy") {
                (layout::notice(true, lang.t("Politika kaydedildi ve uygulandı.", "Policy saved and applied.")))
            }
            dl {
                dt { (lang.t("Sağlayıcı (İYS kodu)", "Provider (İYS code)")) } dd { (brand.iys_code) }
                dt { (lang.t("TACIR kuralı", "TACIR rule")) } dd.policy { (tacir(lang, brand.policy)) }
                dt { (lang.t("İYS durumu", "İYS state")) } dd { (iys_state(lang, &panel, brand.iys_code)) }
            }
            @if viewer.user.role == Role::Admin {
                h2 { (lang.t("TACIR kuralını değiştir", "Change the TACIR rule")) }
                form.stack method="post" action={ "/brands/" (code) "/policy" } {
                    (layout::csrf_field(&viewer))
                    label.check {
                        input type="checkbox" name="allow_unregistered_tacir" value="on"
                            checked[brand.policy.allow_unregistered_tacir];
                        (lang.t("İYS'de kaydı olmayan TACIR'e gönderilebilir", "May send to a TACIR without an İYS record"))
                    }
                    button type="submit" { (lang.t("Kaydet", "Save")) }
                }
            }
            p { a href={ "/?brand=" (code) } { (lang.t("Markanın özeti", "The brand's overview")) } }
        },
    ))
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    allow_unregistered_tacir: Option<String>,
}

async fn policy(
    Extract(panel): Extract<State>,
    Path(code): Path<u32>,
    posted: Posted<PolicyForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    if viewer.user.role != Role::Admin {
        return Err(PanelError::Forbidden);
    }
    let policy = BrandPolicy {
        allow_unregistered_tacir: form.allow_unregistered_tacir.is_some(),
    };
    match crate::write::accounts::set_brand_policy(
        &panel.evidence,
        panel.service.checker(),
        code,
        policy,
    )
    .await
    {
        Ok(()) => {}
        Err(EvidenceError::UnknownBrand(_)) => return Err(PanelError::NotFound),
        Err(e) => return Err(e.into()),
    }
    panel
        .audit(
            &viewer,
            "brand.policy",
            Some(code),
            format!(
                "allow_unregistered_tacir {}",
                policy.allow_unregistered_tacir
            ),
        )
        .await?;
    Ok(Redirect::to(&format!("/brands/{code}?done=policy")).into_response())
}
