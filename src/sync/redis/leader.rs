//! What only the sync leader does: the epoch, the lease, the cursors, the push inbox, and
//! the checkpoints replicas cold-start from (after catching up with the stream).

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use redis::AsyncCommands;
use serde::Deserialize;

use crate::check::store::Consents;
use crate::sync::types::{BrandRef, Cursor, PullSource};

use super::{CHECKPOINT_CHUNK, SharedError, SharedState, encode, stream_id_after};

impl SharedState {
    /// Stores changes İYS pushed, for the leader to apply (durable before acknowledged).
    pub async fn push_inbox(
        &self,
        changes: &[(u32, crate::sync::types::Change)],
    ) -> Result<(), SharedError> {
        if changes.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = changes
            .iter()
            .map(|(brand, c)| {
                serde_json::json!({
                    "b": brand, "r": c.recipient, "t": c.recipient_type, "c": c.channel,
                    "s": c.status, "o": c.source, "d": c.consent_date, "cd": c.creation_date,
                    "tx": c.transaction_id,
                })
                .to_string()
            })
            .collect();
        let mut conn = self.conn.clone();
        conn.rpush::<_, _, ()>(self.key("push"), lines).await?;
        Ok(())
    }

    /// Takes up to `max` pushed changes out of the inbox.
    pub async fn take_pushed(
        &self,
        max: usize,
    ) -> Result<Vec<(u32, crate::sync::types::Change)>, SharedError> {
        #[derive(Deserialize)]
        struct Pushed {
            b: u32,
            r: String,
            t: String,
            c: String,
            s: String,
            o: String,
            d: Option<String>,
            cd: String,
            tx: String,
        }
        let mut conn = self.conn.clone();
        let lines: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(self.key("push"))
            .arg(max)
            .query_async(&mut conn)
            .await?;
        lines
            .unwrap_or_default()
            .iter()
            .map(|line| {
                let p: Pushed =
                    serde_json::from_str(line).map_err(|e| SharedError::Decode(e.to_string()))?;
                Ok((
                    p.b,
                    crate::sync::types::Change {
                        recipient: p.r,
                        recipient_type: p.t,
                        channel: p.c,
                        status: p.s,
                        source: p.o,
                        consent_date: p.d,
                        creation_date: p.cd,
                        transaction_id: p.tx,
                    },
                ))
            })
            .collect()
    }

