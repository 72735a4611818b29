//! The evidence store on real PostgreSQL (`DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test). These tests fail, never skip, without it.
//! Each test migrates a fresh schema of its own, so tests run in parallel without meeting.
//! The behaviour suite (`tests/evidence_suite`) runs here as against the file store; the
//! tests below it prove what only the database does: durability across pools, the
//! append-only triggers, and the reporting role that cannot read recipients.

#[macro_use]
mod evidence_suite;
mod pg_support;

use evidence_suite::{BRAND, Backend, at, onay, setup};
use iysgate::domain::BusinessCalendar;
use iysgate::write::evidence::{EvidenceStore, PgStore, UploadAnswer, UploadOutcome};
use pg_support::{Schema, admin};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

/// Each suite test on a fresh schema of its own, dropped when the test passed.
struct PgBackend(Schema);

impl Backend for PgBackend {
    async fn fresh(test: &str) -> (Self, EvidenceStore) {
        let schema = Schema::new(test).await;
        let store = schema.store().await;
        (Self(schema), store)
    }

    async fn tidy(self) {
        self.0.drop().await;
    }
}

evidence_suite!(PgBackend);

/// What was acknowledged is read back by a new pool (a restarted process), with its upload
/// state and attempts; connecting again finds the schema migrated and changes nothing.
#[tokio::test]
async fn recorded_events_survive_a_new_pool() {
    let schema = Schema::new("reopen").await;
    let store = schema.store().await;
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let events = [
        onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00"),
        onay(BRAND, "b", "ayse@example.com.tr", "2026-05-20 09:00:00"),
    ];
    let ids: Vec<_> = store
        .record(&events, now)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id())
        .collect();
    let claim = store
        .claim_uploads(1, evidence_suite::LEASE, now)
        .await
        .unwrap();
    let answer = UploadAnswer {
        http_status: Some(200),
        outcome: UploadOutcome::Registered {
            transaction_id: "f".repeat(64),
            creation_date: evidence_suite::tr("2026-05-20 10:00:01"),
        },
    };
    store
        .finish_upload(claim[0].event.id, 1, &answer, now)
        .await
        .unwrap();
    let before = [
        store.event(ids[0]).await.unwrap(),
        store.event(ids[1]).await.unwrap(),
    ];
    let brands = store.brands().await.unwrap();
    let EvidenceStore::Pg(pg) = store else {
        unreachable!()
    };
    pg.pool().close().await;

    let reopened = schema.store().await;
    let after = [
        reopened.event(ids[0]).await.unwrap(),
        reopened.event(ids[1]).await.unwrap(),
    ];
    assert!(before.iter().all(Option::is_some));
    assert_eq!(before, after);
    assert_eq!(reopened.brands().await.unwrap(), brands);
    assert_eq!(reopened.upload_attempts(ids[0]).await.unwrap().len(), 1);
    let versions: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {}._sqlx_migrations ORDER BY version",
        schema.name
    )))
    .fetch_all(&schema.admin)
    .await
    .unwrap();
    assert_eq!(versions, vec![1, 2, 3]);
    schema.drop().await;
}

/// Evidence is never rewritten: UPDATE, DELETE and TRUNCATE of events and of attempts fail
/// in the database itself, whoever connects.
#[tokio::test]
async fn events_and_attempts_are_append_only() {
    let schema = Schema::new("append_only").await;
    let store = schema.store().await;
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let id = store
        .record(
            &[onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00")],
            now,
        )
        .await
        .unwrap()[0]
        .id();
    store
        .claim_uploads(1, evidence_suite::LEASE, now)
        .await
        .unwrap();
    let retry = UploadAnswer {
        http_status: None,
        outcome: UploadOutcome::Retry {
            retry_at: now,
            code: None,
            message: "connection refused".into(),
        },
    };
    store.finish_upload(id, 1, &retry, now).await.unwrap();
    let before = store.event(id).await.unwrap();

    let pool = PgPool::connect_with(schema.options.clone()).await.unwrap();
    for statement in [
        "UPDATE consent_events SET status = 'RET'",
        "DELETE FROM consent_events",
        "TRUNCATE consent_events CASCADE",
        "UPDATE upload_attempts SET iys_code = 'H000'",
        "DELETE FROM upload_attempts",
        "TRUNCATE upload_attempts",
    ] {
        let err = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("23001"), "{statement}: {db}");
        assert!(db.message().contains("append-only"), "{statement}: {db}");
    }
    assert_eq!(store.event(id).await.unwrap(), before);
    assert_eq!(store.upload_attempts(id).await.unwrap().len(), 1);
    schema.drop().await;
}

