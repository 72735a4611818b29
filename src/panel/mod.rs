//! The compliance panel: server-rendered pages (maud) for the people who answer for the
//! consents: every brand in one place, lookups, hand-recorded consents, uploads, imports,
//! daily reports and the audit log. Served by the same binary on its own listener
//! (`--panel-listen`), behind the same ordered shutdown as gRPC.
//!
//! The panel holds no rule of its own: every answer comes from the functions the gRPC
//! services call (`check::Checker`, `write::record`, `write::import`, `write::report`,
//! `write::reconcile`, the evidence store). What is here is who may ask ([`auth`], [`store`]),
//! how pages look ([`layout`]) and one file per page under [`pages`].
//!
//! Security: sessions in an HttpOnly, SameSite=Strict cookie (Secure under TLS) that expire;
//! every POST carries its session's form token ([`Posted`]); logins are rate-limited per account
//! and per address; every change is written to the append-only audit log before the page
//! answers; recipients are masked unless a role allowed to reveals one, and the reveal is
//! audited. Responses carry a Content-Security-Policy without inline scripts.

pub mod auth;
pub mod charts;
pub mod layout;
pub mod pages;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use self::auth::{LoginLimiter, Viewer};
use self::layout::Lang;
use self::store::{AuditEntry, PanelStore, PanelStoreError};
use crate::api::ConsentService;
use crate::api::admin::IysAccount;
use crate::auth::ApiKeys;
use crate::write::evidence::EvidenceStore;
use crate::write::reconcile::Serving;

/// What every page works with: the stores, the services' state and the login limiter.
pub struct Panel {
    pub store: PanelStore,
    pub evidence: Arc<EvidenceStore>,
    /// The gRPC consent service's state: checker, index, replicas, served keys.
    pub service: Arc<ConsentService>,
    /// The holdings a reconciliation repairs (the same as the Admin service's).
    pub holdings: Serving,
    pub iys: Option<IysAccount>,
    /// The keys given by flags and files; stored clients are served on top of them.
    pub base_keys: Arc<ApiKeys>,
    pub limiter: LoginLimiter,
    /// Whether the panel is served over TLS (cookies are then `Secure`).
    pub secure: bool,
    /// Imports running or finished in this process, by id.
    pub imports: pages::import::Jobs,
}

impl Panel {
    /// The panel of a serving process: its evidence store (required), the consent service it
    /// shares with gRPC, and the panel's own store.
    ///
    /// # Errors
    /// [`PanelError::Internal`] when the process keeps no evidence store.
    pub fn new(
        app: &crate::app::App,
        service: Arc<ConsentService>,
        store: PanelStore,
    ) -> Result<Panel, PanelError> {
        let evidence = app
            .evidence
            .clone()
            .ok_or_else(|| PanelError::Internal("the panel needs an evidence store".into()))?;
        Ok(Panel {
            store,
            evidence,
            service,
            holdings: app.serving(),
            iys: app.iys.clone(),
            base_keys: Arc::clone(&app.base_keys),
            limiter: LoginLimiter::default(),
            secure: app.tls.is_some(),
            imports: pages::import::Jobs::default(),
        })
    }

    /// What recording a consent needs, as the gRPC service records it: the evidence store,
    /// the checker, the index it applies to and a replica's shared state.
    pub fn recording(&self) -> crate::write::record::Recording<'_> {
        crate::write::record::Recording {
            store: &self.evidence,
            checker: self.service.checker(),
            consents: self.service.consents(),
            shared: self.service.shared(),
        }
    }

    /// The brands `viewer` may see (every brand for an admin).
    ///
    /// # Errors
    /// The evidence store failed.
    pub async fn brands_of(
        &self,
        viewer: &Viewer,
    ) -> Result<Vec<crate::write::evidence::Brand>, PanelError> {
        Ok(self
            .evidence
            .brands()
            .await?
            .into_iter()
            .filter(|b| viewer.user.may_see(b.brand_code))
            .collect())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.service.checker().clock().now_utc()
    }

    /// Writes one line of the audit log (before the page that made the change answers).
    pub async fn audit(
        &self,
        viewer: &Viewer,
        action: &str,
        brand: Option<u32>,
        detail: impl Into<String>,
    ) -> Result<(), PanelError> {
        let entry = AuditEntry {
            at: self.now(),
            actor: viewer.user.name.clone(),
            action: action.to_owned(),
            brand,
            detail: detail.into(),
        };
        self.store.audit(&entry).await?;
        Ok(())
    }
}

pub type State = Arc<Panel>;

