//! Running a process end to end: `serve` (and the demo, which is `serve` on generated data)
//! and the `sync` worker, each assembled from the parts in [`crate::app`] and stopped in order
//! on SIGINT/SIGTERM. The binary calls one of these per command; nothing here parses flags.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::config::{ServeArgs, SyncArgs};
use crate::app::{self as app, App, StartError, demo};

/// What the demo adds to `serve`: the data set to generate, its API key, and how to show the
/// tour once the server is ready (the command line's printer; `app` does not print it itself).
pub struct Demo {
    /// Records to generate.
    pub records: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// The demo client's API key, shown once in the tour.
    pub secret: String,
    /// Called once the data is generated and the ports are bound.
    pub tour: fn(&Tour<'_>),
    /// The built-in mock İYS the demo started for uploads and reconciliation, if it did.
    pub mock_iys: Option<MockIysTour>,
}

/// What the tour says of the demo's mock İYS.
pub struct MockIysTour {
    pub url: String,
    /// Changes of yesterday the mock holds that the index does not: a reconciliation of
    /// yesterday finds and repairs them.
    pub seeded_changes: usize,
}

/// What the tour shows: the data set generated, where the server listens, the key to use.
pub struct Tour<'a> {
    pub summary: &'a demo::Summary,
    pub took: std::time::Duration,
    pub addr: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    /// The panel's address and the demo login (user, password), unless `--panel-listen off`.
    pub panel: Option<(std::net::SocketAddr, (&'a str, &'a str))>,
    pub secret: &'a str,
    pub app: &'a App,
    pub mock_iys: Option<&'a MockIysTour>,
}

