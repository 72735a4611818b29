//! The evidence store in PostgreSQL (sqlx, runtime-checked queries: building needs no
//! database). Migrations from `migrations/` are embedded and run by [`PgStore::connect`].
//! Several replicas may share one database: a batch is one transaction, uploads are claimed
//! with `FOR UPDATE SKIP LOCKED`, and an answer is applied under the outbox row's lock by the
//! same rules as the file store (`model::after_answer`).
//!
//! Over 600 lines on purpose: one store implementation; its SQL is kept beside the methods that run it.

mod admin;
mod rows;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};

use self::rows::{
    AttemptColumns, StateColumns, attempt_from_row, attempt_to_db, codes_to_db, stored_event,
    upload_from_row,
};
use super::model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, NewEvent, Provider, Recorded, StoredEvent,
    UploadAnswer, UploadCounts, UploadOutcome, UploadState, after_answer, at_risk_before, micros,
    prepare,
};
use super::{EvidenceError, Leadership, Store};
use crate::auth::RetailerGrant;
use crate::domain::BrandPolicy;
use crate::domain::BusinessCalendar;
use crate::domain::time::from_turkey;
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};

/// The schema migrations, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connections per process: the uploader, the sync worker and a few RecordConsent calls.
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a free connection before the call fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The event and outbox columns [`rows::stored_event`] reads: `e` the event, `o` its outbox
/// row.
macro_rules! event_columns {
    () => {
        "e.id, e.brand_code, e.recipient, e.recipient_type, e.channel, e.status, e.source, \
         e.consent_date, e.retailer_access, e.capture_method, e.capture_location, \
         e.document_ref, e.capturing_system, e.client_name, e.client_key_sha256, \
         e.idempotency_key, e.recorded_at, o.state, o.deadline, o.attempts, o.next_attempt_at, \
         o.lease_until, o.transaction_id, o.iys_creation_date, o.reject_code, o.reject_message"
    };
}

/// Inserts a batch of events (arrays, one element per event, `$16` the recording time) and
/// their pending uploads in one statement; returns (id, brand, key) of each row inserted.
/// A key already taken, or repeated in the batch, inserts nothing the second time.
const INSERT_EVENTS: &str = "\
    WITH input AS ( \
        SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
            $6::text[], $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], \
            $12::text[], $13::text[], $14::bytea[], $15::text[], $17::timestamptz[]) \
            WITH ORDINALITY AS t(brand_code, recipient, recipient_type, channel, status, \
            source, consent_date, retailer_access, capture_method, capture_location, \
            document_ref, capturing_system, client_name, client_key_sha256, idempotency_key, \
            deadline, ord)), \
    e AS ( \
        INSERT INTO consent_events (brand_code, recipient, recipient_type, channel, status, \
            source, consent_date, retailer_access, capture_method, capture_location, \
            document_ref, capturing_system, client_name, client_key_sha256, idempotency_key, \
            recorded_at) \
        SELECT brand_code, recipient, recipient_type, channel, status, source, consent_date, \
            retailer_access::bigint[], capture_method, capture_location, document_ref, \
            capturing_system, client_name, client_key_sha256, idempotency_key, $16 \
        FROM input ORDER BY ord \
        ON CONFLICT (brand_code, idempotency_key) DO NOTHING \
        RETURNING id, brand_code, idempotency_key), \
    o AS ( \
        INSERT INTO upload_outbox (event_id, brand_code, state, deadline, attempts, \
            next_attempt_at, updated_at) \
        SELECT DISTINCT ON (e.id) e.id, e.brand_code, 'pending', i.deadline, 0, $16, $16 \
        FROM e JOIN input i ON i.brand_code = e.brand_code \
            AND i.idempotency_key = e.idempotency_key \
        ORDER BY e.id, i.ord) \
    SELECT id, brand_code, idempotency_key FROM e";

