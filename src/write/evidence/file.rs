//! The evidence store of the embedded default: an append-only log file, one JSON line per
//! change (see `entry`), replayed into memory at start (see `state`). A write is on disk
//! (`write` then `fdatasync`) before it returns, so nothing acknowledged is only in memory.
//!
//! One process owns the file (an exclusive lock, taken at open). A crash can leave at most
//! the last line torn, and that line was never acknowledged: [`FileStore::open`] cuts it off.
//! Any other unreadable line stops the open, naming its line number. When a write fails the
//! store refuses every later write until restarted, because after a failed `fsync` nothing
//! about the page cache can be trusted; the restart replays what is really on disk.
//!
//! Claims of uploads are written like any other change. The lock makes the store
//! single-process, so the claims found in flight at open belong to a process that is gone:
//! [`FileStore::open`] releases them at once instead of waiting out their leases (5 min for a
//! single add, about 35 min for a batch) with the consents denied meanwhile. PostgreSQL,
//! shared by many processes, cannot tell a dead claimant from a slow one and waits.

mod entry;
mod state;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use self::entry::Entry;
use self::state::State;
use super::model::{
    ApiClient, AttemptRecord, Brand, Claim, EventId, NewEvent, Provider, Recorded, StoredEvent,
    UploadAnswer, UploadCounts, UploadState,
};
use super::{EvidenceError, Store};
use crate::auth::RetailerGrant;
use crate::domain::{BrandPolicy, BusinessCalendar};
use crate::iys::client::PullSource;
use crate::sync::{BrandRef, Cursor};

/// The evidence store in a local file. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Mutex<Log>>,
    calendar: Arc<BusinessCalendar>,
    path: Arc<Path>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The open file and the state it holds.
struct Log {
    path: PathBuf,
    file: File,
    /// Bytes of whole lines in the file: where a failed write is cut back to.
    len: u64,
    /// Lines in the file, for error messages.
    lines: usize,
    /// A write failed: refuse the rest until restarted.
    broken: bool,
    state: State,
}

impl FileStore {
    /// Opens (or creates, mode 0600) the log at `path`, locks it and replays it.
    ///
    /// # Errors
    /// [`EvidenceError::Locked`] when another process has it open,
    /// [`EvidenceError::CorruptLog`] naming the first unreadable line, or an I/O error.
    pub async fn open(path: &Path, calendar: BusinessCalendar) -> Result<Self, EvidenceError> {
        let owned = path.to_path_buf();
        let log = tokio::task::spawn_blocking(move || Log::open(owned))
            .await
            .map_err(|e| EvidenceError::Task(e.to_string()))??;
        Ok(Self {
            inner: Arc::new(Mutex::new(log)),
            calendar: Arc::new(calendar),
            path: Arc::from(path),
        })
    }

    // Reads are answered from memory under the lock, with no I/O: plain functions.

