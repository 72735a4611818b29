//! REST client for İYS, used by the sync worker (API-NOTES §2, §3, §5.2–5.5, §5.8, §5.12, §7).
//!
//! What it does for the caller:
//! - **Tokens** (§2, §10): one token shared through a [`TokenStore`]; refreshed with the
//!   `refresh_token` grant when within 5 minutes of expiry (the rotated refresh token is stored
//!   at once); the `password` grant only when the refresh fails or the refresh token expired;
//!   one token call for any number of concurrent callers; a 401 from an API call forces one
//!   fresh token and one retry; a 429 `H084` from the token endpoint halts every token call
//!   for an hour (recorded in the store, so other replicas stop too), and with it every call
//!   that needs a token: the halt is only ever set when a token was needed (the one held was
//!   refused, or is about to expire), and İYS counts each failed call against the caller's
//!   IP. Sync pulls, uploads and reconciliation all fail at once with
//!   [`IysError::TokenHalted`] without reaching İYS; the halt's start and end are logged and
//!   shown by the `iysgate_iys_token_halted{user}` gauge (1 while halted). A failed acquisition
//!   also pauses token calls in this process for a while ([`IysError::TokenCooldown`]), so
//!   a wrong password cannot burn the hourly token quota. The token endpoint is never called
//!   in a loop: at most one refresh plus one password grant per acquisition.
//! - **Retries**: capped exponential backoff with full jitter on 5xx, 429 (honouring a
//!   `Retry-After` in seconds), timeouts, connection errors, and unreadable or unparseable
//!   2xx bodies. Every call this client makes is idempotent (reads, v2 single add, v2 batch),
//!   so all of them are retried. Business errors (other 4xx with H-codes) are returned as
//!   [`IysError::Business`] and never retried.
//! - **Privacy**: recipient values, the password and tokens are never logged and never put in
//!   an error's `Display`; the `Debug` of every type that holds them redacts them.
//!
//! Transport: HTTP/1.1 through hyper-util's pooled client; `IysClient::new` speaks HTTPS
//! (rustls, the system's root certificates) for the real İYS and plain HTTP for the mock.
//! [`IysClient::with_connector`] takes any other hyper connector.
//!
//! Layout: this file holds the client, its configuration and its error type; `transport.rs`
//! sends calls and retries them, `grant.rs` is the token flow (the token *store* is
//! `crate::iys::token`), `endpoints.rs` the İYS operations, `types.rs` the bodies read.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::clock::SystemClock;
use crate::domain::time::Clock;
use crate::iys::token::{TokenStore, TokenStoreError};

pub use types::*;

/// Idle pooled connections are closed after this (before a load balancer drops them).
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Largest batch İYS accepts (H091/H125) and largest pull page (H507).
pub const MAX_BATCH: usize = 1000;
pub const MAX_PULL_LIMIT: u32 = 1000;

/// API user credentials (created on hs.iys.org.tr). `Debug` redacts the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Retry and timeout settings for API calls (token calls are never retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call including the first (≥ 1). A 401 re-try does not count.
    pub max_attempts: u32,
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Whole exchange (connect, send, read the full body) per attempt. Well below the
    /// replicas' staleness budget (at most half: `config::check_iys_timeout`), so one hung
    /// answer cannot age their data past it.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform delay in `[0, min(cap, base · 2^(attempt-1))]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let backoff = crate::backoff::Backoff {
            base: self.base,
            cap: self.cap,
        };
        // Without OS randomness, a fixed point of the range (still capped).
        let random = getrandom::u64().unwrap_or(u64::MAX / 2);
        backoff.full_jitter(attempt, random)
    }
}

/// Which side's changes a pull returns (§5.8). İYS defaults to `IYS` when omitted, so the
/// client always sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullSource {
    /// Changes recipients made in İYS (`IYS_*` sources).
    Iys,
    /// Changes this service provider sent (`HS_*` sources).
    Hs,
}

