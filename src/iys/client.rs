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
//! Over 600 lines on purpose: the İYS client: transport, token flow and endpoints share one retry policy and one error type.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::clock::SystemClock;
use crate::domain::time::Clock;
use crate::iys::token::{TokenSet, TokenState, TokenStore, TokenStoreError};

pub use types::*;

/// Refresh the access token when it has less than this left (§2: "within 5 minutes").
const REFRESH_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// A refresh token this close to expiry is treated as expired (go straight to password).
const REFRESH_TOKEN_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
/// How long token calls stop after 429 H084 (İYS: the limit is hourly, and calling during the
/// lockout restarts the hour).
const H084_HALT: chrono::Duration = chrono::Duration::hours(1);
/// Token calls pause this long in this process after the token endpoint rejected the
/// credentials (they will not fix themselves; 4 tries an hour stays under a 10/h limit).
const COOLDOWN_REJECTED: chrono::Duration = chrono::Duration::minutes(15);
/// …and this long after a transient token failure (timeout, 5xx, connection error).
const COOLDOWN_TRANSIENT: chrono::Duration = chrono::Duration::seconds(30);
/// Idle pooled connections are closed after this (before a load balancer drops them).
const POOL_IDLE: Duration = Duration::from_secs(30);
/// How often a replica without the lease looks for the token another replica is fetching.
const LEASE_POLL: Duration = Duration::from_millis(250);
/// A 429 whose Retry-After is longer than this is returned to the caller instead of slept on.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_mins(1);
/// Largest batch İYS accepts (H091/H125) and largest pull page (H507).
pub const MAX_BATCH: usize = 1000;
pub const MAX_PULL_LIMIT: u32 = 1000;

/// 429 codes whose window is an hour: retrying within seconds only extends the lockout.
const HOURLY_LIMIT_CODES: [&str; 3] = ["H084", "H086", "H089"];
/// 404 codes that mean "wrong provider/brand", not "no consent record".
const NOT_FOUND_CONFIG_CODES: [&str; 2] = ["H001", "H018"];

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

/// Wire types, with İYS's exact field names. Channel/status/recipient type/source stay
/// strings here; the worker converts them with the `FromStr` impls of `crate::domain::types`.
pub mod types {
    use std::fmt;

    use serde::{Deserialize, Deserializer, Serialize};

    /// One entry of İYS's `errors[]` (§3). `Debug` redacts `value`, which can echo a recipient.
    #[derive(Clone, PartialEq, Deserialize, Default)]
    pub struct ErrorItem {
        /// `Hxxx`. Some spec examples spell the key `"code:"`; both are accepted.
        #[serde(default, alias = "code:")]
        pub code: String,
        #[serde(default)]
        pub message: String,
        /// Path to the offending field, e.g. `["retailerAccess", 0]`.
        #[serde(default, deserialize_with = "location")]
        pub location: Vec<PathSegment>,
        /// 0-based item index in batch validation errors.
        #[serde(default)]
        pub index: Option<u32>,
        /// The rejected value (may be a recipient: never log it).
        #[serde(default)]
        pub value: Option<serde_json::Value>,
    }

