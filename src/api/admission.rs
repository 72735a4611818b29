//! Who may call and whether the server takes the call now: the API key (verified once, then
//! remembered by a keyed hash), rule 1's grants, the queue-delay bound, the server's and the
//! key's slots, and the key's quota. Everything here is decided before any record is read.

use crate::auth::{ApiKeys, Client};
use crate::telemetry::{Metrics, Shed};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::{Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{API_KEY_HEADER, ConsentService};

/// When the listener accepted the call's stream (a request extension on every gRPC call),
/// before the call waited for a worker thread or its body: the start of its queueing.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// Limits that keep one caller from taking the server down, and one tenant from taking the
/// others' share.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls being worked on across all connections; past it new calls get RESOURCE_EXHAUSTED
    /// at once instead of queueing. A Filter stream counts only while a chunk of it is being
    /// answered, never while it waits for the client.
    pub max_in_flight: usize,
    /// The same, per API key: one tenant can hold at most this share of `max_in_flight`.
    pub max_in_flight_per_key: usize,
    /// A call that waited longer than this between its arrival (hyper accepting its stream)
    /// and the start of its work is refused with RESOURCE_EXHAUSTED instead of being answered
    /// late: above capacity callers get a fast refusal and the answered calls keep their
    /// latency. Zero turns it off.
    pub max_queue_delay: Duration,
    /// How long a call refused by its client's quota is held before the refusal is sent (never
    /// past the call's deadline). A client calling again at once, whatever the RetryInfo says,
    /// is slowed to its in-flight calls per hold instead of spending the server's CPU on
    /// refusals; held calls do not count against `max_in_flight`.
    pub quota_hold: Duration,
}

/// Keys already verified, by a 128-bit keyed SipHash of the presented secret (a PRF under a
/// random per-process key, so no one can aim a collision): a repeat caller costs ~20 ns
/// instead of a SHA-256. Only keys that verified are cached; the secret itself is not kept.
pub(crate) struct VerifiedKeys {
    hasher_key: (u64, u64),
    map: arc_swap::ArcSwap<
        std::collections::HashMap<u128, Arc<Client>, foldhash::fast::RandomState>,
    >,
}

impl VerifiedKeys {
    /// Enough for every client of a deployment; past it the cache starts over.
    const MAX: usize = 10_000;

    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 16];
        // Without OS randomness the cache stays correct (it only maps verified keys); the key
        // merely becomes predictable.
        let _ = getrandom::fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        Self {
            hasher_key: (
                u64::from_le_bytes(a.try_into().expect("8 bytes")),
                u64::from_le_bytes(b.try_into().expect("8 bytes")),
            ),
            map: arc_swap::ArcSwap::from_pointee(std::collections::HashMap::default()),
        }
    }

    pub(crate) fn id(&self, secret: &str) -> u128 {
        use std::hash::Hasher;
        let mut h =
            siphasher::sip128::SipHasher13::new_with_keys(self.hasher_key.0, self.hasher_key.1);
        h.write(secret.as_bytes());
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }

    pub(crate) fn get(&self, id: u128) -> Option<Arc<Client>> {
        self.map.load().get(&id).cloned()
    }

    pub(crate) fn clear(&self) {
        self.map.store(Arc::default());
    }

    pub(crate) fn insert(&self, id: u128, client: &Arc<Client>) {
        self.map.rcu(|map| {
            let mut next = if map.len() >= Self::MAX {
                std::collections::HashMap::default()
            } else {
                (**map).clone()
            };
            next.insert(id, Arc::clone(client));
            next
        });
    }
}

/// The API key a request presents (`x-api-key`, or `authorization: Bearer`).
pub(crate) fn presented_key<T>(request: &Request<T>) -> Option<&str> {
    let md = request.metadata();
    md.get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            md.get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}

/// The refusal of a call that waited `waited` for its work to start.
pub(crate) fn overloaded(waited: Duration) -> Status {
    Status::resource_exhausted(format!(
        "server overloaded: the call waited {} ms before it could be worked on; retry with backoff",
        waited.as_millis()
    ))
}

/// How long a call waited since its arrival, when that is more than `max` (zero: no limit).
pub(crate) fn waited_too_long(arrival: Option<&Arrival>, max: Duration) -> Option<Duration> {
    let Arrival(at) = arrival?;
    let waited = at.elapsed();
    (!max.is_zero() && waited > max).then_some(waited)
}

