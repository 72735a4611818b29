//! The accounts kept in the evidence store that a serving process and the Admin service both
//! need: providers and brands registered once, and the API keys a process answers (those of
//! flags and files plus the stored clients).

use crate::auth::{ApiKeys, KeysError};
use crate::write::evidence::{Brand, EvidenceError, EvidenceStore, Provider};

/// Why the served keys could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ServedKeysError {
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// A stored client's key is also given by a flag or file (the client is named).
    #[error(transparent)]
    Keys(#[from] KeysError),
}

/// The keys a serving process answers: those of flags and files (`base`) and the API clients
/// kept in the evidence store. A key present in both refuses, naming the client.
pub async fn served_keys(
    base: &ApiKeys,
    store: &EvidenceStore,
) -> Result<ApiKeys, ServedKeysError> {
    let mut keys = base.clone();
    for client in store.clients().await? {
        keys.insert(client.key_sha256, client.to_auth())?;
    }
    Ok(keys)
}

/// Registers provider `iys_code` unless it is already there.
pub async fn ensure_provider(
    store: &EvidenceStore,
    iys_code: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), EvidenceError> {
    let provider = Provider {
        iys_code,
        name: format!("provider {iys_code}"),
        credentials_ref: "env:IYSGATE_IYS_PASSWORD".into(),
    };
    match store.add_provider(&provider, now).await {
        Ok(()) | Err(EvidenceError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Registers `brands` of provider `iys_code` unless already there.
pub async fn ensure_brands(
    store: &EvidenceStore,
    iys_code: u32,
    brands: &[(u32, &str, crate::domain::BrandPolicy)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), EvidenceError> {
    ensure_provider(store, iys_code, now).await?;
    for &(brand_code, name, policy) in brands {
        let brand = Brand {
            brand_code,
            iys_code,
            name: name.to_owned(),
            policy,
        };
        match store.add_brand(&brand, now).await {
            Ok(()) | Err(EvidenceError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds `brand`, registering its provider first when missing: what the Admin service's
/// AddBrand and the panel's brand form both do.
///
/// # Errors
/// [`EvidenceError::AlreadyExists`] for a brand code already registered, or a store failure.
pub async fn add_brand(
    store: &EvidenceStore,
    brand: &Brand,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), EvidenceError> {
    ensure_provider(store, brand.iys_code, now).await?;
    store.add_brand(brand, now).await
}

/// Stores `brand`'s policy and applies it to this replica's checks at once (the other brands'
/// policies stay as they are).
///
/// # Errors
/// [`EvidenceError::UnknownBrand`], or a store failure (nothing is applied then).
pub async fn set_brand_policy(
    store: &EvidenceStore,
    checker: &crate::check::Checker,
    brand: u32,
    policy: crate::domain::BrandPolicy,
) -> Result<(), EvidenceError> {
    store.set_brand_policy(brand, policy).await?;
    let mut policies = checker.policies();
    policies.retain(|(b, _)| *b != brand);
    policies.push((brand, policy));
    checker.set_policies(policies);
    Ok(())
}
