//! The serving state shared by many replicas, in Redis: the current record of every key and
//! a change stream that fans every change out. Every writer (the sync leader, and each replica
//! for the consents it records and the registrations its uploader sees) publishes through one
//! Lua script that writes a record, and announces it on the stream, only when it is newer than
//! the record Redis holds, by the same latest-event rule as `Consents::apply`: writers that
//! each know part of the story can never put an older record over a newer one. A replica loads
//! the snapshot, then tails the stream from the position it noted *before* loading, so no
//! change falls between the two (changes seen twice are applied idempotently by the
//! latest-event rule). Redis is never on the check path: checks read the replica's own index.
//! Redis holds nothing that cannot be rebuilt: the leader republishes its records when it finds
//! Redis empty, and replicas republish the records still pending registration (which only they
//! and the evidence store hold) whenever they reload.
//!
//! Keys (under a prefix, default `iysgate`): `{p}:rec:{brand}` hash of records,
//! `{p}:brands` set, `{p}:changes` stream (record entries and leader heartbeats),
//! `{p}:epoch` (changes when Redis lost its data), `{p}:leader` (the sync lease),
//! `{p}:cursor:{brand}:{source}`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::check::Freshness;
use crate::check::store::Consents;
use crate::domain::recipient::normalise_recipient;
use crate::domain::time::{format_iys, parse_iys};
use crate::domain::{ConsentEvent, ConsentKey, ConsentRecord, Registration};
use crate::sync::types::{BrandRef, Cursor, PullSource};

/// Stream entries kept (approximately); a replica further behind reloads the snapshot.
const STREAM_MAXLEN: usize = 1_000_000;
/// Records per value of a checkpoint.
const CHECKPOINT_CHUNK: usize = 20_000;
/// Records per HSCAN step when loading the snapshot.
const SCAN_COUNT: usize = 5_000;

/// Writes each record and its stream entry only if it is newer than the stored one; returns
/// how many it wrote. KEYS: the change stream, then each record's brand hash. ARGV: the
/// stream's approximate length bound, then per record its field and its value as stored (see
/// [`stored_value`]). One call carries up to [`SCRIPT_BATCH`] records: a call per record cost
/// the leader a third of its publish rate in a sync burst.
///
/// Keys are compared byte by byte in a loop: Lua's `<` on strings uses the server's locale
/// (`strcoll`), which need not be byte order. A stored value without an order key (written
/// before they existed) is replaced, as the blind write of that time would have.
const PUBLISH_SCRIPT: &str = r"
local function split(value)
  local colon = string.find(value, ':', 1, true)
  local n = colon and tonumber(string.sub(value, 1, colon - 1))
  if not n then return nil, value end
  return string.sub(value, colon + 1, colon + n), string.sub(value, colon + n + 1)
end
local function newer(key, stored)
  if not stored then return true end
  local old = split(stored)
  if not old then return true end
  if old == key then return false end
  for i = 1, math.min(#key, #old) do
    local a, b = string.byte(key, i), string.byte(old, i)
    if a ~= b then return a > b end
  end
  return #key > #old
end
local written = 0
for i = 2, #KEYS do
  local field, value = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local key, record = split(value)
  if newer(key, redis.call('HGET', KEYS[i], field)) then
    redis.call('HSET', KEYS[i], field, value)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'v', record)
    written = written + 1
  end
end
return written
";

/// Records per call of the publish script.
const SCRIPT_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("record in redis is not valid: {0}")]
    Decode(String),
}

/// A record as stored in Redis and carried on the stream. Field names are short: millions of
/// these are stored.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// brandCode
    b: u32,
    /// recipientType
    t: String,
    /// type (channel)
    c: String,
    /// recipient, normalised
    r: String,
    /// status
    s: String,
    /// source
    o: String,
    /// consentDate
    d: String,
    /// creationDate and transactionId when registered
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx: Option<String>,
    /// retailer access
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ra: Vec<u32>,
}

fn field(key: &ConsentKey) -> String {
    format!("{}|{}|{}", key.recipient_type, key.channel, key.recipient)
}