/// Serves gRPC (and metrics) until SIGINT/SIGTERM, then stops in order under `--grace`. With
/// `demo`, the index is first filled with the generated data set and the tour shown; logging
/// is then already started by the caller.
///
/// # Errors
/// A [`StartError`] for a start-up failure (store, port, Redis, İYS) or a serving error.
pub async fn serve(args: ServeArgs, demo: Option<Demo>) -> Result<(), StartError> {
    if demo.is_none() {
        crate::telemetry::init_logging(&args.logging.filter(), args.logging.log_format)?;
    }
    let clock = app::system_clock();
    let mut app = App::embedded(&args, Arc::clone(&clock))?;
    let evidence = app::open_evidence(
        args.database_url.as_deref(),
        &args.evidence_file,
        app.checker.calendar().clone(),
    )
    .await?;
    if demo.is_some() {
        let brands: Vec<_> = demo::BRANDS
            .iter()
            .map(|b| (b.code, b.name, b.policy))
            .collect();
        app::ensure_brands(&evidence, demo::IYS_CODE, &brands, clock.now_utc()).await?;
    }
    app::add_stored_clients(&mut app, &evidence).await?;
    app.evidence = Some(Arc::new(evidence));
    let listener = app::bind(args.listen).await?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let metrics_addr = match args.metrics_listen.0 {
        Some(addr) => Some(
            app::serve_metrics(
                addr,
                app.tls.as_ref().map(|t| Arc::clone(&t.http)),
                Some(app::serving::replica_sampler(&app)),
                shutdown.clone(),
                &tasks,
            )
            .await?,
        ),
        None => None,
    };
    // The panel's port is bound now, so a taken port stops the start before any work.
    let panel = match args.panel_listen.0 {
        Some(addr) => {
            let store = crate::panel::store::PanelStore::beside(
                app.evidence.as_ref().expect("opened above"),
                &args.evidence_file,
            )
            .map_err(StartError::Panel)?;
            Some((app::bind(addr).await?, store))
        }
        None => None,
    };
    let panel_addr = match &panel {
        Some((listener, _)) => Some(listener.local_addr().map_err(StartError::LocalAddr)?),
        None => None,
    };
    if let Some(demo) = &demo {
        let started = std::time::Instant::now();
        // The demo brands' policies, overridden by a --brands file if one was given.
        let mut policies: std::collections::HashMap<u32, _> =
            demo::BRANDS.iter().map(|b| (b.code, b.policy)).collect();
        if let Some(path) = &args.brands {
            policies.extend(app::load_policies(path)?);
        }
        app.checker.set_policies(policies);
        let now = clock.now_turkey();
        let mut summary = demo::generate(&app.consents, demo.records, demo.seed, now);
        demo::pick_pending_samples(&mut summary, &app.consents, app.checker.calendar(), now);
        let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
        let panel_login = match &panel {
            Some((_, store)) => Some(
                crate::panel::demo_login(store, clock.now_utc())
                    .await
                    .map_err(StartError::Panel)?,
            ),
            None => None,
        };
        (demo.tour)(&Tour {
            summary: &summary,
            took: started.elapsed(),
            addr,
            metrics: metrics_addr,
            panel: panel_addr.zip(panel_login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))),
            secret: &demo.secret,
            app: &app,
            mock_iys: demo.mock_iys.as_ref(),
        });
    }
    if let Some(url) = &args.redis_url {
        let shared = crate::sync::redis::SharedState::connect_with_ca(
            url,
            &args.redis_prefix,
            args.redis_ca_file.as_deref(),
        )
        .await?;
        app.shared = Some(shared);
    }
    if app.shared.is_none() {
        // The embedded default: what was recorded before this start is enforced again.
        let started = std::time::Instant::now();
        let store = app.evidence.as_ref().expect("opened above");
        let n = app::apply_recorded(store, &app.consents, clock.now_utc()).await?;
        tracing::info!(
            events = n,
            took_ms = started.elapsed().as_millis() as u64,
            "recorded consents applied to the index"
        );
    }
    app::share_iys_token(&mut app, &args).await?;
    app::spawn_uploader(&app, &args, &tasks, shutdown.clone())?;
    app::spawn_reconcile_schedule(&app, &args, &tasks, shutdown.clone())?;
    match app.shared.clone() {
        // A replica: the sync leader's heartbeats on the change stream confirm freshness.
        Some(shared) => {
            let (consents, freshness, stop) = (
                Arc::clone(&app.consents),
                Arc::clone(&app.freshness),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = shared.follow(consents, freshness, stop).await {
                    // Without the stream the data goes stale: ALLOWs turn UNAVAILABLE.
                    tracing::error!(error = %e, "following the shared state stopped");
                }
            });
        }
        None => app.spawn_embedded_heartbeat(&tasks, shutdown.clone()),
    }
    tracing::info!(
        listen = %listener.local_addr().map_err(StartError::LocalAddr)?,
        records = app.consents.index().len(),
        clients = app.keys.len(),
        metrics = %metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "serving"
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        stop.cancel();
    });
    let service = app::consent_service(&app, &args);
    if let Some((listener, store)) = panel {
        let panel = crate::panel::Panel::new(&app, Arc::clone(&service), store)
            .map_err(|e| StartError::PanelState(e.to_string()))?;
        let tls = app.tls.as_ref().map(|t| Arc::clone(&t.http));
        crate::app::listener::warn_if_plaintext("panel", panel_addr.expect("bound"), tls.is_some());
        tracing::info!(listen = %panel_addr.expect("bound"), "compliance panel");
        crate::panel::serve(listener, tls, Arc::new(panel), shutdown.clone(), &tasks);
    }
    let served = app::serve_grpc(&app, &args, service, listener, shutdown.clone(), &tasks).await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(args.grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within the grace period");
    }
    tracing::info!("stopped");
    served
}