    impl fmt::Debug for ErrorItem {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ErrorItem")
                .field("code", &self.code)
                .field("message", &self.message)
                .field("location", &self.location)
                .field("index", &self.index)
                .field("value", &self.value.as_ref().map(|_| "<redacted>"))
                .finish()
        }
    }

    /// One step of an error `location`.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(untagged)]
    pub enum PathSegment {
        Index(u64),
        Field(String),
    }

    fn location<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathSegment>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Loc {
            Many(Vec<PathSegment>),
            One(PathSegment),
        }
        Ok(match Option::<Loc>::deserialize(d)? {
            Some(Loc::Many(v)) => v,
            Some(Loc::One(s)) => vec![s],
            None => Vec::new(),
        })
    }

    /// `null`, missing and `""` all become `None` (`consentDate` of `IYS_AHS_HAT_KAPATMA` TACIR
    /// rows may be empty).
    pub(super) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
    }

    /// `true`, `"true"` (a spec example sends the string) and missing.
    fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum B {
            Bool(bool),
            Text(String),
        }
        Ok(match Option::<B>::deserialize(d)? {
            Some(B::Bool(b)) => Some(b),
            Some(B::Text(t)) => t.trim().parse().ok(),
            None => None,
        })
    }

    #[expect(
        clippy::ref_option,
        reason = "serde's skip_serializing_if passes &Option"
    )]
    fn absent(v: &Option<String>) -> bool {
        v.as_deref().is_none_or(str::is_empty)
    }

    pub(super) struct Redacted;

    impl fmt::Debug for Redacted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("<redacted>")
        }
    }

    /// One row of a pull page (§5.8).
    #[derive(Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Change {
        /// Empty for some `IYS_AHS_HAT_KAPATMA` TACIR rows.
        #[serde(default, deserialize_with = "non_empty")]
        pub consent_date: Option<String>,
        pub creation_date: String,
        /// `HS_*` or any `IYS_*` (İYS adds new ones).
        pub source: String,
        pub recipient: String,
        pub recipient_type: String,
        pub status: String,
        /// İYS `type`: ARAMA, MESAJ or EPOSTA.
        #[serde(rename = "type")]
        pub channel: String,
        pub transaction_id: String,
        /// Only on `IYS_WEB_YENI` rows.
        #[serde(default, deserialize_with = "non_empty")]
        pub citizen_name: Option<String>,
    }

    impl fmt::Debug for Change {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Change")
                .field("consent_date", &self.consent_date)
                .field("creation_date", &self.creation_date)
                .field("source", &self.source)
                .field("recipient", &Redacted)
                .field("recipient_type", &self.recipient_type)
                .field("status", &self.status)
                .field("channel", &self.channel)
                .field("transaction_id", &self.transaction_id)
                .field(
                    "citizen_name",
                    &self.citizen_name.as_ref().map(|_| Redacted),
                )
                .finish()
        }
    }

    /// A pull page. `after: None` with an empty list is İYS's 204: nothing new, and the
    /// caller must KEEP its previous cursor (never store `None` over it).
    #[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
    pub struct ChangesPage {
        #[serde(default, deserialize_with = "non_empty")]
        pub after: Option<String>,
        #[serde(default)]
        pub list: Vec<Change>,
    }

    /// Body of single add, and one item of a batch (§5.2). Optional fields that are `None`
    /// or empty are omitted (İYS rejects empty strings and nulls: H267/H118).
    #[derive(Clone, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ConsentRequest {
        pub recipient: String,
        #[serde(rename = "type")]
        pub channel: String,
        /// Required except on a first TACIR insert.
        #[serde(skip_serializing_if = "absent")]
        pub source: Option<String>,
        pub status: String,
        /// `YYYY-MM-DD HH:mm:ss`, Turkey time. Required except on a first TACIR insert.
        #[serde(skip_serializing_if = "absent")]
        pub consent_date: Option<String>,
        /// İYS defaults to BIREYSEL when omitted.
        #[serde(skip_serializing_if = "absent")]
        pub recipient_type: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub retailer_code: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub retailer_access: Option<Vec<u64>>,
    }

    impl fmt::Debug for ConsentRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ConsentRequest")
                .field("recipient", &Redacted)
                .field("channel", &self.channel)
                .field("source", &self.source)
                .field("status", &self.status)
                .field("consent_date", &self.consent_date)
                .field("recipient_type", &self.recipient_type)
                .field("retailer_code", &self.retailer_code)
                .field("retailer_access", &self.retailer_access)
                .finish()
        }
    }

    /// 200 of single add.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AddResult {
        pub transaction_id: String,
        pub creation_date: String,
    }

    /// 202 of batch add: the list was accepted, NOT written; poll `request_id` (≥ 300 s later).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BatchAccepted {
        pub request_id: String,
        #[serde(default)]
        pub sub_requests: Vec<SubRequest>,
    }

    /// One echoed item of an accepted batch.
    #[derive(Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SubRequest {
        #[serde(default, rename = "subRequestId", alias = "subrequestId")]
        pub sub_request_id: Option<String>,
        #[serde(default)]
        pub recipient: String,
        #[serde(default, rename = "type")]
        pub channel: String,
        #[serde(default)]
        pub status: String,
        #[serde(default, deserialize_with = "non_empty")]
        pub source: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub consent_date: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub recipient_type: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub creation_date: Option<String>,
    }

    impl fmt::Debug for SubRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SubRequest")
                .field("sub_request_id", &self.sub_request_id)
                .field("recipient", &Redacted)
                .field("channel", &self.channel)
                .field("status", &self.status)
                .field("source", &self.source)
                .field("consent_date", &self.consent_date)
                .field("recipient_type", &self.recipient_type)
                .field("creation_date", &self.creation_date)
                .finish()
        }
    }

    /// Status of one batch item.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum BatchItemStatus {
        Success,
        Failure,
        /// Not processed yet: poll again later.
        Enqueue,
        #[serde(other)]
        Unknown,
    }

    /// One item of a batch poll (§5.4, v2).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BatchItemResult {
        /// 0-based position in the submitted array.
        pub index: u32,
        pub status: BatchItemStatus,
        /// The spec spells it both `subRequestId` and `subrequestId`.
        #[serde(default, rename = "subRequestId", alias = "subrequestId")]
        pub sub_request_id: Option<String>,
        #[serde(default)]
        pub request_id: Option<String>,
        #[serde(default)]
        pub transaction_id: Option<String>,
        /// Only for `success`.
        #[serde(default, deserialize_with = "non_empty")]
        pub creation_date: Option<String>,
        /// Only for `failure`: `{code, message}`.
        #[serde(default)]
        pub error: Option<ErrorItem>,
        #[serde(default, deserialize_with = "lenient_bool")]
        pub is_add_consent_v2_service: Option<bool>,
        /// Set when this item repeated one already stored by an earlier request.
        #[serde(default)]
        pub original_request_information: Option<OriginalRequest>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct OriginalRequest {
        #[serde(default)]
        pub request_id: Option<String>,
        #[serde(default, rename = "subRequestId", alias = "subrequestId")]
        pub sub_request_id: Option<String>,
    }

    /// 200 of the single status query (§5.5).
    #[derive(Clone, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct StatusRecord {
        pub recipient: String,
        #[serde(default)]
        pub recipient_type: Option<String>,
        #[serde(rename = "type")]
        pub channel: String,
        pub status: String,
        #[serde(default, deserialize_with = "non_empty")]
        pub source: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub consent_date: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub creation_date: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub transaction_id: Option<String>,
        #[serde(default)]
        pub retailer_code: Option<u64>,
        #[serde(default)]
        pub retailer_title: Option<String>,
        #[serde(default)]
        pub retailer_access_count: Option<u32>,
        /// Shape undocumented (DEV example only), kept raw.
        #[serde(default)]
        pub retailer_access: Option<serde_json::Value>,
    }

    impl fmt::Debug for StatusRecord {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("StatusRecord")
                .field("recipient", &Redacted)
                .field("recipient_type", &self.recipient_type)
                .field("channel", &self.channel)
                .field("status", &self.status)
                .field("source", &self.source)
                .field("consent_date", &self.consent_date)
                .field("creation_date", &self.creation_date)
                .field("transaction_id", &self.transaction_id)
                .field("retailer_code", &self.retailer_code)
                .field("retailer_access_count", &self.retailer_access_count)
                .finish_non_exhaustive()
        }
    }

    /// 200 of the reconciliation query (§5.12).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Agreement {
        /// `queued`, `inprogress`, `completed` or `error`.
        #[serde(default)]
        pub process_status: String,
        /// Lower-case hex SHA-384 of the daily CSV.
        #[serde(default, deserialize_with = "non_empty")]
        pub hash_value: Option<String>,
        #[serde(default, deserialize_with = "non_empty")]
        pub hash_method: Option<String>,
        #[serde(default)]
        pub agreement_status: bool,
    }

    /// 200 of the agreement confirmation (§5.12).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AgreementCaptured {
        #[serde(default)]
        pub agreement_captured: bool,
    }

    /// `{"consentDate": …}` body of the single status query.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct StatusQuery<'a> {
        pub recipient: &'a str,
        pub recipient_type: &'a str,
        #[serde(rename = "type")]
        pub channel: &'a str,
    }
}

