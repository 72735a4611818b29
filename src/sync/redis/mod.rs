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

use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::check::Freshness;
use crate::check::store::Consents;
use crate::domain::recipient::normalise_recipient;
use crate::domain::time::{format_iys, parse_iys};
use crate::domain::{ConsentEvent, ConsentKey, Registration};

mod follow;
pub use follow::CheckpointMeta;
mod index_ckpt;
mod leader;
mod publish;

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
    #[error(transparent)]
    Open(#[from] crate::redis_client::OpenError),
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
    /// [`SharedState::connect_with_ca`] trusting the system's roots for `rediss://`.
    ///
    /// # Errors
    /// As [`SharedState::connect_with_ca`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SharedError> {
        Self::connect_with_ca(url, prefix, None).await
    }

    /// Connects to the shared state at `url` (see [`crate::redis_client::open`] for the URL
    /// and `ca_file`).
    ///
    /// # Errors
    /// A malformed URL, an unreadable CA file, an unreachable server, a refused TLS handshake
    /// or a refused `AUTH`.
    pub async fn connect_with_ca(
        url: &str,
        prefix: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, SharedError> {
        let client = crate::redis_client::open(url, ca_file)?;
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
}
