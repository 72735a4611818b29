//! İYS `OAuth2` token storage (API-NOTES §2, §10).
//!
//! İYS limits the token endpoint per IP (100/h in one place of the spec, 10/h in another) and
//! answers over-use with 429 `H084`, after which every further token call restarts the hour.
//! So all workers and replicas must share ONE token and ONE halt marker: the client reads and
//! writes them through [`TokenStore`], never keeping its own copy.
//!
//! Single-flight:
//! - Within one process, [`crate::iys::client::IysClient`] (and all its clones) serialise token
//!   acquisition behind one async mutex and re-read the store after taking it, so N concurrent
//!   callers cause one token call.
//! - Across processes, the client additionally takes a short lease with
//!   [`TokenStore::try_lock_refresh`] before calling the token endpoint. A replica that does
//!   not get the lease waits for the holder to publish the new token in the store. A Redis
//!   store implements the lease as `SET key <id> NX PX <ttl>` and the release as a
//!   compare-and-delete script; the TTL bounds the damage of a holder that dies mid-refresh.
//!
//! Times are wall-clock UTC (not `Instant`) because a shared store outlives any one process.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A boxed, `Send` future, so [`TokenStore`] stays object-safe (`Arc<dyn TokenStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The tokens İYS issued. `Debug` redacts both tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    /// İYS rotates this on every refresh: the previous one stops working, so the new one
    /// must be stored before anything else uses the store.
    pub refresh_token: String,
    /// When the tokens were issued (used to scale the refresh margin for short lifetimes).
    pub obtained_at: DateTime<Utc>,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_expires_at: DateTime<Utc>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("obtained_at", &self.obtained_at)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// Everything the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenState {
    pub tokens: Option<TokenSet>,
    /// Set after a 429 `H084` from the token endpoint: no token call may be made before this.
    pub halted_until: Option<DateTime<Utc>>,
}

/// Proof of holding the cross-process refresh lease; hand it back to
/// [`TokenStore::unlock_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLease {
    pub id: u64,
}

/// A failure of the store itself (Redis down, …). Must not carry token values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(pub String);

/// Shared storage for the İYS token and the H084 halt marker.
///
/// Implementations must be cheap to `load` (it runs before every API call) and must make
/// `save_tokens` durable before returning: the refresh token it replaces is already dead.
pub trait TokenStore: Send + Sync {
    /// The current tokens and halt marker.
    fn load(&self) -> BoxFuture<'_, Result<TokenState, TokenStoreError>>;

    /// Replaces the stored tokens (keeps the halt marker).
    fn save_tokens(&self, tokens: TokenSet) -> BoxFuture<'_, Result<(), TokenStoreError>>;

    /// Records that no token call may be made before `until` (keeps the tokens).
    fn halt_until(&self, until: DateTime<Utc>) -> BoxFuture<'_, Result<(), TokenStoreError>>;

    /// Tries to take the cross-process refresh lease for `ttl`. `None` means another holder
    /// is refreshing right now.
    fn try_lock_refresh(
        &self,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<RefreshLease>, TokenStoreError>>;

    /// Releases a lease taken with `try_lock_refresh` (a no-op if it already expired or was
    /// taken over).
    fn unlock_refresh(&self, lease: RefreshLease) -> BoxFuture<'_, Result<(), TokenStoreError>>;
}

/// In-process [`TokenStore`]: one token per process. Fine for one replica and for tests;
/// several replicas need a shared (Redis) store.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    state: Mutex<TokenState>,
    lease: Mutex<Option<(u64, Instant)>>,
    next_lease: AtomicU64,
}