/// `{1,2,3}`: a bigint array as text, for passing arrays of arrays through UNNEST.
fn array_literal(codes: &[i64]) -> String {
    let items: Vec<String> = codes.iter().map(i64::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// Picks due uploads (skipping rows another claimer holds), puts them in flight and returns
/// them with their events.
const CLAIM: &str = concat!(
    "WITH picked AS ( \
        SELECT event_id FROM upload_outbox \
        WHERE state IN ('pending', 'in_flight') AND deadline >= $1 \
          AND ((state = 'pending' AND next_attempt_at <= $1) \
               OR (state = 'in_flight' AND lease_until <= $1)) \
        ORDER BY deadline, event_id \
        LIMIT $2 \
        FOR UPDATE SKIP LOCKED), \
     o AS ( \
        UPDATE upload_outbox u \
        SET state = 'in_flight', lease_until = $3, attempts = u.attempts + 1, updated_at = $1 \
        FROM picked WHERE u.event_id = picked.event_id \
        RETURNING u.*) \
     SELECT ",
    event_columns!(),
    " FROM o JOIN consent_events e ON e.id = o.event_id ORDER BY o.deadline, o.event_id"
);

/// The evidence store on PostgreSQL. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    calendar: Arc<BusinessCalendar>,
}

impl PgStore {
    /// Takes the session advisory lock named `name` (within this schema: two deployments in
    /// one database do not block each other) on a connection of its own, if no other session
    /// holds it; the lock lasts as long as the returned connection.
    ///
    /// # Errors
    /// No connection.
    pub async fn try_advisory_lock(
        &self,
        name: &str,
    ) -> Result<Option<PgConnection>, EvidenceError> {
        let mut conn = self.pool.acquire().await?.detach();
        let held: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
        Ok(held.then_some(conn))
    }

    /// Connects to `url` (`postgres://user@host:port/db`) and applies pending migrations.
    ///
    /// # Errors
    /// A malformed URL, an unreachable database, or a failed migration.
    pub async fn connect(url: &str, calendar: BusinessCalendar) -> Result<Self, EvidenceError> {
        Self::connect_with(url.parse()?, calendar).await
    }

    /// [`PgStore::connect`] with prepared options (e.g. a `search_path` of its own).
    pub async fn connect_with(
        options: PgConnectOptions,
        calendar: BusinessCalendar,
    ) -> Result<Self, EvidenceError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.application_name("iysgate"))
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            calendar: Arc::new(calendar),
        })
    }

    /// The pool, for administration and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn record(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, EvidenceError> {
        let events = prepare(events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        require_brands(&mut tx, &events).await?;
        // One statement for the whole batch (an import sends 1 000 at a time): the keys it
        // inserted come back; every other key was taken before (or earlier in this batch).
        let inserted: Vec<(i64, i64, String)> = sqlx::query_as(INSERT_EVENTS)
            .bind(
                events
                    .iter()
                    .map(|e| i64::from(e.brand))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.recipient.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.recipient_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.channel.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| from_turkey(e.consent_date))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| array_literal(&codes_to_db(&e.retailer_access)))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.evidence.method.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.evidence.location.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.evidence.document_ref.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.evidence.capturing_system.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.recorder.client.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.recorder.key_sha256.map(Vec::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.idempotency_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(now)
            .bind(
                events
                    .iter()
                    .map(|e| from_turkey(self.calendar.registration_deadline(e.consent_date)))
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
        let mut new: std::collections::HashMap<(i64, &str), i64> = inserted
            .iter()
            .map(|(id, brand, key)| ((*brand, key.as_str()), *id))
            .collect();
        let taken: Vec<&NewEvent> = events
            .iter()
            .filter(|e| !new.contains_key(&(i64::from(e.brand), e.idempotency_key.as_str())))
            .collect();
        let mut earlier = std::collections::HashMap::new();
        if !taken.is_empty() {
            let rows = sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM consent_events e JOIN upload_outbox o ON o.event_id = e.id \
                 JOIN UNNEST($1::bigint[], $2::text[]) AS k(brand_code, idempotency_key) \
                 ON e.brand_code = k.brand_code AND e.idempotency_key = k.idempotency_key"
            ))
            .bind(taken.iter().map(|e| i64::from(e.brand)).collect::<Vec<_>>())
            .bind(
                taken
                    .iter()
                    .map(|e| e.idempotency_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let stored = stored_event(row)?;
                earlier.insert(
                    (stored.event.brand, stored.event.idempotency_key.clone()),
                    (stored.id, stored.event),
                );
            }
        }
        let mut recorded = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            // The first event of a key inserted by this batch is new; a later one with the
            // same key is a duplicate of it.
            if let Some(id) = new.remove(&(i64::from(event.brand), event.idempotency_key.as_str()))
            {
                recorded.push(Recorded::New(EventId(id)));
                earlier.insert(
                    (event.brand, event.idempotency_key.clone()),
                    (EventId(id), event.clone()),
                );
                continue;
            }
            let (id, original) = earlier
                .get(&(event.brand, event.idempotency_key.clone()))
                .ok_or_else(|| {
                    super::corrupt(
                        format!("batch item {index}"),
                        "idempotency_key",
                        "neither inserted nor found",
                    )
                })?;
            if !original.same_event(event) {
                return Err(EvidenceError::IdempotencyConflict {
                    index,
                    brand: event.brand,
                });
            }
            recorded.push(Recorded::Duplicate(*id));
        }
        tx.commit().await?;
        Ok(recorded)
    }

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, EvidenceError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM consent_events e JOIN upload_outbox o ON o.event_id = e.id WHERE e.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stored_event).transpose()
    }

    async fn events_between(
        &self,
        brand: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, EvidenceError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM consent_events e JOIN upload_outbox o ON o.event_id = e.id \
             WHERE e.brand_code = $1 AND e.recorded_at >= $2 AND e.recorded_at < $3 \
             ORDER BY e.id"
        ))
        .bind(i64::from(brand))
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    async fn claim_uploads(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, EvidenceError> {
        let now = micros(now);
        let lease_until = micros(now + lease_delta(lease)?);
        let rows = sqlx::query(CLAIM)
            .bind(now)
            .bind(i64::from(limit))
            .bind(lease_until)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let event = stored_event(row)?;
                let attempt = event.upload.attempts;
                Ok(Claim { event, attempt })
            })
            .collect()
    }

    async fn finish_upload(
        &self,
        id: EventId,
        attempt: u32,
        answer: &UploadAnswer,
        now: DateTime<Utc>,
    ) -> Result<UploadState, EvidenceError> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT e.id, o.state, o.deadline, o.attempts, o.next_attempt_at, o.lease_until, \
                    o.transaction_id, o.iys_creation_date, o.reject_code, o.reject_message \
             FROM upload_outbox o JOIN consent_events e ON e.id = o.event_id \
             WHERE o.event_id = $1 FOR UPDATE OF o",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(EvidenceError::UnknownEvent(id))?;
        let upload = upload_from_row(&row, id)?;
        if attempt == 0 || attempt > upload.attempts {
            return Err(EvidenceError::UnknownAttempt { id, attempt });
        }
        if !insert_attempt(&mut tx, id, attempt, answer, now).await? {
            // This attempt was answered before: the first answer stands.
            tx.commit().await?;
            return Ok(upload.state);
        }
        let Some((state, next_attempt_at)) = after_answer(&upload, attempt, &answer.outcome) else {
            tx.commit().await?;
            return Ok(upload.state);
        };
        let cols = StateColumns::of(&state);
        sqlx::query(
            "UPDATE upload_outbox SET state = $2, lease_until = $3, transaction_id = $4, \
                 iys_creation_date = $5, reject_code = $6, reject_message = $7, \
                 next_attempt_at = $8, updated_at = $9 \
             WHERE event_id = $1",
        )
        .bind(id.0)
        .bind(state.as_str())
        .bind(cols.lease_until)
        .bind(cols.transaction_id)
        .bind(cols.creation_date)
        .bind(cols.reject_code)
        .bind(cols.reject_message)
        .bind(next_attempt_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn upload_attempts(&self, id: EventId) -> Result<Vec<AttemptRecord>, EvidenceError> {
        let rows = sqlx::query(
            "SELECT attempt, finished_at, outcome, http_status, iys_code, iys_message, \
                    transaction_id, iys_creation_date, retry_at \
             FROM upload_attempts WHERE event_id = $1 ORDER BY attempt",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| attempt_from_row(row, id)).collect()
    }

    async fn expire_overdue(&self, now: DateTime<Utc>) -> Result<u64, EvidenceError> {
        let now = micros(now);
        let done = sqlx::query(
            "UPDATE upload_outbox SET state = 'expired', lease_until = NULL, updated_at = $1 \
             WHERE state IN ('pending', 'in_flight') AND deadline < $1 \
               AND (state = 'pending' OR lease_until <= $1)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn upload_counts(&self, now: DateTime<Utc>) -> Result<UploadCounts, EvidenceError> {
        let now = micros(now);
        let risk_before = at_risk_before(&self.calendar, now);
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE deadline >= $1) AS pending, \
                    count(*) FILTER (WHERE deadline >= $1 AND deadline < $2) AS at_risk, \
                    count(*) FILTER (WHERE deadline < $1) \
                      + (SELECT count(*) FROM upload_outbox WHERE state = 'expired') AS expired \
             FROM upload_outbox WHERE state IN ('pending', 'in_flight')",
        )
        .bind(now)
        .bind(risk_before)
        .fetch_one(&self.pool)
        .await?;
        let count = |name: &str| -> Result<u64, EvidenceError> {
            Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
        };
        Ok(UploadCounts {
            pending: count("pending")?,
            at_risk: count("at_risk")?,
            expired: count("expired")?,
        })
    }

    // The administration side lives in `admin.rs`, as inherent methods of the same names.
    async fn cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, EvidenceError> {
        PgStore::cursor(self, brand, source).await
    }

    async fn set_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        PgStore::set_cursor(self, brand, source, cursor, now).await
    }

    async fn add_provider(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        PgStore::add_provider(self, provider, now).await
    }

    async fn providers(&self) -> Result<Vec<Provider>, EvidenceError> {
        PgStore::providers(self).await
    }

    async fn add_brand(&self, brand: &Brand, now: DateTime<Utc>) -> Result<(), EvidenceError> {
        PgStore::add_brand(self, brand, now).await
    }

    async fn brands(&self) -> Result<Vec<Brand>, EvidenceError> {
        PgStore::brands(self).await
    }

    async fn set_brand_policy(&self, brand: u32, policy: BrandPolicy) -> Result<(), EvidenceError> {
        PgStore::set_brand_policy(self, brand, policy).await
    }

    async fn add_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        PgStore::add_client(self, name, key_sha256, now).await
    }

    async fn clients(&self) -> Result<Vec<ApiClient>, EvidenceError> {
        PgStore::clients(self).await
    }

    async fn grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        PgStore::grant(self, client, brand, retailers, now).await
    }

    async fn revoke(&self, client: &str, brand: u32) -> Result<bool, EvidenceError> {
        PgStore::revoke(self, client, brand).await
    }

    async fn save_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        PgStore::save_report(self, brand, date, body, now).await
    }

    async fn report(
        &self,
        brand: u32,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, EvidenceError> {
        PgStore::report(self, brand, date).await
    }

    async fn try_lead(&self, role: &str) -> Result<Option<Leadership>, EvidenceError> {
        Ok(self
            .try_advisory_lock(&format!("iysgate:{role}"))
            .await?
            .map(Leadership::Pg))
    }
}