    /// Locks the log for a read of memory; no I/O happens under this lock.
    fn read(&self) -> Result<MutexGuard<'_, Log>, EvidenceError> {
        lock(&self.inner)
    }

    /// Runs a write on a blocking thread: it plans, appends, syncs and applies under the lock.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Log, &BusinessCalendar) -> Result<T, EvidenceError> + Send + 'static,
    ) -> Result<T, EvidenceError> {
        let inner = Arc::clone(&self.inner);
        let calendar = Arc::clone(&self.calendar);
        tokio::task::spawn_blocking(move || op(&mut *lock(&inner)?, &calendar))
            .await
            .map_err(|e| EvidenceError::Task(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn record(
        &self,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Vec<Recorded>, EvidenceError> {
        let events = events.to_vec();
        self.write(move |log, calendar| {
            let (entry, recorded) = log.state.plan_record(&events, now, calendar)?;
            if let Some(entry) = entry {
                log.commit(entry)?;
            }
            Ok(recorded)
        })
        .await
    }

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, EvidenceError> {
        Ok(self.read()?.state.event(id))
    }

    async fn events_between(
        &self,
        brand: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, EvidenceError> {
        Ok(self.read()?.state.events_between(brand, from, to))
    }

    async fn claim_uploads(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, EvidenceError> {
        let lease = TimeDelta::from_std(lease).map_err(|_| EvidenceError::InvalidField {
            field: "lease",
            reason: "too long",
        })?;
        self.write(move |log, _| {
            let Some(entry) = log.state.plan_claim(limit, now + lease, now) else {
                return Ok(Vec::new());
            };
            let ids = match &entry {
                Entry::Claim { ids, .. } => ids.clone(),
                _ => Vec::new(),
            };
            log.commit(entry)?;
            Ok(log.state.claims(&ids))
        })
        .await
    }

    async fn finish_upload(
        &self,
        id: EventId,
        attempt: u32,
        answer: &UploadAnswer,
        now: DateTime<Utc>,
    ) -> Result<UploadState, EvidenceError> {
        let answer = answer.clone();
        self.write(move |log, _| {
            if let Some(entry) = log.state.plan_finish(id, attempt, &answer, now)? {
                log.commit(entry)?;
            }
            let stored = log.state.event(id).ok_or(EvidenceError::UnknownEvent(id))?;
            Ok(stored.upload.state)
        })
        .await
    }

    async fn upload_attempts(&self, id: EventId) -> Result<Vec<AttemptRecord>, EvidenceError> {
        Ok(self.read()?.state.upload_attempts(id))
    }

    async fn expire_overdue(&self, now: DateTime<Utc>) -> Result<u64, EvidenceError> {
        self.write(move |log, _| {
            let Some(entry) = log.state.plan_expire(now) else {
                return Ok(0);
            };
            let expired = match &entry {
                Entry::Expire { ids, .. } => ids.len() as u64,
                _ => 0,
            };
            log.commit(entry)?;
            Ok(expired)
        })
        .await
    }

    async fn upload_counts(&self, now: DateTime<Utc>) -> Result<UploadCounts, EvidenceError> {
        Ok(self.read()?.state.upload_counts(now, &self.calendar))
    }

    async fn cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, EvidenceError> {
        Ok(self.read()?.state.cursor(brand, source))
    }

    async fn set_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let entry = Entry::Cursor {
            iys_code: brand.iys_code,
            brand_code: brand.brand_code,
            source: source.as_str().to_owned(),
            after: cursor.after.clone(),
            caught_up_at: cursor.caught_up_at.map(super::model::micros),
            at: super::model::micros(now),
        };
        self.write(move |log, _| log.commit(entry)).await
    }

    async fn add_provider(
        &self,
        provider: &Provider,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let provider = provider.clone();
        self.write(move |log, _| {
            let entry = log.state.plan_provider(&provider, now)?;
            log.commit(entry)
        })
        .await
    }

    async fn providers(&self) -> Result<Vec<Provider>, EvidenceError> {
        Ok(self.read()?.state.providers())
    }

    async fn add_brand(&self, brand: &Brand, now: DateTime<Utc>) -> Result<(), EvidenceError> {
        let brand = brand.clone();
        self.write(move |log, _| {
            let entry = log.state.plan_brand(&brand, now)?;
            log.commit(entry)
        })
        .await
    }

    async fn brands(&self) -> Result<Vec<Brand>, EvidenceError> {
        Ok(self.read()?.state.brands())
    }

    async fn set_brand_policy(&self, brand: u32, policy: BrandPolicy) -> Result<(), EvidenceError> {
        self.write(move |log, _| {
            let entry = log.state.plan_policy(brand, policy)?;
            log.commit(entry)
        })
        .await
    }

    async fn add_client(
        &self,
        name: &str,
        key_sha256: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let name = name.to_owned();
        self.write(move |log, _| {
            let entry = log.state.plan_client(&name, key_sha256, now)?;
            log.commit(entry)
        })
        .await
    }

    async fn clients(&self) -> Result<Vec<ApiClient>, EvidenceError> {
        Ok(self.read()?.state.clients())
    }

    async fn grant(
        &self,
        client: &str,
        brand: u32,
        retailers: &RetailerGrant,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let client = client.to_owned();
        let retailers = retailers.clone();
        self.write(move |log, _| {
            let entry = log.state.plan_grant(&client, brand, &retailers, now)?;
            log.commit(entry)
        })
        .await
    }

    async fn revoke(&self, client: &str, brand: u32) -> Result<bool, EvidenceError> {
        let client = client.to_owned();
        self.write(move |log, _| {
            let Some(entry) = log.state.plan_revoke(&client, brand) else {
                return Ok(false);
            };
            log.commit(entry)?;
            Ok(true)
        })
        .await
    }

    async fn save_report(
        &self,
        brand: u32,
        date: NaiveDate,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), EvidenceError> {
        let body = body.clone();
        self.write(move |log, _| {
            let entry = log.state.plan_report(brand, date, &body, now)?;
            log.commit(entry)
        })
        .await
    }

    async fn report(
        &self,
        brand: u32,
        date: NaiveDate,
    ) -> Result<Option<serde_json::Value>, EvidenceError> {
        Ok(self.read()?.state.report(brand, date))
    }
}

fn lock(inner: &Mutex<Log>) -> Result<MutexGuard<'_, Log>, EvidenceError> {
    // A panic under the lock may have left memory behind the file: stop rather than guess.
    inner
        .lock()
        .map_err(|_| EvidenceError::Task("evidence store lock poisoned; restart".into()))
}

impl Log {
    fn open(path: PathBuf) -> Result<Self, EvidenceError> {
        let io = |source| EvidenceError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_options().open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(EvidenceError::Locked(path)),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        if bytes.is_empty() {
            // A new file: make its directory entry durable too.
            sync_dir(&path).map_err(io)?;
        }
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                bytes = bytes.len() - whole,
                "evidence log: dropping a torn last line (a write cut short, never acknowledged)"
            );
            file.set_len(whole as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut log = Self {
            len: whole as u64,
            lines: 0,
            broken: false,
            state: State::default(),
            file,
            path,
        };
        for line in bytes[..whole].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            log.lines += 1;
            let entry: Entry = serde_json::from_slice(line).map_err(|e| log.corrupt(&e))?;
            let number = log.lines;
            log.state
                .apply(entry)
                .map_err(|reason| log.corrupt_at(number, reason.to_string()))?;
        }
        let released = log.state.release_claims();
        if released > 0 {
            tracing::info!(
                path = %log.path.display(),
                released,
                "evidence log: released uploads claimed by a previous process (this one holds \
                 the lock, so that one is gone); they are claimable now"
            );
        }
        Ok(log)
    }

    /// Appends `entry`, syncs it, then applies it to memory.
    fn commit(&mut self, entry: Entry) -> Result<(), EvidenceError> {
        self.append(&entry)?;
        let number = self.lines;
        self.state
            .apply(entry)
            .map_err(|reason| self.corrupt_at(number, reason.to_string()))
    }

    fn append(&mut self, entry: &Entry) -> Result<(), EvidenceError> {
        if self.broken {
            return Err(EvidenceError::Broken(self.path.clone()));
        }
        let mut line = serde_json::to_vec(entry).map_err(|e| EvidenceError::Task(e.to_string()))?;
        line.push(b'\n');
        if let Err(source) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            // Cut a partial line off so a restart finds whole lines, and stop writing.
            self.broken = true;
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            return Err(EvidenceError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.lines += 1;
        Ok(())
    }

    /// A line that does not parse. The reason says what kind of error and where, never the
    /// text (it may hold a recipient).
    fn corrupt(&self, e: &serde_json::Error) -> EvidenceError {
        let reason = format!("{:?} error at column {}", e.classify(), e.column());
        self.corrupt_at(self.lines, reason)
    }

    fn corrupt_at(&self, line: usize, reason: String) -> EvidenceError {
        EvidenceError::CorruptLog {
            path: self.path.clone(),
            line,
            reason,
        }
    }
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Personal data: readable by the service's user only.
        options.mode(0o600);
    }
    options
}

/// Syncs the directory holding `path`, so a newly created file survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
