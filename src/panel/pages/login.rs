//! Logging in and out, and the language switch.

use axum::Router;
use axum::extract::{Query, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;

use crate::panel::auth::{self, Viewer};
use crate::panel::layout::{self, LANG_COOKIE, Lang};
use crate::panel::{PanelError, Posted, State};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/login", get(form).post(login))
        .route("/logout", post(logout))
        .route("/lang", get(lang))
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only paths of this site are followed after a login (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

fn login_page(lang: Lang, next: &str, name: &str, error: Option<&str>) -> maud::Markup {
    layout::bare(
        lang,
        lang.t("Giriş", "Log in"),
        &html! {
            @if let Some(error) = error { (layout::notice(false, error)) }
            form.stack method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { (lang.t("Kullanıcı adı", "User name"))
                    input name="name" autocomplete="username" required value=(name) autofocus; }
                label { (lang.t("Parola", "Password"))
                    input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { (lang.t("Giriş yap", "Log in")) }
            }
            p.muted { a href={ "/lang?to=" (if lang == Lang::Tr { "en" } else { "tr" }) "&back=/login" } {
                (lang.t("English", "Türkçe")) } }
        },
    )
}

async fn form(lang: Lang, Query(q): Query<Next>) -> impl IntoResponse {
    login_page(lang, safe_next(q.next.as_deref()), "", None)
}

#[derive(Deserialize)]
pub struct Login {
    name: String,
    password: String,
    next: Option<String>,
}

async fn login(
    Extract(panel): Extract<State>,
    lang: Lang,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::Form(f): axum::Form<Login>,
) -> Result<Response, PanelError> {
    let next = safe_next(f.next.as_deref()).to_owned();
    let now = std::time::Instant::now();
    let ip = peer.ip();
    if !panel.limiter.allows(&f.name, ip, now) {
        tracing::warn!(%ip, "panel login refused: too many failed attempts");
        let text = lang.t(
            "Çok fazla hatalı deneme. 15 dakika sonra yeniden deneyin.",
            "Too many failed attempts. Try again in 15 minutes.",
        );
        return Ok((
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            login_page(lang, &next, &f.name, Some(text)),
        )
            .into_response());
    }
    let user = panel.store.user(&f.name).await?;
    // Verified against a dummy hash when the account does not exist, so both cost the same.
    let ok = if let Some(u) = &user {
        auth::verify_password(&f.password, &u.password_hash)
    } else {
        let _ = auth::verify_password(&f.password, dummy_hash());
        false
    };
    if !ok {
        panel.limiter.failed(&f.name, ip, now);
        tracing::info!(%ip, "panel login failed");
        let text = lang.t(
            "Kullanıcı adı ya da parola yanlış.",
            "Wrong user name or password.",
        );
        return Ok((
            axum::http::StatusCode::UNAUTHORIZED,
            login_page(lang, &next, &f.name, Some(text)),
        )
            .into_response());
    }
    panel.limiter.succeeded(&f.name);
    let token = auth::open_session(&panel.store, &f.name, panel.now())
        .await
        .map_err(|e| PanelError::Internal(e.to_string()))?;
    let viewer_name = f.name.clone();
    panel
        .store
        .audit(&crate::panel::store::AuditEntry {
            at: panel.now(),
            actor: viewer_name,
            action: "session.login".into(),
            brand: None,
            detail: format!("from {ip}"),
        })
        .await?;
    Ok((
        [(
            header::SET_COOKIE,
            auth::set_cookie(Some(&token), panel.secure),
        )],
        Redirect::to(&next),
    )
        .into_response())
}

/// An argon2id hash of a random password nobody has: what a login for a missing account is
/// checked against, so that it costs what a wrong password costs.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let password = auth::random_token().unwrap_or_else(|_| "x".repeat(32));
        auth::hash_password(&password).unwrap_or_default()
    })
}

#[derive(Deserialize)]
pub struct Empty {}

async fn logout(
    Extract(panel): Extract<State>,
    posted: Posted<Empty>,
) -> Result<Response, PanelError> {
    let Viewer { session, user } = posted.viewer;
    panel
        .store
        .drop_sessions(Some(&session.token_sha256), &user.name)
        .await?;
    panel
        .store
        .audit(&crate::panel::store::AuditEntry {
            at: panel.now(),
            actor: user.name,
            action: "session.logout".into(),
            brand: None,
            detail: String::new(),
        })
        .await?;
    Ok((
        [(header::SET_COOKIE, auth::set_cookie(None, panel.secure))],
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct Switch {
    to: String,
    back: Option<String>,
}

/// Sets the language cookie and goes back (to the page the viewer came from when it is ours).
async fn lang(
    Extract(panel): Extract<State>,
    headers: axum::http::HeaderMap,
    Query(q): Query<Switch>,
) -> Response {
    let code = if q.to == "en" { "en" } else { "tr" };
    let referer = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.find("://").map(|i| &r[i + 3..]))
        .and_then(|r| r.find('/').map(|i| &r[i..]));
    let back = safe_next(q.back.as_deref().or(referer)).to_owned();
    let secure = if panel.secure { "; Secure" } else { "" };
    (
        [(
            header::SET_COOKIE,
            format!("{LANG_COOKIE}={code}; Path=/; SameSite=Strict; Max-Age=31536000{secure}"),
        )],
        Redirect::to(&back),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/uploads?x=1")), "/uploads?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