/// Refuses the batch when any of its brands is not registered.
async fn require_brands(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), EvidenceError> {
    let mut wanted: Vec<i64> = events.iter().map(|e| i64::from(e.brand)).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let known: Vec<i64> =
        sqlx::query_scalar("SELECT brand_code FROM brands WHERE brand_code = ANY($1)")
            .bind(&wanted)
            .fetch_all(&mut *conn)
            .await?;
    match wanted.iter().find(|b| !known.contains(b)) {
        Some(&missing) => Err(EvidenceError::UnknownBrand(
            u32::try_from(missing).unwrap_or(u32::MAX),
        )),
        None => Ok(()),
    }
}

/// Records one attempt's answer; false when that attempt was already answered.
async fn insert_attempt(
    conn: &mut PgConnection,
    id: EventId,
    attempt: u32,
    answer: &UploadAnswer,
    now: DateTime<Utc>,
) -> Result<bool, EvidenceError> {
    let mut cols = AttemptColumns::default();
    match &answer.outcome {
        UploadOutcome::Registered {
            transaction_id,
            creation_date,
        } => {
            cols.transaction_id = Some(transaction_id);
            cols.creation_date = Some(from_turkey(*creation_date));
        }
        UploadOutcome::Rejected { code, message } => {
            cols.code = Some(code);
            cols.message = Some(message);
        }
        UploadOutcome::Superseded {
            transaction_id,
            creation_date,
            code,
            message,
        } => {
            cols.transaction_id = Some(transaction_id);
            cols.creation_date = Some(from_turkey(*creation_date));
            cols.code = Some(code);
            cols.message = Some(message);
        }
        UploadOutcome::Retry {
            retry_at,
            code,
            message,
        } => {
            cols.code = code.as_deref();
            cols.message = Some(message);
            cols.retry_at = Some(micros(*retry_at));
        }
    }
    let done = sqlx::query(
        "INSERT INTO upload_attempts (event_id, attempt, finished_at, outcome, http_status, \
             iys_code, iys_message, transaction_id, iys_creation_date, retry_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (event_id, attempt) DO NOTHING",
    )
    .bind(id.0)
    .bind(attempt_to_db(attempt))
    .bind(now)
    .bind(answer.outcome.as_str())
    .bind(answer.http_status.map(i32::from))
    .bind(cols.code)
    .bind(cols.message)
    .bind(cols.transaction_id)
    .bind(cols.creation_date)
    .bind(cols.retry_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn lease_delta(lease: Duration) -> Result<TimeDelta, EvidenceError> {
    TimeDelta::from_std(lease).map_err(|_| EvidenceError::InvalidField {
        field: "lease",
        reason: "too long",
    })
}