impl PullSource {
    pub const BOTH: [PullSource; 2] = [PullSource::Iys, PullSource::Hs];

    pub fn as_str(self) -> &'static str {
        match self {
            PullSource::Iys => "IYS",
            PullSource::Hs => "HS",
        }
    }
}

/// Everything that can go wrong. `Display` never includes secrets or recipient values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IysError {
    #[error("invalid İYS client configuration: {0}")]
    Config(String),
    /// Rejected locally before calling İYS (batch size, pull limit, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A 4xx business or validation error (400/403/404/422, …). Terminal: do not retry.
    #[error("İYS rejected the request (HTTP {status}): {}", codes(errors))]
    Business { status: u16, errors: Vec<ErrorItem> },
    /// 429 that was not retried (hourly limits H086/H089, a long Retry-After) or still
    /// failing after the last attempt.
    #[error("İYS rate limit (HTTP 429, {}), retry after {retry_after:?}", code.as_deref().unwrap_or("no code"))]
    RateLimited {
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    /// 5xx still failing after the last attempt.
    #[error("İYS server error (HTTP {status}): {}", codes(errors))]
    Server { status: u16, errors: Vec<ErrorItem> },
    /// 401 again right after a fresh token.
    #[error("İYS answered 401 even with a fresh token: {}", codes(errors))]
    Unauthorized { errors: Vec<ErrorItem> },
    /// The token endpoint refused a grant (400 `invalid_grant`/`invalid_request`, 5xx, …).
    #[error("İYS token endpoint refused the {grant} grant (HTTP {status}, {error})")]
    Auth {
        grant: &'static str,
        status: u16,
        error: String,
    },
    /// 429 H084: token calls are halted (for every replica sharing the store) until `until`.
    #[error("İYS token calls halted after H084 until {until}")]
    TokenHalted { until: DateTime<Utc> },
    /// Token calls pause in this process after a failed acquisition.
    #[error("İYS token calls paused until {until} after a failed token request")]
    TokenCooldown { until: DateTime<Utc> },
    /// Another replica holds the refresh lease and did not publish a token in time.
    #[error("another process is refreshing the İYS token; no token yet")]
    TokenBusy,
    #[error(transparent)]
    TokenStore(#[from] TokenStoreError),
    #[error("İYS request timed out after {0:?}")]
    Timeout(Duration),
    #[error("İYS transport error: {0}")]
    Transport(String),
    /// A body that could not be read or parsed (position only, never content).
    #[error("could not decode İYS response: {0}")]
    Decode(String),
    #[error("unexpected HTTP status {status} from İYS")]
    UnexpectedStatus { status: u16 },
}

impl IysError {
    /// True when trying the same call later may succeed (the worker re-queues), false when
    /// the request itself is wrong (business errors, configuration).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            IysError::RateLimited { .. }
                | IysError::Server { .. }
                | IysError::TokenHalted { .. }
                | IysError::TokenCooldown { .. }
                | IysError::TokenBusy
                | IysError::TokenStore(_)
                | IysError::Timeout(_)
                | IysError::Transport(_)
                | IysError::Decode(_)
        ) || matches!(self, IysError::Auth { status, .. } if *status >= 500)
    }

    /// The H-codes of a business, server or 401 error (empty otherwise).
    pub fn codes(&self) -> Vec<&str> {
        match self {
            IysError::Business { errors, .. }
            | IysError::Server { errors, .. }
            | IysError::Unauthorized { errors } => errors.iter().map(|e| e.code.as_str()).collect(),
            IysError::RateLimited {
                code: Some(code), ..
            } => vec![code.as_str()],
            _ => Vec::new(),
        }
    }
}

fn codes(errors: &[ErrorItem]) -> String {
    if errors.is_empty() {
        return "no error code".to_owned();
    }
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(if e.code.is_empty() { "?" } else { &e.code });
        if let Some(index) = e.index {
            let _ = write!(out, " [index {index}]");
        }
    }
    out
}