/// A slot of the server's (`server`) and of the key's calls in flight, or RESOURCE_EXHAUSTED.
pub(crate) fn take_slot<'a>(
    server: &'a AtomicUsize,
    client: &'a Client,
    limits: &Limits,
    metrics: &Metrics,
) -> Result<InFlight<'a>, Status> {
    let (slot, in_server, in_key) = InFlight::take(server, client.in_flight());
    if in_server > limits.max_in_flight {
        metrics.shed(Shed::Capacity);
        return Err(Status::resource_exhausted(
            "server at capacity; retry with backoff",
        ));
    }
    if in_key > limits.max_in_flight_per_key {
        metrics.shed(Shed::KeyCapacity);
        return Err(Status::resource_exhausted(format!(
            "this API key has {} calls in flight, its share of the server; retry with backoff",
            limits.max_in_flight_per_key
        )));
    }
    Ok(slot)
}

/// A call counted in flight, in the server's count and its API key's, until dropped.
pub(crate) struct InFlight<'a> {
    server: &'a AtomicUsize,
    key: &'a AtomicUsize,
}

impl<'a> InFlight<'a> {
    /// Counts a call in both; returns the counts including it.
    fn take(server: &'a AtomicUsize, key: &'a AtomicUsize) -> (Self, usize, usize) {
        let in_server = server.fetch_add(1, Ordering::AcqRel) + 1;
        let in_key = key.fetch_add(1, Ordering::AcqRel) + 1;
        (Self { server, key }, in_server, in_key)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.server.fetch_sub(1, Ordering::AcqRel);
        self.key.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn permission(client: &Client, brand: u32, retailer: Option<u32>) -> Result<(), Status> {
    if client.may(brand, retailer) {
        Ok(())
    } else {
        client.counts().refused();
        // The same answer whether or not any record exists: nothing has been looked up yet.
        Err(Status::permission_denied(
            "API key is not granted this brand or retailer",
        ))
    }
}

/// The caller's deadline from the `grpc-timeout` header. tonic enforces it for the response
/// headers of every call; a Filter stream lives longer than that, so it is enforced here too.
pub(crate) fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    grpc_timeout_header(md.as_ref())
}

/// The `grpc-timeout` header's duration (`<digits><unit>`), if well formed.
pub(crate) fn grpc_timeout_header(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

impl ConsentService {
    /// Admits a call of `client` to be worked on now, or refuses it with RESOURCE_EXHAUSTED:
    /// it waited too long already (`max_queue_delay`, from the [`Arrival`] stamped by the
    /// listener), the server is at `max_in_flight`, or this API key at its share.
    pub(crate) fn admit<'a, T>(
        &'a self,
        request: &Request<T>,
        client: &'a Client,
    ) -> Result<InFlight<'a>, Status> {
        client.counts().calls.fetch_add(1, Ordering::Relaxed);
        if let Some(waited) =
            waited_too_long(request.extensions().get(), self.limits.max_queue_delay)
        {
            self.metrics.shed(Shed::QueueDelay);
            client.counts().refused();
            return Err(overloaded(waited));
        }
        take_slot(&self.in_flight, client, &self.limits, &self.metrics)
            .inspect_err(|_| client.counts().refused())
    }

    /// Takes `n` decisions from the client's quota, or refuses the call with
    /// RESOURCE_EXHAUSTED and a RetryInfo saying when it would fit, after holding it for
    /// [`Limits::quota_hold`] (within the call's deadline) without its in-flight slot.
    pub(crate) async fn charge<T>(
        &self,
        client: &Client,
        n: usize,
        request: &Request<T>,
        slot: &mut Option<InFlight<'_>>,
    ) -> Result<(), Status> {
        let Err(refusal) = self.quota_refusal(client, n) else {
            return Ok(());
        };
        let hold = grpc_timeout(request.metadata()).map_or(self.limits.quota_hold, |t| {
            self.limits
                .quota_hold
                .min(t.saturating_sub(Duration::from_millis(5)))
        });
        if !hold.is_zero() {
            slot.take();
            tokio::time::sleep(hold).await;
        }
        Err(refusal)
    }

