//! Serving a process's listeners and stopping them in order: the gRPC port (health,
//! reflection, the services), health following freshness, `/metrics`, the listeners' TLS, and
//! the signal that starts the shutdown.

use super::schedules::spawn_clients_reload;
use super::{App, StartError};
use crate::api::{ConsentService, Limits};
use crate::app::config::ServeArgs;
use crate::app::listener::{Endpoint, GrpcSettings};
use crate::app::tls::ReloadingTls;
use crate::pb;
use crate::pb::FILE_DESCRIPTOR_SET;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds the gRPC listener (port 0 picks a free port; the bound address is returned).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The consent services' state for `app`: checker, index, served keys, admission limits,
/// evidence store and replicas. One per process: gRPC and the panel share it, so a client the
/// panel adds is served at once.
pub fn consent_service(app: &App, args: &ServeArgs) -> Arc<ConsentService> {
    let service = ConsentService::new(
        Arc::clone(&app.checker),
        Arc::clone(&app.consents),
        Arc::clone(&app.keys),
        Arc::clone(&app.metrics),
        Limits {
            max_in_flight: args.max_in_flight,
            max_in_flight_per_key: args.max_in_flight_per_key,
            max_queue_delay: args.max_queue_delay,
            quota_hold: args.quota_hold,
        },
    )
    .with_evidence(app.evidence.clone())
    .with_shared(app.shared.clone());
    Arc::new(service)
}

/// Serves gRPC on `listener` until `shutdown` fires, then drains within `args.grace`.
pub async fn serve_grpc(
    app: &App,
    args: &ServeArgs,
    service: Arc<ConsentService>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), StartError> {
    if let Some(tls) = &app.tls {
        tls.spawn_reload(args.tls.tls_reload, tasks, &shutdown);
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    // The first status is the data's, set before the listener answers anything: a replica
    // still loading must never say SERVING, not even until the watcher's first tick.
    let fresh = app.checker.data_age().1;
    set_health(&health, fresh).await;
    spawn_health_watcher(app, health.clone(), fresh, tasks, shutdown.clone());

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

    let admin = app.evidence.as_ref().map(|store| {
        crate::api::admin::AdminService::new(
            Arc::clone(&service),
            app.serving(),
            Arc::clone(store),
            app.admin_keys.clone(),
            Arc::clone(&app.base_keys),
            app.iys.clone(),
        )
        .into_server()
    });
    if let Some(store) = app
        .evidence
        .clone()
        .filter(|_| !args.clients_reload.is_zero())
    {
        spawn_clients_reload(
            Arc::clone(&service),
            Arc::clone(&app.base_keys),
            store,
            args.clients_reload,
            tasks,
            shutdown.clone(),
        );
    }
    let mut routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service.into_server())
        .add_service(service.records_server());
    if let Some(admin) = admin {
        routes = routes.add_service(admin);
    }
    let routes = routes.prepare();
    let settings = GrpcSettings {
        max_concurrent_streams: args.max_concurrent_streams,
        max_in_flight_per_connection: args.max_in_flight_per_connection,
        stream_idle_timeout: args.stream_idle_timeout,
    };
    let tls = app.tls.as_ref().map(|t| Arc::clone(&t.grpc));
    if let Ok(addr) = listener.local_addr() {
        crate::app::listener::warn_if_plaintext("gRPC", addr, tls.is_some());
    }
    let endpoint = Endpoint { listener, tls };

    // Shutdown in order: health NOT_SERVING, a delay for load balancers to notice, then stop
    // accepting and let every connection finish the calls it accepted (GOAWAY, answers
    // flushed, sockets closed lingering), all within `grace`.
    let drain = CancellationToken::new();
    let conns = TaskTracker::new();
    let closing = TaskTracker::new();
    let accepting = {
        let drain = drain.clone();
        let conns = conns.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            crate::app::listener::accept(endpoint, drain, &conns, &closing, move |io, drain| {
                crate::app::listener::serve_grpc_connection(io, routes.clone(), settings, drain)
            })
            .await;
        })
    };
    shutdown.cancelled().await;
    health
        .set_not_serving::<pb::consent_check_server::ConsentCheckServer<ConsentService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tracing::info!(
        delay_ms = args.shutdown_delay.as_millis() as u64,
        "shutting down: health NOT_SERVING"
    );
    tokio::time::sleep(args.shutdown_delay).await;
    tracing::info!("no longer accepting; draining in-flight calls");
    drain.cancel();
    let _ = accepting.await;
    conns.close();
    closing.close();
    let grace = args.grace;
    let drained = tokio::time::timeout(grace, async {
        conns.wait().await;
        closing.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period expired with calls still in flight; closing"
        );
    }
    Ok(())
}

