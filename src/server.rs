//! Assembles a serving process and runs it: the gRPC services (consent checks, health,
//! reflection), the metrics endpoint, the freshness watcher, and shutdown in a fixed order
//! (health NOT_SERVING, stop accepting, drain in-flight calls under a grace bound).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api::{ConsentService, FILE_DESCRIPTOR_SET, Limits, pb};
use crate::auth::{ApiKeys, KeysError};
use crate::check::{Checker, Freshness};
use crate::config::ServeArgs;
use crate::domain::calendar::CalendarError;
use crate::domain::{BrandPolicy, BusinessCalendar, Clock, SystemClock};
use crate::index::{ConsentIndex, EmailKeyer};
use crate::store::Consents;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("calendar: {0}")]
    Calendar(#[from] CalendarError),
    #[error("brands file {path}: {reason}")]
    Brands { path: String, reason: String },
    #[error("no OS randomness for the e-mail key: {0}")]
    Random(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
    #[error("evidence file directory {path}: {source}")]
    EvidenceDir {
        path: String,
        source: std::io::Error,
    },
}

/// Opens the store of recorded consents: PostgreSQL when a database URL is given (migrating
/// it), else the append-only `evidence_file` (its directory created if missing).
pub async fn open_evidence(
    database_url: Option<&str>,
    evidence_file: &std::path::Path,
    calendar: BusinessCalendar,
) -> Result<crate::evidence::EvidenceStore, StartError> {
    use crate::evidence::{EvidenceStore, FileStore, PgStore};
    if let Some(url) = database_url {
        return Ok(EvidenceStore::from(PgStore::connect(url, calendar).await?));
    }
    if let Some(dir) = evidence_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StartError::EvidenceDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(EvidenceStore::from(
        FileStore::open(evidence_file, calendar).await?,
    ))
}

/// Starts the uploader when `--upload-iys-url` is set: it drains the evidence outbox to İYS,
/// and each registration it records is applied to this process's index (the pending ONAY
/// becomes ALLOW) and, on a replica, published to the others (`record::on_registered`).
pub fn spawn_uploader(
    app: &App,
    args: &ServeArgs,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), String> {
    use crate::iys::client::{Credentials, IysClient, RetryPolicy};
    let (Some(url), Some(store)) = (&args.upload_iys_url, &app.evidence) else {
        return Ok(());
    };
    if args.iys_code == 0 || args.iys_username.is_empty() {
        return Err("--upload-iys-url needs --iys-code and the İYS user (IYSGATE_IYS_USERNAME, IYSGATE_IYS_PASSWORD)".into());
    }
    let client = IysClient::new(
        url,
        Credentials {
            username: args.iys_username.clone(),
            password: args.iys_password.clone(),
        },
        Arc::new(crate::iys::token::MemoryTokenStore::new()),
        RetryPolicy::default(),
    )
    .map_err(|e| format!("İYS client: {e}"))?;
    let on_registered =
        crate::record::on_registered(Arc::clone(&app.consents), app.shared.clone(), tasks);
    let config = crate::uploader::UploaderConfig {
        poll_delay: args.upload_poll_delay,
        ..crate::uploader::UploaderConfig::default()
    };
    let uploader = crate::uploader::Uploader::new(
        (**store).clone(),
        std::collections::HashMap::from([(args.iys_code, client)]),
        config,
        Arc::clone(app.checker.clock_arc()),
        on_registered,
    )
    .map_err(|e| format!("uploader: {e}"))?;
    tasks.spawn(uploader.run(shutdown));
    Ok(())
}

/// Adds the API clients kept in the evidence store (`iysgate client add`) to the ones given by
/// flags and files. A key present in both refuses the start, naming the client.
pub async fn add_stored_clients(
    app: &mut App,
    store: &crate::evidence::EvidenceStore,
) -> Result<usize, StartError> {
    let stored = store.clients().await?;
    let mut keys = (*app.keys).clone();
    for client in &stored {
        keys.insert(client.key_sha256, client.to_auth())?;
    }
    app.keys = Arc::new(keys);
    Ok(stored.len())
}

/// Registers provider `iys_code` unless it is already there.
pub async fn ensure_provider(
    store: &crate::evidence::EvidenceStore,
    iys_code: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), crate::evidence::EvidenceError> {
    use crate::evidence::{EvidenceError, Provider};
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
    store: &crate::evidence::EvidenceStore,
    iys_code: u32,
    brands: &[(u32, &str, crate::domain::BrandPolicy)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StartError> {
    use crate::evidence::{Brand, EvidenceError};
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
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Everything a serving process holds.
pub struct App {
    pub checker: Arc<Checker>,
    pub consents: Arc<Consents>,
    pub keys: Arc<ApiKeys>,
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<Metrics>,
    /// Where recorded consents are kept (`ConsentRecords`); none: that service refuses.
    pub evidence: Option<Arc<crate::evidence::EvidenceStore>>,
    /// A replica's shared state (`--redis-url`): what this process records, and the
    /// registrations its uploader sees, are published there for the other replicas. None: they
    /// stay in this process.
    pub shared: Option<crate::shared::SharedState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandsFile {
    brands: Vec<BrandEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrandEntry {
    brand_code: u32,
    #[serde(default)]
    #[allow(dead_code)] // shown by later admin tooling; parsed now so files stay valid
    name: Option<String>,
    #[serde(default)]
    allow_unregistered_tacir: bool,
}

/// Reads the brands file: `{"brands":[{"brand_code":600001,"name":"…","allow_unregistered_tacir":false}]}`.
pub fn load_policies(path: &Path) -> Result<HashMap<u32, BrandPolicy>, StartError> {
    let err = |reason: String| StartError::Brands {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: BrandsFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(file
        .brands
        .into_iter()
        .map(|b| {
            (
                b.brand_code,
                BrandPolicy {
                    allow_unregistered_tacir: b.allow_unregistered_tacir,
                },
            )
        })
        .collect())
}

impl App {
    /// The embedded default: records in memory, the given clock.
    pub fn embedded(args: &ServeArgs, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        let mut keys = match &args.api_keys {
            Some(path) => ApiKeys::from_path(path)?,
            None => ApiKeys::default(),
        };
        for flag in &args.clients {
            keys.add_flag(flag)?;
        }
        let calendar = match &args.calendar {
            Some(path) => BusinessCalendar::from_path(path)?,
            None => BusinessCalendar::embedded(),
        };
        // Deadlines run up to a week ahead: warn while there is time to ship next year's data.
        let ahead = clock.now_turkey().date() + chrono::Duration::days(14);
        if !calendar.covers(ahead) {
            tracing::warn!(
                last_year = calendar.last_year(),
                "holiday calendar does not cover this year: deadlines count Sundays only \
                 (earliest possible deadline); configure a newer calendar file"
            );
        }
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| StartError::Random(e.to_string()))?;
        let keyer = Arc::new(EmailKeyer::new(key));
        let index = Arc::new(ConsentIndex::new());
        let freshness = Arc::new(Freshness::new());
        let checker = Arc::new(Checker::new(
            Arc::clone(&index),
            Arc::clone(&keyer),
            Arc::clone(&freshness),
            Arc::new(calendar),
            clock,
            args.max_staleness,
        ));
        if let Some(path) = &args.brands {
            checker.set_policies(load_policies(path)?);
        }
        Ok(App {
            checker,
            consents: Arc::new(Consents::new(index, keyer)),
            keys: Arc::new(keys),
            freshness,
            metrics: Arc::new({
                // Register the handles with the Prometheus recorder, not the no-op default.
                crate::telemetry::install_metrics();
                Metrics::register()
            }),
            evidence: None,
            shared: None,
        })
    }

    /// In the embedded default the in-process store is the source of truth, so the index is
    /// in step with it by construction: confirm freshness on a steady beat. (A replica fed by
    /// the sync worker confirms on each applied change or heartbeat instead.)
    pub fn spawn_embedded_heartbeat(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let freshness = Arc::clone(&self.freshness);
        let checker = Arc::clone(&self.checker);
        freshness.mark_confirmed(checker.clock().now_utc());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => freshness.mark_confirmed(checker.clock().now_utc()),
                }
            }
        });
    }
}

/// Binds the gRPC listener (port 0 picks a free port; the bound address is returned).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Serves gRPC on `listener` until `shutdown` fires, then drains within `args.grace`.
pub async fn serve_grpc(
    app: &App,
    args: &ServeArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::consent_check_server::ConsentCheckServer<ConsentService>>()
        .await;
    spawn_health_watcher(app, health.clone(), tasks, shutdown.clone());

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    // grpcurl 1.8 speaks only v1alpha.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let service = ConsentService::new(
        Arc::clone(&app.checker),
        Arc::clone(&app.consents),
        Arc::clone(&app.keys),
        Arc::clone(&app.metrics),
        Limits {
            max_in_flight: args.max_in_flight,
            quota_hold: args.quota_hold,
        },
    )
    .with_evidence(app.evidence.clone())
    .with_shared(app.shared.clone());
    let service = Arc::new(service);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let drain_started = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        let drain_started = drain_started.clone();
        let health = health.clone();
        let delay = args.shutdown_delay;
        async move {
            shutdown.cancelled().await;
            // Tell load balancers first, then stop accepting.
            health
                .set_not_serving::<pb::consent_check_server::ConsentCheckServer<ConsentService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutting down: health NOT_SERVING"
            );
            tokio::time::sleep(delay).await;
            tracing::info!("no longer accepting; draining in-flight calls");
            drain_started.cancel();
        }
    };
    let server = Server::builder()
        .max_concurrent_streams(args.max_concurrent_streams)
        .concurrency_limit_per_connection(args.max_in_flight_per_connection)
        .load_shed(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service.into_server())
        .add_service(service.records_server())
        .serve_with_incoming_shutdown(incoming, signal);
    let grace = args.grace;
    tokio::select! {
        result = server => result?,
        () = async { drain_started.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period expired with calls still in flight; closing");
        }
    }
    Ok(())
}

