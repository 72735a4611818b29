//! Who is asking: passwords (argon2id), sessions in a cookie, the form token of every POST and
//! the login rate limit. Pages never read a cookie themselves: they take a [`Viewer`], which
//! a request only gets with a live session, and a POST only with its session's form token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::store::{PanelStore, PanelStoreError, Session, User};

/// The session cookie's name.
pub const COOKIE: &str = "iysgate_session";
/// How long a session lasts from login.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(8);
/// Failed logins allowed per account, and per address, in [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_ACCOUNT: u32 = 5;
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_mins(15);
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

fn argon2() -> argon2::Argon2<'static> {
    // argon2id, version 0x13, the crate's defaults (19 MiB, 2 passes: OWASP's minimum).
    argon2::Argon2::default()
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password: at least {MIN_PASSWORD} characters")]
    TooShort,
    #[error("no OS randomness for the salt: {0}")]
    Random(getrandom::Error),
    #[error("hashing the password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// The argon2id PHC string of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

/// Whether `password` matches the stored PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A new random password for `user reset` and the demo: 16 characters from an alphabet
/// without look-alikes.
pub fn generate_password() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY345679";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// 32 random bytes in hex: a session cookie or a form token.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(crate::auth::to_hex(&bytes))
}

/// A new session for `user`, stored; the cookie value to hand out.
pub async fn open_session(
    store: &PanelStore,
    user: &str,
    now: DateTime<Utc>,
) -> Result<String, OpenError> {
    let token = random_token().map_err(OpenError::Random)?;
    let session = Session {
        token_sha256: crate::auth::hash_key(&token),
        user: user.to_owned(),
        csrf: random_token().map_err(OpenError::Random)?,
        expires_at: now + SESSION_TTL,
    };
    store.put_session(&session).await?;
    Ok(token)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no OS randomness for the session: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] PanelStoreError),
}

/// The session cookie's value in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value for a session (`None`: the one that ends it). `Secure` when the
/// panel is served over TLS.
pub fn set_cookie(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(token) => format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.num_seconds()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether a submitted form token is the session's (constant time).
pub fn csrf_matches(session: &Session, submitted: Option<&str>) -> bool {
    submitted.is_some_and(|s| {
        s.len() == session.csrf.len() && bool::from(s.as_bytes().ct_eq(session.csrf.as_bytes()))
    })
}

/// The person behind a request: their account, their session and its form token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub session: Session,
}

impl Viewer {
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

/// Counts failed logins per account and per address over a sliding window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    fn key_account(name: &str) -> String {
        format!("u:{name}")
    }

    fn key_address(ip: IpAddr) -> String {
        format!("a:{ip}")
    }

    /// Whether another attempt for `name` from `ip` may be tried at `now`.
    pub fn allows(&self, name: &str, ip: IpAddr, now: Instant) -> bool {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut recent = |key: String| {
            let list = failures.entry(key).or_default();
            list.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
            list.len() as u32
        };
        recent(Self::key_account(name)) < MAX_FAILURES_PER_ACCOUNT
            && recent(Self::key_address(ip)) < MAX_FAILURES_PER_ADDRESS
    }

    pub fn failed(&self, name: &str, ip: IpAddr, now: Instant) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in [Self::key_account(name), Self::key_address(ip)] {
            failures.entry(key).or_default().push(now);
        }
        // Bounded: forget keys whose window has passed.
        if failures.len() > 10_000 {
            failures.retain(|_, list| list.iter().any(|t| now.duration_since(*t) < FAILURE_WINDOW));
        }
    }

    /// A successful login clears its account's failures (not the address's).
    pub fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&Self::key_account(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterx", &hash));
        assert!(!verify_password(
            "correct horse battery",
            "not a phc string"
        ));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
    }

    #[test]
    fn the_limiter_stops_an_account_then_forgets_after_the_window() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_ACCOUNT {
            assert!(limiter.allows("ayse", ip, t0));
            limiter.failed("ayse", ip, t0);
        }
        assert!(!limiter.allows("ayse", ip, t0));
        assert!(
            !limiter.allows("ayse", other, t0),
            "per account, from any address"
        );
        assert!(
            limiter.allows("mehmet", ip, t0),
            "another account from the same address"
        );
        assert!(limiter.allows("ayse", ip, t0 + FAILURE_WINDOW));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(Some("abc"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(Some("abc"), false).contains("Secure"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; iysgate_session=tok; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some("tok"));
    }
}
