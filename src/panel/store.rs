//! Where the panel keeps its people: accounts (role, argon2id hash, granted brands), sessions
//! and the append-only audit log. Two backends beside the evidence store they serve with:
//! PostgreSQL (tables of `migrations/0003_panel.sql`, shared by every replica) and, on the
//! embedded default, a JSON-lines file next to the evidence file (sessions stay in memory
//! there: one process serves that file).
//!
//! Every change is durable before the call returns (a committed statement, or a line written
//! and `sync_data`'d). The audit log has no update or delete: the file is only appended to,
//! and the PostgreSQL table refuses UPDATE and DELETE by trigger.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgPool;

/// What a person may do in the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every brand, accounts and the audit log.
    Admin,
    /// The brands granted: read, record, import, reconcile, reports; may reveal recipients.
    Compliance,
    /// The brands granted, read only; recipients stay masked.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Compliance => "compliance",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Compliance, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    /// Whether this role may change anything (record, import, reconcile).
    pub fn writes(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    /// Whether this role may see a recipient in clear (each reveal is audited).
    pub fn reveals(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

/// A panel account. `brands` is ignored for admins (they see every brand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// PHC string of the argon2id hash; never logged, never shown.
    pub password_hash: String,
    pub brands: BTreeSet<u32>,
    pub created_at: DateTime<Utc>,
}

impl User {
    pub fn may_see(&self, brand: u32) -> bool {
        self.role == Role::Admin || self.brands.contains(&brand)
    }
}

/// A logged-in session, found by the SHA-256 of its cookie (the cookie itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_sha256: [u8; 32],
    pub user: String,
    /// The form token every POST of this session must carry.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    /// What was done, as a stable word (`brand.add`, `consent.record`, `recipient.reveal`, …).
    pub action: String,
    pub brand: Option<u32>,
    /// What it was done to, without personal data in clear (recipients are masked).
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PanelStoreError {
    #[error("panel store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("panel store {path}, line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("panel store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("no panel account named {0:?}")]
    UnknownUser(String),
    #[error("a panel account named {0:?} exists already")]
    UserExists(String),
}

/// The panel's accounts, sessions and audit log.
#[derive(Debug)]
pub enum PanelStore {
    File(FileBackend),
    Pg(PgPool),
}

/// One line of the panel file: each change as it happened.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    User {
        name: String,
        role: Role,
        password_hash: String,
        at: DateTime<Utc>,
    },
    Password {
        name: String,
        password_hash: String,
    },
    Grant {
        name: String,
        brand: u32,
    },
    Revoke {
        name: String,
        brand: u32,
    },
    Audit(AuditEntry),
}

#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
    inner: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    file: std::fs::File,
    users: BTreeMap<String, User>,
    audit: Vec<AuditEntry>,
    sessions: HashMap<[u8; 32], Session>,
}

impl FileState {
    fn apply(&mut self, line: Line) -> Result<(), String> {
        fn account<'a>(
            users: &'a mut BTreeMap<String, User>,
            name: &str,
        ) -> Result<&'a mut User, String> {
            users
                .get_mut(name)
                .ok_or_else(|| format!("no account {name:?} before this line"))
        }
        match line {
            Line::User {
                name,
                role,
                password_hash,
                at,
            } => {
                let user = User {
                    name: name.clone(),
                    role,
                    password_hash,
                    brands: BTreeSet::new(),
                    created_at: at,
                };
                self.users.insert(name, user);
            }
            Line::Password {
                name,
                password_hash,
            } => account(&mut self.users, &name)?.password_hash = password_hash,
            Line::Grant { name, brand } => {
                account(&mut self.users, &name)?.brands.insert(brand);
            }
            Line::Revoke { name, brand } => {
                account(&mut self.users, &name)?.brands.remove(&brand);
            }
            Line::Audit(entry) => self.audit.push(entry),
        }
        Ok(())
    }
}

