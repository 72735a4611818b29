//! The evidence store in PostgreSQL (sqlx, runtime-checked queries: building needs no
//! database). Migrations from `migrations/` are embedded and run by [`PgStore::connect`].
//! Several replicas may share one database: a batch is one transaction, uploads are claimed
//! with `FOR UPDATE SKIP LOCKED`, and an answer is applied under the outbox row's lock by the
//! same rules as the file store (`model::after_answer`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};

use super::model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, Evidence, NewEvent, Provider, Recorded,
    Recorder, StoredEvent, Upload, UploadAnswer, UploadCounts, UploadOutcome, UploadState,
    after_answer, at_risk_before, check_text, micros, prepare,
};
use super::{EvidenceError, corrupt};
use crate::auth::RetailerGrant;
use crate::domain::recipient::normalise_recipient;
use crate::domain::time::{from_turkey, to_turkey};
use crate::domain::{BrandPolicy, BusinessCalendar, Channel};
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};

/// The schema migrations, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connections per process: the uploader, the sync worker and a few RecordConsent calls.
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a free connection before the call fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The event and outbox columns [`stored_event`] reads, `e` the event and `o` its outbox row.
macro_rules! event_columns {
    () => {
        "e.id, e.brand_code, e.recipient, e.recipient_type, e.channel, e.status, e.source, \
         e.consent_date, e.retailer_access, e.capture_method, e.capture_location, \
         e.document_ref, e.capturing_system, e.client_name, e.client_key_sha256, \
         e.idempotency_key, e.recorded_at, o.state, o.deadline, o.attempts, o.next_attempt_at, \
         o.lease_until, o.transaction_id, o.iys_creation_date, o.reject_code, o.reject_message"
    };
}