/// How a call's response is read.
enum Parsed<T> {
    /// The call's result.
    Value(T),
    /// Not a status this call handles: apply the common rules (401/429/5xx/4xx).
    NotMine,
    /// A status this call handles, but the body could not be read (position only).
    Malformed(String),
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Parsed<T> {
    match serde_json::from_slice(body) {
        Ok(v) => Parsed::Value(v),
        Err(e) => Parsed::Malformed(describe_json_error(&e)),
    }
}

/// A `serde_json` error described without the offending text (it may hold a recipient).
fn describe_json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated body",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Lenient reader for İYS error bodies: `{"errors":[…]}`, `{"errors":{…}}`, or a bare
/// `{code,message}`; anything else gives no items.
fn parse_errors(body: &[u8]) -> Vec<ErrorItem> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Errors {
        Many(Vec<ErrorItem>),
        One(ErrorItem),
    }
    #[derive(Deserialize)]
    struct Envelope {
        errors: Option<Errors>,
        #[serde(default, alias = "code:")]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope {
            errors: Some(Errors::Many(items)),
            ..
        }) => items,
        Ok(Envelope {
            errors: Some(Errors::One(item)),
            ..
        }) => vec![item],
        Ok(Envelope {
            errors: None,
            code,
            message,
        }) if code.is_some() || message.is_some() => {
            vec![ErrorItem {
                code: code.unwrap_or_default(),
                message: message.unwrap_or_default(),
                ..ErrorItem::default()
            }]
        }
        _ => Vec::new(),
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Retry-After in whole seconds (HTTP-date form is ignored: backoff is used instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// One API call, replayable for retries.
struct Call {
    op: &'static str,
    method: Method,
    /// Path and query, already encoded, starting with `/`.
    path: String,
    body: Option<Bytes>,
}

/// A fully read response.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Why one attempt failed, and whether another may help.
enum AttemptError {
    Retry {
        error: IysError,
        wait: Option<Duration>,
    },
    Stop(IysError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Password,
    Refresh,
}

impl Grant {
    fn as_str(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::Refresh => "refresh_token",
        }
    }
}

/// `POST /oauth2/token` 200 body.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    #[serde(default = "default_expires_in")]
    expires_in: i64,
    #[serde(default = "default_refresh_expires_in")]
    refresh_expires_in: i64,
}