impl PanelStore {
    /// The panel file at `path`, replayed; created when missing.
    pub fn open_file(path: &Path) -> Result<PanelStore, PanelStoreError> {
        let shown = path.display().to_string();
        let io = |source| PanelStoreError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut state = FileState {
            file: file.try_clone().map_err(io)?,
            users: BTreeMap::new(),
            audit: Vec::new(),
            sessions: HashMap::new(),
        };
        for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
            let text = text.map_err(io)?;
            if text.trim().is_empty() {
                continue;
            }
            let corrupt = |reason: String| PanelStoreError::Corrupt {
                path: shown.clone(),
                line: index + 1,
                reason,
            };
            let line: Line = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            state.apply(line).map_err(corrupt)?;
        }
        Ok(PanelStore::File(FileBackend {
            path: path.to_owned(),
            inner: Mutex::new(state),
        }))
    }

    /// The panel store beside `evidence`: its database's tables, or on the embedded default
    /// `panel.log` in the evidence file's directory.
    pub fn beside(
        evidence: &crate::write::evidence::EvidenceStore,
        evidence_file: &Path,
    ) -> Result<PanelStore, PanelStoreError> {
        match evidence {
            crate::write::evidence::EvidenceStore::Pg(pg) => Ok(PanelStore::pg(pg.pool().clone())),
            crate::write::evidence::EvidenceStore::File(_) => {
                let dir = evidence_file.parent().unwrap_or(Path::new("."));
                PanelStore::open_file(&dir.join("panel.log"))
            }
        }
    }

    /// The panel's tables in the database of the evidence store (migrated by it).
    pub fn pg(pool: PgPool) -> PanelStore {
        PanelStore::Pg(pool)
    }

    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => f.write(|state| {
                if state.users.contains_key(name) {
                    return Err(PanelStoreError::UserExists(name.to_owned()));
                }
                Ok(Line::User {
                    name: name.to_owned(),
                    role,
                    password_hash: password_hash.to_owned(),
                    at: now,
                })
            }),
            PanelStore::Pg(pool) => {
                let done = sqlx::query(
                    "INSERT INTO panel_users (name, role, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(role.as_str())
                .bind(password_hash)
                .bind(now)
                .execute(pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(PanelStoreError::UserExists(name.to_owned()));
                }
                Ok(())
            }
        }
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, PanelStoreError> {
        Ok(self.users().await?.into_iter().find(|u| u.name == name))
    }

    /// Every account by name.
    pub async fn users(&self) -> Result<Vec<User>, PanelStoreError> {
        match self {
            PanelStore::File(f) => Ok(f.lock().users.values().cloned().collect()),
            PanelStore::Pg(pool) => {
                let rows = sqlx::query(
                    "SELECT u.name, u.role, u.password_hash, u.created_at, \
                     COALESCE(array_agg(g.brand_code) FILTER (WHERE g.brand_code IS NOT NULL), '{}') AS brands \
                     FROM panel_users u LEFT JOIN panel_grants g ON g.name = u.name \
                     GROUP BY u.name ORDER BY u.name",
                )
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let role: String = row.try_get("role")?;
                        let brands: Vec<i64> = row.try_get("brands")?;
                        Ok(User {
                            name: row.try_get("name")?,
                            role: Role::parse(&role).unwrap_or(Role::Viewer),
                            password_hash: row.try_get("password_hash")?,
                            brands: brands.into_iter().map(|b| b as u32).collect(),
                            created_at: row.try_get("created_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(PanelStoreError::from)
            }
        }
    }

    pub async fn set_password(&self, name: &str, hash: &str) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => f.write(|state| {
                known(state, name)?;
                Ok(Line::Password {
                    name: name.to_owned(),
                    password_hash: hash.to_owned(),
                })
            }),
            PanelStore::Pg(pool) => {
                let done = sqlx::query("UPDATE panel_users SET password_hash = $2 WHERE name = $1")
                    .bind(name)
                    .bind(hash)
                    .execute(pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(PanelStoreError::UnknownUser(name.to_owned()));
                }
                Ok(())
            }
        }
    }

    /// Grants (`true`) or revokes a brand.
    pub async fn set_grant(
        &self,
        name: &str,
        brand: u32,
        granted: bool,
    ) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => f.write(|state| {
                known(state, name)?;
                let name = name.to_owned();
                Ok(if granted {
                    Line::Grant { name, brand }
                } else {
                    Line::Revoke { name, brand }
                })
            }),
            PanelStore::Pg(pool) => {
                if self.user(name).await?.is_none() {
                    return Err(PanelStoreError::UnknownUser(name.to_owned()));
                }
                let sql = if granted {
                    "INSERT INTO panel_grants (name, brand_code) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM panel_grants WHERE name = $1 AND brand_code = $2"
                };
                sqlx::query(sql)
                    .bind(name)
                    .bind(i64::from(brand))
                    .execute(pool)
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => f.write(|_| Ok(Line::Audit(entry.clone()))),
            PanelStore::Pg(pool) => {
                sqlx::query(
                    "INSERT INTO panel_audit (at, actor, action, brand_code, detail) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(entry.at)
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(entry.brand.map(i64::from))
                .bind(&entry.detail)
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, PanelStoreError> {
        match self {
            PanelStore::File(f) => Ok(f.lock().audit.iter().rev().take(limit).cloned().collect()),
            PanelStore::Pg(pool) => {
                let rows = sqlx::query(
                    "SELECT at, actor, action, brand_code, detail FROM panel_audit \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let brand: Option<i64> = row.try_get("brand_code")?;
                        Ok(AuditEntry {
                            at: row.try_get("at")?,
                            actor: row.try_get("actor")?,
                            action: row.try_get("action")?,
                            brand: brand.map(|b| b as u32),
                            detail: row.try_get("detail")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(PanelStoreError::from)
            }
        }
    }

    pub async fn put_session(&self, session: &Session) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => {
                f.lock()
                    .sessions
                    .insert(session.token_sha256, session.clone());
                Ok(())
            }
            PanelStore::Pg(pool) => {
                sqlx::query(
                    "INSERT INTO panel_sessions (token_sha256, name, csrf, expires_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (token_sha256) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                )
                .bind(&session.token_sha256[..])
                .bind(&session.user)
                .bind(&session.csrf)
                .bind(session.expires_at)
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// The session of a cookie digest, if it has not expired at `now`.
    pub async fn session(
        &self,
        token_sha256: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, PanelStoreError> {
        let found = match self {
            PanelStore::File(f) => f.lock().sessions.get(token_sha256).cloned(),
            PanelStore::Pg(pool) => sqlx::query(
                "SELECT name, csrf, expires_at FROM panel_sessions WHERE token_sha256 = $1",
            )
            .bind(&token_sha256[..])
            .fetch_optional(pool)
            .await?
            .map(|row| -> Result<Session, sqlx::Error> {
                Ok(Session {
                    token_sha256: *token_sha256,
                    user: row.try_get("name")?,
                    csrf: row.try_get("csrf")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .transpose()?,
        };
        Ok(found.filter(|s| s.expires_at > now))
    }

    /// Ends one session (`Some`) or every session of `user` (a password reset).
    pub async fn drop_sessions(
        &self,
        token_sha256: Option<&[u8; 32]>,
        user: &str,
    ) -> Result<(), PanelStoreError> {
        match self {
            PanelStore::File(f) => {
                let mut state = f.lock();
                match token_sha256 {
                    Some(token) => {
                        state.sessions.remove(token);
                    }
                    None => state.sessions.retain(|_, s| s.user != user),
                }
                Ok(())
            }
            PanelStore::Pg(pool) => {
                match token_sha256 {
                    Some(token) => {
                        sqlx::query("DELETE FROM panel_sessions WHERE token_sha256 = $1")
                            .bind(&token[..])
                            .execute(pool)
                            .await?
                    }
                    None => {
                        sqlx::query("DELETE FROM panel_sessions WHERE name = $1")
                            .bind(user)
                            .execute(pool)
                            .await?
                    }
                };
                Ok(())
            }
        }
    }
}

fn known(state: &FileState, name: &str) -> Result<(), PanelStoreError> {
    if state.users.contains_key(name) {
        Ok(())
    } else {
        Err(PanelStoreError::UnknownUser(name.to_owned()))
    }
}

impl FileBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides a line under the lock, writes and syncs it, then applies it: nothing is
    /// applied that is not on disk.
    fn write(
        &self,
        decide: impl FnOnce(&FileState) -> Result<Line, PanelStoreError>,
    ) -> Result<(), PanelStoreError> {
        let mut state = self.lock();
        let line = decide(&state)?;
        let mut text = serde_json::to_string(&line).expect("panel lines serialise");
        text.push('\n');
        let io = |source| PanelStoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        state.file.write_all(text.as_bytes()).map_err(io)?;
        state.file.sync_data().map_err(io)?;
        state
            .apply(line)
            .map_err(|reason| PanelStoreError::Corrupt {
                path: self.path.display().to_string(),
                line: 0,
                reason,
            })
    }
}
