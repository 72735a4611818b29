//! API clients (admin only): the stored clients with their grants and their calls since this
//! replica started; creating one (the key shown once, stored as its SHA-256 only), granting and
//! revoking brands and retailers. The same evidence-store calls as the Admin service's
//! AddClient, GrantBrand and RevokeBrand, and after each the served keys are reloaded on this
//! replica as `AdminService::reload_clients` does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{self, CallCounts, RetailerGrant};
use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::store::Role;
use crate::panel::{Panel, PanelError, Posted, State};
use crate::write::evidence::EvidenceError;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/clients", get(list).post(create))
        .route("/clients/grant", post(grant))
        .route("/clients/revoke", post(revoke))
}

fn admin_only(viewer: &Viewer) -> Result<(), PanelError> {
    if viewer.user.role == Role::Admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden)
    }
}

/// Serves the stored clients (with the flag and file keys) on this replica from now on.
async fn reload(panel: &Panel) -> Result<(), PanelError> {
    let keys = crate::write::accounts::served_keys(&panel.base_keys, &panel.evidence)
        .await
        .map_err(|e| PanelError::Internal(e.to_string()))?;
    panel.service.replace_keys(Arc::new(keys));
    Ok(())
}

/// The retailers field: empty or `none` (may name no retailer), `*` (any), or codes.
fn parse_retailers(lang: Lang, text: &str) -> Result<RetailerGrant, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") || text == "-" {
        return Ok(RetailerGrant::None);
    }
    if text == "*" {
        return Ok(RetailerGrant::Any);
    }
    text.split([',', ' '])
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<u32>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<_>>>()
        .filter(|codes| !codes.is_empty())
        .map(RetailerGrant::Only)
        .ok_or_else(|| {
            lang.t(
                "Boş, * ya da virgülle ayrılmış bayi kodları olmalı.",
                "Must be empty, * or retailer codes separated by commas.",
            )
            .to_owned()
        })
}

