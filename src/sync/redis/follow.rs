//! A replica following the shared state: load the snapshot (checkpoint, or a scan of the
//! per-key hashes), replay the stream after it, then tail the stream on a connection of its
//! own; a changed epoch (Redis lost its data) reloads.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::check::Freshness;
use crate::check::store::{Consents, IndexRows};

use super::{
    Entry, SCAN_COUNT, SharedError, SharedState, apply_entries, decode, record_json,
    stream_id_after,
};

impl SharedState {
    /// The data epoch; `None` when Redis has lost (or never had) the shared state.
    pub async fn epoch(&self) -> Result<Option<String>, SharedError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key("epoch")).await?)
    }

    /// The checkpoint's description, if one was written.
    pub(super) async fn checkpoint_meta(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<CheckpointMeta>, SharedError> {
        let meta: std::collections::HashMap<String, String> =
            conn.hgetall(self.key("ckpt")).await?;
        let (Some(generation), Some(chunks), Some(stream_id)) = (
            meta.get("generation"),
            meta.get("chunks").and_then(|c| c.parse::<usize>().ok()),
            meta.get("stream_id"),
        ) else {
            return Ok(None);
        };
        Ok(Some(CheckpointMeta {
            generation: generation.clone(),
            chunks,
            index_chunks: meta.get("index_chunks").and_then(|c| c.parse().ok()),
            stream_id: stream_id.clone(),
            records: meta.get("records").and_then(|r| r.parse().ok()),
            epoch: meta.get("epoch").filter(|e| !e.is_empty()).cloned(),
        }))
    }

    /// The checkpoint, if there is a usable one: of the current epoch, and with the stream
    /// still holding every entry after it.
    async fn usable_checkpoint(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<CheckpointMeta>, SharedError> {
        let Some(meta) = self.checkpoint_meta(conn).await? else {
            return Ok(None);
        };
        if meta.epoch != self.epoch().await? {
            return Ok(None);
        }
        // The oldest entry still in the stream must not be newer than the checkpoint, or
        // changes between the two were trimmed away.
        let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key("changes"))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        if let Some(oldest) = first.ids.first()
            && stream_id_after(&oldest.id, &meta.stream_id)
        {
            return Ok(None);
        }
        Ok(Some(meta))
    }

    /// Loads the records of the usable checkpoint, if there is one, into `consents`' records
    /// (not the index). Returns the stream id to tail from and the records loaded.
    pub(super) async fn load_checkpoint(
        &self,
        consents: &Arc<Consents>,
    ) -> Result<Option<(String, usize)>, SharedError> {
        let mut conn = self.reader().await?;
        let Some(meta) = self.usable_checkpoint(&mut conn).await? else {
            return Ok(None);
        };
        let loaded = self.load_records_of(&mut conn, consents, &meta).await?;
        Ok(loaded.map(|n| (meta.stream_id, n)))
    }

    /// Loads the records of checkpoint `meta` into `consents`' records, by the latest-event
    /// rule (so records already there from the stream are never replaced by older ones).
    /// `None` when a chunk is gone (a newer checkpoint replaced it).
    async fn load_records_of(
        &self,
        conn: &mut MultiplexedConnection,
        consents: &Arc<Consents>,
        meta: &CheckpointMeta,
    ) -> Result<Option<usize>, SharedError> {
        if let Some(records) = meta.records {
            consents.records().reserve(records);
        }
        let mut pending = std::collections::VecDeque::new();
        let mut loaded = 0;
        for i in 0..meta.chunks {
            let text: Option<String> = conn
                .get(self.key(&format!("ckpt:{}:{i}", meta.generation)))
                .await?;
            let Some(text) = text else {
                return Ok(None);
            };
            let target = Arc::clone(consents);
            pending.push_back(tokio::task::spawn_blocking(move || {
                let mut n = 0;
                for line in text.split('\n').filter(|l| !l.is_empty()) {
                    let (key, event) = decode(line)?;
                    target.records().apply(key, event);
                    n += 1;
                }
                Ok::<usize, SharedError>(n)
            }));
            while pending.len() > 2 {
                if let Some(done) = pending.pop_front() {
                    loaded += joined(done.await)?;
                }
            }
        }
        for done in pending {
            loaded += joined(done.await)?;
        }
        Ok(Some(loaded))
    }

    /// Loads the index alone from the usable checkpoint's index chunks, if it has them
    /// ([`Consents::load_index_only`]: the records stay partial). Returns the checkpoint,
    /// whose records [`Self::load_records_later`] brings in afterwards, and the entries loaded.
    pub async fn load_index_checkpoint(
        &self,
        consents: &Arc<Consents>,
    ) -> Result<Option<(CheckpointMeta, usize)>, SharedError> {
        let mut conn = self.reader().await?;
        let Some(meta) = self.usable_checkpoint(&mut conn).await? else {
            return Ok(None);
        };
        let Some(chunks) = meta.index_chunks else {
            return Ok(None);
        };
        let mut pending = std::collections::VecDeque::new();
        let mut rows = IndexRows::default();
        for i in 0..chunks {
            let bytes: Option<Vec<u8>> = conn
                .get(self.key(&format!("ckpt:{}:ix:{i}", meta.generation)))
                .await?;
            let Some(bytes) = bytes else {
                return Ok(None);
            };
            let target = Arc::clone(consents);
            pending.push_back(tokio::task::spawn_blocking(move || {
                super::index_ckpt::decode(&bytes, &target)
            }));
            while pending.len() > 2 {
                if let Some(done) = pending.pop_front() {
                    rows.append(joined(done.await)?);
                }
            }
        }
        for done in pending {
            rows.append(joined(done.await)?);
        }
        let n = rows.len();
        let target = Arc::clone(consents);
        tokio::task::spawn_blocking(move || target.load_index_only(rows))
            .await
            .map_err(|e| SharedError::Decode(e.to_string()))?;
        Ok(Some((meta, n)))
    }

    /// Brings in the full records after an index-only start, then rebuilds the index from
    /// them, which ends the partial state: first from the checkpoint the index came from;
    /// if a newer one replaced it meanwhile, from that (its records are merged by the
    /// latest-event rule with what the stream brought since, so a later checkpoint is as
    /// good); else by scanning the hashes. Retries every second until done or `shutdown`.
    pub async fn load_records_later(
        &self,
        consents: Arc<Consents>,
        meta: CheckpointMeta,
        shutdown: CancellationToken,
    ) {
        let started = std::time::Instant::now();
        let mut meta = Some(meta);
        loop {
            let attempt = async {
                let mut conn = self.reader().await?;
                let usable = match meta.take() {
                    Some(m) => Some(m),
                    None => self.usable_checkpoint(&mut conn).await?,
                };
                if let Some(m) = usable
                    && let Some(n) = self.load_records_of(&mut conn, &consents, &m).await?
                {
                    let target = Arc::clone(&consents);
                    tokio::task::spawn_blocking(move || target.rebuild_index())
                        .await
                        .map_err(|e| SharedError::Decode(e.to_string()))?;
                    return Ok::<usize, SharedError>(n);
                }
                Ok(self.scan_records(&consents).await?.1)
            };
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = attempt => outcome,
            };
            match outcome {
                Ok(n) => {
                    tracing::info!(
                        records = n,
                        took_ms = started.elapsed().as_millis() as u64,
                        "full records loaded after serving from the index checkpoint"
                    );
                    metrics::gauge!("iysgate_replica_records_loading").set(0.0);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading the full records failed; retrying in 1 s");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Loads every record into `consents` (records, then the index in one bulk build) and
    /// returns the stream position to tail from: the checkpoint's when there is a usable
    /// one, else the position noted before scanning every record.
    pub async fn load_snapshot(
        &self,
        consents: &Arc<Consents>,
    ) -> Result<(String, usize), SharedError> {
        if let Some((from, loaded)) = self.load_checkpoint(consents).await? {
            consents.rebuild_index();
            return Ok((from, loaded));
        }
        self.scan_records(consents).await
    }

    /// Applies every stream entry after `from` that is there now (a leader taking over must
    /// hold everything published before it publishes or checkpoints). Returns the last id.
    pub async fn replay(&self, consents: &Consents, from: &str) -> Result<String, SharedError> {
        let mut conn = self.reader().await?;
        let mut from = from.to_owned();
        loop {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.key("changes"))
                .arg(format!("({from}"))
                .arg("+")
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if reply.ids.is_empty() {
                return Ok(from);
            }
            for entry in reply.ids {
                if let Some(value) = entry.get::<String>("v") {
                    let (key, event) = decode(&value)?;
                    // A decoded record always matches its address kind.
                    let _ = consents.apply(key, event);
                }
                from = entry.id;
            }
        }
    }

    /// The slow path of [`Self::load_snapshot`]: every record from the per-brand hashes.
    pub async fn scan_records(
        &self,
        consents: &Arc<Consents>,
    ) -> Result<(String, usize), SharedError> {
        let mut conn = self.conn.clone();
        let last: Vec<String> = redis::cmd("XREVRANGE")
            .arg(self.key("changes"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async::<redis::streams::StreamRangeReply>(&mut conn)
            .await?
            .ids
            .into_iter()
            .map(|e| e.id)
            .collect();
        let from = last.first().cloned().unwrap_or_else(|| "0-0".to_owned());
        let brands: Vec<u32> = conn.smembers(self.key("brands")).await?;
        let mut loaded = 0;
        let mut pending = std::collections::VecDeque::new();
        for brand in brands {
            let hash = self.key(&format!("rec:{brand}"));
            let mut cursor: u64 = 0;
            loop {
                let (next, entries): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                    .arg(&hash)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await?;
                // Decode and insert on the blocking pool while the next batch is fetched;
                // the record store is sharded, so batches insert in parallel.
                loaded += entries.len();
                let target = Arc::clone(consents);
                pending.push_back(tokio::task::spawn_blocking(move || {
                    for (_, value) in entries {
                        let (key, event) = decode(record_json(&value)?)?;
                        target.records().apply(key, event);
                    }
                    Ok::<(), SharedError>(())
                }));
                while pending.len() > 4 {
                    if let Some(done) = pending.pop_front() {
                        done.await
                            .map_err(|e| SharedError::Decode(e.to_string()))??;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        for done in pending {
            done.await
                .map_err(|e| SharedError::Decode(e.to_string()))??;
        }
        consents.rebuild_index();
        Ok((from, loaded))
    }

    /// A connection of its own for blocking stream reads (a blocked read would stall every
    /// other command multiplexed on the shared connection).
    pub(super) async fn reader(&self) -> Result<MultiplexedConnection, SharedError> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Loads the snapshot, then applies the stream until `shutdown`. Leader heartbeats
    /// confirm freshness; a changed or missing epoch (Redis lost its data) reloads. A lost
    /// connection (Redis restarted, a network fault) is retried every second for as long as it
    /// takes; meanwhile the data ages and ALLOWs turn UNAVAILABLE on their own. After every
    /// load but the first, the records still pending registration are republished
    /// ([`Self::republish_pending`]): Redis may have lost them, or this replica may have failed
    /// to publish what it recorded while Redis was out of reach.
    pub async fn follow(
        &self,
        consents: Arc<Consents>,
        freshness: Arc<Freshness>,
        shutdown: CancellationToken,
    ) -> Result<(), SharedError> {
        let mut first_load = true;
        loop {
            match self
                .follow_once(&consents, &freshness, &shutdown, &mut first_load)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "following the shared state failed; retrying in 1 s");
                    metrics::counter!("iysgate_replica_follow_errors_total").increment(1);
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    pub(super) async fn follow_once(
        &self,
        consents: &Arc<Consents>,
        freshness: &Arc<Freshness>,
        shutdown: &CancellationToken,
        first_load: &mut bool,
    ) -> Result<(), SharedError> {
        let mut reader = self.reader().await?;
        'reload: loop {
            let epoch = self.epoch().await?;
            // The first load, into empty records, may take the index alone and serve from
            // it while the records load behind (a reload keeps serving from what it has).
            let index_only = if *first_load && consents.records().is_empty() {
                self.load_index_checkpoint(consents).await?
            } else {
                None
            };
            let mut from = if let Some((meta, entries)) = index_only {
                tracing::info!(
                    entries,
                    "loaded the index checkpoint; following changes, records loading"
                );
                metrics::gauge!("iysgate_replica_records_loading").set(1.0);
                let (shared, target, stop) = (self.clone(), Arc::clone(consents), shutdown.clone());
                let from = meta.stream_id.clone();
                tokio::spawn(async move {
                    shared.load_records_later(target, meta, stop).await;
                });
                from
            } else {
                let (from, loaded) = self.load_snapshot(consents).await?;
                tracing::info!(
                    records = loaded,
                    "loaded the shared snapshot; following changes"
                );
                from
            };
            metrics::counter!("iysgate_replica_snapshot_loads_total").increment(1);
            if !std::mem::replace(first_load, false) {
                let n = self.republish_pending(consents).await?;
                tracing::info!(records = n, "republished the records pending registration");
            }
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1000)
                    .arg("BLOCK")
                    .arg(250)
                    .arg("STREAMS")
                    .arg(self.key("changes"))
                    .arg(&from)
                    .query_async(&mut reader)
                    .await?;
                let mut batch = Vec::new();
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    for entry in stream.ids {
                        from.clone_from(&entry.id);
                        if let Some(value) = entry.get::<String>("v") {
                            batch.push(Entry::Change(value));
                        } else if let Some(micros) = entry.get::<i64>("hb") {
                            batch.push(Entry::Heartbeat(micros));
                        }
                    }
                }
                if !batch.is_empty() {
                    // Decoding and applying (and the index compaction a write may run) happen
                    // on a blocking-pool thread: on a replica pinned to one core, doing them on
                    // the runtime's worker would hold every check behind a burst of changes.
                    let (consents, freshness) = (Arc::clone(consents), Arc::clone(freshness));
                    tokio::task::spawn_blocking(move || {
                        apply_entries(&consents, &freshness, batch)
                    })
                    .await
                    .map_err(|e| SharedError::Decode(format!("applying changes: {e}")))??;
                }
                if self.epoch().await? != epoch {
                    tracing::error!("shared state epoch changed (Redis lost its data): reloading");
                    metrics::counter!("iysgate_replica_epoch_changes_total").increment(1);
                    continue 'reload;
                }
            }
        }
    }
}

/// What the leader wrote of its last checkpoint (the `{p}:ckpt` hash).
#[derive(Debug, Clone)]
pub struct CheckpointMeta {
    pub(super) generation: String,
    /// Values of record JSON lines.
    pub(super) chunks: usize,
    /// Values of the index checkpoint; absent from checkpoints written before it existed.
    pub(super) index_chunks: Option<usize>,
    /// The stream id the checkpoint holds everything up to.
    pub(super) stream_id: String,
    pub(super) records: Option<usize>,
    pub(super) epoch: Option<String>,
}

/// A blocking task's result, its panic as a decode error.
fn joined<T>(
    done: Result<Result<T, SharedError>, tokio::task::JoinError>,
) -> Result<T, SharedError> {
    done.map_err(|e| SharedError::Decode(e.to_string()))?
}