fn default_expires_in() -> i64 {
    7200
}

fn default_refresh_expires_in() -> i64 {
    14400
}

/// OAuth-style token error body: `{"error": "invalid_grant", "error_description": "…"}`.
#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: Option<String>,
}

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

    /// One page of consent changes (§5.8): `GET /sps/{iysCode}/brands/{brandCode}/consents/
    /// changes?source=&after=&limit=`.
    ///
    /// Follow `after` until a short page or an empty one. An empty page (İYS 204) has
    /// `after: None`: the caller must keep the cursor it already has. Persist the cursor per
    /// (brand, source).
    pub async fn pull_changes(
        &self,
        iys_code: u64,
        brand_code: u64,
        source: PullSource,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ChangesPage, IysError> {
        if limit == 0 || limit > MAX_PULL_LIMIT {
            return Err(IysError::InvalidRequest(format!(
                "pull limit must be 1..={MAX_PULL_LIMIT}"
            )));
        }
        let mut path = format!(
            "/sps/{iys_code}/brands/{brand_code}/consents/changes?source={}&limit={limit}",
            source.as_str()
        );
        if let Some(after) = after.filter(|a| !a.is_empty()) {
            path.push_str("&after=");
            path.push_str(&encode(after));
        }
        let call = Call {
            op: "pull_changes",
            method: Method::GET,
            path,
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => json(body),
            StatusCode::NO_CONTENT => Parsed::Value(ChangesPage::default()),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Adds or updates one consent through the v2 endpoint (§5.2), which returns the same
    /// transactionId for an identical re-send, so retries are safe.
    pub async fn add_consent(
        &self,
        iys_code: u64,
        brand_code: u64,
        consent: &ConsentRequest,
    ) -> Result<AddResult, IysError> {
        let call = Call {
            op: "add_consent",
            method: Method::POST,
            path: format!("/v2/sps/{iys_code}/brands/{brand_code}/consents"),
            body: Some(to_body(consent)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK | StatusCode::CREATED => json(body),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Submits up to 1000 consents (§5.3, v2 path; bare JSON array). 202 means accepted, not
    /// written: poll with [`IysClient::poll_batch`] no earlier than 300 s later. A validation
    /// failure rejects the whole batch with 422 → [`IysError::Business`] whose items carry
    /// the 0-based `index` of the offending consent.
    ///
    /// Retried on transient failures: on the v2 path a re-sent identical consent points to
    /// the original request rather than being applied twice.
    pub async fn add_consents_batch(
        &self,
        iys_code: u64,
        brand_code: u64,
        consents: &[ConsentRequest],
    ) -> Result<BatchAccepted, IysError> {
        if consents.is_empty() || consents.len() > MAX_BATCH {
            return Err(IysError::InvalidRequest(format!(
                "a batch holds 1..={MAX_BATCH} consents, got {}",
                consents.len()
            )));
        }
        let call = Call {
            op: "add_consents_batch",
            method: Method::POST,
            path: format!("/v2/sps/{iys_code}/brands/{brand_code}/consents/request"),
            body: Some(to_body(consents)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::ACCEPTED | StatusCode::OK => json(body),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Results of a batch (§5.4, v2). An empty list means "not processed yet", not failure;
    /// the batch is complete when no item is `Enqueue`.
    pub async fn poll_batch(
        &self,
        iys_code: u64,
        brand_code: u64,
        request_id: &str,
    ) -> Result<Vec<BatchItemResult>, IysError> {
        if request_id.is_empty() {
            return Err(IysError::InvalidRequest("empty requestId".into()));
        }
        let call = Call {
            op: "poll_batch",
            method: Method::GET,
            path: format!(
                "/v2/sps/{iys_code}/brands/{brand_code}/consents/request/{}",
                encode(request_id)
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK if body.iter().all(u8::is_ascii_whitespace) => Parsed::Value(Vec::new()),
            StatusCode::OK => json(body),
            StatusCode::NO_CONTENT => Parsed::Value(Vec::new()),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The current consent of one (recipient, recipientType, type) (§5.5). `None` when İYS
    /// answers 404 for the record (a 404 with H001/H018 — unknown provider or brand — is a
    /// [`IysError::Business`] instead). İYS allows 1000 of these per hour per IP.
    pub async fn consent_status(
        &self,
        iys_code: u64,
        brand_code: u64,
        recipient: &str,
        recipient_type: &str,
        channel: &str,
    ) -> Result<Option<StatusRecord>, IysError> {
        let query = types::StatusQuery {
            recipient,
            recipient_type,
            channel,
        };
        let call = Call {
            op: "consent_status",
            method: Method::POST,
            path: format!("/sps/{iys_code}/brands/{brand_code}/consents/status"),
            body: Some(to_body(&query)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json(body) {
                Parsed::Value(v) => Parsed::Value(Some(v)),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            StatusCode::NOT_FOUND => {
                let wrong_target = parse_errors(body)
                    .iter()
                    .any(|e| NOT_FOUND_CONFIG_CODES.contains(&e.code.as_str()));
                if wrong_target {
                    Parsed::NotMine
                } else {
                    Parsed::Value(None)
                }
            }
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The daily changes CSV for `date` (§5.12; at most 7 days back), as text. `None` when
    /// İYS answers 204 ("file not found", e.g. not produced yet).
    pub async fn daily_changes_file(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<Option<String>, IysError> {
        let call = Call {
            op: "daily_changes_file",
            method: Method::GET,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/changes/{}/file",
                date.format("%Y-%m-%d")
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match std::str::from_utf8(body) {
                Ok(text) => Parsed::Value(Some(text.to_owned())),
                Err(e) => {
                    Parsed::Malformed(format!("CSV is not UTF-8 at byte {}", e.valid_up_to()))
                }
            },
            StatusCode::NO_CONTENT => Parsed::Value(None),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The reconciliation record for `date` (§5.12): hash of the daily CSV and whether the
    /// agreement was recorded. `None` on 204 ("no value").
    pub async fn agreement(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<Option<Agreement>, IysError> {
        let call = Call {
            op: "agreement",
            method: Method::GET,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/agreements/{}",
                date.format("%Y-%m-%d")
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json(body) {
                Parsed::Value(v) => Parsed::Value(Some(v)),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            StatusCode::NO_CONTENT => Parsed::Value(None),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Records that the brand agrees with İYS's daily change file of `date` (§5.12,
    /// `PUT …/agreements/{date}` with `{"agreementStatus":true}`). True when İYS says the
    /// agreement was captured.
    pub async fn confirm_agreement(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<bool, IysError> {
        let call = Call {
            op: "confirm_agreement",
            method: Method::PUT,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/agreements/{}",
                date.format("%Y-%m-%d")
            ),
            body: Some(Bytes::from_static(br#"{"agreementStatus":true}"#)),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json::<AgreementCaptured>(body) {
                Parsed::Value(v) => Parsed::Value(v.agreement_captured),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            _ => Parsed::NotMine,
        })
        .await
    }

    // ----- request execution -------------------------------------------------------------

    async fn execute<T>(
        &self,
        call: &Call,
        parse: impl Fn(StatusCode, &[u8]) -> Parsed<T>,
    ) -> Result<T, IysError> {
        let policy = self.inner.retry;
        let mut attempt = 0;
        let mut reauthenticated = false;
        let mut token = self.access_token(None).await?;
        loop {
            attempt += 1;
            let outcome = match self.send(call, &token).await {
                Ok(reply) => match parse(reply.status, &reply.body) {
                    Parsed::Value(v) => return Ok(v),
                    Parsed::Malformed(reason) => AttemptError::Retry {
                        error: IysError::Decode(reason),
                        wait: None,
                    },
                    Parsed::NotMine if reply.status == StatusCode::UNAUTHORIZED => {
                        let errors = parse_errors(&reply.body);
                        if reauthenticated {
                            AttemptError::Stop(IysError::Unauthorized { errors })
                        } else {
                            tracing::info!(op = call.op, "İYS answered 401; getting a new token");
                            reauthenticated = true;
                            token = self.access_token(Some(&token)).await?;
                            attempt -= 1;
                            continue;
                        }
                    }
                    Parsed::NotMine => classify(&reply),
                },
                Err(error) => AttemptError::Retry { error, wait: None },
            };
            match outcome {
                AttemptError::Stop(error) => return Err(error),
                AttemptError::Retry { error, .. } if attempt >= policy.max_attempts => {
                    tracing::warn!(op = call.op, attempt, error = %error, "İYS call failed; giving up");
                    return Err(error);
                }
                AttemptError::Retry { error, wait } => {
                    let wait = wait.unwrap_or_else(|| policy.backoff(attempt));
                    tracing::warn!(
                        op = call.op,
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %error,
                        "İYS call failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One HTTP exchange with the whole body read, under the request timeout.
    async fn send(&self, call: &Call, token: &str) -> Result<Reply, IysError> {
        let inner = &self.inner;
        let uri: Uri = format!("{}{}", inner.base, call.path)
            .parse()
            .map_err(|_| IysError::Config("request URI is invalid".into()))?;
        let mut auth = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| IysError::Decode("access token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "iysgate");
        if call.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(call.body.clone().unwrap_or_default()))
            .map_err(|e| IysError::Config(format!("cannot build request: {e}")))?;
        inner.api_requests.fetch_add(1, Ordering::Relaxed);
        let reply = self.exchange(request).await?;
        tracing::debug!(op = call.op, status = reply.status.as_u16(), "İYS replied");
        Ok(reply)
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Reply, IysError> {
        let timeout = self.inner.retry.request_timeout;
        let work = async {
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|e| IysError::Transport(transport_reason(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| IysError::Transport(format!("reading body: {e}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(IysError::Timeout(timeout)))
    }

    // ----- tokens --------------------------------------------------------------------------

    /// A usable access token. `rejected` is a token İYS just answered 401 to: a different
    /// stored token (another task already refreshed) is used as is, the same one is replaced.
    async fn access_token(&self, rejected: Option<&str>) -> Result<String, IysError> {
        let state = self.inner.tokens.load().await?;
        let now = self.inner.clock.now_utc();
        let halted = state.halted_until.filter(|until| *until > now);
        self.note_halt(halted);
        if let Some(until) = halted {
            return Err(IysError::TokenHalted { until });
        }
        if let Some(token) = fresh_token(&state, rejected, now) {
            return Ok(token);
        }
        // The acquisition runs in its own task so that a caller being cancelled cannot lose
        // a rotated refresh token between the token call and the store write.
        let this = self.clone();
        let rejected = rejected.map(str::to_owned);
        tokio::spawn(async move { this.acquire_single_flight(rejected.as_deref()).await })
            .await
            .map_err(|_| IysError::Transport("token task failed".into()))?
    }

    async fn acquire_single_flight(&self, rejected: Option<&str>) -> Result<String, IysError> {
        let inner = &self.inner;
        let _flight = inner.refresh_lock.lock().await;
        // Someone may have refreshed while this task waited for the lock.
        let state = inner.tokens.load().await?;
        let now = inner.clock.now_utc();
        if let Some(token) = fresh_token(&state, rejected, now) {
            return Ok(token);
        }
        if let Some(until) = state.halted_until.filter(|until| *until > now) {
            self.note_halt(Some(until));
            return Err(IysError::TokenHalted { until });
        }
        let cooldown = *inner
            .cooldown_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(until) = cooldown.filter(|until| *until > now) {
            return still_valid(&state, rejected, now).ok_or(IysError::TokenCooldown { until });
        }

        let Some(lease) = inner.tokens.try_lock_refresh(self.lease_ttl()).await? else {
            return self.wait_for_other_process(rejected).await;
        };
        let result = self.acquire(state.tokens.as_ref()).await;
        if let Err(e) = inner.tokens.unlock_refresh(lease).await {
            tracing::warn!(error = %e, "could not release the İYS token lease");
        }
        let (result, pause) = match result {
            Ok(tokens) => match inner.tokens.save_tokens(tokens.clone()).await {
                Ok(()) => (Ok(tokens.access_token), None),
                // The token is good for this call even if the store failed; the next caller
                // re-acquires (the rotated refresh token is lost, so that is a password grant).
                Err(e) => {
                    tracing::error!(error = %e, "could not store the new İYS token");
                    (Ok(tokens.access_token), None)
                }
            },
            Err(e @ IysError::TokenHalted { .. }) => (Err(e), None),
            Err(
                e @ IysError::Auth {
                    status: 400..=499, ..
                },
            ) => (Err(e), Some(COOLDOWN_REJECTED)),
            Err(e) => (Err(e), Some(COOLDOWN_TRANSIENT)),
        };
        if let Some(pause) = pause {
            let until = inner.clock.now_utc() + pause;
            *inner
                .cooldown_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(until);
        }
        match result {
            Ok(token) => Ok(token),
            // Halted: no call at all, not even with a token that has not expired yet.
            Err(e @ IysError::TokenHalted { .. }) => Err(e),
            // An early refresh failed but the current token has not expired: keep using it.
            Err(e) => match still_valid(&state, rejected, inner.clock.now_utc()) {
                Some(token) => {
                    tracing::warn!(error = %e, "İYS token renewal failed; the current token is still valid");
                    Ok(token)
                }
                None => Err(e),
            },
        }
    }

    /// Records the halt this client sees now (`None`: none in force), logging and setting the
    /// gauge when it starts, moves or ends.
    fn note_halt(&self, now_halted: Option<DateTime<Utc>>) {
        let mut seen = self
            .inner
            .halted_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *seen == now_halted {
            return;
        }
        let user = self.inner.credentials.username.clone();
        if let Some(until) = now_halted {
            tracing::warn!(
                user,
                %until,
                "İYS token calls are halted (429 H084): no İYS call is made until then"
            );
            metrics::gauge!("iysgate_iys_token_halted", "user" => user).set(1.0);
        } else {
            tracing::info!(user, "İYS token halt is over: İYS calls resume");
            metrics::gauge!("iysgate_iys_token_halted", "user" => user).set(0.0);
        }
        *seen = now_halted;
    }

    /// How long the cross-process refresh lease is held at most: long enough for a refresh
    /// and a password grant that both run into the request timeout.
    fn lease_ttl(&self) -> Duration {
        self.inner.retry.request_timeout.saturating_mul(2) + Duration::from_secs(5)
    }

    /// Another process holds the lease: wait for it to publish a token.
    async fn wait_for_other_process(&self, rejected: Option<&str>) -> Result<String, IysError> {
        let rounds = (self.lease_ttl().as_millis() / LEASE_POLL.as_millis()).max(1);
        for _ in 0..rounds {
            tokio::time::sleep(LEASE_POLL).await;
            let state = self.inner.tokens.load().await?;
            let now = self.inner.clock.now_utc();
            if let Some(token) = fresh_token(&state, rejected, now) {
                return Ok(token);
            }
            if let Some(until) = state.halted_until.filter(|until| *until > now) {
                self.note_halt(Some(until));
                return Err(IysError::TokenHalted { until });
            }
        }
        Err(IysError::TokenBusy)
    }

    /// Refresh grant if the refresh token is alive, password grant otherwise or if the
    /// refresh fails. At most two token calls; H084 stops at once.
    async fn acquire(&self, current: Option<&TokenSet>) -> Result<TokenSet, IysError> {
        let now = self.inner.clock.now_utc();
        if let Some(current) = current.filter(|t| t.refresh_expires_at - REFRESH_TOKEN_MARGIN > now)
        {
            match self
                .token_call(Grant::Refresh, Some(&current.refresh_token))
                .await
            {
                Ok(tokens) => return Ok(tokens),
                Err(e @ IysError::TokenHalted { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "İYS token refresh failed; using the password grant");
                }
            }
        }
        self.token_call(Grant::Password, None).await
    }

    /// One token grant, retried (at most 3 attempts, with the policy's backoff) only when
    /// İYS answered 5xx or the exchange itself failed: a server hiccup must not cost the
    /// whole process its token for the cooldown. 4xx and 429 are never retried here.
    async fn token_call(
        &self,
        grant: Grant,
        refresh_token: Option<&str>,
    ) -> Result<TokenSet, IysError> {
        let attempts = self.inner.retry.max_attempts.clamp(1, 3);
        let mut attempt = 1;
        loop {
            match self.token_call_once(grant, refresh_token).await {
                Err(e)
                    if attempt < attempts
                        && matches!(
                            e,
                            IysError::Timeout(_) | IysError::Transport(_) | IysError::Decode(_)
                        ) | matches!(e, IysError::Auth { status, .. } if status >= 500) =>
                {
                    tokio::time::sleep(self.inner.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn token_call_once(
        &self,
        grant: Grant,
        refresh_token: Option<&str>,
    ) -> Result<TokenSet, IysError> {
        let inner = &self.inner;
        let body = match grant {
            Grant::Password => serde_json::json!({
                "grant_type": "password",
                "username": inner.credentials.username,
                "password": inner.credentials.password,
            }),
            Grant::Refresh => serde_json::json!({
                "grant_type": "refresh_token",
                "refresh_token": refresh_token.unwrap_or_default(),
            }),
        };
        let uri: Uri = format!("{}/oauth2/token", inner.base)
            .parse()
            .map_err(|_| IysError::Config("token URI is invalid".into()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "iysgate")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| IysError::Config(format!("cannot build token request: {e}")))?;
        let calls = inner.token_calls.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            grant = grant.as_str(),
            calls,
            "calling the İYS token endpoint"
        );
        let sent_at = inner.clock.now_utc();
        let reply = self.exchange(request).await?;
        match reply.status {
            StatusCode::OK => {
                let parsed: TokenResponse = serde_json::from_slice(&reply.body)
                    .map_err(|e| IysError::Decode(describe_json_error(&e)))?;
                let access_expires_at = sent_at + chrono::Duration::seconds(parsed.expires_in);
                let refresh_expires_at =
                    sent_at + chrono::Duration::seconds(parsed.refresh_expires_in);
                Ok(TokenSet {
                    access_token: parsed.access_token,
                    refresh_token: parsed.refresh_token,
                    obtained_at: sent_at,
                    access_expires_at,
                    refresh_expires_at: refresh_expires_at.max(access_expires_at),
                })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                // H084 (or any 429 here): İYS counts further token calls against the hour.
                let wait = retry_after(&reply.headers)
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map_or(H084_HALT, |d| d.max(H084_HALT));
                let until = inner.clock.now_utc() + wait;
                let codes = parse_errors(&reply.body);
                tracing::error!(
                    code = codes.first().map_or("", |e| e.code.as_str()),
                    %until,
                    "İYS token rate limit hit; halting token calls"
                );
                inner.tokens.halt_until(until).await?;
                self.note_halt(Some(until));
                Err(IysError::TokenHalted { until })
            }
            status => {
                let error = serde_json::from_slice::<OAuthError>(&reply.body)
                    .ok()
                    .and_then(|e| e.error)
                    .or_else(|| parse_errors(&reply.body).into_iter().next().map(|e| e.code))
                    .unwrap_or_else(|| "no error code".to_owned());
                Err(IysError::Auth {
                    grant: grant.as_str(),
                    status: status.as_u16(),
                    error,
                })
            }
        }
    }
}

/// The stored access token if it is not `rejected` and not within the refresh margin.
/// The margin shrinks to half the token's lifetime for very short-lived tokens, so a short
/// `expires_in` can never make every call refresh.
fn fresh_token(state: &TokenState, rejected: Option<&str>, now: DateTime<Utc>) -> Option<String> {
    let tokens = state.tokens.as_ref()?;
    if rejected == Some(tokens.access_token.as_str()) {
        return None;
    }
    let lifetime = tokens.access_expires_at - tokens.obtained_at;
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    (tokens.access_expires_at - margin > now).then(|| tokens.access_token.clone())
}

/// The stored access token if it has not expired yet (used during a cooldown and when an
/// early renewal failed; never during an H084 halt).
fn still_valid(state: &TokenState, rejected: Option<&str>, now: DateTime<Utc>) -> Option<String> {
    let tokens = state.tokens.as_ref()?;
    (rejected != Some(tokens.access_token.as_str()) && tokens.access_expires_at > now)
        .then(|| tokens.access_token.clone())
}

/// The common reading of a status the call did not handle itself.
fn classify(reply: &Reply) -> AttemptError {
    let status = reply.status;
    let errors = parse_errors(&reply.body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let code = errors
            .first()
            .map(|e| e.code.clone())
            .filter(|c| !c.is_empty());
        let wait = retry_after(&reply.headers);
        let error = IysError::RateLimited {
            code: code.clone(),
            retry_after: wait,
        };
        let hourly = code
            .as_deref()
            .is_some_and(|c| HOURLY_LIMIT_CODES.contains(&c));
        if hourly || wait.is_some_and(|w| w > MAX_INLINE_RETRY_AFTER) {
            return AttemptError::Stop(error);
        }
        return AttemptError::Retry { error, wait };
    }
    if status.is_server_error() {
        return AttemptError::Retry {
            error: IysError::Server {
                status: status.as_u16(),
                errors,
            },
            wait: retry_after(&reply.headers).filter(|w| *w <= MAX_INLINE_RETRY_AFTER),
        };
    }
    if status.is_client_error() {
        return AttemptError::Stop(IysError::Business {
            status: status.as_u16(),
            errors,
        });
    }
    AttemptError::Stop(IysError::UnexpectedStatus {
        status: status.as_u16(),
    })
}

/// A hyper-util error described by kind (its text never holds headers or bodies).
fn transport_reason(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut reason = if e.is_connect() {
        "connect: ".to_owned()
    } else {
        String::new()
    };
    reason.push_str(&e.to_string());
    if let Some(source) = e.source() {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    reason
}

fn to_body<T: serde::Serialize + ?Sized>(value: &T) -> Result<Bytes, IysError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        IysError::InvalidRequest(format!(
            "cannot encode request: {}",
            describe_json_error(&e)
        ))
    })
}

#[cfg(test)]
mod tests;
