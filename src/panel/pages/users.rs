//! Users (`/users`, admins only): the panel's accounts with their role, brands and creation
//! time; add an account (its password shown once), grant and revoke brands, reset a password
//! (which ends every session of that account). Every change is in the audit log before the
//! page answers. The account functions here are the ones `iysgate user …` calls too.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use crate::panel::auth::{self, Viewer};
use crate::panel::layout::{self, Lang};
use crate::panel::store::{PanelStore, PanelStoreError, Role};
use crate::panel::{PanelError, Posted, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/users", get(list))
        .route("/users/add", post(add))
        .route("/users/grant", post(grant))
        .route("/users/reset", post(reset))
}

/// Why an account could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account name: 1 to 64 of a-z, 0-9, '.', '_', '-'")]
    BadName,
    #[error(transparent)]
    Password(#[from] auth::PasswordError),
    #[error("no OS randomness for the password: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] PanelStoreError),
}

/// Whether `name` is an account name: 1 to 64 of `a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Makes an account of `role` granted `brands`, with `password` or a generated one; returns
/// the password (to show once).
///
/// # Errors
/// A bad name, a password that is too short, an account of that name already, the store.
pub async fn add_account(
    store: &PanelStore,
    name: &str,
    role: Role,
    brands: &[u32],
    password: Option<String>,
    now: DateTime<Utc>,
) -> Result<String, AccountError> {
    if !valid_name(name) {
        return Err(AccountError::BadName);
    }
    let password = match password {
        Some(p) => p,
        None => auth::generate_password().map_err(AccountError::Random)?,
    };
    let hash = auth::hash_password(&password)?;
    store.add_user(name, role, &hash, now).await?;
    if role != Role::Admin {
        for brand in brands {
            store.set_grant(name, *brand, true).await?;
        }
    }
    Ok(password)
}

/// A new generated password for `name` (returned, to show once); every session of that
/// account ends.
///
/// # Errors
/// No such account, or the store.
pub async fn reset_password(store: &PanelStore, name: &str) -> Result<String, AccountError> {
    let password = auth::generate_password().map_err(AccountError::Random)?;
    let hash = auth::hash_password(&password)?;
    store.set_password(name, &hash).await?;
    store.drop_sessions(None, name).await?;
    Ok(password)
}

/// The audit detail of a new account (no password, no personal data).
pub fn add_detail(name: &str, role: Role, brands: &[u32]) -> String {
    let brands: Vec<String> = brands.iter().map(u32::to_string).collect();
    if role == Role::Admin || brands.is_empty() {
        format!("account {name} role {}", role.as_str())
    } else {
        format!(
            "account {name} role {} brands {}",
            role.as_str(),
            brands.join(",")
        )
    }
}

fn admin_only(viewer: &Viewer) -> Result<(), PanelError> {
    if viewer.user.role == Role::Admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden)
    }
}

fn role_name(lang: Lang, role: Role) -> &'static str {
    match role {
        Role::Admin => lang.t("yönetici (admin)", "admin"),
        Role::Compliance => lang.t("uyum (compliance)", "compliance"),
        Role::Viewer => lang.t("izleyici (viewer)", "viewer"),
    }
}

#[derive(Deserialize, Default)]
#[allow(clippy::struct_field_names)] // the query string's own names
pub struct Done {
    done: Option<String>,
    name: Option<String>,
    brand: Option<u32>,
}

/// What the add form had and what was wrong with it.
#[derive(Default)]
struct AddForm {
    name: String,
    role: Option<Role>,
    brands: BTreeSet<u32>,
    name_error: Option<String>,
    password_error: Option<String>,
    brand_error: Option<String>,
}

async fn list(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Query(q): Query<Done>,
) -> Result<Markup, PanelError> {
    admin_only(&viewer)?;
    let notice = done_text(lang, &q);
    render(&panel, &viewer, lang, notice, None, &AddForm::default()).await
}

