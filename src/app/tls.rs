//! TLS for every listener (gRPC, metrics, the push receiver): the server certificate and key,
//! optionally a CA whose client certificates are required (mTLS), re-read when the files
//! change so a rotated certificate (a Kubernetes Secret updated in place, cert-manager) is
//! served to new connections without a restart. Connections already open keep the
//! certificate they were made with. A file that cannot be read or parsed keeps the previous
//! configuration and says so in the log; at start the same failure stops the process.
//!
//! Never logs key material; errors name the file, not its content.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the certificate, its key and (for mTLS) the client CA are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, every client must present a certificate they signed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM {what} found")]
    Empty { path: String, what: &'static str },
    #[error("{path}: not a valid PEM {what}")]
    Pem { path: String, what: &'static str },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A server TLS configuration kept current with its files.
pub struct ReloadingTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<ServerConfig>,
    stamp: std::sync::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Loads the files; `alpn` lists the protocols offered (`h2` for gRPC: gRPC clients
    /// refuse a TLS server that does not select it).
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = build(&files, &alpn)?;
        let stamp = stamps(&files);
        Ok(Self {
            files,
            alpn,
            current: ArcSwap::from_pointee(config),
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    /// The configuration for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Whether the client CA is set (mTLS).
    pub fn requires_client_certificate(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files if any changed since the last load (modification time or size).
    /// Returns whether a new configuration is served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let mut last = self.stamp.lock().expect("stamp lock is never poisoned");
        if *last == now {
            return Ok(false);
        }
        let config = build(&self.files, &self.alpn)?;
        self.current.store(Arc::new(config));
        *last = now;
        Ok(true)
    }

    /// Looks at the files every `every` until `shutdown`.
    pub fn spawn_reload(
        self: &Arc<Self>,
        every: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let tls = Arc::clone(self);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        cert = %tls.files.cert.display(),
                        "TLS certificate files changed: new connections use them"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        });
    }
}

/// Modification time and size of each file (none when it cannot be read: a change then
/// shows when it can be again).
fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem {
            path: path.display().to_string(),
            what,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what,
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, "certificate")?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: files.key.display().to_string(),
        what: "private key",
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path, "CA certificate")? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
