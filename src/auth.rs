//! API keys and what each may ask about. Keys are stored only as SHA-256 digests; the secret
//! is shown once, when it is made. Rule 1 of the check: a key must be granted the brand (and
//! the retailer, if one is named), or the answer is PERMISSION_DENIED, decided before any
//! record is looked at so it is the same whether or not a record exists.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::quota::RateLimiter;

/// Which retailers (bayi) a client may name for a brand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RetailerGrant {
    /// The client may not name a retailer for this brand.
    #[default]
    None,
    Any,
    Only(Vec<u32>),
}

/// A caller of the API.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    grants: FastMap<u32, RetailerGrant>,
    /// Decisions per second this client may ask for, shared by all its connections.
    pub quota: Option<Arc<RateLimiter>>,
    /// Calls of this client being worked on now (its share of `--max-in-flight`).
    in_flight: KeyInFlight,
    /// Calls admitted and refused since this process started, by client name.
    counts: Counted,
}

/// A client's calls and refusals since this process started, for the panel: one relaxed add
/// per call, shared by every `Client` of the same name (so they survive a reload of the keys).
#[derive(Debug, Default)]
pub struct CallCounts {
    pub calls: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
}

impl CallCounts {
    /// The counts of client `name` (made on first use; a reload of the keys, not a call).
    pub fn of(name: &str) -> Arc<CallCounts> {
        static ALL: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Arc<CallCounts>>>> =
            std::sync::OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(all.entry(name.to_owned()).or_default())
    }

    pub fn refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// [`CallCounts`] held by a client; not part of its identity.
#[derive(Debug, Clone)]
struct Counted(Arc<CallCounts>);

impl PartialEq for Counted {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Counted {}

/// A client's calls in flight, shared by every clone of the client (so by the keys served
/// before and after a reload of unchanged clients). Not part of the client's identity.
#[derive(Debug, Clone, Default)]
struct KeyInFlight(Arc<std::sync::atomic::AtomicUsize>);

impl PartialEq for KeyInFlight {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeyInFlight {}

impl Client {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            counts: Counted(CallCounts::of(&name)),
            name,
            grants: FastMap::default(),
            quota: None,
            in_flight: KeyInFlight::default(),
        }
    }

    /// This client's calls and refusals since the process started.
    pub fn counts(&self) -> &CallCounts {
        &self.counts.0
    }

    /// The counter of this client's calls in flight.
    pub fn in_flight(&self) -> &std::sync::atomic::AtomicUsize {
        &self.in_flight.0
    }

    #[must_use]
    pub fn with_quota(mut self, per_second: u32, burst: u32) -> Self {
        self.quota = Some(Arc::new(RateLimiter::new(per_second, burst)));
        self
    }

    #[must_use]
    pub fn grant(mut self, brand: u32, retailers: RetailerGrant) -> Self {
        self.grants.insert(brand, retailers);
        self
    }

    /// Rule 1: may this client ask about `brand` (through `retailer`)?
    pub fn may(&self, brand: u32, retailer: Option<u32>) -> bool {
        match (self.grants.get(&brand), retailer) {
            (Some(_), None) | (Some(RetailerGrant::Any), Some(_)) => true,
            (Some(RetailerGrant::Only(codes)), Some(r)) => codes.contains(&r),
            (None, _) | (Some(RetailerGrant::None), Some(_)) => false,
        }
    }

    pub fn brands(&self) -> impl Iterator<Item = u32> + '_ {
        self.grants.keys().copied()
    }
}

/// SHA-256 of a secret key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random API key (192 bits), `iysk_` followed by 48 hex digits.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("iysk_{}", to_hex(&bytes)))
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("reading API keys file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("API keys file: {0}")]
    Parse(String),
    #[error("API key of client {client:?}: key_sha256 must be 64 hex digits")]
    BadHash { client: String },
    #[error("API key of client {client:?} is listed twice")]
    Duplicate { client: String },
    #[error(
        "--client {0:?}: expected name=NAME;sha256=HEX;brands=CODE,CODE[;retailers=*|CODE,CODE][;quota=PER_SECOND[/BURST]]"
    )]
    BadFlag(String),
}

