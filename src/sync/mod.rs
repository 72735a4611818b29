//! The sync worker: follows İYS's changes for every brand and both sources (`IYS`, the
//! recipients' own changes, and `HS`, the provider's), applying each through the one write
//! path (`Consents::apply`), so a repeated or late change changes nothing. The cursor of a
//! (brand, source) is stored only after its page is applied; the data is confirmed fresh only
//! after a whole pass succeeded. A gap longer than İYS's 7-day window is reported, not skipped
//! silently.
//!
//! Over 600 lines on purpose: the worker and its unit tests (the parts are in types.rs, daily.rs, redis/).

pub mod daily;
pub mod push;
pub mod redis;
pub mod types;

pub use daily::parse_daily_file;
pub use types::{
    BadChange, BrandRef, Change, ChangeSource, Cursor, CursorStore, MemoryCursors, Page, PullError,
    PullSource, to_event,
};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::check::Freshness;
use crate::check::store::Consents;
use crate::domain::Clock;

/// How many days back İYS keeps daily change files (and pulls).
const FILE_DAYS: i64 = 7;

/// İYS keeps changes for 7 days; a (brand, source) not caught up for longer has missed some.
pub const PULL_WINDOW: Duration = Duration::from_hours(7 * 24);

#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// Page size asked of İYS (≤ 1000).
    pub page_limit: u32,
    /// Pause between passes.
    pub interval: Duration,
    /// How often the leader writes a checkpoint of its records to Redis for fast replica
    /// starts.
    pub checkpoint_every: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            page_limit: 1000,
            interval: Duration::from_secs(5),
            checkpoint_every: Duration::from_mins(5),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    pub pages: u64,
    pub changes: u64,
    pub applied: u64,
    pub ignored: u64,
    pub bad: u64,
    /// (brand, source) pairs whose last catch-up is older than İYS's window: changes in
    /// between are lost to the pull and need a full resync.
    pub gaps: Vec<(BrandRef, PullSource)>,
    /// Changes taken from the push inbox.
    pub pushed: u64,
    /// Changes re-applied from İYS's daily files to repair a gap.
    pub resynced: u64,
    /// (brand, source) pairs whose pull failed this pass.
    pub failed: Vec<(BrandRef, PullSource, PullError)>,
}

pub struct SyncWorker<S> {
    /// When set, every applied change is published to the replicas and each complete pass
    /// ends with a heartbeat.
    shared: Option<crate::sync::redis::SharedState>,
    source: S,
    consents: Arc<Consents>,
    cursors: Arc<dyn CursorStore>,
    brands: Vec<BrandRef>,
    freshness: Arc<Freshness>,
    clock: Arc<dyn Clock>,
    config: SyncConfig,
}

impl<S: ChangeSource> SyncWorker<S> {
    pub fn new(
        source: S,
        consents: Arc<Consents>,
        cursors: Arc<dyn CursorStore>,
        brands: Vec<BrandRef>,
        freshness: Arc<Freshness>,
        clock: Arc<dyn Clock>,
        config: SyncConfig,
    ) -> Self {
        Self {
            shared: None,
            source,
            consents,
            cursors,
            brands,
            freshness,
            clock,
            config,
        }
    }

    /// Publishes to the shared state (Redis) as well.
    #[must_use]
    pub fn with_shared(mut self, shared: crate::sync::redis::SharedState) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Pulls every brand and source until caught up. The index is confirmed fresh as of the
    /// pass's start only when every pull succeeded.
    pub async fn pass(&self, shutdown: &CancellationToken) -> PassStats {
        let started = self.clock.now_utc();
        let mut stats = PassStats::default();
        if let Err(e) = self.drain_pushed(&mut stats).await {
            tracing::warn!(error = %e, "applying pushed changes failed; the pull brings them too");
        }
        for &brand in &self.brands {
            for source in PullSource::BOTH {
                if shutdown.is_cancelled() {
                    return stats;
                }
                if let Err(e) = self
                    .catch_up(brand, source, started, shutdown, &mut stats)
                    .await
                {
                    tracing::warn!(brand = brand.brand_code, source = source.as_str(), error = %e, "pull failed; will retry next pass");
                    metrics::counter!("iysgate_sync_pull_failures_total").increment(1);
                    stats.failed.push((brand, source, e));
                }
            }
        }
        if stats.failed.is_empty() && !shutdown.is_cancelled() {
            self.freshness.mark_confirmed(started);
        }
        stats
    }