/// Health follows freshness: NOT_SERVING while the data is too old to ALLOW (rule 7).
fn spawn_health_watcher(
    app: &App,
    health: tonic_health::server::HealthReporter,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    let checker = Arc::clone(&app.checker);
    tasks.spawn(async move {
        let mut serving = true;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (age, fresh) = checker.data_age();
            if fresh != serving {
                serving = fresh;
                let status = if fresh {
                    tonic_health::ServingStatus::Serving
                } else {
                    tracing::warn!(
                        age_ms = age.map(|a| a.as_millis() as u64),
                        "consent data stale: NOT_SERVING"
                    );
                    tonic_health::ServingStatus::NotServing
                };
                health
                    .set_service_status("iysgate.v1.ConsentCheck", status)
                    .await;
                health.set_service_status("", status).await;
            }
        }
    });
}

/// Serves `/metrics` (Prometheus text) until shutdown.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<SocketAddr, StartError> {
    let handle = crate::telemetry::install_metrics();
    let listener = bind(addr).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let upkeep = handle.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || std::future::ready(handle.render())),
    );
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(bound)
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The system clock as the shared clock type.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_brands_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/brands.example.json");
        let policies = load_policies(&path).unwrap();
        assert!(policies[&620_001].allow_unregistered_tacir);
        assert!(!policies[&600_001].allow_unregistered_tacir);
    }

    #[test]
    fn example_keys_file_names_the_placeholder_digest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/api-keys.example.json");
        let err = ApiKeys::from_path(&path).unwrap_err().to_string();
        assert!(
            err.contains("sms-gateway") && err.contains("key_sha256"),
            "{err}"
        );
    }

    #[test]
    fn bad_brands_file_names_the_file() {
        let path = std::env::temp_dir().join(format!("iysgate-brands-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"brands":[{"brand_code":"x"}]}"#).unwrap();
        let err = load_policies(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 1 column 28"),
            "{err}"
        );
        std::fs::remove_file(&path).ok();
    }
}