    /// Starts a new epoch if there is none; returns the current one and whether it is new.
    pub async fn ensure_epoch(&self) -> Result<(String, bool), SharedError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| SharedError::Decode(e.to_string()))?;
        let fresh = crate::auth::to_hex(&bytes);
        let mut conn = self.conn.clone();
        let set: bool = redis::cmd("SET")
            .arg(self.key("epoch"))
            .arg(&fresh)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        let current: Option<String> = conn.get(self.key("epoch")).await?;
        Ok((current.unwrap_or(fresh), set))
    }

    /// Whether stream entries after `from` (the id of an entry once read, or "0-0") may have
    /// been trimmed away. Trimming removes the oldest entries, so they were exactly when the
    /// oldest entry left is after `from`, or none is left of some added after it; on Redis 7 an
    /// `entries-added` equal to the length says nothing was ever removed. True may be
    /// needlessly careful (the entry at `from` trimmed, the next one not), never wrong.
    pub(super) async fn trimmed_after(&self, from: &str) -> Result<bool, SharedError> {
        let mut conn = self.conn.clone();
        if !conn.exists::<_, bool>(self.key("changes")).await? {
            // No stream: nothing was ever trimmed from it.
            return Ok(false);
        }
        let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.key("changes"))
            .query_async(&mut conn)
            .await?;
        let int = |name: &str| match info.get(name) {
            Some(redis::Value::Int(n)) => Some(*n),
            _ => None,
        };
        let id = |value: Option<&redis::Value>| match value {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        if int("entries-added").is_some() && int("entries-added") == int("length") {
            return Ok(false);
        }
        let last = id(info.get("last-generated-id")).unwrap_or_else(|| "0-0".to_owned());
        if !stream_id_after(&last, from) {
            return Ok(false);
        }
        Ok(match info.get("first-entry") {
            Some(redis::Value::Array(entry)) => {
                id(entry.first()).is_none_or(|first| stream_id_after(&first, from))
            }
            _ => true,
        })
    }

    /// Brings `consents`, which hold everything published up to stream id `from`, up to the
    /// end of the stream: replays the entries after `from`, or, if some were trimmed away,
    /// first merges every record of the hashes. Returns the id everything up to which they now
    /// hold. The leader calls this before a checkpoint: its own records lack what replicas
    /// published (recorded consents, registrations), and a checkpoint must not.
    pub async fn catch_up(
        &self,
        consents: &Arc<Consents>,
        from: &str,
    ) -> Result<String, SharedError> {
        if self.trimmed_after(from).await? {
            tracing::warn!(
                "the change stream was trimmed past this process: rescanning the records"
            );
            let (noted, _) = self.scan_records(consents).await?;
            return self.replay(consents, &noted).await;
        }
        self.replay(consents, from).await
    }

    /// Writes a checkpoint of `consents` (the leader's records, which hold everything published
    /// up to stream id `from`): first brings them up to the end of the stream
    /// ([`Self::catch_up`]), then writes them as a few large values plus the stream id they
    /// include everything up to, which it returns with the number of records. A replica
    /// starting later loads the checkpoint (large GETs, decoded in parallel) and replays the
    /// stream from there, instead of scanning the per-key hashes record by record. Beside
    /// the records it writes the index checkpoint ([`super::index_ckpt`]) of the same
    /// generation, from which a replica can serve before it has decoded them.
    pub async fn write_checkpoint(
        &self,
        consents: &Arc<Consents>,
        from: &str,
    ) -> Result<(usize, String), SharedError> {
        // Caught up before reading the records: everything published up to here is in them,
        // and what comes after is replayed (idempotently) from the stream.
        if !consents.records_complete() {
            return Err(SharedError::Decode(
                "the records are still loading: no checkpoint until they are in".into(),
            ));
        }
        let stream_id = self.catch_up(consents, from).await?;
        let mut lines = Vec::new();
        let mut index = super::index_ckpt::Writer::default();
        consents.records().for_each(|k, r| {
            lines.push(encode(k, &r.current));
            index.push(k, &r.current);
        });
        let index = index.into_chunks();
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| SharedError::Decode(e.to_string()))?;
        let generation = crate::auth::to_hex(&bytes);
        let mut conn = self.reader().await?;
        let chunks = lines.chunks(CHECKPOINT_CHUNK);
        let count = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            conn.set::<_, _, ()>(
                self.key(&format!("ckpt:{generation}:{i}")),
                chunk.join("\n"),
            )
            .await?;
        }
        for (i, chunk) in index.iter().enumerate() {
            conn.set::<_, _, ()>(self.key(&format!("ckpt:{generation}:ix:{i}")), chunk)
                .await?;
        }
        let epoch = self.epoch().await?.unwrap_or_default();
        let old = self.checkpoint_meta(&mut conn).await?;
        conn.hset_multiple::<_, _, _, ()>(
            self.key("ckpt"),
            &[
                ("generation", generation.clone()),
                ("chunks", count.to_string()),
                ("index_chunks", index.len().to_string()),
                ("stream_id", stream_id.clone()),
                ("records", lines.len().to_string()),
                ("epoch", epoch),
            ],
        )
        .await?;
        if let Some(old) = old.filter(|m| m.generation != generation) {
            let keys: Vec<String> = (0..old.chunks)
                .map(|i| self.key(&format!("ckpt:{}:{i}", old.generation)))
                .chain(
                    (0..old.index_chunks.unwrap_or(0))
                        .map(|i| self.key(&format!("ckpt:{}:ix:{i}", old.generation))),
                )
                .collect();
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        Ok((lines.len(), stream_id))
    }

    /// Tries to take or keep the sync lease for `ttl`.
    pub async fn hold_lease(&self, holder: &str, ttl: Duration) -> Result<bool, SharedError> {
        let script = redis::Script::new(
            r"local cur = redis.call('GET', KEYS[1])
              if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
              if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
              return 0",
        );
        let mut conn = self.conn.clone();
        let held: i32 = script
            .key(self.key("leader"))
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up if `holder` has it.
    pub async fn release_lease(&self, holder: &str) -> Result<(), SharedError> {
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
              return 0",
        );
        let mut conn = self.conn.clone();
        script
            .key(self.key("leader"))
            .arg(holder)
            .invoke_async::<i32>(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn load_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> Result<Option<Cursor>, SharedError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn
            .get(self.key(&format!("cursor:{}:{}", brand.brand_code, source.as_str())))
            .await?;
        Ok(text.and_then(|t| {
            let (after, at) = t.split_once('\t')?;
            Some(Cursor {
                after: (!after.is_empty()).then(|| after.to_owned()),
                // Empty: never caught up (older versions wrote 0 for that).
                caught_up_at: at
                    .parse::<i64>()
                    .ok()
                    .filter(|&micros| micros != 0)
                    .and_then(DateTime::from_timestamp_micros),
            })
        }))
    }

    pub async fn store_cursor(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
    ) -> Result<(), SharedError> {
        let mut conn = self.conn.clone();
        let text = format!(
            "{}\t{}",
            cursor.after.as_deref().unwrap_or(""),
            cursor
                .caught_up_at
                .map_or(String::new(), |t| t.timestamp_micros().to_string())
        );
        conn.set::<_, _, ()>(
            self.key(&format!("cursor:{}:{}", brand.brand_code, source.as_str())),
            text,
        )
        .await?;
        Ok(())
    }
}