fn encode(key: &ConsentKey, event: &ConsentEvent) -> String {
    let (cd, tx) = match &event.registration {
        Registration::Registered {
            creation_date,
            transaction_id,
        } => (
            Some(format_iys(*creation_date)),
            Some(transaction_id.to_string()),
        ),
        Registration::Pending => (None, None),
    };
    let wire = Wire {
        b: key.brand,
        t: key.recipient_type.to_string(),
        c: key.channel.to_string(),
        r: key.recipient.to_string(),
        s: event.status.to_string(),
        o: event.source.to_string(),
        d: format_iys(event.consent_date),
        cd,
        tx,
        ra: event.retailer_access.clone(),
    };
    serde_json::to_string(&wire).expect("a record always serialises")
}

/// A record as kept in its hash: `<n>:<order key of n bytes><record JSON>`, so the publish
/// script compares keys without parsing JSON. Only the hash carries the key: stream entries and
/// checkpoints are the bare JSON, so what a cold start decodes did not grow.
fn stored_value(key: &ConsentKey, event: &ConsentEvent) -> String {
    let order = event.order_key();
    format!("{}:{order}{}", order.len(), encode(key, event))
}

/// The record JSON of a value kept in a hash ([`stored_value`]; a bare JSON value from before
/// order keys is taken as it is).
fn record_json(value: &str) -> Result<&str, SharedError> {
    if value.starts_with('{') {
        return Ok(value);
    }
    let bad = || SharedError::Decode("stored value without its order key".into());
    let (n, rest) = value.split_once(':').ok_or_else(bad)?;
    let n: usize = n.parse().map_err(|_| bad())?;
    rest.get(n..).ok_or_else(bad)
}

/// The same fields as [`Wire`], borrowed from the text where it has no escapes (always, for
/// what `encode` writes), so decoding a snapshot allocates only what the record keeps.
#[derive(Deserialize)]
struct WireIn<'a> {
    b: u32,
    #[serde(borrow)]
    t: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    c: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    r: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    s: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    o: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    d: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    cd: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tx: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    ra: Vec<u32>,
}

/// One entry of the change stream, as read.
enum Entry {
    Change(String),
    /// The leader's heartbeat, microseconds since the epoch.
    Heartbeat(i64),
}

/// Applies stream entries in order: changes to the records and index, heartbeats to freshness
/// (a heartbeat confirms only what precedes it).
fn apply_entries(
    consents: &Consents,
    freshness: &Freshness,
    batch: Vec<Entry>,
) -> Result<(), SharedError> {
    for entry in batch {
        match entry {
            Entry::Change(value) => {
                let (key, event) = decode(&value)?;
                // A kind mismatch cannot come from a decoded record.
                let _ = consents.apply(key, event);
            }
            Entry::Heartbeat(micros) => {
                if let Some(at) = DateTime::from_timestamp_micros(micros) {
                    freshness.mark_confirmed(at);
                }
            }
        }
    }
    Ok(())
}

fn decode(text: &str) -> Result<(ConsentKey, ConsentEvent), SharedError> {
    let bad = |what: &str| SharedError::Decode(what.to_owned());
    let w: WireIn<'_> =
        serde_json::from_str(text).map_err(|e| SharedError::Decode(e.to_string()))?;
    let channel: crate::domain::Channel = w.c.parse().map_err(|_| bad("c"))?;
    let key = ConsentKey {
        brand: w.b,
        // Stored addresses are normalised already; the common phone form skips the parser.
        recipient: match w.r.strip_prefix('+').and_then(|d| d.parse::<u64>().ok()) {
            Some(digits) if channel.address_kind() == crate::domain::AddressKind::Phone => {
                crate::domain::Recipient::Phone(
                    crate::domain::PhoneNumber::from_e164_digits(digits).map_err(|_| bad("r"))?,
                )
            }
            _ => normalise_recipient(&w.r, channel.address_kind()).map_err(|_| bad("r"))?,
        },
        recipient_type: w.t.parse().map_err(|_| bad("t"))?,
        channel,
    };
    let registration = match (w.cd, w.tx) {
        (Some(cd), Some(tx)) => Registration::Registered {
            creation_date: parse_iys(&cd).ok_or_else(|| bad("cd"))?,
            transaction_id: tx.as_ref().into(),
        },
        _ => Registration::Pending,
    };
    let event = ConsentEvent {
        status: w.s.parse().map_err(|_| bad("s"))?,
        source: w.o.parse().map_err(|_| bad("o"))?,
        consent_date: parse_iys(&w.d).ok_or_else(|| bad("d"))?,
        registration,
        retailer_access: w.ra,
    };
    Ok((key, event))
}

