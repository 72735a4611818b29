//! The command line's commands other than `serve` and `sync` (which are [`crate::app::run`]):
//! the client of the check (`check`, `filter`), the administration of brands and clients over
//! the evidence store, the demo and its tour, `import` with its progress, `keygen`, and with
//! the `dev-tools` feature the mock İYS and the load generator.

pub mod admin;
pub mod client;
pub mod demo;
pub mod import;
pub mod keygen;
#[cfg(feature = "dev-tools")]
pub mod load;
#[cfg(feature = "dev-tools")]
pub mod mock_iys;
pub mod user;

/// Why a command failed, printed by the binary as `iysgate: {error}`. Each library error keeps
/// its own message; the few variants of the command line's own name the flag they are about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error(transparent)]
    Evidence(#[from] crate::write::evidence::EvidenceError),
    #[error(transparent)]
    Config(#[from] crate::app::config::ConfigError),
    #[error(transparent)]
    Logging(#[from] crate::telemetry::LoggingError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Import(#[from] crate::write::import::ImportError),
    /// A daily report from the server that does not read back.
    #[error(transparent)]
    Report(#[from] crate::api::admin::ReportDecodeError),
    /// An error answer of a server's RPC.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    /// Serving (the echo baseline).
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The system's random source (a new API key).
    #[error(transparent)]
    Random(#[from] getrandom::Error),
    /// `--retailers` that is neither `*` nor a comma list of codes.
    #[error("--retailers {0:?}: expected * or a comma list of codes")]
    Retailers(String),
    /// A file named by `flag` that cannot be read.
    #[error("{flag} {path}: {source}", path = .path.display())]
    ReadFile {
        flag: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A recipients file named by `flag` without a recipient.
    #[error("{flag} {path}: no recipients", path = .path.display())]
    NoRecipients {
        flag: &'static str,
        path: std::path::PathBuf,
    },
    #[cfg(feature = "dev-tools")]
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    #[cfg(feature = "dev-tools")]
    #[error(transparent)]
    Mock(#[from] crate::iys::mock::MockError),
}
