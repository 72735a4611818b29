//! Every writer's publish into the shared state: one record or many, each only if newer
//! than what Redis holds (the Lua script of `mod.rs`), the replicas' republish after a reload,
//! and the leader's heartbeat on the change stream.

use chrono::{DateTime, Utc};

use crate::check::store::Consents;
use crate::domain::{ConsentKey, ConsentRecord};

use super::{SCRIPT_BATCH, STREAM_MAXLEN, SharedError, SharedState, field, stored_value};

impl SharedState {
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

    pub(super) async fn republish_where(
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
}