    fn quota_refusal(&self, client: &Client, n: usize) -> Result<(), Status> {
        let Some(quota) = &client.quota else {
            return Ok(());
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match quota.try_take(n, Instant::now()) {
            Ok(()) => Ok(()),
            Err(wait) => {
                client.counts().refused();
                self.metrics.quota_exceeded(&client.name);
                let message = match wait {
                    Some(_) => format!(
                        "quota of {} decisions/s for this API key exceeded; retry later",
                        quota.per_second()
                    ),
                    None => format!(
                        "{n} decisions in one call exceed this API key's burst of {}; send smaller batches",
                        quota.burst()
                    ),
                };
                let mut details = ErrorDetails::new();
                if let Some(wait) = wait {
                    details.set_retry_info(Some(wait));
                }
                Err(Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    message,
                    details,
                ))
            }
        }
    }

    /// Serves `keys` from the next call on (clients added, granted or revoked). Keys verified
    /// earlier are forgotten, so a revoked grant stops at once.
    pub fn replace_keys(&self, keys: Arc<ApiKeys>) {
        self.keys.store(keys);
        self.verified.clear();
    }

    pub(crate) fn client<T>(&self, request: &Request<T>) -> Result<Arc<Client>, Status> {
        let secret = presented_key(request)
            .ok_or_else(|| Status::unauthenticated("missing API key (x-api-key metadata)"))?;
        let id = self.verified.id(secret);
        if let Some(client) = self.verified.get(id) {
            return Ok(client);
        }
        let keys = self.keys.load_full();
        let client = keys
            .authenticate(secret)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))?;
        self.verified.insert(id, &client);
        // Keys replaced meanwhile: what was just cached may be stale (a revoked grant).
        if !Arc::ptr_eq(&keys, &self.keys.load()) {
            self.verified.clear();
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(server: usize, key: usize) -> Limits {
        Limits {
            max_in_flight: server,
            max_in_flight_per_key: key,
            max_queue_delay: Duration::ZERO,
            quota_hold: Duration::ZERO,
        }
    }

    #[test]
    fn a_key_at_its_share_is_shed_while_another_key_is_admitted() {
        let metrics = Metrics::register();
        let server = AtomicUsize::new(0);
        let (a, b) = (Client::new("a"), Client::new("b"));
        let limits = limits(3, 2);
        let a1 = take_slot(&server, &a, &limits, &metrics).unwrap();
        let a2 = take_slot(&server, &a, &limits, &metrics).unwrap();
        let refused = take_slot(&server, &a, &limits, &metrics).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("API key"),
            "{}",
            refused.message()
        );
        // The refused call left no count behind.
        assert_eq!(server.load(Ordering::Acquire), 2);
        assert_eq!(a.in_flight().load(Ordering::Acquire), 2);
        let b1 = take_slot(&server, &b, &limits, &metrics).unwrap();
        // The server is full now: b is refused for the server's capacity, not its own.
        let full = take_slot(&server, &b, &limits, &metrics).err().unwrap();
        assert!(
            full.message().contains("server at capacity"),
            "{}",
            full.message()
        );
        drop((a1, b1));
        assert_eq!(server.load(Ordering::Acquire), 1);
        take_slot(&server, &b, &limits, &metrics).unwrap();
        drop(a2);
        assert_eq!(a.in_flight().load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_call_that_waited_past_the_queue_delay_is_shed() {
        let max = Duration::from_millis(100);
        let late = Arrival(
            Instant::now()
                .checked_sub(Duration::from_millis(250))
                .unwrap(),
        );
        let waited = waited_too_long(Some(&late), max).unwrap();
        assert!(waited >= Duration::from_millis(250));
        assert_eq!(waited_too_long(Some(&Arrival(Instant::now())), max), None);
        assert_eq!(
            waited_too_long(Some(&late), Duration::ZERO),
            None,
            "0 turns it off"
        );
        assert_eq!(
            waited_too_long(None, max),
            None,
            "a call the listener did not stamp"
        );
    }

    #[test]
    fn the_grpc_timeout_header_reads_every_unit() {
        let mut headers = http::HeaderMap::new();
        for (text, expected) in [
            ("2H", Duration::from_hours(2)),
            ("3M", Duration::from_mins(3)),
            ("4S", Duration::from_secs(4)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            headers.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout_header(&headers), Some(expected), "{text}");
        }
        for bad in ["", "S", "10x", "-1S"] {
            headers.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout_header(&headers), None, "{bad:?}");
        }
    }
}
