//! `iysgate keygen`: a new API key, its secret shown once, and the entries that configure it.

use crate::app::config::KeygenArgs;
use crate::auth;

/// Prints the secret and the `--client` flag and API-keys file entry of its digest.
///
/// # Errors
/// When the system's random source fails.
pub fn run(args: &KeygenArgs) -> Result<(), crate::cli::Error> {
    let secret = auth::generate_key()?;
    let digest = auth::to_hex(&auth::hash_key(&secret));
    let brands: Vec<String> = args.brands.iter().map(u32::to_string).collect();
    let quota = args
        .quota
        .filter(|q| *q > 0)
        .map(|q| (q, args.burst.unwrap_or(q).max(1)));
    println!("secret (shown once; give it to the client): {secret}");
    println!(
        "flag:   --client 'name={};sha256={digest};brands={}{}'",
        args.name,
        brands.join(","),
        quota.map_or(String::new(), |(q, b)| format!(";quota={q}/{b}"))
    );
    let grants: Vec<_> = args
        .brands
        .iter()
        .map(|b| serde_json::json!({ "brand_code": b }))
        .collect();
    let mut entry =
        serde_json::json!({ "name": args.name, "key_sha256": digest, "grants": grants });
    if let Some((per_second, burst)) = quota {
        entry["quota"] = serde_json::json!({ "per_second": per_second, "burst": burst });
    }
    println!("file:   {entry}");
    Ok(())
}