fn done_text(lang: Lang, q: &Done) -> Option<String> {
    let name = q.name.as_deref().filter(|n| valid_name(n))?;
    let brand = q.brand.map_or(String::new(), |b| b.to_string());
    let text = match q.done.as_deref()? {
        "granted" => format!(
            "{} {name}: {brand}",
            lang.t("Marka yetkisi verildi", "Brand granted to")
        ),
        "revoked" => format!(
            "{} {name}: {brand}",
            lang.t("Marka yetkisi geri alındı", "Brand revoked from")
        ),
        _ => return None,
    };
    Some(text)
}

/// The page: the accounts, the add form, and at the top a notice or a password shown once.
async fn render(
    panel: &State,
    viewer: &Viewer,
    lang: Lang,
    notice: Option<String>,
    shown_once: Option<(&str, &str)>,
    form: &AddForm,
) -> Result<Markup, PanelError> {
    let users = panel.store.users().await?;
    let brands = panel.evidence.brands().await?;
    let brand_name = |code: u32| {
        brands
            .iter()
            .find(|b| b.brand_code == code)
            .map_or_else(|| code.to_string(), |b| format!("{code} {}", b.name))
    };
    let body = html! {
        @if let Some(text) = &notice { (layout::notice(true, text)) }
        @if let Some((name, password)) = shown_once {
            section.card.todo aria-labelledby="once" {
                h2 #once { (lang.t("Parola (yalnızca bir kez gösterilir)", "Password (shown only once)")) }
                p { (lang.t("Hesap", "Account")) " " strong { (name) } ": "
                    code.secret { (password) } }
                p.muted { (lang.t(
                    "Bu parolayı kişiye güvenli bir yoldan iletin; bir daha gösterilmez, yalnızca sıfırlanabilir.",
                    "Give this password to the person by a safe way; it is not shown again, only reset.")) }
            }
        }
        h2 { (lang.t("Hesaplar", "Accounts")) }
        div.scroll {
            table {
                caption.muted { (lang.t("Paneldeki hesaplar, rolleri ve yetkili oldukları markalar",
                    "The panel's accounts, their roles and the brands they are granted")) }
                thead { tr {
                    th scope="col" { (lang.t("Kullanıcı adı", "User name")) }
                    th scope="col" { (lang.t("Rol", "Role")) }
                    th scope="col" { (lang.t("Markalar", "Brands")) }
                    th scope="col" { (lang.t("Oluşturuldu", "Created")) }
                    th scope="col" { (lang.t("İşlemler", "Actions")) }
                } }
                tbody {
                    @for u in &users {
                        tr {
                            th scope="row" { (u.name) }
                            td { (role_name(lang, u.role)) }
                            td {
                                @if u.role == Role::Admin {
                                    span.muted { (lang.t("tüm markalar", "every brand")) }
                                } @else if u.brands.is_empty() {
                                    span.muted { (lang.t("yok", "none")) }
                                } @else {
                                    ul.plain {
                                        @for b in &u.brands {
                                            li {
                                                (brand_name(*b)) " "
                                                form.inline-one method="post" action="/users/grant" {
                                                    (layout::csrf_field(viewer))
                                                    input type="hidden" name="name" value=(u.name);
                                                    input type="hidden" name="brand" value=(b);
                                                    input type="hidden" name="revoke" value="1";
                                                    button.secondary.small type="submit"
                                                        aria-label={ (lang.t("Yetkiyi geri al:", "Revoke:")) " " (u.name) " " (b) } {
                                                        (lang.t("Geri al", "Revoke")) }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            td { (layout::turkey_time(u.created_at)) }
                            td {
                                @if u.role != Role::Admin {
                                    form.inline method="post" action="/users/grant" {
                                        (layout::csrf_field(viewer))
                                        input type="hidden" name="name" value=(u.name);
                                        label { (lang.t("Marka", "Brand"))
                                            select name="brand" {
                                                @for b in brands.iter().filter(|b| !u.brands.contains(&b.brand_code)) {
                                                    option value=(b.brand_code) { (b.brand_code) " " (b.name) }
                                                }
                                            }
                                        }
                                        button.secondary type="submit" { (lang.t("Yetki ver", "Grant")) }
                                    }
                                }
                                form.inline method="post" action="/users/reset" {
                                    (layout::csrf_field(viewer))
                                    input type="hidden" name="name" value=(u.name);
                                    button.secondary type="submit"
                                        aria-label={ (lang.t("Parolayı sıfırla:", "Reset the password of")) " " (u.name) } {
                                        (lang.t("Parolayı sıfırla", "Reset password")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 #add { (lang.t("Hesap ekle", "Add an account")) }
        form.stack method="post" action="/users/add" {
            (layout::csrf_field(viewer))
            label { (lang.t("Kullanıcı adı", "User name"))
                input name="name" value=(form.name) required autocomplete="off"
                    aria-describedby="name-help";
                span.muted #name-help { (lang.t("küçük harf, rakam, . _ -", "lower-case letters, digits, . _ -")) }
                @if let Some(e) = &form.name_error { span.field-error role="alert" { (e) } }
            }
            label { (lang.t("Rol", "Role"))
                select name="role" {
                    @for r in [Role::Compliance, Role::Viewer, Role::Admin] {
                        option value=(r.as_str()) selected[form.role == Some(r)] { (role_name(lang, r)) }
                    }
                }
            }
            fieldset {
                legend { (lang.t("Markalar (yönetici için gerekmez)", "Brands (not needed for an admin)")) }
                @for b in &brands {
                    label.check {
                        input type="checkbox" name="brand" value=(b.brand_code)
                            checked[form.brands.contains(&b.brand_code)];
                        (b.brand_code) " " (b.name)
                    }
                }
                @if let Some(e) = &form.brand_error { span.field-error role="alert" { (e) } }
            }
            label { (lang.t("Parola (boş bırakılırsa üretilir)", "Password (generated when left empty)"))
                input name="password" type="password" autocomplete="new-password";
                @if let Some(e) = &form.password_error { span.field-error role="alert" { (e) } }
            }
            button type="submit" { (lang.t("Hesabı ekle", "Add the account")) }
        }
    };
    Ok(layout::page(
        lang,
        viewer,
        "/users",
        lang.t("Kullanıcılar", "Users"),
        &body,
    ))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn add(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<Vec<(String, String)>>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    let known: BTreeSet<u32> = panel
        .evidence
        .brands()
        .await?
        .iter()
        .map(|b| b.brand_code)
        .collect();
    let mut f = AddForm {
        name: field(&form, "name").unwrap_or("").trim().to_owned(),
        role: field(&form, "role").and_then(Role::parse),
        ..AddForm::default()
    };
    for (n, v) in &form {
        if n == "brand" {
            match v.parse::<u32>() {
                Ok(b) if known.contains(&b) => {
                    f.brands.insert(b);
                }
                _ => {
                    f.brand_error = Some(lang.t("Bilinmeyen marka.", "Unknown brand.").to_owned());
                }
            }
        }
    }
    let password = field(&form, "password")
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if !valid_name(&f.name) {
        f.name_error = Some(
            lang.t(
                "1-64 karakter: küçük harf, rakam, '.', '_', '-'.",
                "1 to 64 characters: lower-case letters, digits, '.', '_', '-'.",
            )
            .to_owned(),
        );
    } else if panel.store.user(&f.name).await?.is_some() {
        f.name_error = Some(
            lang.t(
                "Bu adla bir hesap zaten var.",
                "An account of that name exists already.",
            )
            .to_owned(),
        );
    }
    if password
        .as_ref()
        .is_some_and(|p| p.chars().count() < auth::MIN_PASSWORD)
    {
        f.password_error = Some(format!(
            "{} {}",
            lang.t("En az karakter:", "At least this many characters:"),
            auth::MIN_PASSWORD
        ));
    }
    let Some(role) = f.role else {
        return Err(PanelError::BadRequest("role".into()));
    };
    if f.name_error.is_some() || f.password_error.is_some() || f.brand_error.is_some() {
        let page = render(&panel, &viewer, lang, None, None, &f).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let brands: Vec<u32> = f.brands.iter().copied().collect();
    let password = add_account(&panel.store, &f.name, role, &brands, password, panel.now())
        .await
        .map_err(|e| match e {
            AccountError::Store(s) => PanelError::Store(s),
            other => PanelError::Internal(other.to_string()),
        })?;
    panel
        .audit(
            &viewer,
            "user.add",
            None,
            add_detail(&f.name, role, &brands),
        )
        .await?;
    // The password is shown on this answer only (never in a URL): no redirect here.
    let notice = format!("{} {}", lang.t("Hesap eklendi:", "Account added:"), f.name);
    let page = render(
        &panel,
        &viewer,
        lang,
        Some(notice),
        Some((&f.name, &password)),
        &AddForm::default(),
    )
    .await?;
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct Grant {
    name: String,
    brand: u32,
    revoke: Option<String>,
}

async fn grant(
    Extract(panel): Extract<State>,
    posted: Posted<Grant>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    let revoke = form.revoke.is_some();
    let user = panel
        .store
        .user(&form.name)
        .await?
        .ok_or(PanelError::NotFound)?;
    if !revoke
        && !panel
            .evidence
            .brands()
            .await?
            .iter()
            .any(|b| b.brand_code == form.brand)
    {
        return Err(PanelError::BadRequest(format!("no brand {}", form.brand)));
    }
    panel
        .store
        .set_grant(&user.name, form.brand, !revoke)
        .await?;
    let (action, done) = if revoke {
        ("user.revoke", "revoked")
    } else {
        ("user.grant", "granted")
    };
    panel
        .audit(
            &viewer,
            action,
            Some(form.brand),
            format!("account {}", user.name),
        )
        .await?;
    Ok(Redirect::to(&format!(
        "/users?done={done}&name={}&brand={}",
        layout::url_encode(&user.name),
        form.brand
    ))
    .into_response())
}

#[derive(Deserialize)]
pub struct Reset {
    name: String,
}

async fn reset(
    Extract(panel): Extract<State>,
    lang: Lang,
    posted: Posted<Reset>,
) -> Result<Response, PanelError> {
    let Posted { viewer, form } = posted;
    admin_only(&viewer)?;
    if panel.store.user(&form.name).await?.is_none() {
        return Err(PanelError::NotFound);
    }
    let password = reset_password(&panel.store, &form.name)
        .await
        .map_err(|e| match e {
            AccountError::Store(s) => PanelError::Store(s),
            other => PanelError::Internal(other.to_string()),
        })?;
    panel
        .audit(
            &viewer,
            "user.reset",
            None,
            format!("account {}", form.name),
        )
        .await?;
    let notice = format!(
        "{} {}",
        lang.t(
            "Parola sıfırlandı, tüm oturumları kapatıldı:",
            "Password reset and every session ended:"
        ),
        form.name
    );
    let page = render(
        &panel,
        &viewer,
        lang,
        Some(notice),
        Some((&form.name, &password)),
        &AddForm::default(),
    )
    .await?;
    Ok(page.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_plain() {
        assert!(valid_name("uyum.2"));
        assert!(!valid_name(""));
        assert!(!valid_name("Ayşe"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(65)));
        assert_eq!(
            add_detail("x", Role::Compliance, &[600001, 600002]),
            "account x role compliance brands 600001,600002"
        );
        assert_eq!(add_detail("x", Role::Admin, &[1]), "account x role admin");
    }
}
