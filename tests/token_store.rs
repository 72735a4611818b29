//! One behaviour suite for the İYS token store (`iysgate::iys::token::TokenStore`), run
//! against every backend: memory (one process) and Redis (`REDIS_URL`, each test under a
//! key prefix of its own; the Redis tests fail, never skip, without it). The suite's tests
//! are listed once, in `token_suite!`; what only Redis does (prefixes kept apart) is tested
//! below it.
//!
//! A [`Deployment`] hands out stores by İYS user: two stores of the same user are two
//! replicas of one deployment (Redis: two connections; memory: the one store of the process)
//! and must share the token, the halt and the lease.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use iysgate::iys::token::{MemoryTokenStore, RedisTokenStore, TokenSet, TokenState, TokenStore};

/// Where a suite test gets its stores.
enum Deployment {
    Memory(Mutex<HashMap<String, Arc<MemoryTokenStore>>>),
    Redis { prefix: String },
}

impl Deployment {
    fn memory() -> Self {
        Self::Memory(Mutex::default())
    }

    fn redis(test: &str) -> Self {
        Self::Redis {
            prefix: common::prefix(test),
        }
    }

    /// A store of this deployment for the İYS user `user`.
    async fn store(&self, user: &str) -> Arc<dyn TokenStore> {
        match self {
            Self::Memory(stores) => stores
                .lock()
                .unwrap()
                .entry(user.to_owned())
                .or_default()
                .clone(),
            Self::Redis { prefix } => Arc::new(redis_store(prefix, user).await),
        }
    }

    /// Removes what the test left; runs only when it passed.
    async fn tidy(self) {
        if let Self::Redis { prefix } = self {
            common::wipe(&prefix).await;
        }
    }
}

async fn redis_store(prefix: &str, user: &str) -> RedisTokenStore {
    let url = common::redis_url();
    RedisTokenStore::connect(&url, prefix, user)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {url} (set REDIS_URL, or start one with \
                 `redis-server --daemonize yes --port 6379 --save ''`): {e}"
            )
        })
}

/// Now, to the microsecond (the precision a shared store keeps).
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