/// KVKK: the reporting role reads events without their recipients, and no API key digests.
#[tokio::test]
async fn reporting_role_cannot_read_recipients() {
    let schema = Schema::new("report_role").await;
    let store = schema.store().await;
    setup(&store).await;
    store
        .record(
            &[onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00")],
            at("2026-05-20 10:00:00"),
        )
        .await
        .unwrap();

    let pool = PgPool::connect_with(schema.options.clone()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE iysgate_report")
        .execute(&mut *tx)
        .await
        .expect("the migration creates iysgate_report when run by a superuser");
    let row = sqlx::query(
        "SELECT e.status, e.channel, e.capture_method, o.state FROM consent_events e \
         JOIN upload_outbox o ON o.event_id = e.id",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("reports read everything but recipients");
    assert_eq!(row.get::<String, _>("status"), "ONAY");
    assert_eq!(row.get::<String, _>("state"), "pending");
    for refused in [
        "SELECT recipient FROM consent_events",
        "SELECT * FROM consent_events",
        "SELECT key_sha256 FROM api_clients",
    ] {
        sqlx::query("SAVEPOINT s").execute(&mut *tx).await.unwrap();
        let err = sqlx::query(refused)
            .fetch_all(&mut *tx)
            .await
            .expect_err(refused);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.code().as_deref(), Some("42501"), "{refused}: {db}");
        sqlx::query("ROLLBACK TO SAVEPOINT s")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.rollback().await.unwrap();
    schema.drop().await;
}

/// A claimer skips the uploads another claimer holds mid-claim, without waiting for it, and
/// gets them once they are free: several replicas drain one outbox, never sharing an upload.
/// One process of a deployment leads a role (the uploader): a second process on the same
/// database does not, until the first's connection ends; another deployment (schema) is not
/// blocked.
#[tokio::test]
async fn one_process_leads_a_role_until_its_connection_ends() {
    let schema = Schema::new("leadership").await;
    let other = Schema::new("leadership_other").await;
    let (a, b) = (schema.store().await, schema.store().await);
    let mut first = a
        .try_lead("uploader")
        .await
        .unwrap()
        .expect("free: a leads");
    assert!(first.still_held().await);
    assert!(
        b.try_lead("uploader").await.unwrap().is_none(),
        "a holds it"
    );
    assert!(
        b.try_lead("reconcile").await.unwrap().is_some(),
        "another role is free"
    );
    let elsewhere = other.store().await;
    assert!(
        elsewhere.try_lead("uploader").await.unwrap().is_some(),
        "another deployment's schema is not blocked"
    );
    drop(first);
    let mut taken = None;
    for _ in 0..100 {
        taken = b.try_lead("uploader").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(taken.is_some(), "b leads once a's connection is gone");
    drop(taken);
    schema.drop().await;
    other.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_skips_uploads_another_claimer_holds() {
    let schema = Schema::new("skip_locked").await;
    let store = schema.store().await;
    setup(&store).await;
    let now = at("2026-05-20 10:00:00");
    let events: Vec<_> = (0..6)
        .map(|i| {
            onay(
                BRAND,
                &format!("k{i}"),
                &format!("+90532123456{i}"),
                "2026-05-20 09:00:00",
            )
        })
        .collect();
    let ids: Vec<_> = store
        .record(&events, now)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id())
        .collect();

    // Another replica's claim, caught between picking its rows and committing.
    let pool = PgPool::connect_with(schema.options.clone()).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT event_id FROM upload_outbox ORDER BY deadline, event_id LIMIT 3 FOR UPDATE",
    )
    .fetch_all(&mut *other)
    .await
    .unwrap();
    assert_eq!(held, ids[..3].iter().map(|id| id.0).collect::<Vec<_>>());

    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.claim_uploads(10, evidence_suite::LEASE, now),
    )
    .await
    .expect("a claimer never waits for rows another claimer holds")
    .unwrap();
    let claimed: Vec<_> = claimed.iter().map(|c| c.event.id).collect();
    assert_eq!(claimed, ids[3..]);

    other.rollback().await.unwrap();
    let rest = store
        .claim_uploads(10, evidence_suite::LEASE, now)
        .await
        .unwrap();
    let rest: Vec<_> = rest.iter().map(|c| (c.event.id, c.attempt)).collect();
    assert_eq!(rest, ids[..3].iter().map(|&id| (id, 1)).collect::<Vec<_>>());
    schema.drop().await;
}

/// The migrations run as an ordinary schema owner, without superuser or CREATEROLE: the
/// reporting role made earlier (here by the superuser's migrations, in production by a DBA)
/// is reused and granted.
#[tokio::test]
async fn migrations_run_as_an_ordinary_owner() {
    let admin = admin().await;
    // Roles are cluster-wide: made once, reused by every run.
    sqlx::query(
        "DO $$ BEGIN CREATE ROLE iysgate_test_owner LOGIN PASSWORD 'iysgate-test' \
         NOSUPERUSER NOCREATEROLE NOCREATEDB; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&admin)
    .await
    .unwrap();
    // The reporting role exists once any superuser migration ran; make sure it does.
    Schema::new("owner_prep").await.drop().await;
    let schema = Schema::new("owner").await;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER SCHEMA {} OWNER TO iysgate_test_owner",
        schema.name
    )))
    .execute(&admin)
    .await
    .unwrap();
    let options = schema
        .options
        .clone()
        .username("iysgate_test_owner")
        .password("iysgate-test");
    let store = PgStore::connect_with(options, BusinessCalendar::embedded())
        .await
        .expect("migrations need no superuser");
    let store = EvidenceStore::from(store);
    setup(&store).await;
    let recorded = store
        .record(
            &[onay(BRAND, "a", "+905321234567", "2026-05-20 09:00:00")],
            at("2026-05-20 10:00:00"),
        )
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    let granted: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT has_column_privilege('iysgate_report', '{}.consent_events', 'status', 'SELECT') \
         AND NOT has_column_privilege('iysgate_report', '{}.consent_events', 'recipient', \
         'SELECT')",
        schema.name, schema.name
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(
        granted,
        "the owner granted the reporting role all but recipients"
    );
    let EvidenceStore::Pg(pg) = store else {
        unreachable!()
    };
    pg.pool().close().await;
    schema.drop().await;
}