    async fn catch_up(
        &self,
        brand: BrandRef,
        source: PullSource,
        started: DateTime<Utc>,
        shutdown: &CancellationToken,
        stats: &mut PassStats,
    ) -> Result<(), PullError> {
        let mut cursor = self.cursors.get(brand, source).unwrap_or_default();
        if let Some(at) = cursor.caught_up_at {
            let behind = (started - at).to_std().unwrap_or_default();
            if behind > PULL_WINDOW {
                tracing::error!(
                    brand = brand.brand_code,
                    source = source.as_str(),
                    behind_hours = behind.as_secs() / 3600,
                    "sync gap longer than İYS's 7-day pull window: changes were missed; a full resync is needed"
                );
                metrics::counter!("iysgate_sync_gaps_total").increment(1);
                stats.gaps.push((brand, source));
                // Repair what İYS still has: its daily files of the last 7 days. Changes older
                // than that are beyond any İYS API but the status queries.
                if source == PullSource::Iys {
                    let today = crate::domain::time::to_turkey(started).date();
                    for back in (1..=FILE_DAYS).rev() {
                        let day = today - chrono::Duration::days(back);
                        let changes = self.source.daily_changes(brand, day).await?;
                        stats.resynced += changes.len() as u64;
                        self.apply_changes(brand.brand_code, &changes, stats)
                            .await?;
                    }
                    tracing::warn!(
                        brand = brand.brand_code,
                        changes = stats.resynced,
                        "resynced the last 7 days from İYS's daily change files"
                    );
                }
            }
        }
        let mut seen: std::collections::HashSet<String> = cursor.after.iter().cloned().collect();
        loop {
            let page = self
                .source
                .pull(brand, source, cursor.after.clone(), self.config.page_limit)
                .await?;
            stats.pages += 1;
            let n = page.changes.len();
            // A cursor İYS already gave in this catch-up means it is serving pages again: stop
            // here (this pass counts as failed, so nothing is confirmed fresh) rather than loop.
            if n > 0
                && let Some(after) = &page.after
                && !seen.insert(after.clone())
            {
                metrics::counter!("iysgate_sync_cursor_repeats_total").increment(1);
                return Err(PullError(
                    "İYS returned a cursor it had already given".into(),
                ));
            }
            self.apply_changes(brand.brand_code, &page.changes, stats)
                .await?;
            metrics::counter!("iysgate_sync_changes_total", "source" => source.as_str())
                .increment(n as u64);
            // The cursor moves only after the page is applied and published.
            if n > 0 && page.after.is_some() {
                cursor.after = page.after;
                self.save_cursor(brand, source, &cursor).await?;
            }
            if n < self.config.page_limit as usize || shutdown.is_cancelled() {
                break;
            }
        }
        if !shutdown.is_cancelled() {
            cursor.caught_up_at = Some(started);
            self.save_cursor(brand, source, &cursor).await?;
        }
        Ok(())
    }

