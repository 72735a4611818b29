//! Brands, providers, API clients and their grants, sync cursors and daily reports in
//! PostgreSQL: the administration side of [`PgStore`], where constraint violations become
//! the store's own errors (by SQLSTATE class, and by constraint name where two can break).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::PgStore;
use super::rows::{code_from_db, codes_from_db, codes_to_db};
use crate::auth::RetailerGrant;
use crate::domain::BrandPolicy;
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};
use crate::write::evidence::model::{ApiClient, Brand, Provider, check_text, micros};
use crate::write::evidence::{EvidenceError, corrupt};

impl PgStore {
    pub(in crate::write::evidence) async fn cursor(
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

    pub(in crate::write::evidence) async fn set_cursor(
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

    pub(in crate::write::evidence) async fn add_provider(
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

    pub(in crate::write::evidence) async fn providers(
        &self,
    ) -> Result<Vec<Provider>, EvidenceError> {
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

    pub(in crate::write::evidence) async fn add_brand(
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

    pub(in crate::write::evidence) async fn brands(&self) -> Result<Vec<Brand>, EvidenceError> {
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

    pub(in crate::write::evidence) async fn set_brand_policy(
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

    pub(in crate::write::evidence) async fn add_client(
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

    pub(in crate::write::evidence) async fn clients(
        &self,
    ) -> Result<Vec<ApiClient>, EvidenceError> {
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

    pub(in crate::write::evidence) async fn grant(
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

    pub(in crate::write::evidence) async fn revoke(
        &self,
        client: &str,
        brand: u32,
    ) -> Result<bool, EvidenceError> {
        let done = sqlx::query(
            "DELETE FROM client_brand_grants WHERE client_name = $1 AND brand_code = $2",
        )
        .bind(client)
        .bind(i64::from(brand))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::write::evidence) async fn save_report(
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

    pub(in crate::write::evidence) async fn report(
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
