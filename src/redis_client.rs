//! Opening a Redis client: the one place every Redis connection of the process starts from
//! (the shared state, the İYS token store), so TLS and its CA apply to all of them. A leaf: it
//! knows URLs and certificates, nothing of what is stored. It must never put the URL, which may
//! carry a password, into an error or a log.

use std::path::{Path, PathBuf};

/// Why a Redis client could not be opened. Neither variant shows the URL: redis-rs's own
/// errors for a malformed URL say only that it did not parse.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The `--redis-ca-file` could not be read (its path is not a secret).
    #[error("redis CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Opens a client of the Redis at `url`: `redis://` in plain text or `rediss://` over TLS
/// (the host name is checked against the certificate), with `user:password@` for an ACL user
/// (`AUTH user password` is sent on every connection). With `ca_file` (PEM), a `rediss://`
/// server's certificate must chain to that CA instead of the system's roots: a private CA, as
/// managed Redis services and in-cluster deployments use.
///
/// # Errors
/// An unreadable CA file or a malformed URL.
pub fn open(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, OpenError> {
    let Some(path) = ca_file else {
        return Ok(redis::Client::open(url)?);
    };
    let root_cert = std::fs::read(path).map_err(|source| OpenError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    Ok(redis::Client::build_with_tls(url, certs)?)
}
