//! The bulk path: batch add (v2) of at most `batch_size` items per brand, repaired after a
//! 422 whole-batch refusal, and its results polled no sooner than `poll_delay` after İYS
//! accepted it (API-NOTES §5.3, §5.4).
//!
//! A batch holds at most one event per key (İYS refuses a repeated key with H194, and
//! advises single add for consecutive changes): the later events of a key are sent by
//! single add once the batch is settled, behind their key's order.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::answer::{self, Reading, Verdict};
use super::{Uploader, bump, key_of, no_client, order};
use crate::iys::client::{BatchItemResult, BatchItemStatus, ErrorItem, IysClient, IysError};
use crate::write::evidence::Claim;

/// Where a batch submission ended.
enum Submitted {
    /// İYS accepted these items (in this order) under `request_id`.
    Accepted {
        request_id: String,
        items: Vec<Claim>,
    },
    /// Nothing is left to poll: every item was answered (or handed back).
    Done,
}

impl Uploader {
    /// Uploads a bulk claim: a batch per brand, then the later events of its keys.
    pub(super) async fn upload_bulk(&self, claims: Vec<Claim>, shutdown: &CancellationToken) {
        let mut by_brand: BTreeMap<u32, Vec<Claim>> = BTreeMap::new();
        for claim in claims {
            by_brand
                .entry(claim.event.event.brand)
                .or_default()
                .push(claim);
        }
        for (brand, claims) in by_brand {
            let (first, later) = first_per_key(claims);
            for chunk in chunks(first, self.inner.config.batch_size) {
                self.upload_batch(brand, chunk, shutdown).await;
            }
            if !later.is_empty() {
                self.upload_singles(later, shutdown).await;
            }
        }
    }