/// Whether stream id `a` is after `b` (ids are `<ms>-<seq>`).
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a) > parse(b)
}

/// A connection to the shared state.
#[derive(Clone)]
pub struct SharedState {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    publish_script: Arc<redis::Script>,
}

impl SharedState {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SharedError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.into(),
            publish_script: Arc::new(redis::Script::new(PUBLISH_SCRIPT)),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Publishes the current record of a key: see [`Self::publish_many`]. True when it was
    /// newer than Redis's and so written.
    pub async fn publish(
        &self,
        key: &ConsentKey,
        record: &ConsentRecord,
    ) -> Result<bool, SharedError> {
        Ok(self.publish_many(std::iter::once((key, record))).await? == 1)
    }

    /// Publishes records in one round trip: each is written, and announced on the stream, only
    /// if it is newer than the record Redis holds for its key (the publish script, atomic per
    /// record), so a writer that missed a newer change (the leader never sees what replicas
    /// record; a replica may lag) cannot replace it. Returns how many were written. Publishing a
    /// record again changes nothing and announces nothing, so a failed call is simply repeated.
    pub async fn publish_many<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a ConsentKey, &'a ConsentRecord)>,
    ) -> Result<usize, SharedError> {
        let mut pipe = redis::pipe();
        // Loaded in the same round trip, since Redis forgets scripts when it restarts; loading
        // a script it has costs Redis one SHA-1 of it.
        pipe.load_script(&self.publish_script).ignore();
        let stream = self.key("changes");
        let mut brands = std::collections::BTreeSet::new();
        let mut calls = Vec::new();
        let mut in_call = 0;
        for (key, record) in records {
            brands.insert(key.brand);
            if in_call == 0 {
                let mut call = self.publish_script.prepare_invoke();
                call.key(&stream).arg(STREAM_MAXLEN);
                calls.push(call);
            }
            let call = calls.last_mut().expect("pushed above");
            call.key(self.key(&format!("rec:{}", key.brand)))
                .arg(field(key))
                .arg(stored_value(key, &record.current));
            in_call = (in_call + 1) % SCRIPT_BATCH;
        }
        if calls.is_empty() {
            return Ok(0);
        }
        // The brands first: a replica scanning the hashes of the listed brands must find them.
        for brand in brands {
            pipe.sadd(self.key("brands"), brand).ignore();
        }
        for call in &calls {
            pipe.invoke_script(call);
        }
        let mut conn = self.conn.clone();
        // Each call answers how many of its records it wrote (the others Redis held already,
        // or held in a newer version).
        let written: Vec<usize> = pipe.query_async(&mut conn).await?;
        Ok(written.into_iter().sum())
    }

    /// Republishes every local record (after Redis lost its data), a few thousand at a time.
    /// Records Redis holds in a newer version stay as they are.
    pub async fn republish(&self, consents: &Consents) -> Result<usize, SharedError> {
        self.republish_where(consents, |_| true).await
    }

    /// Republishes the local records still pending registration: recorded by some replica and
    /// not yet accepted by İYS, so no sync leader has them, and after Redis lost its data (or
    /// when this replica's own publish failed) only replicas and the evidence store do.
    pub async fn republish_pending(&self, consents: &Consents) -> Result<usize, SharedError> {
        self.republish_where(consents, |r| r.current.is_pending())
            .await
    }

    async fn republish_where(
        &self,
        consents: &Consents,
        wanted: impl Fn(&ConsentRecord) -> bool,
    ) -> Result<usize, SharedError> {
        let mut all = Vec::new();
        consents.records().for_each(|k, r| {
            if wanted(r) {
                all.push((k.clone(), r.clone()));
            }
        });
        for chunk in all.chunks(2_000) {
            self.publish_many(chunk.iter().map(|(k, r)| (k, r))).await?;
        }
        Ok(all.len())
    }

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

    /// The leader's word that everything up to `at` has been published.
    pub async fn heartbeat(&self, at: DateTime<Utc>) -> Result<(), SharedError> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(self.key("changes"))
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("hb")
            .arg(at.timestamp_micros())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The data epoch; `None` when Redis has lost (or never had) the shared state.
    pub async fn epoch(&self) -> Result<Option<String>, SharedError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key("epoch")).await?)
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
    async fn trimmed_after(&self, from: &str) -> Result<bool, SharedError> {
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
    /// stream from there, instead of scanning the per-key hashes record by record.
    pub async fn write_checkpoint(
        &self,
        consents: &Arc<Consents>,
        from: &str,
    ) -> Result<(usize, String), SharedError> {
        // Caught up before reading the records: everything published up to here is in them,
        // and what comes after is replayed (idempotently) from the stream.
        let stream_id = self.catch_up(consents, from).await?;
        let mut lines = Vec::new();
        consents
            .records()
            .for_each(|k, r| lines.push(encode(k, &r.current)));
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
        let epoch = self.epoch().await?.unwrap_or_default();
        let old: Option<(String, usize)> = {
            let meta: std::collections::HashMap<String, String> =
                conn.hgetall(self.key("ckpt")).await?;
            meta.get("generation")
                .zip(meta.get("chunks").and_then(|c| c.parse().ok()))
                .map(|(g, c)| (g.clone(), c))
        };
        conn.hset_multiple::<_, _, _, ()>(
            self.key("ckpt"),
            &[
                ("generation", generation.clone()),
                ("chunks", count.to_string()),
                ("stream_id", stream_id.clone()),
                ("records", lines.len().to_string()),
                ("epoch", epoch),
            ],
        )
        .await?;
        if let Some((old, chunks)) = old.filter(|(g, _)| *g != generation) {
            let keys: Vec<String> = (0..chunks)
                .map(|i| self.key(&format!("ckpt:{old}:{i}")))
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

    /// Loads the checkpoint if there is a usable one: of the current epoch, and with the
    /// stream still holding every entry after it. Returns the stream id to tail from.
    async fn load_checkpoint(
        &self,
        consents: &Arc<Consents>,
    ) -> Result<Option<(String, usize)>, SharedError> {
        let mut conn = self.reader().await?;
        let meta: std::collections::HashMap<String, String> =
            conn.hgetall(self.key("ckpt")).await?;
        let (Some(generation), Some(chunks), Some(stream_id)) = (
            meta.get("generation"),
            meta.get("chunks").and_then(|c| c.parse::<usize>().ok()),
            meta.get("stream_id"),
        ) else {
            return Ok(None);
        };
        if meta.get("epoch").filter(|e| !e.is_empty()).cloned() != self.epoch().await? {
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
            .query_async(&mut conn)
            .await?;
        if let Some(oldest) = first.ids.first()
            && stream_id_after(&oldest.id, stream_id)
        {
            return Ok(None);
        }
        if let Some(records) = meta.get("records").and_then(|r| r.parse().ok()) {
            consents.records().reserve(records);
        }
        let mut pending = std::collections::VecDeque::new();
        let mut loaded = 0;
        for i in 0..chunks {
            let text: Option<String> = conn
                .get(self.key(&format!("ckpt:{generation}:{i}")))
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
                    loaded += done
                        .await
                        .map_err(|e| SharedError::Decode(e.to_string()))??;
                }
            }
        }
        for done in pending {
            loaded += done
                .await
                .map_err(|e| SharedError::Decode(e.to_string()))??;
        }
        Ok(Some((stream_id.clone(), loaded)))
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
    async fn reader(&self) -> Result<MultiplexedConnection, SharedError> {
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

    async fn follow_once(
        &self,
        consents: &Arc<Consents>,
        freshness: &Arc<Freshness>,
        shutdown: &CancellationToken,
        first_load: &mut bool,
    ) -> Result<(), SharedError> {
        let mut reader = self.reader().await?;
        'reload: loop {
            let epoch = self.epoch().await?;
            let (mut from, loaded) = self.load_snapshot(consents).await?;
            tracing::info!(
                records = loaded,
                "loaded the shared snapshot; following changes"
            );
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
                caught_up_at: at
                    .parse::<i64>()
                    .ok()
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
            cursor.caught_up_at.map_or(0, |t| t.timestamp_micros())
        );
        conn.set::<_, _, ()>(
            self.key(&format!("cursor:{}:{}", brand.brand_code, source.as_str())),
            text,
        )
        .await?;
        Ok(())
    }
}