pub mod types;

mod endpoints;
mod grant;
mod transport;

struct Inner<C> {
    http: HyperClient<C, Full<Bytes>>,
    base: String,
    credentials: Credentials,
    tokens: Arc<dyn TokenStore>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    /// Single-flight of token acquisition for every clone of this client.
    refresh_lock: tokio::sync::Mutex<()>,
    /// In-process pause after a failed acquisition.
    cooldown_until: Mutex<Option<DateTime<Utc>>>,
    /// The halt (H084) this process last saw in the store, to log its start and end once.
    halted_until: Mutex<Option<DateTime<Utc>>>,
    token_calls: AtomicU64,
    api_requests: AtomicU64,
}

/// The İYS REST client. Cheap to clone; clones share the connection pool, the token
/// single-flight and the counters.
///
/// `C` is the hyper connector: [`DefaultConnector`] (HTTPS with rustls, or plain HTTP for
/// the mock) unless a test brings its own.
pub struct IysClient<C = DefaultConnector> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for IysClient<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for IysClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IysClient")
            .field("base", &self.inner.base)
            .field("credentials", &self.inner.credentials)
            .field("retry", &self.inner.retry)
            .field(
                "token_calls",
                &self.inner.token_calls.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// The default connector: HTTPS (rustls, the system's root certificates) for the real İYS,
/// and plain HTTP for the mock and tests.
pub type DefaultConnector = hyper_rustls::HttpsConnector<HttpConnector>;

impl IysClient<DefaultConnector> {
    /// A client over HTTPS or plain HTTP (by the URL's scheme) with the system clock.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        tokens: Arc<dyn TokenStore>,
        retry: RetryPolicy,
    ) -> Result<Self, IysError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(retry.request_timeout));
        // The TLS layer needs a plain connector that does not insist on http:// itself.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| IysError::Config(format!("no root certificates for TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self::with_connector(
            base_url,
            credentials,
            tokens,
            retry,
            connector,
            Arc::new(SystemClock),
        )
    }
}

impl<C> IysClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A client over any hyper connector (TLS for production) and any clock (tests).
    pub fn with_connector(
        base_url: &str,
        credentials: Credentials,
        tokens: Arc<dyn TokenStore>,
        retry: RetryPolicy,
        connector: C,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IysError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|_| IysError::Config("base URL is not a valid URI".into()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(IysError::Config(
                "base URL must be http(s)://host[:port]".into(),
            ));
        }
        if uri.query().is_some() {
            return Err(IysError::Config("base URL must not have a query".into()));
        }
        if retry.max_attempts == 0 {
            return Err(IysError::Config("max_attempts must be at least 1".into()));
        }
        if credentials.username.is_empty() || credentials.password.is_empty() {
            return Err(IysError::Config(
                "İYS username and password must be set".into(),
            ));
        }
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                credentials,
                tokens,
                retry,
                clock,
                refresh_lock: tokio::sync::Mutex::new(()),
                cooldown_until: Mutex::new(None),
                halted_until: Mutex::new(None),
                token_calls: AtomicU64::new(0),
                api_requests: AtomicU64::new(0),
            }),
        })
    }

    /// Calls made to `POST /oauth2/token` by this client and its clones.
    pub fn token_calls(&self) -> u64 {
        self.inner.token_calls.load(Ordering::Relaxed)
    }

    /// Until when token calls, and with them all API calls, are halted after İYS's 429 H084,
    /// as this client last saw it in the token store (shared by every replica using it).
    pub fn token_halted_until(&self) -> Option<DateTime<Utc>> {
        let halted = *self
            .inner
            .halted_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        halted.filter(|until| *until > self.inner.clock.now_utc())
    }

    /// HTTP requests made to the API (not token) endpoints, retries included.
    pub fn api_requests(&self) -> u64 {
        self.inner.api_requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
