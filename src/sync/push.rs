//! The receiver of İYS's push webhook: İYS POSTs `{"list":[…]}` of recipient-side changes to a
//! registered HTTPS URL with HTTP Basic auth. A delivery is stored in Redis (`{p}:push`)
//! before it is acknowledged, so any sync instance may receive it and nothing acknowledged is
//! lost; the sync leader drains the inbox at the start of every pass and applies the changes
//! exactly like pulled ones. The pull stays the source of truth: push only makes a RET reach
//! the replicas sooner.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sync::redis::SharedState;
use crate::sync::types::Change;

/// The recipient of the fixed test payload İYS sends when a URL is registered.
const TEST_RECIPIENT: &str = "pushtest@iys.org.tr";

#[derive(Deserialize)]
struct Payload {
    list: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    brand_code: u64,
    #[serde(default)]
    consent_date: Option<String>,
    creation_date: String,
    source: String,
    recipient: String,
    #[serde(default)]
    recipient_type: Option<String>,
    status: String,
    #[serde(rename = "type")]
    channel: String,
    transaction_id: String,
}

struct Receiver {
    shared: SharedState,
    /// SHA-256 of `username:password`, compared in constant time.
    credentials: [u8; 32],
}

/// The webhook's router: `POST /iys/push`.
pub fn router(shared: SharedState, username: &str, password: &str) -> axum::Router {
    let credentials = Sha256::digest(format!("{username}:{password}").as_bytes()).into();
    axum::Router::new()
        .route("/iys/push", post(receive))
        .with_state(Arc::new(Receiver {
            shared,
            credentials,
        }))
}

fn authorised(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    use base64_decode::decode;
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Some(plain) = decode(encoded.trim()) else {
        return false;
    };
    let got: [u8; 32] = Sha256::digest(&plain).into();
    // Constant time over the digests: no early exit on the first differing byte.
    bool::from(got.ct_eq(expected))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    if !authorised(&headers, &receiver.credentials) {
        return (StatusCode::UNAUTHORIZED, "bad credentials");
    }
    let Ok(payload) = serde_json::from_slice::<Payload>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not {\"list\":[…]}");
    };
    let changes: Vec<(u32, Change)> = payload
        .list
        .into_iter()
        .filter(|item| item.recipient != TEST_RECIPIENT)
        .filter_map(|item| {
            let brand = u32::try_from(item.brand_code).ok()?;
            Some((
                brand,
                Change {
                    recipient: item.recipient,
                    recipient_type: item.recipient_type.unwrap_or_default(),
                    channel: item.channel,
                    status: item.status,
                    source: item.source,
                    consent_date: item.consent_date,
                    creation_date: item.creation_date,
                    transaction_id: item.transaction_id,
                },
            ))
        })
        .collect();
    match receiver.shared.push_inbox(&changes).await {
        Ok(()) => {
            metrics::counter!("iysgate_push_changes_total").increment(changes.len() as u64);
            (StatusCode::OK, "")
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a push delivery; İYS must send it again");
            (StatusCode::SERVICE_UNAVAILABLE, "not stored")
        }
    }
}

/// Standard base64 (RFC 4648) for the Basic auth header, padding optional (some clients drop
/// it).
mod base64_decode {
    use base64::Engine as _;
    use base64::alphabet::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        ENGINE.decode(text).ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn decodes_basic_credentials() {
            assert_eq!(super::decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
            assert_eq!(super::decode("YQ==").unwrap(), b"a");
            assert_eq!(super::decode("YWI=").unwrap(), b"ab");
            assert!(super::decode("a!==").is_none());
        }
    }
}