    /// One batch from submission to recorded results.
    async fn upload_batch(&self, brand: u32, items: Vec<Claim>, shutdown: &CancellationToken) {
        let Some((client, iys_code)) = self.client_for(brand).await else {
            for claim in &items {
                let answer = self.answer(no_client(brand), claim.attempt);
                self.finish(claim, answer).await;
            }
            return;
        };
        let (request_id, items) = match self.submit(&client, iys_code, brand, items, shutdown).await
        {
            Submitted::Accepted { request_id, items } => (request_id, items),
            Submitted::Done => return,
        };
        bump(&self.inner.counters.batches);
        metrics::counter!("iysgate_upload_batches_total").increment(1);
        tracing::info!(brand, items = items.len(), "İYS accepted a batch");
        let accepted_at = Instant::now();
        let config = &self.inner.config;
        let give_up = accepted_at + config.poll_delay + config.batch_wait;
        let mut next_poll = accepted_at + config.poll_delay;
        loop {
            tokio::select! {
                // Left to the leases: a re-send points to this batch's results.
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_poll) => {}
            }
            self.inner.pacer.wait().await;
            bump(&self.inner.counters.polls);
            match client
                .poll_batch(iys_code, u64::from(brand), &request_id)
                .await
            {
                Ok(results) if is_complete(&results) => {
                    return self
                        .record_results(&client, iys_code, &items, &results)
                        .await;
                }
                Ok(_) => tracing::debug!(brand, "batch not processed yet"),
                Err(e) if e.is_transient() => {
                    tracing::warn!(brand, error = %e, "polling a batch failed; polling again");
                }
                Err(e) => {
                    // The batch cannot be read back: send its items again (v2 points an
                    // item İYS already stored to the original).
                    let reading = answer::read_error(&e);
                    return self.retry_all(&items, &reading).await;
                }
            }
            next_poll = Instant::now() + config.poll_interval;
            if next_poll > give_up {
                tracing::warn!(
                    brand,
                    "batch not processed in time; its items are sent again"
                );
                let reading = Reading {
                    http_status: None,
                    verdict: Verdict::Retry {
                        code: None,
                        message: "batch results not ready within batch_wait".into(),
                        after: None,
                        account: false,
                    },
                };
                return self.retry_all(&items, &reading).await;
            }
        }
    }

    /// Submits a batch until İYS accepts what is left of it. A 422 that names items by
    /// index rejects exactly those and the rest goes again; any other refusal of the whole
    /// batch falls back to single add, which answers item by item; a transient failure
    /// retries every item later.
    async fn submit(
        &self,
        client: &IysClient,
        iys_code: u64,
        brand: u32,
        mut items: Vec<Claim>,
        shutdown: &CancellationToken,
    ) -> Submitted {
        loop {
            if items.is_empty() {
                return Submitted::Done;
            }
            if shutdown.is_cancelled() {
                for claim in &items {
                    self.hand_back(claim).await;
                }
                return Submitted::Done;
            }
            let requests: Vec<_> = items
                .iter()
                .map(|c| answer::consent_request(&c.event.event))
                .collect();
            self.inner.pacer.wait().await;
            let error = match client
                .add_consents_batch(iys_code, u64::from(brand), &requests)
                .await
            {
                Ok(accepted) => {
                    return Submitted::Accepted {
                        request_id: accepted.request_id,
                        items,
                    };
                }
                Err(e) => e,
            };
            match &error {
                IysError::Business {
                    status: 422,
                    errors,
                } if !errors.is_empty()
                    && errors.iter().all(|e| e.index.is_some())
                    && errors.iter().all(answer::refuses_item) =>
                {
                    bump(&self.inner.counters.batch_repairs);
                    items = self.drop_refused(items, errors).await;
                }
                e if answer::read_error(e).verdict.is_retry() => {
                    self.retry_all(&items, &answer::read_error(e)).await;
                    return Submitted::Done;
                }
                e => {
                    tracing::warn!(brand, error = %e, "İYS refused a whole batch; sending its items one by one");
                    let permits = Semaphore::new(self.inner.config.concurrency);
                    for claim in &items {
                        self.upload_one(claim, &permits, shutdown).await;
                    }
                    return Submitted::Done;
                }
            }
        }
    }

    /// Records the items a 422 names as rejected with their codes; the others, in order.
    async fn drop_refused(&self, items: Vec<Claim>, errors: &[ErrorItem]) -> Vec<Claim> {
        let mut refused: BTreeMap<usize, Vec<ErrorItem>> = BTreeMap::new();
        for error in errors {
            if let Some(index) = error.index.map(|i| i as usize).filter(|i| *i < items.len()) {
                refused.entry(index).or_default().push(error.clone());
            }
        }
        if refused.is_empty() {
            // Indexes that match nothing: do not loop on the same batch; go item by item
            // through the single path on the next round.
            let reading = Reading {
                http_status: Some(422),
                verdict: Verdict::Retry {
                    code: errors.first().map(|e| e.code.clone()),
                    message: "batch refused with indexes outside it".into(),
                    after: None,
                    account: false,
                },
            };
            self.retry_all(&items, &reading).await;
            return Vec::new();
        }
        tracing::info!(
            refused = refused.len(),
            "İYS refused batch items; sending the rest again"
        );
        let mut kept = Vec::with_capacity(items.len() - refused.len());
        for (index, claim) in items.into_iter().enumerate() {
            match refused.get(&index) {
                Some(errors) => {
                    let reading = Reading {
                        http_status: Some(422),
                        verdict: Verdict::Rejected {
                            code: errors[0].code.clone(),
                            message: answer::describe(errors),
                        },
                    };
                    let answer = self.answer(reading, claim.attempt);
                    self.finish(&claim, answer).await;
                }
                None => kept.push(claim),
            }
        }
        kept
    }

    /// Records a processed batch's results, item by item.
    async fn record_results(
        &self,
        client: &IysClient,
        iys_code: u64,
        items: &[Claim],
        results: &[BatchItemResult],
    ) {
        let by_index: HashMap<usize, &BatchItemResult> =
            results.iter().map(|r| (r.index as usize, r)).collect();
        for (index, claim) in items.iter().enumerate() {
            let verdict = match by_index.get(&index) {
                Some(r) if r.status == BatchItemStatus::Success => {
                    match (r.transaction_id.clone(), r.creation_date.clone()) {
                        (Some(transaction_id), Some(creation_date)) => Verdict::Registered {
                            transaction_id,
                            creation_date,
                        },
                        _ => missing("a success without transactionId or creationDate"),
                    }
                }
                Some(r) if r.status == BatchItemStatus::Failure => {
                    answer::read_item_error(r.error.as_ref())
                }
                Some(_) => missing("an item still queued in a processed batch"),
                None => missing("no result for the item"),
            };
            let reading = Reading {
                http_status: Some(200),
                verdict,
            };
            let reading = self
                .settle_same_status(client, iys_code, claim, reading)
                .await;
            let answer = self.answer(reading, claim.attempt);
            self.finish(claim, answer).await;
        }
    }

    async fn retry_all(&self, items: &[Claim], reading: &Reading) {
        for claim in items {
            let answer = self.answer(reading.clone(), claim.attempt);
            self.finish(claim, answer).await;
        }
    }
}

impl Verdict {
    fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry { .. })
    }
}

fn missing(what: &str) -> Verdict {
    Verdict::Retry {
        code: None,
        message: format!("batch results: {what}"),
        after: None,
        account: false,
    }
}

/// Processed when İYS answered something and nothing is still queued (an empty answer
/// means "not yet", never "failed").
fn is_complete(results: &[BatchItemResult]) -> bool {
    !results.is_empty()
        && results.iter().all(|r| {
            matches!(
                r.status,
                BatchItemStatus::Success | BatchItemStatus::Failure
            )
        })
}

/// The first event of each key (in key order), and the later ones.
fn first_per_key(mut claims: Vec<Claim>) -> (Vec<Claim>, Vec<Claim>) {
    claims.sort_by_key(|c| order::rank(c.event.id, &c.event.event));
    let mut seen = HashSet::new();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for claim in claims {
        if seen.insert(key_of(&claim.event.event)) {
            first.push(claim);
        } else {
            later.push(claim);
        }
    }
    // Earliest deadline first within the batches, as claimed.
    first.sort_by_key(|c| (c.event.upload.deadline, c.event.id));
    (first, later)
}

fn chunks(items: Vec<Claim>, size: usize) -> Vec<Vec<Claim>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size.max(1)));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(size.max(1)).collect());
    }
    out
}