/// Health follows freshness: NOT_SERVING while the data is too old to ALLOW (rule 7).
pub(crate) fn spawn_health_watcher(
    app: &App,
    health: tonic_health::server::HealthReporter,
    mut serving: bool,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    let checker = Arc::clone(&app.checker);
    tasks.spawn(async move {
        // Every 100 ms: a replica that finished loading says SERVING within a tenth of a
        // second (the cold-start measure), and a read of the data age costs nanoseconds.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (age, fresh) = checker.data_age();
            if fresh != serving {
                serving = fresh;
                if !fresh {
                    tracing::warn!(
                        age_ms = age.map(|a| a.as_millis() as u64),
                        "consent data stale: NOT_SERVING"
                    );
                }
                set_health(&health, fresh).await;
            }
        }
    });
}

/// Sets both health names (the service's and the server's `""`) to SERVING or NOT_SERVING.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health
        .set_service_status("iysgate.v1.ConsentCheck", status)
        .await;
    health.set_service_status("", status).await;
}

/// What a scrape samples before it renders (a serving process's data age and index size):
/// values read when asked for, so the check path never sets them.
pub type Sampler = Arc<dyn Fn() + Send + Sync>;

/// A serving process's [`Sampler`]: `iysgate_data_age_seconds` and `iysgate_index_records`.
pub fn replica_sampler(app: &App) -> Sampler {
    let checker = Arc::clone(&app.checker);
    let consents = Arc::clone(&app.consents);
    Arc::new(move || {
        crate::telemetry::sample_replica(checker.data_age().0, consents.index().len());
    })
}

/// Serves `/metrics` (Prometheus text, with the `process_*` series) until shutdown, over TLS
/// when `tls` is given; `sample` runs before each rendering.
pub async fn serve_metrics(
    addr: SocketAddr,
    tls: Option<Arc<ReloadingTls>>,
    sample: Option<Sampler>,
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
        axum::routing::get(move || {
            if let Some(sample) = &sample {
                sample();
            }
            let mut text = handle.render();
            text.push_str(&crate::telemetry::process_metrics());
            std::future::ready(text)
        }),
    );
    crate::app::listener::warn_if_plaintext("metrics", bound, tls.is_some());
    crate::app::listener::spawn_http(Endpoint { listener, tls }, router, shutdown, tasks);
    Ok(bound)
}

/// The TLS of a process's listeners: one configuration per protocol offered (ALPN), both
/// from the same files and kept current with them.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The gRPC port: HTTP/2 only.
    pub grpc: Arc<ReloadingTls>,
    /// The HTTP listeners (metrics, push): HTTP/1.1 or HTTP/2.
    pub http: Arc<ReloadingTls>,
}

impl ServerTls {
    /// Loads `--tls-cert`/`--tls-key`/`--tls-client-ca`; none when TLS is not configured.
    pub fn load(args: &crate::app::config::TlsArgs) -> Result<Option<Self>, StartError> {
        let Some(files) = args.files() else {
            return Ok(None);
        };
        Ok(Some(Self {
            grpc: Arc::new(ReloadingTls::load(files.clone(), &[b"h2"])?),
            http: Arc::new(ReloadingTls::load(files, &[b"h2", b"http/1.1"])?),
        }))
    }

    /// Re-reads the files every `every` (a rotated certificate serves new connections).
    pub fn spawn_reload(&self, every: Duration, tasks: &TaskTracker, shutdown: &CancellationToken) {
        self.grpc.spawn_reload(every, tasks, shutdown.clone());
        self.http.spawn_reload(every, tasks, shutdown.clone());
    }
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