impl MemoryTokenStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that starts with `state` (tests, or a token handed over at start-up).
    pub fn with_state(state: TokenState) -> Self {
        Self {
            state: Mutex::new(state),
            ..Self::default()
        }
    }

    /// The current state, synchronously.
    pub fn snapshot(&self) -> TokenState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> BoxFuture<'_, Result<TokenState, TokenStoreError>> {
        let state = self.snapshot();
        Box::pin(std::future::ready(Ok(state)))
    }

    fn save_tokens(&self, tokens: TokenSet) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tokens = Some(tokens);
        Box::pin(std::future::ready(Ok(())))
    }

    fn halt_until(&self, until: DateTime<Utc>) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .halted_until = Some(until);
        Box::pin(std::future::ready(Ok(())))
    }

    fn try_lock_refresh(
        &self,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<RefreshLease>, TokenStoreError>> {
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let granted = match *lease {
            Some((_, expires)) if expires > now => None,
            _ => {
                let id = self.next_lease.fetch_add(1, Ordering::Relaxed) + 1;
                *lease = Some((id, now + ttl));
                Some(RefreshLease { id })
            }
        };
        Box::pin(std::future::ready(Ok(granted)))
    }

    fn unlock_refresh(&self, released: RefreshLease) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*lease, Some((id, _)) if id == released.id) {
            *lease = None;
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// [`TokenStore`] in Redis: one token and one halt marker for every worker and replica of a
/// deployment (per İYS user). The tokens are secrets: the Redis must be reachable only by
/// iysgate, as for the consent data it holds.
pub struct RedisTokenStore {
    conn: redis::aio::ConnectionManager,
    /// `{prefix}:iys-token:{user digest}`; `…:halt` and `…:lease` beside it.
    key: String,
}

impl RedisTokenStore {
    pub async fn connect(url: &str, prefix: &str, username: &str) -> Result<Self, TokenStoreError> {
        Self::connect_with_ca(url, prefix, username, None).await
    }

    /// [`RedisTokenStore::connect`] trusting `ca_file` for a `rediss://` URL (see
    /// [`crate::redis_client::open`]).
    pub async fn connect_with_ca(
        url: &str,
        prefix: &str,
        username: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, TokenStoreError> {
        use sha2::Digest;
        let client =
            crate::redis_client::open(url, ca_file).map_err(|e| TokenStoreError(e.to_string()))?;
        let conn = client
            .get_connection_manager()
            .await
            .map_err(|e| TokenStoreError(e.to_string()))?;
        // The user name is not a secret, but keys are listed by operators: a digest is enough.
        let digest = sha2::Sha256::digest(username.as_bytes());
        let user = crate::auth::to_hex(&digest[..8]);
        Ok(Self {
            conn,
            key: format!("{prefix}:iys-token:{user}"),
        })
    }
}

fn store_err(e: &redis::RedisError) -> TokenStoreError {
    TokenStoreError(e.to_string())
}

impl TokenStore for RedisTokenStore {
    fn load(&self) -> BoxFuture<'_, Result<TokenState, TokenStoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (tokens, halt): (Option<String>, Option<i64>) = redis::pipe()
                .get(&self.key)
                .get(format!("{}:halt", self.key))
                .query_async(&mut conn)
                .await
                .map_err(|e| store_err(&e))?;
            let parse = |text: &str| -> Option<TokenSet> {
                let v: serde_json::Value = serde_json::from_str(text).ok()?;
                let at = |k: &str| v[k].as_i64().and_then(DateTime::from_timestamp_micros);
                Some(TokenSet {
                    access_token: v["a"].as_str()?.to_owned(),
                    refresh_token: v["r"].as_str()?.to_owned(),
                    obtained_at: at("o")?,
                    access_expires_at: at("ae")?,
                    refresh_expires_at: at("re")?,
                })
            };
            Ok(TokenState {
                tokens: tokens.as_deref().and_then(parse),
                halted_until: halt.and_then(DateTime::from_timestamp_micros),
            })
        })
    }

    fn save_tokens(&self, tokens: TokenSet) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        Box::pin(async move {
            let text = serde_json::json!({
                "a": tokens.access_token,
                "r": tokens.refresh_token,
                "o": tokens.obtained_at.timestamp_micros(),
                "ae": tokens.access_expires_at.timestamp_micros(),
                "re": tokens.refresh_expires_at.timestamp_micros(),
            })
            .to_string();
            // Kept until the refresh token dies, then gone by itself.
            let ttl = (tokens.refresh_expires_at - Utc::now())
                .num_milliseconds()
                .max(1000);
            let mut conn = self.conn.clone();
            redis::cmd("SET")
                .arg(&self.key)
                .arg(text)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| store_err(&e))
        })
    }

    fn halt_until(&self, until: DateTime<Utc>) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        Box::pin(async move {
            let ttl = (until - Utc::now()).num_milliseconds().max(1000);
            let mut conn = self.conn.clone();
            redis::cmd("SET")
                .arg(format!("{}:halt", self.key))
                .arg(until.timestamp_micros())
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| store_err(&e))
        })
    }

    fn try_lock_refresh(
        &self,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Option<RefreshLease>, TokenStoreError>> {
        Box::pin(async move {
            let id = getrandom::u64().map_err(|e| TokenStoreError(e.to_string()))?;
            let mut conn = self.conn.clone();
            let got: Option<String> = redis::cmd("SET")
                .arg(format!("{}:lease", self.key))
                .arg(id)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async(&mut conn)
                .await
                .map_err(|e| store_err(&e))?;
            Ok(got.map(|_| RefreshLease { id }))
        })
    }

    fn unlock_refresh(&self, lease: RefreshLease) -> BoxFuture<'_, Result<(), TokenStoreError>> {
        Box::pin(async move {
            let script = redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
                  return 0",
            );
            let mut conn = self.conn.clone();
            script
                .key(format!("{}:lease", self.key))
                .arg(lease.id)
                .invoke_async::<i32>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| store_err(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What every backend promises (lease, halt, tokens) is proved in `tests/token_store.rs`,
    // against memory and Redis alike.

    #[test]
    fn debug_redacts_tokens() {
        let now = Utc::now();
        let set = TokenSet {
            access_token: "secret-access".into(),
            refresh_token: "secret-refresh".into(),
            obtained_at: now,
            access_expires_at: now,
            refresh_expires_at: now,
        };
        let text = format!(
            "{set:?} {:?}",
            TokenState {
                tokens: Some(set.clone()),
                halted_until: None
            }
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
