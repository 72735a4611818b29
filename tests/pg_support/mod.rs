//! PostgreSQL for the tests that need it (`DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test): without it they fail with how to get one, never
//! skip. Each test migrates a fresh schema of its own, so tests run in parallel without
//! meeting.
#![allow(dead_code)] // each test binary uses its own subset

use std::str::FromStr;

use iysgate::domain::BusinessCalendar;
use iysgate::write::evidence::{EvidenceStore, PgStore};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database connection for setting up and inspecting; panics with how to get one.
pub async fn admin() -> PgPool {
    let url = database_url();
    PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "these tests need PostgreSQL at {url} (set DATABASE_URL, or run `.ci/run`, which \
             installs and starts it; by hand: `pg_ctlcluster 15 main start` and \
             `createdb -U postgres test`): {e}"
        )
    })
}

/// A fresh schema for one test, and the options that put a store in it.
pub struct Schema {
    pub name: String,
    pub options: PgConnectOptions,
    pub admin: PgPool,
}

impl Schema {
    pub async fn new(test: &str) -> Self {
        let admin = admin().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // PostgreSQL cuts identifiers at 63 bytes: the unique part goes first, so a long test
        // name cannot make two runs' schemas collide.
        let name = format!(
            "t_{}_{nanos}_{}",
            std::process::id(),
            &test[..test.len().min(30)]
        );
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&database_url())
            .unwrap()
            .options([("search_path", name.as_str())]);
        Self {
            name,
            options,
            admin,
        }
    }

    /// A store in this schema (migrated on connect).
    pub async fn pg_store(&self) -> PgStore {
        PgStore::connect_with(self.options.clone(), BusinessCalendar::embedded())
            .await
            .expect("connect and migrate")
    }

    pub async fn store(&self) -> EvidenceStore {
        EvidenceStore::from(self.pg_store().await)
    }

    pub async fn drop(self) {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}