/// The panel's routes.
pub fn router(panel: State) -> axum::Router {
    pages::routes()
        .layer(axum::middleware::map_response(security_headers))
        .with_state(panel)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Why a page did not answer with its content.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    /// No live session: go to the login page.
    #[error("not logged in")]
    Login { next: String },
    #[error("forbidden")]
    Forbidden,
    /// The form's token is missing or not this session's.
    #[error("form token missing or wrong")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] PanelStoreError),
    #[error(transparent)]
    Evidence(#[from] crate::write::evidence::EvidenceError),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        let (status, tr, en) = match &self {
            PanelError::Login { next } => {
                let to = format!("/login?next={}", layout::url_encode(next));
                return Redirect::to(&to).into_response();
            }
            PanelError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Bu sayfaya ya da markaya erişim yetkiniz yok.",
                "You are not allowed to see this page or brand.",
            ),
            PanelError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form süresi dolmuş ya da başka bir yerden gönderilmiş: sayfayı yenileyip yeniden deneyin.",
                "The form is stale or came from elsewhere: reload the page and try again.",
            ),
            PanelError::NotFound => (StatusCode::NOT_FOUND, "Bulunamadı.", "Not found."),
            PanelError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "Geçersiz istek:", "Bad request:")
            }
            PanelError::Store(_) | PanelError::Evidence(_) | PanelError::Internal(_) => {
                tracing::error!(error = %self, "panel page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Beklenmeyen bir hata oldu; kayıt günlüğe yazıldı.",
                    "Something went wrong; it has been logged.",
                )
            }
        };
        let detail = match &self {
            PanelError::BadRequest(why) => why.clone(),
            _ => String::new(),
        };
        (status, layout::error_page(tr, en, &detail)).into_response()
    }
}

/// The caller's address, for the login rate limit.
pub fn peer(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

impl FromRequestParts<State> for Viewer {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, panel: &State) -> Result<Self, PanelError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let login = || PanelError::Login { next: next.clone() };
        let token = auth::session_cookie(&parts.headers).ok_or_else(login)?;
        let digest = crate::auth::hash_key(token);
        let session = panel
            .store
            .session(&digest, panel.now())
            .await?
            .ok_or_else(login)?;
        let user = panel.store.user(&session.user).await?.ok_or_else(login)?;
        Ok(Viewer { user, session })
    }
}

impl FromRequestParts<State> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &State) -> Result<Self, Self::Rejection> {
        Ok(Lang::of(&parts.headers))
    }
}

/// A POSTed form of a logged-in viewer whose form token (`_csrf`) is their session's. Any
/// other POST is refused before a handler sees it.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<State> for Posted<T> {
    type Rejection = PanelError;

    async fn from_request(req: Request, panel: &State) -> Result<Self, PanelError> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, panel).await?;
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .map_err(|_| PanelError::BadRequest("the form is too large".into()))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PanelError::BadRequest(format!("form: {e}")))?;
        let token = fields
            .iter()
            .find(|(name, _)| name == "_csrf")
            .map(|(_, v)| v.as_str());
        if !auth::csrf_matches(&viewer.session, token) {
            return Err(PanelError::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PanelError::BadRequest(format!("form: {e}")))?;
        Ok(Posted { viewer, form })
    }
}

/// The demo's panel login: the admin account `demo` with a new random password (made, or
/// reset if an earlier demo left one), for the tour to print once.
///
/// # Errors
/// The panel store failed, or the OS gave no randomness.
pub async fn demo_login(
    store: &PanelStore,
    now: DateTime<Utc>,
) -> Result<(String, String), PanelStoreError> {
    const NAME: &str = "demo";
    let random = |e: getrandom::Error| PanelStoreError::Io {
        path: "(OS randomness)".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let password = auth::generate_password().map_err(random)?;
    let hash = auth::hash_password(&password).map_err(|e| PanelStoreError::Io {
        path: "(password hash)".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if store.user(NAME).await?.is_some() {
        store.set_password(NAME, &hash).await?;
        store.drop_sessions(None, NAME).await?;
    } else {
        store.add_user(NAME, store::Role::Admin, &hash, now).await?;
    }
    Ok((NAME.to_owned(), password))
}

/// Serves the panel on `listener` until `shutdown` (over TLS when `tls` is given).
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::app::tls::ReloadingTls>>,
    panel: State,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let router = router(panel);
    crate::app::listener::spawn_http(
        crate::app::listener::Endpoint { listener, tls },
        router,
        shutdown,
        tasks,
    );
}
