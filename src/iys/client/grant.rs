//! The token flow of [`IysClient`] (API-NOTES §2, §10): a fresh token from the store, the
//! `refresh_token` grant, the `password` grant as fallback, the one-hour H084 halt, the
//! in-process cooldowns, single-flight across clones and lease polling across replicas.
//! The token *store* (where tokens, the halt and the lease live) is `crate::iys::token`.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::Connect;
use serde::Deserialize;

use super::transport::{describe_json_error, parse_errors, retry_after};
use super::{IysClient, IysError};
use crate::iys::token::{TokenSet, TokenState};

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
/// How often a replica without the lease looks for the token another replica is fetching.
const LEASE_POLL: Duration = Duration::from_millis(250);

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

impl<C> IysClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A usable access token. `rejected` is a token İYS just answered 401 to: a different
    /// stored token (another task already refreshed) is used as is, the same one is replaced.
    pub(super) async fn access_token(&self, rejected: Option<&str>) -> Result<String, IysError> {
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