/// Inserts an event and its pending upload in one statement; no row when the brand already
/// has the idempotency key.
const INSERT_EVENT: &str = "\
    WITH e AS ( \
        INSERT INTO consent_events (brand_code, recipient, recipient_type, channel, status, \
            source, consent_date, retailer_access, capture_method, capture_location, \
            document_ref, capturing_system, client_name, client_key_sha256, idempotency_key, \
            recorded_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
        ON CONFLICT (brand_code, idempotency_key) DO NOTHING \
        RETURNING id, brand_code) \
    INSERT INTO upload_outbox (event_id, brand_code, state, deadline, attempts, \
        next_attempt_at, updated_at) \
    SELECT id, brand_code, 'pending', $17, 0, $16, $16 FROM e \
    RETURNING event_id";

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

    pub(super) async fn record(
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
        let mut recorded = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let deadline = from_turkey(self.calendar.registration_deadline(event.consent_date));
            let new_id: Option<i64> = sqlx::query_scalar(INSERT_EVENT)
                .bind(i64::from(event.brand))
                .bind(event.recipient.to_string())
                .bind(event.recipient_type.as_str())
                .bind(event.channel.as_str())
                .bind(event.status.as_str())
                .bind(event.source.as_str())
                .bind(from_turkey(event.consent_date))
                .bind(codes_to_db(&event.retailer_access))
                .bind(&event.evidence.method)
                .bind(&event.evidence.location)
                .bind(event.evidence.document_ref.as_deref())
                .bind(&event.evidence.capturing_system)
                .bind(&event.recorder.client)
                .bind(event.recorder.key_sha256.map(Vec::from))
                .bind(&event.idempotency_key)
                .bind(now)
                .bind(deadline)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(id) = new_id {
                recorded.push(Recorded::New(EventId(id)));
                continue;
            }
            // The key is taken (by an earlier call, or earlier in this batch).
            let row = sqlx::query(concat!(
                "SELECT ",
                event_columns!(),
                " FROM consent_events e JOIN upload_outbox o ON o.event_id = e.id \
                 WHERE e.brand_code = $1 AND e.idempotency_key = $2"
            ))
            .bind(i64::from(event.brand))
            .bind(&event.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            let original = stored_event(&row)?;
            if !original.event.same_event(event) {
                return Err(EvidenceError::IdempotencyConflict {
                    index,
                    brand: event.brand,
                });
            }
            recorded.push(Recorded::Duplicate(original.id));
        }
        tx.commit().await?;
        Ok(recorded)
    }

    pub(super) async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, EvidenceError> {
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

    pub(super) async fn events_between(
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

    pub(super) async fn claim_uploads(
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

    pub(super) async fn finish_upload(
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

    pub(super) async fn upload_attempts(
        &self,
        id: EventId,
    ) -> Result<Vec<AttemptRecord>, EvidenceError> {
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

    pub(super) async fn expire_overdue(&self, now: DateTime<Utc>) -> Result<u64, EvidenceError> {
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

    pub(super) async fn upload_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<UploadCounts, EvidenceError> {
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

    pub(super) async fn cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, EvidenceError> {
        let row = sqlx::query(
            "SELECT after, caught_up_at FROM sync_cursors \
             WHERE iys_code = $1 AND brand_code = $2 AND source = $3",
        )
        .bind(i64::from(brand.iys_code))
        .bind(i64::from(brand.brand_code))
        .bind(source.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Cursor {
                after: row.try_get("after")?,
                caught_up_at: row.try_get("caught_up_at")?,
            })
        })
        .transpose()
    }

    pub(super) async fn set_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        sqlx::query(
            "INSERT INTO sync_cursors (iys_code, brand_code, source, after, caught_up_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (iys_code, brand_code, source) DO UPDATE \
             SET after = excluded.after, caught_up_at = excluded.caught_up_at, \
                 updated_at = excluded.updated_at",
        )
        .bind(i64::from(brand.iys_code))
        .bind(i64::from(brand.brand_code))
        .bind(source.as_str())
        .bind(cursor.after.as_deref())
        .bind(cursor.caught_up_at.map(micros))
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn add_provider(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        check_text("name", &provider.name)?;
        check_text("credentials_ref", &provider.credentials_ref)?;
        sqlx::query(
            "INSERT INTO providers (iys_code, name, credentials_ref, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(i64::from(provider.iys_code))
        .bind(&provider.name)
        .bind(&provider.credentials_ref)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| match constraint_kind(&e) {
            Some(Violation::Unique) => EvidenceError::AlreadyExists {
                what: "service provider (iysCode)",
                key: provider.iys_code.to_string(),
            },
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(super) async fn providers(&self) -> Result<Vec<Provider>, EvidenceError> {
        let rows =
            sqlx::query("SELECT iys_code, name, credentials_ref FROM providers ORDER BY iys_code")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Provider {
                    iys_code: code_from_db(row.try_get("iys_code")?, "provider", "iys_code")?,
                    name: row.try_get("name")?,
                    credentials_ref: row.try_get("credentials_ref")?,
                })
            })
            .collect()
    }

    pub(super) async fn add_brand(
        &self,
        brand: &Brand,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        check_text("name", &brand.name)?;
        sqlx::query(
            "INSERT INTO brands (brand_code, iys_code, name, allow_unregistered_tacir, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(i64::from(brand.brand_code))
        .bind(i64::from(brand.iys_code))
        .bind(&brand.name)
        .bind(brand.policy.allow_unregistered_tacir)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| match constraint_kind(&e) {
            Some(Violation::Unique) => EvidenceError::AlreadyExists {
                what: "brand",
                key: brand.brand_code.to_string(),
            },
            Some(Violation::ForeignKey(_)) => EvidenceError::UnknownProvider(brand.iys_code),
            None => e.into(),
        })?;
        Ok(())
    }

    pub(super) async fn brands(&self) -> Result<Vec<Brand>, EvidenceError> {
        let rows = sqlx::query(
            "SELECT brand_code, iys_code, name, allow_unregistered_tacir FROM brands \
             ORDER BY brand_code",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Brand {
                    brand_code: code_from_db(row.try_get("brand_code")?, "brand", "brand_code")?,
                    iys_code: code_from_db(row.try_get("iys_code")?, "brand", "iys_code")?,
                    name: row.try_get("name")?,
                    policy: BrandPolicy {
                        allow_unregistered_tacir: row.try_get("allow_unregistered_tacir")?,
                    },
                })
            })
            .collect()
    }

    pub(super) async fn set_brand_policy(
        &self,
        brand: u32,
        policy: BrandPolicy,
    ) -> Result<(), EvidenceError> {
        let done =
            sqlx::query("UPDATE brands SET allow_unregistered_tacir = $2 WHERE brand_code = $1")
                .bind(i64::from(brand))
                .bind(policy.allow_unregistered_tacir)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(EvidenceError::UnknownBrand(brand));
        }
        Ok(())
    }

    pub(super) async fn add_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        check_text("name", name)?;
        sqlx::query("INSERT INTO api_clients (name, key_sha256, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(key_sha256.to_vec())
            .bind(micros(now))
            .execute(&self.pool)
            .await
            .map_err(|e| {
                let key_taken = e
                    .as_database_error()
                    .and_then(|d| d.constraint())
                    .is_some_and(|c| c.contains("key_sha256"));
                match constraint_kind(&e) {
                    Some(Violation::Unique) if key_taken => {
                        EvidenceError::KeyInUse(name.to_owned())
                    }
                    Some(Violation::Unique) => EvidenceError::AlreadyExists {
                        what: "API client",
                        key: format!("{name:?}"),
                    },
                    _ => e.into(),
                }
            })?;
        Ok(())
    }

    pub(super) async fn clients(&self) -> Result<Vec<ApiClient>, EvidenceError> {
        let rows = sqlx::query("SELECT name, key_sha256 FROM api_clients ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut clients = rows
            .iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let digest: Vec<u8> = row.try_get("key_sha256")?;
                let key_sha256 = <[u8; 32]>::try_from(digest.as_slice()).map_err(|_| {
                    corrupt(format!("client {name:?}"), "key_sha256", "not 32 bytes")
                })?;
                Ok(ApiClient {
                    name,
                    key_sha256,
                    grants: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, EvidenceError>>()?;
        let grants = sqlx::query(
            "SELECT client_name, brand_code, retailers_any, retailer_codes \
             FROM client_brand_grants ORDER BY client_name, brand_code",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &grants {
            let client: String = row.try_get("client_name")?;
            let brand = code_from_db(row.try_get("brand_code")?, "grant", "brand_code")?;
            let retailers = if row.try_get("retailers_any")? {
                RetailerGrant::Any
            } else {
                let codes: Vec<i64> = row.try_get("retailer_codes")?;
                let codes = codes_from_db(codes, "grant", "retailer_codes")?;
                if codes.is_empty() {
                    RetailerGrant::None
                } else {
                    RetailerGrant::Only(codes)
                }
            };
            if let Some(entry) = clients.iter_mut().find(|c| c.name == client) {
                entry.grants.push((brand, retailers));
            }
        }
        Ok(clients)
    }

    pub(super) async fn grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let (any, codes) = match retailers {
            RetailerGrant::None => (false, Vec::new()),
            RetailerGrant::Any => (true, Vec::new()),
            RetailerGrant::Only(codes) => (false, codes_to_db(codes)),
        };
        sqlx::query(
            "INSERT INTO client_brand_grants (client_name, brand_code, retailers_any, \
                 retailer_codes, granted_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (client_name, brand_code) DO UPDATE \
             SET retailers_any = excluded.retailers_any, \
                 retailer_codes = excluded.retailer_codes, granted_at = excluded.granted_at",
        )
        .bind(client)
        .bind(i64::from(brand))
        .bind(any)
        .bind(codes)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| match constraint_kind(&e) {
            Some(Violation::ForeignKey(c)) if c.contains("client_name") => {
                EvidenceError::UnknownClient(client.to_owned())
            }
            Some(Violation::ForeignKey(_)) => EvidenceError::UnknownBrand(brand),
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(super) async fn revoke(&self, client: &str, brand: u32) -> Result<bool, EvidenceError> {
        let done = sqlx::query(
            "DELETE FROM client_brand_grants WHERE client_name = $1 AND brand_code = $2",
        )
        .bind(client)
        .bind(i64::from(brand))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn save_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        sqlx::query(
            "INSERT INTO daily_reports (brand_code, report_date, body, created_at) \
             VALUES ($1, $2, $3::jsonb, $4) \
             ON CONFLICT (brand_code, report_date) DO UPDATE \
             SET body = excluded.body, created_at = excluded.created_at",
        )
        .bind(i64::from(brand))
        .bind(date)
        .bind(body.to_string())
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| match constraint_kind(&e) {
            Some(Violation::ForeignKey(_)) => EvidenceError::UnknownBrand(brand),
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(super) async fn report(
        &self,
        brand: u32,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, EvidenceError> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body::text FROM daily_reports WHERE brand_code = $1 AND report_date = $2",
        )
        .bind(i64::from(brand))
        .bind(date)
        .fetch_optional(&self.pool)
        .await?;
        body.map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| corrupt(format!("report {brand}/{date}"), "body", e.to_string()))
        })
        .transpose()
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

/// The attempt columns that spell out an outcome.
#[derive(Default)]
struct AttemptColumns<'a> {
    code: Option<&'a str>,
    message: Option<&'a str>,
    transaction_id: Option<&'a str>,
    creation_date: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
}

/// The outbox columns that spell out a state.
#[derive(Default)]
struct StateColumns<'a> {
    lease_until: Option<DateTime<Utc>>,
    transaction_id: Option<&'a str>,
    creation_date: Option<DateTime<Utc>>,
    reject_code: Option<&'a str>,
    reject_message: Option<&'a str>,
}

impl<'a> StateColumns<'a> {
    fn of(state: &'a UploadState) -> Self {
        match state {
            UploadState::Pending | UploadState::Expired => Self::default(),
            UploadState::InFlight { lease_until } => Self {
                lease_until: Some(*lease_until),
                ..Self::default()
            },
            UploadState::Registered {
                transaction_id,
                creation_date,
            } => Self {
                transaction_id: Some(transaction_id),
                creation_date: Some(from_turkey(*creation_date)),
                ..Self::default()
            },
            UploadState::Rejected { code, message } => Self {
                reject_code: Some(code),
                reject_message: Some(message),
                ..Self::default()
            },
        }
    }
}

/// Reads an event and its upload from a row of [`event_columns!`].
fn stored_event(row: &PgRow) -> Result<StoredEvent, EvidenceError> {
    let id = EventId(row.try_get("id")?);
    let what = || format!("event {id}");
    let word = |field: &'static str| -> Result<String, EvidenceError> { Ok(row.try_get(field)?) };
    let parse_err =
        |field, e: crate::domain::types::UnknownWord| corrupt(what(), field, e.to_string());
    let channel: Channel = word("channel")?
        .parse()
        .map_err(|e| parse_err("channel", e))?;
    let recipient = normalise_recipient(&word("recipient")?, channel.address_kind())
        .map_err(|e| corrupt(what(), "recipient", e.to_string()))?;
    let key_sha256 = row
        .try_get::<Option<Vec<u8>>, _>("client_key_sha256")?
        .map(|d| <[u8; 32]>::try_from(d.as_slice()))
        .transpose()
        .map_err(|_| corrupt(what(), "client_key_sha256", "not 32 bytes"))?;
    let event = NewEvent {
        brand: code_from_db(row.try_get("brand_code")?, &what(), "brand_code")?,
        recipient,
        recipient_type: word("recipient_type")?
            .parse()
            .map_err(|e| parse_err("recipient_type", e))?,
        channel,
        status: word("status")?
            .parse()
            .map_err(|e| parse_err("status", e))?,
        source: word("source")?
            .parse()
            .map_err(|e| parse_err("source", e))?,
        consent_date: to_turkey(row.try_get("consent_date")?),
        retailer_access: codes_from_db(
            row.try_get("retailer_access")?,
            &what(),
            "retailer_access",
        )?,
        evidence: Evidence {
            method: row.try_get("capture_method")?,
            location: row.try_get("capture_location")?,
            document_ref: row.try_get("document_ref")?,
            capturing_system: row.try_get("capturing_system")?,
        },
        recorder: Recorder {
            client: row.try_get("client_name")?,
            key_sha256,
        },
        idempotency_key: row.try_get("idempotency_key")?,
    };
    Ok(StoredEvent {
        id,
        event,
        recorded_at: row.try_get("recorded_at")?,
        upload: upload_from_row(row, id)?,
    })
}

/// Reads an upload from the outbox columns of a row.
fn upload_from_row(row: &PgRow, id: EventId) -> Result<Upload, EvidenceError> {
    let what = || format!("event {id}");
    let missing = |field| corrupt(what(), field, "missing for its state");
    let state_text: String = row.try_get("state")?;
    let state = match state_text.as_str() {
        "pending" => UploadState::Pending,
        "in_flight" => UploadState::InFlight {
            lease_until: row
                .try_get::<Option<DateTime<Utc>>, _>("lease_until")?
                .ok_or_else(|| missing("lease_until"))?,
        },
        "registered" => UploadState::Registered {
            transaction_id: row
                .try_get::<Option<String>, _>("transaction_id")?
                .ok_or_else(|| missing("transaction_id"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| missing("iys_creation_date"))?,
            ),
        },
        "rejected" => UploadState::Rejected {
            code: row
                .try_get::<Option<String>, _>("reject_code")?
                .ok_or_else(|| missing("reject_code"))?,
            message: row
                .try_get::<Option<String>, _>("reject_message")?
                .unwrap_or_default(),
        },
        "expired" => UploadState::Expired,
        _ => return Err(corrupt(what(), "state", "not an upload state")),
    };
    let attempts: i32 = row.try_get("attempts")?;
    Ok(Upload {
        state,
        deadline: to_turkey(row.try_get("deadline")?),
        attempts: u32::try_from(attempts).map_err(|_| corrupt(what(), "attempts", "negative"))?,
        next_attempt_at: row.try_get("next_attempt_at")?,
    })
}

fn attempt_from_row(row: &PgRow, id: EventId) -> Result<AttemptRecord, EvidenceError> {
    let what = || format!("event {id}");
    let text = |field: &str| -> Result<Option<String>, EvidenceError> { Ok(row.try_get(field)?) };
    let outcome: String = row.try_get("outcome")?;
    let outcome = match outcome.as_str() {
        "registered" => UploadOutcome::Registered {
            transaction_id: text("transaction_id")?
                .ok_or_else(|| corrupt(what(), "transaction_id", "missing"))?,
            creation_date: to_turkey(
                row.try_get::<Option<DateTime<Utc>>, _>("iys_creation_date")?
                    .ok_or_else(|| corrupt(what(), "iys_creation_date", "missing"))?,
            ),
        },
        "rejected" => UploadOutcome::Rejected {
            code: text("iys_code")?.unwrap_or_default(),
            message: text("iys_message")?.unwrap_or_default(),
        },
        "retry" => UploadOutcome::Retry {
            retry_at: row
                .try_get::<Option<DateTime<Utc>>, _>("retry_at")?
                .ok_or_else(|| corrupt(what(), "retry_at", "missing"))?,
            code: text("iys_code")?,
            message: text("iys_message")?.unwrap_or_default(),
        },
        _ => return Err(corrupt(what(), "outcome", "not an attempt outcome")),
    };
    let attempt: i32 = row.try_get("attempt")?;
    let http_status: Option<i32> = row.try_get("http_status")?;
    Ok(AttemptRecord {
        attempt: u32::try_from(attempt).map_err(|_| corrupt(what(), "attempt", "negative"))?,
        finished_at: row.try_get("finished_at")?,
        answer: UploadAnswer {
            http_status: http_status.and_then(|s| u16::try_from(s).ok()),
            outcome,
        },
    })
}

/// What kind of constraint a database error broke, with the constraint's name.
enum Violation {
    Unique,
    ForeignKey(String),
}

fn constraint_kind(error: &sqlx::Error) -> Option<Violation> {
    let db = error.as_database_error()?;
    if db.is_unique_violation() {
        Some(Violation::Unique)
    } else if db.is_foreign_key_violation() {
        Some(Violation::ForeignKey(
            db.constraint().unwrap_or_default().to_owned(),
        ))
    } else {
        None
    }
}

fn lease_delta(lease: Duration) -> Result<TimeDelta, EvidenceError> {
    TimeDelta::from_std(lease).map_err(|_| EvidenceError::InvalidField {
        field: "lease",
        reason: "too long",
    })
}

fn attempt_to_db(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

fn codes_to_db(codes: &[u32]) -> Vec<i64> {
    codes.iter().map(|&c| i64::from(c)).collect()
}

fn code_from_db(code: i64, what: &str, field: &'static str) -> Result<u32, EvidenceError> {
    u32::try_from(code).map_err(|_| corrupt(what.to_owned(), field, "not a u32 code"))
}

fn codes_from_db(
    codes: Vec<i64>,
    what: &str,
    field: &'static str,
) -> Result<Vec<u32>, EvidenceError> {
    codes
        .into_iter()
        .map(|c| code_from_db(c, what, field))
        .collect()
}