/// The configured keys, by digest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    by_hash: FastMap<[u8; 32], Arc<Client>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    clients: Vec<ClientEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    key_sha256: String,
    grants: Vec<GrantEntry>,
    #[serde(default)]
    quota: Option<QuotaEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaEntry {
    per_second: u32,
    /// Defaults to one second's worth.
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    brand_code: u32,
    #[serde(default)]
    retailers: Option<RetailersEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RetailersEntry {
    Any(String),
    Only(Vec<u32>),
}

impl ApiKeys {
    pub fn insert(&mut self, digest: [u8; 32], client: Client) -> Result<(), KeysError> {
        let name = client.name.clone();
        if self.by_hash.insert(digest, Arc::new(client)).is_some() {
            return Err(KeysError::Duplicate { client: name });
        }
        Ok(())
    }

    /// Reads the JSON keys file:
    /// `{"clients":[{"name":"sms-gw","key_sha256":"<hex>","grants":[{"brand_code":600001,"retailers":"*"}]}]}`
    /// (`retailers`: omitted = none may be named, `"*"` = any, or a list of codes).
    pub fn from_json(text: &str) -> Result<Self, KeysError> {
        let file: KeysFile =
            serde_json::from_str(text).map_err(|e| KeysError::Parse(e.to_string()))?;
        let mut keys = ApiKeys::default();
        for entry in file.clients {
            let digest = from_hex(&entry.key_sha256).ok_or_else(|| KeysError::BadHash {
                client: entry.name.clone(),
            })?;
            let mut client = Client::new(entry.name);
            for g in entry.grants {
                let retailers = match g.retailers {
                    None => RetailerGrant::None,
                    Some(RetailersEntry::Any(s)) if s == "*" => RetailerGrant::Any,
                    Some(RetailersEntry::Any(s)) => {
                        return Err(KeysError::Parse(format!(
                            "grants.retailers must be \"*\" or a list of codes, not {s:?}"
                        )));
                    }
                    Some(RetailersEntry::Only(codes)) => RetailerGrant::Only(codes),
                };
                client = client.grant(g.brand_code, retailers);
            }
            if let Some(q) = entry.quota {
                if q.per_second == 0 {
                    return Err(KeysError::Parse(format!(
                        "client {:?}: quota.per_second must be at least 1",
                        client.name
                    )));
                }
                client = client.with_quota(q.per_second, q.burst.unwrap_or(q.per_second));
            }
            keys.insert(digest, client)?;
        }
        Ok(keys)
    }

    pub fn from_path(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses a `--client` flag:
    /// `name=NAME;sha256=HEX;brands=CODE,CODE[;retailers=*|CODE,..][;quota=PER_SECOND[/BURST]]`.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), KeysError> {
        let bad = || KeysError::BadFlag(flag.to_owned());
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in flag.split(';') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            fields.insert(k.trim(), v.trim());
        }
        let name = fields.get("name").ok_or_else(bad)?;
        let digest = fields
            .get("sha256")
            .and_then(|h| from_hex(h))
            .ok_or_else(bad)?;
        let retailers = match fields.get("retailers") {
            None => RetailerGrant::None,
            Some(&"*") => RetailerGrant::Any,
            Some(list) => RetailerGrant::Only(parse_codes(list).ok_or_else(bad)?),
        };
        let mut client = Client::new(*name);
        for brand in parse_codes(fields.get("brands").ok_or_else(bad)?).ok_or_else(bad)? {
            client = client.grant(brand, retailers.clone());
        }
        if let Some(quota) = fields.get("quota") {
            let (rate, burst) = match quota.split_once('/') {
                Some((rate, burst)) => (rate, Some(burst)),
                None => (*quota, None),
            };
            let rate: u32 = rate.parse().ok().filter(|r| *r > 0).ok_or_else(bad)?;
            let burst: u32 = match burst {
                Some(b) => b.parse().ok().filter(|b| *b > 0).ok_or_else(bad)?,
                None => rate,
            };
            client = client.with_quota(rate, burst);
        }
        self.insert(digest, client)
    }

    /// The client a presented secret belongs to.
    pub fn authenticate(&self, secret: &str) -> Option<&Arc<Client>> {
        self.by_hash.get(&hash_key(secret))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn parse_codes(list: &str) -> Option<Vec<u32>> {
    list.split(',').map(|c| c.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_decide_brand_and_retailer() {
        let c = Client::new("gw")
            .grant(1, RetailerGrant::None)
            .grant(2, RetailerGrant::Any)
            .grant(3, RetailerGrant::Only(vec![10, 11]));
        assert!(c.may(1, None));
        assert!(!c.may(1, Some(10)));
        assert!(c.may(2, Some(99)));
        assert!(c.may(3, Some(11)));
        assert!(!c.may(3, Some(12)));
        assert!(!c.may(4, None));
    }

    #[test]
    fn keys_file_is_stored_hashed_and_authenticates() {
        let secret = generate_key().unwrap();
        let text = format!(
            r#"{{"clients":[{{"name":"gw","key_sha256":"{}","grants":[{{"brand_code":600001,"retailers":"*"}},{{"brand_code":600002,"retailers":[12345678]}}]}}]}}"#,
            to_hex(&hash_key(&secret))
        );
        let keys = ApiKeys::from_json(&text).unwrap();
        let client = keys.authenticate(&secret).unwrap();
        assert_eq!(client.name, "gw");
        assert!(client.may(600001, Some(1)));
        assert!(client.may(600002, Some(12_345_678)));
        assert!(!client.may(600002, Some(1)));
        assert!(keys.authenticate("iysk_wrong").is_none());
        assert!(!text.contains(&secret), "the file holds only the digest");
    }

    #[test]
    fn keys_file_errors_name_the_problem() {
        let err =
            ApiKeys::from_json(r#"{"clients":[{"name":"gw","key_sha256":"zz","grants":[]}]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("key_sha256"), "{err}");
        let err =
            ApiKeys::from_json(r#"{"clients":[{"name":"gw","key":"x","grants":[]}]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn client_flag_parses() {
        let digest = to_hex(&hash_key("s3cret"));
        let mut keys = ApiKeys::default();
        keys.add_flag(&format!("name=ops;sha256={digest};brands=1,2;retailers=5"))
            .unwrap();
        let c = keys.authenticate("s3cret").unwrap();
        assert!(c.may(2, Some(5)) && !c.may(2, Some(6)) && !c.may(3, None));
        assert!(keys.add_flag("name=x;brands=1").is_err());
        assert!(
            keys.add_flag(&format!("name=dup;sha256={digest};brands=1"))
                .is_err()
        );
    }

    #[test]
    fn quotas_parse_from_flag_and_file() {
        let digest = to_hex(&hash_key("a"));
        let mut keys = ApiKeys::default();
        keys.add_flag(&format!("name=a;sha256={digest};brands=1;quota=500/50"))
            .unwrap();
        let q = keys.authenticate("a").unwrap().quota.clone().unwrap();
        assert_eq!((q.per_second(), q.burst()), (500, 50));
        let other = to_hex(&hash_key("b"));
        for bad in ["quota=0", "quota=x", "quota=10/0"] {
            let err = keys
                .add_flag(&format!("name=b;sha256={other};brands=1;{bad}"))
                .unwrap_err();
            assert!(err.to_string().contains("quota=PER_SECOND"), "{err}");
        }
        let text = format!(
            r#"{{"clients":[{{"name":"c","key_sha256":"{other}","grants":[],"quota":{{"per_second":20}}}}]}}"#
        );
        let keys = ApiKeys::from_json(&text).unwrap();
        let q = keys.authenticate("b").unwrap().quota.clone().unwrap();
        assert_eq!(
            (q.per_second(), q.burst()),
            (20, 20),
            "burst defaults to a second's worth"
        );
        let err = ApiKeys::from_json(&text.replace("20", "0")).unwrap_err();
        assert!(err.to_string().contains("quota.per_second"), "{err}");
    }
}
