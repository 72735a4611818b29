//! The HTTP side of [`IysClient`]: sending one call with its token, the retry/backoff loop,
//! the common classification of replies (401/429/5xx/4xx), `Retry-After`, and the body and
//! JSON helpers (lenient error bodies, redacted JSON errors, percent-encoding).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::Connect;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{ErrorItem, IysClient, IysError};

/// 429 codes whose window is an hour: retrying within seconds only extends the lockout.
const HOURLY_LIMIT_CODES: [&str; 3] = ["H084", "H086", "H089"];
/// A 429 whose Retry-After is longer than this is returned to the caller instead of slept on.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_mins(1);

/// How a call's response is read.
pub(super) enum Parsed<T> {
    /// The call's result.
    Value(T),
    /// Not a status this call handles: apply the common rules (401/429/5xx/4xx).
    NotMine,
    /// A status this call handles, but the body could not be read (position only).
    Malformed(String),
}

pub(super) fn json<T: DeserializeOwned>(body: &[u8]) -> Parsed<T> {
    match serde_json::from_slice(body) {
        Ok(v) => Parsed::Value(v),
        Err(e) => Parsed::Malformed(describe_json_error(&e)),
    }
}

/// A `serde_json` error described without the offending text (it may hold a recipient).
pub(super) fn describe_json_error(e: &serde_json::Error) -> String {
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
pub(super) fn parse_errors(body: &[u8]) -> Vec<ErrorItem> {
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
pub(super) fn encode(value: &str) -> String {
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
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// One API call, replayable for retries.
pub(super) struct Call {
    pub(super) op: &'static str,
    pub(super) method: Method,
    /// Path and query, already encoded, starting with `/`.
    pub(super) path: String,
    pub(super) body: Option<Bytes>,
}

/// A fully read response.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Why one attempt failed, and whether another may help.
enum AttemptError {
    Retry {
        error: IysError,
        wait: Option<Duration>,
    },
    Stop(IysError),
}

impl<C> IysClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    pub(super) async fn execute<T>(
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

    pub(super) async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Reply, IysError> {
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

pub(super) fn to_body<T: serde::Serialize + ?Sized>(value: &T) -> Result<Bytes, IysError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        IysError::InvalidRequest(format!(
            "cannot encode request: {}",
            describe_json_error(&e)
        ))
    })
}