/// Runs a sync worker until SIGINT/SIGTERM: takes the lease, follows İYS's changes for the
/// configured brands and publishes them through Redis (and receives İYS's push, if asked).
///
/// # Errors
/// A [`StartError`] for a start-up failure (TLS, Redis, İYS client, a port).
pub async fn sync(args: SyncArgs) -> Result<(), StartError> {
    use crate::sync::{MemoryCursors, SyncConfig, SyncWorker};
    crate::telemetry::init_logging(&args.logging.filter(), args.logging.log_format)?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let tls = app::ServerTls::load(&args.tls)?;
    if let Some(tls) = &tls {
        tls.spawn_reload(args.tls.tls_reload, &tasks, &shutdown);
    }
    let http_tls = tls.as_ref().map(|t| Arc::clone(&t.http));
    if let Some(addr) = args.metrics_listen.0 {
        app::serve_metrics(addr, http_tls.clone(), None, shutdown.clone(), &tasks).await?;
    }
    // One token for every worker of the deployment, kept in Redis (İYS limits token calls).
    let tokens = crate::iys::token::RedisTokenStore::connect_with_ca(
        &args.redis_url,
        &args.redis_prefix,
        &args.iys_username,
        args.redis_ca_file.as_deref(),
    )
    .await?;
    let client = super::iys_client(
        &args.iys_url,
        (&args.iys_username, &args.iys_password),
        args.iys_timeout,
        Arc::new(tokens),
    )?;
    let shared = crate::sync::redis::SharedState::connect_with_ca(
        &args.redis_url,
        &args.redis_prefix,
        args.redis_ca_file.as_deref(),
    )
    .await?;
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| StartError::Random(e.to_string()))?;
    let index = Arc::new(crate::check::index::ConsentIndex::new());
    let consents = Arc::new(crate::check::store::Consents::new(
        index,
        Arc::new(crate::check::index::EmailKeyer::new(key)),
    ));
    let worker = SyncWorker::new(
        client,
        consents,
        Arc::new(MemoryCursors::default()),
        args.brands.clone(),
        Arc::new(crate::check::Freshness::new()),
        app::system_clock(),
        SyncConfig {
            page_limit: 1000,
            interval: args.interval,
            ..SyncConfig::default()
        },
    )
    .with_shared(shared);
    if let Some(addr) = args.push_listen {
        let password = args
            .push_password
            .clone()
            .ok_or(crate::app::config::ConfigError::PushPassword)?;
        let shared = crate::sync::redis::SharedState::connect_with_ca(
            &args.redis_url,
            &args.redis_prefix,
            args.redis_ca_file.as_deref(),
        )
        .await?;
        let router = crate::sync::push::router(shared, &args.push_username, &password);
        let listener = app::bind(addr).await?;
        crate::app::listener::warn_if_plaintext("push", addr, http_tls.is_some());
        let endpoint = crate::app::listener::Endpoint {
            listener,
            tls: http_tls.clone(),
        };
        crate::app::listener::spawn_http(endpoint, router, shutdown.clone(), &tasks);
        tracing::info!(%addr, "receiving İYS push at /iys/push");
    }
    let holder = format!("{}-{}", std::process::id(), crate::auth::to_hex(&key[..4]));
    tracing::info!(brands = args.brands.len(), holder, "sync worker starting");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        stop.cancel();
    });
    worker
        .run_leader(holder, args.lease, shutdown.clone())
        .await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The reflection descriptor set of a production build (no `dev-tools`) names only the
    /// shipped services: the load test's echo is there only with the feature.
    #[test]
    fn the_echo_service_is_reflected_only_with_dev_tools() {
        let set: prost_types_free::Set = prost::Message::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("build.rs encodes a valid descriptor set");
        let echo = set.file.iter().any(|f| f.package == "iysgate.loadtest.v1");
        assert_eq!(echo, cfg!(feature = "dev-tools"));
        assert!(set.file.iter().any(|f| f.package == "iysgate.v1"));
    }

    /// The two fields of `google.protobuf.FileDescriptorSet` / `FileDescriptorProto` this test
    /// reads, so it needs no descriptor crate.
    mod prost_types_free {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Set {
            #[prost(message, repeated, tag = "1")]
            pub file: Vec<File>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct File {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(string, tag = "2")]
            pub package: String,
        }
    }
}