fn retailers_text(lang: Lang, grant: &RetailerGrant) -> String {
    match grant {
        RetailerGrant::None => lang.t("bayi yok", "no retailer").to_owned(),
        RetailerGrant::Any => lang.t("tüm bayiler (*)", "any retailer (*)").to_owned(),
        RetailerGrant::Only(codes) => codes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn retailers_audit(grant: &RetailerGrant) -> String {
    match grant {
        RetailerGrant::None => "none".into(),
        RetailerGrant::Any => "*".into(),
        RetailerGrant::Only(codes) => codes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

/// A refusal to show above the list: which form and why.
struct Refusal {
    text: String,
}

async fn list_page(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    done: Option<&str>,
    refusal: Option<&Refusal>,
) -> Result<Markup, PanelError> {
    let clients = panel.evidence.clients().await?;
    let brands = panel.evidence.brands().await?;
    let done = match done {
        Some("granted") => Some(lang.t("Yetki verildi.", "Brand granted.")),
        Some("revoked") => Some(lang.t("Yetki kaldırıldı.", "Grant revoked.")),
        Some("unchanged") => Some(lang.t(
            "Bu istemcinin o markada yetkisi yoktu.",
            "This client had no grant of that brand.",
        )),
        _ => None,
    };
    let brand_select = |id: &str| {
        html! {
            select name="brand" id=(id) required {
                @for b in &brands { option value=(b.brand_code) { (b.brand_code) " " (b.name) } }
            }
        }
    };
    Ok(layout::page(
        lang,
        viewer,
        "/clients",
        lang.t("API istemcileri", "API clients"),
        &html! {
            @if let Some(d) = done { (layout::notice(true, d)) }
            @if let Some(r) = refusal { (layout::notice(false, &r.text)) }
            div.scroll { table {
                thead { tr {
                    th scope="col" { (lang.t("İstemci", "Client")) }
                    th scope="col" { (lang.t("Anahtar (SHA-256 başı)", "Key (SHA-256 prefix)")) }
                    th scope="col" { (lang.t("Yetkili markalar ve bayiler", "Granted brands and retailers")) }
                    th.num scope="col" { (lang.t("Çağrılar", "Calls")) }
                    th.num scope="col" { (lang.t("Retler", "Refusals")) }
                } }
                tbody {
                    @for c in &clients {
                        @let counts = CallCounts::of(&c.name);
                        tr {
                            th scope="row" { (c.name) }
                            td { code { (auth::to_hex(&c.key_sha256[..6])) "…" } }
                            td {
                                @if c.grants.is_empty() { span.muted { (lang.t("yetki yok", "no grant")) } }
                                ul.grants { @for (brand, r) in &c.grants {
                                    li {
                                        (brand) ": " (retailers_text(lang, r)) " "
                                        form.inline method="post" action="/clients/revoke" {
                                            (layout::csrf_field(viewer))
                                            input type="hidden" name="client" value=(c.name);
                                            input type="hidden" name="brand" value=(brand);
                                            button.secondary type="submit"
                                                aria-label={ (lang.t("Yetkiyi kaldır: ", "Revoke: ")) (c.name) " " (brand) } {
                                                (lang.t("Kaldır", "Revoke")) }
                                        }
                                    }
                                } }
                                form.inline method="post" action="/clients/grant" {
                                    (layout::csrf_field(viewer))
                                    input type="hidden" name="client" value=(c.name);
                                    @let id = format!("g-{}", layout::url_encode(&c.name));
                                    label for=(id) { (lang.t("Marka", "Brand")) }
                                    (brand_select(&id))
                                    label { (lang.t("Bayiler (boş, * ya da kodlar)", "Retailers (empty, * or codes)"))
                                        input name="retailers"; }
                                    button type="submit" { (lang.t("Yetki ver", "Grant")) }
                                }
                            }
                            td.num { (layout::number(counts.calls.load(Ordering::Relaxed))) }
                            td.num { (layout::number(counts.refused.load(Ordering::Relaxed))) }
                        }
                    }
                }
            } }
            p.muted { (lang.t(
                "Çağrı ve ret sayıları bu sunucu (replika) başladığından beri sayılır. Kota, anahtar dosyasında (--api-keys-file) tanımlanır; kayıtlı istemciler için kota henüz yok.",
                "Calls and refusals are counted since this replica started. Quotas are set in the keys file (--api-keys-file); stored clients have no quota yet.")) }
            h2 #add { (lang.t("İstemci ekle", "Add a client")) }
            form.stack method="post" action="/clients" {
                (layout::csrf_field(viewer))
                label { (lang.t("İstemci adı", "Client name")) input name="name" required; }
                label for="new-brand" { (lang.t("İlk marka (isteğe bağlı)", "First brand (optional)")) }
                select name="brand" id="new-brand" {
                    option value="" { (lang.t("— yok —", "— none —")) }
                    @for b in &brands { option value=(b.brand_code) { (b.brand_code) " " (b.name) } }
                }
                label { (lang.t("Bayiler (boş, * ya da kodlar)", "Retailers (empty, * or codes)"))
                    input name="retailers"; }
                button type="submit" { (lang.t("Ekle ve anahtar üret", "Add and make a key")) }
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
    admin_only(&viewer)?;
    list_page(&panel, &viewer, lang, q.done.as_deref(), None).await
}

async fn refused(
    panel: &Panel,
    viewer: &Viewer,
    lang: Lang,
    text: String,
) -> Result<Response, PanelError> {
    let page = list_page(panel, viewer, lang, None, Some(&Refusal { text })).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    retailers: String,
}

/// An optional brand field: empty, or a registered brand's code.
async fn brand_field(panel: &Panel, lang: Lang, text: &str) -> Result<Option<u32>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let code = text.trim().parse::<u32>().ok();
    let brands = panel.evidence.brands().await.map_err(|e| e.to_string())?;
    match code {
        Some(c) if brands.iter().any(|b| b.brand_code == c) => Ok(Some(c)),
        _ => Err(lang
            .t("Marka kayıtlı değil.", "The brand is not registered.")
            .to_owned()),
    }
}

async fn create(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<CreateForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return refused(
            &panel,
            &viewer,
            lang,
            lang.t("İstemci adı gerekli.", "A client name is required.")
                .to_owned(),
        )
        .await;
    }
    let brand = match brand_field(&panel, lang, &form.brand).await {
        Ok(b) => b,
        Err(why) => return refused(&panel, &viewer, lang, why).await,
    };
    let retailers = match parse_retailers(lang, &form.retailers) {
        Ok(r) => r,
        Err(why) => return refused(&panel, &viewer, lang, why).await,
    };
    let secret = auth::generate_key()
        .map_err(|e| PanelError::Internal(format!("no OS randomness for the key: {e}")))?;
    let digest = auth::hash_key(&secret);
    let now = panel.now();
    match panel.evidence.add_client(&name, digest, now).await {
        Ok(()) => {}
        Err(EvidenceError::AlreadyExists { .. } | EvidenceError::KeyInUse(_)) => {
            return refused(
                &panel,
                &viewer,
                lang,
                lang.t(
                    "Bu adla bir istemci zaten var.",
                    "A client of that name already exists.",
                )
                .to_owned(),
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(b) = brand {
        panel.evidence.grant(&name, b, &retailers, now).await?;
    }
    panel
        .audit(
            &viewer,
            "client.add",
            brand,
            format!(
                "client {name:?}, key sha256 {}…{}",
                auth::to_hex(&digest[..6]),
                brand.map_or(String::new(), |b| format!(
                    ", grant {b} retailers {}",
                    retailers_audit(&retailers)
                ))
            ),
        )
        .await?;
    reload(&panel).await?;
    Ok(layout::page(
        lang,
        &viewer,
        "/clients",
        lang.t("İstemci eklendi", "Client added"),
        &html! {
            (layout::notice(true, lang.t(
                "Anahtar yalnızca bu sayfada, bir kez gösterilir: şimdi kopyalayıp güvenli bir yere koyun. Sunucu yalnızca SHA-256 özetini saklar.",
                "The key is shown once, on this page only: copy it now to a safe place. The server keeps only its SHA-256.")))
            dl {
                dt { (lang.t("İstemci", "Client")) } dd { (name) }
                dt { (lang.t("API anahtarı", "API key")) }
                dd { code.secret #api-key { (secret) } }
            }
            p { a href="/clients" { (lang.t("İstemcilere dön", "Back to the clients")) } }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct GrantForm {
    client: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    retailers: String,
}

async fn grant(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<GrantForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    let brand = match brand_field(&panel, lang, &form.brand).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return refused(
                &panel,
                &viewer,
                lang,
                lang.t("Marka gerekli.", "A brand is required.").to_owned(),
            )
            .await;
        }
        Err(why) => return refused(&panel, &viewer, lang, why).await,
    };
    let retailers = match parse_retailers(lang, &form.retailers) {
        Ok(r) => r,
        Err(why) => return refused(&panel, &viewer, lang, why).await,
    };
    match panel
        .evidence
        .grant(&form.client, brand, &retailers, panel.now())
        .await
    {
        Ok(()) => {}
        Err(EvidenceError::UnknownClient(_)) => return Err(PanelError::NotFound),
        Err(e) => return Err(e.into()),
    }
    panel
        .audit(
            &viewer,
            "client.grant",
            Some(brand),
            format!(
                "client {:?}, retailers {}",
                form.client,
                retailers_audit(&retailers)
            ),
        )
        .await?;
    reload(&panel).await?;
    Ok(Redirect::to("/clients?done=granted").into_response())
}

#[derive(Deserialize)]
pub struct RevokeForm {
    client: String,
    brand: u32,
}

async fn revoke(
    Extract(panel): Extract<State>,
    posted: Posted<RevokeForm>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    let revoked = panel.evidence.revoke(&form.client, form.brand).await?;
    panel
        .audit(
            &viewer,
            "client.revoke",
            Some(form.brand),
            format!("client {:?}, had a grant: {revoked}", form.client),
        )
        .await?;
    reload(&panel).await?;
    let done = if revoked { "revoked" } else { "unchanged" };
    Ok(Redirect::to(&format!("/clients?done={done}")).into_response())
}