    /// Applies changes of one brand by the latest-event rule, then publishes the current
    /// record of every key they touched, whatever each change did: after a failed publish the
    /// same changes come again, find themselves applied here, and must still reach the
    /// replicas.
    async fn apply_changes(
        &self,
        brand: u32,
        changes: &[Change],
        stats: &mut PassStats,
    ) -> Result<(), PullError> {
        let mut touched = Vec::with_capacity(changes.len());
        for change in changes {
            stats.changes += 1;
            let applied =
                to_event(brand, change)
                    .map_err(|e| e.to_string())
                    .and_then(|(key, event)| {
                        let applied = self
                            .consents
                            .apply(key.clone(), event)
                            .map_err(|e| e.to_string())?;
                        touched.push(key);
                        Ok(applied)
                    });
            match applied {
                Ok(crate::domain::Applied::Changed) => stats.applied += 1,
                Ok(crate::domain::Applied::Ignored) => stats.ignored += 1,
                Err(e) => {
                    stats.bad += 1;
                    tracing::warn!(brand, error = %e, "change refused");
                }
            }
        }
        if let Some(shared) = &self.shared {
            let current: Vec<_> = touched
                .into_iter()
                .filter_map(|key| self.consents.get(&key).map(|record| (key, record)))
                .collect();
            shared
                .publish_many(current.iter().map(|(k, r)| (k, r)))
                .await
                .map_err(|e| PullError(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies what İYS pushed since the last pass (any instance may have received it).
    async fn drain_pushed(&self, stats: &mut PassStats) -> Result<(), PullError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        loop {
            let pushed = shared
                .take_pushed(1000)
                .await
                .map_err(|e| PullError(e.to_string()))?;
            if pushed.is_empty() {
                return Ok(());
            }
            stats.pushed += pushed.len() as u64;
            for (brand, change) in pushed {
                if self.brands.iter().any(|b| b.brand_code == brand) {
                    self.apply_changes(brand, std::slice::from_ref(&change), stats)
                        .await?;
                } else {
                    tracing::warn!(
                        brand,
                        "push for a brand this worker does not follow; ignored"
                    );
                }
            }
        }
    }

    async fn save_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
    ) -> Result<(), PullError> {
        self.cursors.put(brand, source, cursor.clone());
        if let Some(shared) = &self.shared {
            shared
                .store_cursor(brand, source, cursor)
                .await
                .map_err(|e| PullError(e.to_string()))?;
        }
        Ok(())
    }

    /// Takes up the shared state as the new leader: starts an epoch if Redis has none (and
    /// then republishes every local record, since Redis lost its data), and continues from
    /// the cursors the previous leader stored. Returns the stream id the local records hold
    /// everything up to ("0-0": the start of the stream).
    async fn take_over(
        &self,
        shared: &crate::sync::redis::SharedState,
    ) -> Result<String, crate::sync::redis::SharedError> {
        let (_, new_epoch) = shared.ensure_epoch().await?;
        let held = if new_epoch {
            let n = shared.republish(&self.consents).await?;
            tracing::warn!(
                records = n,
                "shared state was empty: republished local records"
            );
            "0-0".to_owned()
        } else {
            // Publishing never replaces a newer record in Redis, but the checkpoints are
            // written from the local records, so they must hold everything the previous
            // leader and the replicas published.
            let (from, n) = shared.load_snapshot(&self.consents).await?;
            let held = shared.replay(&self.consents, &from).await?;
            tracing::info!(records = n, "loaded the shared records before leading");
            held
        };
        for &brand in &self.brands {
            for source in PullSource::BOTH {
                if let Some(c) = shared.load_cursor(brand, source).await? {
                    let newer = self
                        .cursors
                        .get(brand, source)
                        .is_none_or(|mine| mine.caught_up_at < c.caught_up_at);
                    if newer {
                        self.cursors.put(brand, source, c);
                    }
                }
            }
        }
        Ok(held)
    }

    /// Runs as one candidate for the sync lease: passes only while holding it, with a
    /// heartbeat to the replicas after each complete pass. Another candidate takes over
    /// within `lease` after this one stops renewing.
    pub async fn run_leader(self, holder: String, lease: Duration, shutdown: CancellationToken) {
        let Some(shared) = self.shared.clone() else {
            return self.run(shutdown).await;
        };
        let mut leading = false;
        let mut last_checkpoint: Option<tokio::time::Instant> = None;
        // The stream id the local records hold everything up to: what replicas published
        // (recorded consents) reaches them only by catching up from here before a checkpoint.
        let mut held = "0-0".to_owned();
        loop {
            match shared.hold_lease(&holder, lease).await {
                Ok(true) => {
                    if !leading {
                        tracing::info!(holder, "took the sync lease");
                        match self.take_over(&shared).await {
                            Ok(id) => held = id,
                            Err(e) => {
                                tracing::warn!(error = %e, "taking over the shared state failed");
                                tokio::time::sleep(self.config.interval).await;
                                continue;
                            }
                        }
                        leading = true;
                    }
                    // Redis may have lost its data while we led: a new epoch, then our records.
                    if let Ok((_, true)) = shared.ensure_epoch().await {
                        "0-0".clone_into(&mut held);
                        match shared.republish(&self.consents).await {
                            Ok(n) => tracing::warn!(
                                records = n,
                                "shared state was lost: republished local records"
                            ),
                            Err(e) => tracing::warn!(error = %e, "republishing failed"),
                        }
                    }
                    let stats = self.pass(&shutdown).await;
                    if stats.failed.is_empty()
                        && let Err(e) = shared.heartbeat(self.clock.now_utc()).await
                    {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                    if stats.failed.is_empty()
                        && last_checkpoint
                            .is_none_or(|at| at.elapsed() >= self.config.checkpoint_every)
                    {
                        match shared.write_checkpoint(&self.consents, &held).await {
                            Ok((n, id)) => {
                                held = id;
                                tracing::info!(
                                    records = n,
                                    "wrote a checkpoint for replica starts"
                                );
                            }
                            Err(e) => tracing::warn!(error = %e, "writing a checkpoint failed"),
                        }
                        last_checkpoint = Some(tokio::time::Instant::now());
                    }
                }
                Ok(false) => {
                    if leading {
                        tracing::warn!(holder, "lost the sync lease");
                    }
                    leading = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease check failed");
                    leading = false;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
        if leading {
            let _ = shared.release_lease(&holder).await;
        }
    }

    /// Runs passes until `shutdown`; the current page is applied before it stops.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let stats = self.pass(&shutdown).await;
            if stats.applied > 0 || !stats.failed.is_empty() || !stats.gaps.is_empty() {
                tracing::info!(
                    pages = stats.pages,
                    applied = stats.applied,
                    ignored = stats.ignored,
                    bad = stats.bad,
                    failed = stats.failed.len(),
                    gaps = stats.gaps.len(),
                    "sync pass"
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
        tracing::info!("sync worker stopped");
    }
}

/// İYS itself (or the mock) as the source of changes, over any connector (tests bring a
/// plain one with a manual clock).
impl<C> ChangeSource for crate::iys::client::IysClient<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    fn daily_changes(
        &self,
        brand: BrandRef,
        date: chrono::NaiveDate,
    ) -> impl Future<Output = Result<Vec<Change>, PullError>> + Send {
        let client = self.clone();
        async move {
            let file = client
                .daily_changes_file(u64::from(brand.iys_code), u64::from(brand.brand_code), date)
                .await
                .map_err(|e| PullError(e.to_string()))?;
            // No file: no movement that day (or not produced yet).
            file.map_or_else(|| Ok(Vec::new()), |text| parse_daily_file(&text))
        }
    }

    fn pull(
        &self,
        brand: BrandRef,
        source: PullSource,
        after: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Page, PullError>> + Send {
        let client = self.clone();
        async move {
            let page = client
                .pull_changes(
                    u64::from(brand.iys_code),
                    u64::from(brand.brand_code),
                    source,
                    after.as_deref(),
                    limit,
                )
                .await
                .map_err(|e| PullError(e.to_string()))?;
            Ok(Page {
                after: page.after,
                changes: page
                    .list
                    .into_iter()
                    .map(|c| Change {
                        recipient: c.recipient,
                        recipient_type: c.recipient_type,
                        channel: c.channel,
                        status: c.status,
                        source: c.source,
                        consent_date: c.consent_date,
                        creation_date: c.creation_date,
                        transaction_id: c.transaction_id,
                    })
                    .collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_iys;
    use crate::domain::{Channel, ConsentStatus, RecipientType, Source};
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn change(tx: &str, status: &str, date: &str) -> Change {
        Change {
            recipient: "05321234567".into(),
            recipient_type: "BIREYSEL".into(),
            channel: "MESAJ".into(),
            status: status.into(),
            source: "IYS_WEB".into(),
            consent_date: Some(date.into()),
            creation_date: date.into(),
            transaction_id: tx.into(),
        }
    }

    #[test]
    fn changes_become_registered_events_with_normalised_recipients() {
        let (key, event) = to_event(600_001, &change("a1", "RET", "2026-05-01 10:00:00")).unwrap();
        assert_eq!(key.recipient.to_string(), "+905321234567");
        assert_eq!(
            (key.channel, key.recipient_type),
            (Channel::Mesaj, RecipientType::Bireysel)
        );
        assert_eq!(
            (event.status, event.source),
            (ConsentStatus::Ret, Source::IysWeb)
        );
        assert!(!event.is_pending());
    }

    #[test]
    fn bad_changes_name_the_field_and_not_the_recipient() {
        let mut c = change("a2", "RED", "2026-05-01 10:00:00");
        let err = to_event(1, &c).unwrap_err();
        assert_eq!(err.field, "status");
        c.status = "ONAY".into();
        c.channel = "EPOSTA".into();
        let err = to_event(1, &c).unwrap_err();
        assert_eq!(err.field, "recipient");
        assert!(!err.to_string().contains("532"), "{err}");
        c.channel = "MESAJ".into();
        c.creation_date = "2026-05-01T10:00:00".into();
        assert_eq!(to_event(1, &c).unwrap_err().field, "creationDate");
    }

    #[test]
    fn a_missing_consent_date_falls_back_to_the_creation_date() {
        let mut c = change("a3", "RET", "2026-05-01 10:00:00");
        c.source = "IYS_AHS_HAT_KAPATMA".into();
        c.recipient_type = "TACIR".into();
        c.consent_date = Some(String::new());
        let (_, event) = to_event(1, &c).unwrap();
        assert_eq!(
            event.consent_date,
            parse_iys("2026-05-01 10:00:00").unwrap()
        );
        assert_eq!(event.source, Source::IysAhsHatKapatma);
    }

    /// A ChangeSource over fixed lists, with faults: `fail_next` pulls fail; `repeat` serves
    /// the previous page again once; `stall` answers one empty page with the same cursor.
    #[derive(Default)]
    struct FakeSource {
        lists: Mutex<HashMap<PullSource, Vec<Change>>>,
        fail_next: std::sync::atomic::AtomicU32,
        repeat: std::sync::atomic::AtomicBool,
        stall: std::sync::atomic::AtomicBool,
        /// Ignore `after`: serve the first pages again and again.
        ignore_cursor: std::sync::atomic::AtomicBool,
    }

    impl ChangeSource for Arc<FakeSource> {
        fn pull(
            &self,
            _brand: BrandRef,
            source: PullSource,
            after: Option<String>,
            limit: u32,
        ) -> impl Future<Output = Result<Page, PullError>> + Send {
            use std::sync::atomic::Ordering::SeqCst;
            let result = (|| {
                if self.fail_next.load(SeqCst) > 0 {
                    self.fail_next.fetch_sub(1, SeqCst);
                    return Err(PullError("503 H015".into()));
                }
                let mut start: usize = if self.ignore_cursor.load(SeqCst) {
                    0
                } else {
                    after.as_deref().map_or(0, |a| a.parse().unwrap())
                };
                if self.stall.swap(false, SeqCst) {
                    return Ok(Page {
                        after,
                        changes: vec![],
                    });
                }
                if start >= limit as usize && self.repeat.swap(false, SeqCst) {
                    start -= limit as usize;
                }
                let lists = self.lists.lock().unwrap();
                let list = lists.get(&source).cloned().unwrap_or_default();
                let end = (start + limit as usize).min(list.len());
                let changes = list.get(start..end).unwrap_or_default().to_vec();
                Ok(Page {
                    after: (end > start).then(|| end.to_string()),
                    changes,
                })
            })();
            std::future::ready(result)
        }
    }

    fn numbered(n: usize) -> Vec<Change> {
        (0..n)
            .map(|i| {
                let mut c = change(
                    &format!("{i:064x}"),
                    if i % 2 == 0 { "ONAY" } else { "RET" },
                    "2026-05-01 10:00:00",
                );
                c.recipient = format!("+9053200{i:05}");
                c.creation_date = format!("2026-05-01 10:{:02}:{:02}", i / 60 % 60, i % 60);
                c
            })
            .collect()
    }

    struct Rig {
        worker: SyncWorker<Arc<FakeSource>>,
        source: Arc<FakeSource>,
        consents: Arc<Consents>,
        freshness: Arc<Freshness>,
        cursors: Arc<MemoryCursors>,
        clock: Arc<crate::domain::ManualClock>,
    }

    fn rig(iys: Vec<Change>, hs: Vec<Change>) -> Rig {
        let source = Arc::new(FakeSource::default());
        source
            .lists
            .lock()
            .unwrap()
            .extend([(PullSource::Iys, iys), (PullSource::Hs, hs)]);
        let index = Arc::new(crate::check::index::ConsentIndex::new());
        let keyer = Arc::new(crate::check::index::EmailKeyer::new([3; 16]));
        let consents = Arc::new(Consents::new(index, keyer));
        let freshness = Arc::new(Freshness::new());
        let cursors = Arc::new(MemoryCursors::default());
        let clock = Arc::new(crate::domain::ManualClock::at_turkey(
            parse_iys("2026-05-02 10:00:00").unwrap(),
        ));
        let worker = SyncWorker::new(
            Arc::clone(&source),
            Arc::clone(&consents),
            cursors.clone(),
            vec![BrandRef {
                iys_code: 600_000,
                brand_code: 600_001,
            }],
            Arc::clone(&freshness),
            clock.clone(),
            SyncConfig {
                page_limit: 10,
                interval: Duration::from_millis(1),
                ..SyncConfig::default()
            },
        );
        Rig {
            worker,
            source,
            consents,
            freshness,
            cursors,
            clock,
        }
    }

    fn snapshot(c: &Consents) -> Vec<String> {
        let mut out = Vec::new();
        c.records()
            .for_each(|k, r| out.push(format!("{k:?}{:?}", r.current)));
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_pass_follows_every_page_of_both_sources_and_confirms_freshness() {
        let r = rig(numbered(25), numbered(3));
        let stop = CancellationToken::new();
        let stats = r.worker.pass(&stop).await;
        // 25 IYS changes in pages of 10 (10, 10, 5) and 3 HS changes (the same keys again).
        assert_eq!(
            (stats.pages, stats.changes, stats.applied, stats.bad),
            (4, 28, 25, 0)
        );
        assert_eq!(r.consents.records().len(), 25);
        assert!(
            r.freshness
                .age(crate::domain::Clock::now_utc(&*r.clock))
                .is_some()
        );
        let cursor = r
            .cursors
            .get(
                BrandRef {
                    iys_code: 600_000,
                    brand_code: 600_001,
                },
                PullSource::Iys,
            )
            .unwrap();
        assert_eq!(cursor.after.as_deref(), Some("25"));
        // A second pass finds nothing new and changes nothing.
        let stats = r.worker.pass(&stop).await;
        assert_eq!((stats.applied, stats.changes), (0, 0));
    }

    #[tokio::test]
    async fn faults_end_in_the_same_state_as_a_clean_run() {
        let clean = rig(numbered(35), vec![]);
        let stop = CancellationToken::new();
        clean.worker.pass(&stop).await;

        let faulty = rig(numbered(35), vec![]);
        faulty
            .source
            .fail_next
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let first = faulty.worker.pass(&stop).await;
        assert_eq!(first.failed.len(), 1, "the failed pull is reported");
        assert!(
            faulty.freshness.age(chrono::Utc::now()).is_none(),
            "a failed pass confirms nothing"
        );
        faulty
            .source
            .repeat
            .store(true, std::sync::atomic::Ordering::SeqCst);
        faulty.worker.pass(&stop).await;
        faulty
            .source
            .stall
            .store(true, std::sync::atomic::Ordering::SeqCst);
        faulty.worker.pass(&stop).await;
        faulty.worker.pass(&stop).await;
        assert_eq!(snapshot(&faulty.consents), snapshot(&clean.consents));
    }

    #[tokio::test]
    async fn a_gap_longer_than_the_window_is_reported() {
        let r = rig(numbered(3), vec![]);
        let stop = CancellationToken::new();
        assert!(r.worker.pass(&stop).await.gaps.is_empty());
        r.clock.advance(chrono::Duration::days(8));
        let stats = r.worker.pass(&stop).await;
        assert_eq!(stats.gaps.len(), 2, "both sources of the brand are behind");
    }

    #[tokio::test]
    async fn a_source_that_repeats_its_cursor_fails_the_pass_instead_of_looping() {
        let r = rig(numbered(25), vec![]);
        r.source
            .ignore_cursor
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let stats = r.worker.pass(&CancellationToken::new()).await;
        assert_eq!(stats.failed.len(), 1, "{stats:?}");
        assert!(
            r.freshness.age(chrono::Utc::now()).is_none(),
            "nothing confirmed fresh"
        );
    }

    #[test]
    fn daily_files_parse_by_column_name() {
        let text = "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source\n\
                    2026-05-01 10:00:05,ab12,+905321234567,BIREYSEL,MESAJ,RET,2026-05-01 10:00:00,IYS_WEB\n\
                    2026-05-01 11:00:05,cd34,+905321234568,TACIR,ARAMA,RET,,IYS_AHS_HAT_KAPATMA\n";
        let changes = parse_daily_file(text).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].transaction_id, "ab12");
        assert_eq!(changes[1].consent_date, None);
        let (key, event) = to_event(1, &changes[0]).unwrap();
        assert_eq!(
            (key.channel, event.status),
            (Channel::Mesaj, ConsentStatus::Ret)
        );
        assert!(
            parse_daily_file("a,b\n1,2\n")
                .unwrap_err()
                .0
                .contains("creationDate")
        );
    }

    #[tokio::test]
    async fn a_gap_is_repaired_from_the_daily_files() {
        struct Files(Arc<FakeSource>, Vec<Change>);
        impl ChangeSource for Files {
            fn pull(
                &self,
                brand: BrandRef,
                source: PullSource,
                after: Option<String>,
                limit: u32,
            ) -> impl Future<Output = Result<Page, PullError>> + Send {
                self.0.pull(brand, source, after, limit)
            }
            fn daily_changes(
                &self,
                _brand: BrandRef,
                date: chrono::NaiveDate,
            ) -> impl Future<Output = Result<Vec<Change>, PullError>> + Send {
                // The missed RET sits in the file of 2026-05-08.
                let day = chrono::NaiveDate::from_ymd_opt(2026, 5, 8).unwrap();
                std::future::ready(Ok(if date == day {
                    self.1.clone()
                } else {
                    Vec::new()
                }))
            }
        }
        let r = rig(numbered(2), vec![]);
        let stop = CancellationToken::new();
        r.worker.pass(&stop).await;
        let mut missed = change(&format!("{:064x}", 0), "RET", "2026-05-08 09:00:00");
        missed.recipient = "+905320000000".into();
        missed.transaction_id = "f".repeat(64);
        let worker = SyncWorker::new(
            Files(Arc::clone(&r.source), vec![missed]),
            Arc::clone(&r.consents),
            r.cursors.clone(),
            vec![BrandRef {
                iys_code: 600_000,
                brand_code: 600_001,
            }],
            Arc::clone(&r.freshness),
            r.clock.clone(),
            SyncConfig {
                page_limit: 10,
                interval: Duration::from_millis(1),
                ..SyncConfig::default()
            },
        );
        r.clock.advance(chrono::Duration::days(8));
        let stats = worker.pass(&stop).await;
        assert_eq!(stats.gaps.len(), 2);
        assert_eq!(stats.resynced, 1);
        let mut found = None;
        r.consents.records().for_each(|k, rec| {
            if k.recipient.to_string() == "+905320000000" {
                found = Some(rec.current.status);
            }
        });
        assert_eq!(
            found,
            Some(ConsentStatus::Ret),
            "the missed RET was applied"
        );
    }
}