/// A token set issued at `obtained_at`, access for 2 h and refresh for 4 h after it.
fn tokens(tag: &str, obtained_at: DateTime<Utc>) -> TokenSet {
    TokenSet {
        access_token: format!("access-{tag}"),
        refresh_token: format!("refresh-{tag}"),
        obtained_at,
        access_expires_at: obtained_at + TimeDelta::hours(2),
        refresh_expires_at: obtained_at + TimeDelta::hours(4),
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// The suite: each function takes a fresh deployment and proves one promise of the trait.
mod suite {
    use super::*;

    /// A new store holds nothing; saved tokens are read back whole, by every replica, and a
    /// later save replaces them (İYS rotates the refresh token on every refresh).
    pub async fn tokens_are_saved_and_replaced(d: &Deployment) {
        let (a, b) = (d.store("user").await, d.store("user").await);
        assert_eq!(a.load().await.unwrap(), TokenState::default());
        let first = tokens("1", now());
        a.save_tokens(first.clone()).await.unwrap();
        let expected = TokenState {
            tokens: Some(first),
            halted_until: None,
        };
        assert_eq!(a.load().await.unwrap(), expected);
        assert_eq!(
            b.load().await.unwrap(),
            expected,
            "replicas share one token"
        );
        let second = tokens("2", now() + TimeDelta::minutes(110));
        b.save_tokens(second.clone()).await.unwrap();
        assert_eq!(a.load().await.unwrap().tokens, Some(second));
    }

    /// The H084 halt is shared, kept apart from the tokens (saving one keeps the other), and
    /// a later halt replaces an earlier one.
    pub async fn halt_is_shared_and_keeps_the_tokens(d: &Deployment) {
        let (a, b) = (d.store("user").await, d.store("user").await);
        let set = tokens("1", now());
        a.save_tokens(set.clone()).await.unwrap();
        let until = now() + TimeDelta::hours(1);
        a.halt_until(until).await.unwrap();
        let halted = TokenState {
            tokens: Some(set),
            halted_until: Some(until),
        };
        assert_eq!(b.load().await.unwrap(), halted, "the halt keeps the tokens");
        let next = tokens("2", now());
        b.save_tokens(next.clone()).await.unwrap();
        assert_eq!(
            a.load().await.unwrap(),
            TokenState {
                tokens: Some(next),
                halted_until: Some(until),
            },
            "saving tokens keeps the halt"
        );
        let later = until + TimeDelta::hours(1);
        b.halt_until(later).await.unwrap();
        assert_eq!(a.load().await.unwrap().halted_until, Some(later));
    }

    /// A halt whose end has passed no longer holds anyone back: it reads as none, or as a
    /// time not after now (the client waits only for a halt still ahead).
    pub async fn halt_ends(d: &Deployment) {
        let store = d.store("user").await;
        let until = now() + TimeDelta::milliseconds(50);
        store.halt_until(until).await.unwrap();
        assert_eq!(store.load().await.unwrap().halted_until, Some(until));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = store.load().await.unwrap().halted_until;
        assert!(after.is_none_or(|t| t <= Utc::now()), "{after:?}");
    }

    /// One holder of the refresh lease at a time, across replicas, until it is released.
    pub async fn lease_has_one_holder_until_released(d: &Deployment) {
        let (a, b) = (d.store("user").await, d.store("user").await);
        let held = a.try_lock_refresh(LEASE).await.unwrap().expect("free");
        assert_eq!(a.try_lock_refresh(LEASE).await.unwrap(), None, "held");
        assert_eq!(b.try_lock_refresh(LEASE).await.unwrap(), None, "held");
        a.unlock_refresh(held).await.unwrap();
        let taken = b.try_lock_refresh(LEASE).await.unwrap();
        assert!(taken.is_some(), "free again once released");
        assert_eq!(a.try_lock_refresh(LEASE).await.unwrap(), None);
        b.unlock_refresh(taken.unwrap()).await.unwrap();
    }

    /// A lease lapses after its ttl (a holder that died mid-refresh blocks no one for
    /// longer); releasing the lapsed lease does not release the next holder's.
    pub async fn lapsed_lease_is_taken_over(d: &Deployment) {
        let (a, b) = (d.store("user").await, d.store("user").await);
        let stale = a
            .try_lock_refresh(Duration::from_millis(50))
            .await
            .unwrap()
            .expect("free");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fresh = b
            .try_lock_refresh(LEASE)
            .await
            .unwrap()
            .expect("the lapsed lease is free");
        assert_ne!(stale, fresh);
        a.unlock_refresh(stale).await.unwrap();
        assert_eq!(
            a.try_lock_refresh(LEASE).await.unwrap(),
            None,
            "releasing a lapsed lease leaves the new holder's"
        );
        b.unlock_refresh(fresh.clone()).await.unwrap();
        b.unlock_refresh(fresh).await.unwrap();
        assert!(a.try_lock_refresh(LEASE).await.unwrap().is_some());
    }

    /// Each İYS user has a token, a halt and a lease of its own.
    pub async fn users_are_kept_apart(d: &Deployment) {
        let (a, b) = (d.store("user-a").await, d.store("user-b").await);
        a.save_tokens(tokens("a", now())).await.unwrap();
        a.halt_until(now() + TimeDelta::hours(1)).await.unwrap();
        let lease = a.try_lock_refresh(LEASE).await.unwrap().expect("free");
        assert_eq!(b.load().await.unwrap(), TokenState::default());
        let other = b.try_lock_refresh(LEASE).await.unwrap();
        assert!(other.is_some(), "another user's lease is free");
        b.save_tokens(tokens("b", now())).await.unwrap();
        let mine = a.load().await.unwrap().tokens.expect("a's tokens");
        assert_eq!(mine.access_token, "access-a", "b's save left a's tokens");
        a.unlock_refresh(lease).await.unwrap();
    }
}

/// One `#[tokio::test]` per suite test on a fresh deployment made by `$make` (given the
/// test's name). The one list of the suite's tests.
macro_rules! token_suite {
    ($make:path) => {
        token_suite!(@tests $make;
            tokens_are_saved_and_replaced,
            halt_is_shared_and_keeps_the_tokens,
            halt_ends,
            lease_has_one_holder_until_released,
            lapsed_lease_is_taken_over,
            users_are_kept_apart,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let deployment = $make(stringify!($name));
            $crate::suite::$name(&deployment).await;
            deployment.tidy().await;
        }
    )*};
}

mod memory {
    fn deployment(_test: &str) -> super::Deployment {
        super::Deployment::memory()
    }
    token_suite!(deployment);
}

mod redis {
    token_suite!(super::Deployment::redis);
}

/// Deployments sharing one Redis (two prefixes) share nothing, even for the same İYS user.
#[tokio::test]
async fn redis_prefixes_are_kept_apart() {
    let (p, q) = (
        common::prefix("token_prefix_a"),
        common::prefix("token_prefix_b"),
    );
    let (a, b) = (redis_store(&p, "user").await, redis_store(&q, "user").await);
    a.save_tokens(tokens("a", now())).await.unwrap();
    a.halt_until(now() + TimeDelta::hours(1)).await.unwrap();
    let lease = a.try_lock_refresh(LEASE).await.unwrap().expect("free");
    assert_eq!(b.load().await.unwrap(), TokenState::default());
    let other = b.try_lock_refresh(LEASE).await.unwrap();
    assert!(other.is_some(), "another deployment's lease is free");
    a.unlock_refresh(lease).await.unwrap();
    common::wipe(&p).await;
    common::wipe(&q).await;
}
