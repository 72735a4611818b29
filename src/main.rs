//! The `iysgate` binary: parses the command line and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use iysgate::app::config::{Cli, Command, DemoArgs, RuntimeFlavor, ServeArgs};
use iysgate::app::{self, App};

/// mimalloc instead of glibc malloc: the gRPC stack allocates per call (h2 frames, headers);
/// measured with `load-tests/compare.sh` (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use iysgate::app::demo;
use iysgate::cli::client;
use iysgate::{auth, telemetry};

use iysgate::cli::admin;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any runtime, store or port: settings that disagree stop the start here.
    if let Err(e) = cli.validate() {
        eprintln!("iysgate: {e}");
        return ExitCode::FAILURE;
    }
    let mut builder = match cli.runtime {
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    if let (RuntimeFlavor::MultiThread, Some(n)) = (cli.runtime, cli.worker_threads) {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iysgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => run_demo(args).await,
            Command::Serve(args) => run_serve(args, None).await,
            Command::Check(args) => client::check(&args).await.map_err(|e| e.to_string()),
            Command::Filter(args) => {
                let (items, allowed) = client::filter(&args).await.map_err(|e| e.to_string())?;
                eprintln!("{items} recipients, {allowed} allowed");
                Ok(())
            }
            Command::Keygen(args) => keygen(&args),
            Command::Sync(args) => run_sync(args).await,
            Command::MockIys(args) => run_mock_iys(args).await,
            Command::Load(args) => run_load(args).await,
            Command::Import(args) => run_import(args).await,
            Command::Brand(cmd) => admin::brand(cmd).await,
            Command::Report(args) => admin::report(args).await,
            Command::Reconcile(args) => admin::reconcile(args).await,
            Command::Client(cmd) => admin::client(cmd).await,
            Command::Migrate(args) => {
                iysgate::write::evidence::PgStore::connect(
                    &args.database_url,
                    iysgate::domain::BusinessCalendar::embedded(),
                )
                .await
                .map_err(|e| e.to_string())?;
                println!("evidence store migrated");
                Ok(())
            }
            Command::EchoServer(args) => {
                let listener = app::bind(args.listen).await.map_err(|e| e.to_string())?;
                println!("echo baseline on {}", args.listen);
                iysgate::load::serve_echo(listener, app::shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iysgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(args: &iysgate::app::config::KeygenArgs) -> Result<(), String> {
    let secret = auth::generate_key().map_err(|e| e.to_string())?;
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

async fn run_demo(args: DemoArgs) -> Result<(), String> {
    telemetry::init_logging(&args.serve.log)?;
    let secret = auth::generate_key().map_err(|e| e.to_string())?;
    let brands: Vec<String> = demo::BRANDS.iter().map(|b| b.code.to_string()).collect();
    let mut serve = args.serve.clone();
    serve.clients.push(format!(
        "name=demo;sha256={};brands={};retailers=*",
        auth::to_hex(&auth::hash_key(&secret)),
        brands.join(",")
    ));
    let demo = Some((args.records, args.seed, secret));
    run_serve(serve, demo).await
}

async fn run_serve(args: ServeArgs, demo: Option<(usize, u64, String)>) -> Result<(), String> {
    if demo.is_none() {
        telemetry::init_logging(&args.log)?;
    }
    let clock = app::system_clock();
    let mut app = App::embedded(&args, Arc::clone(&clock)).map_err(|e| e.to_string())?;
    let evidence = app::open_evidence(
        args.database_url.as_deref(),
        &args.evidence_file,
        app.checker.calendar().clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if demo.is_some() {
        let brands: Vec<_> = demo::BRANDS
            .iter()
            .map(|b| (b.code, b.name, b.policy))
            .collect();
        app::ensure_brands(&evidence, demo::IYS_CODE, &brands, clock.now_utc())
            .await
            .map_err(|e| e.to_string())?;
    }
    app::add_stored_clients(&mut app, &evidence)
        .await
        .map_err(|e| e.to_string())?;
    app.evidence = Some(Arc::new(evidence));
    let listener = app::bind(args.listen).await.map_err(|e| e.to_string())?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let metrics_addr = match args.metrics_listen.0 {
        Some(addr) => Some(
            app::serve_metrics(
                addr,
                app.tls.as_ref().map(|t| Arc::clone(&t.http)),
                shutdown.clone(),
                &tasks,
            )
            .await
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    if let Some((records, seed, secret)) = &demo {
        let started = std::time::Instant::now();
        // The demo brands' policies, overridden by a --brands file if one was given.
        let mut policies: std::collections::HashMap<u32, _> =
            demo::BRANDS.iter().map(|b| (b.code, b.policy)).collect();
        if let Some(path) = &args.brands {
            policies.extend(app::load_policies(path).map_err(|e| e.to_string())?);
        }
        app.checker.set_policies(policies);
        let now = clock.now_turkey();
        let mut summary = demo::generate(&app.consents, *records, *seed, now);
        demo::pick_pending_samples(&mut summary, &app.consents, app.checker.calendar(), now);
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        print_tour(
            &summary,
            started.elapsed(),
            addr,
            metrics_addr,
            secret,
            &app,
        );
    }
    if let Some(url) = &args.redis_url {
        let shared = iysgate::sync::redis::SharedState::connect(url, &args.redis_prefix)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        app.shared = Some(shared);
    }
    if app.shared.is_none() {
        // The embedded default: what was recorded before this start is enforced again.
        let started = std::time::Instant::now();
        let store = app.evidence.as_ref().expect("opened above");
        let n = app::apply_recorded(store, &app.consents, clock.now_utc())
            .await
            .map_err(|e| e.to_string())?;
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
        listen = %listener.local_addr().map_err(|e| e.to_string())?,
        records = app.consents.index().len(),
        clients = app.keys.len(),
        "serving"
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        stop.cancel();
    });
    let served = app::serve_grpc(&app, &args, listener, shutdown.clone(), &tasks).await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(args.grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within the grace period");
    }
    tracing::info!("stopped");
    served.map_err(|e| e.to_string())
}

fn print_tour(
    summary: &demo::Summary,
    took: std::time::Duration,
    addr: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
    secret: &str,
    app: &App,
) {
    let index = app.consents.index();
    println!();
    println!(
        "iysgate demo: {} records ({} consent events) for {} brands, generated in {:.1} s",
        summary.records,
        summary.events,
        demo::BRANDS.len(),
        took.as_secs_f64()
    );
    println!(
        "index: {} records, {:.1} bytes/record",
        index.len(),
        index.heap_bytes() as f64 / index.len().max(1) as f64
    );
    println!(
        "gRPC on {addr}; metrics on {}",
        metrics.map_or("off".to_owned(), |m| format!("http://{m}/metrics"))
    );
    println!();
    println!(
        "API key (granted brands {}):",
        demo::BRANDS
            .iter()
            .map(|b| b.code.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  export IYSGATE_API_KEY={secret}");
    println!();
    println!(
        "Try (synthetic recipients of brand {}):",
        demo::BRANDS[0].code
    );
    for (sample, (recipient, channel)) in &summary.samples {
        let retailer = if *sample == demo::Sample::WithRetailer {
            format!(" --retailer {}", demo::RETAILERS[0])
        } else {
            String::new()
        };
        println!(
            "  {:<16} iysgate check --addr http://{addr} --brand {} --channel {channel}{retailer} '{recipient}'",
            format!("{sample:?}:"),
            demo::BRANDS[0].code
        );
    }
    println!(
        "  {:<16} iysgate check --addr http://{addr} --brand {} --channel MESAJ '0555 000 00 00'",
        "NoRecord:",
        demo::BRANDS[0].code
    );
    println!();
}

async fn run_sync(args: iysgate::app::config::SyncArgs) -> Result<(), String> {
    use iysgate::iys::client::{Credentials, IysClient, RetryPolicy};
    use iysgate::sync::{MemoryCursors, SyncConfig, SyncWorker};
    telemetry::init_logging(&args.log)?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let tls = app::ServerTls::load(&args.tls).map_err(|e| e.to_string())?;
    if let Some(tls) = &tls {
        tls.spawn_reload(args.tls.tls_reload, &tasks, &shutdown);
    }
    let http_tls = tls.as_ref().map(|t| Arc::clone(&t.http));
    if let Some(addr) = args.metrics_listen.0 {
        app::serve_metrics(addr, http_tls.clone(), shutdown.clone(), &tasks)
            .await
            .map_err(|e| e.to_string())?;
    }
    let credentials = Credentials {
        username: args.iys_username.clone(),
        password: args.iys_password.clone(),
    };
    // One token for every worker of the deployment, kept in Redis (İYS limits token calls).
    let tokens = iysgate::iys::token::RedisTokenStore::connect(
        &args.redis_url,
        &args.redis_prefix,
        &args.iys_username,
    )
    .await
    .map_err(|e| e.to_string())?;
    let retry = RetryPolicy {
        request_timeout: args.iys_timeout,
        ..RetryPolicy::default()
    };
    let client = IysClient::new(&args.iys_url, credentials, Arc::new(tokens), retry)
        .map_err(|e| format!("İYS client: {e}"))?;
    let shared = iysgate::sync::redis::SharedState::connect(&args.redis_url, &args.redis_prefix)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| e.to_string())?;
    let index = Arc::new(iysgate::check::index::ConsentIndex::new());
    let consents = Arc::new(iysgate::check::store::Consents::new(
        index,
        Arc::new(iysgate::check::index::EmailKeyer::new(key)),
    ));
    let worker = SyncWorker::new(
        client,
        consents,
        Arc::new(MemoryCursors::default()),
        args.brands.clone(),
        Arc::new(iysgate::check::Freshness::new()),
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
            .ok_or("--push-listen needs IYSGATE_PUSH_PASSWORD")?;
        let shared =
            iysgate::sync::redis::SharedState::connect(&args.redis_url, &args.redis_prefix)
                .await
                .map_err(|e| format!("redis: {e}"))?;
        let router = iysgate::sync::push::router(shared, &args.push_username, &password);
        let listener = app::bind(addr).await.map_err(|e| e.to_string())?;
        iysgate::app::listener::warn_if_plaintext("push", addr, http_tls.is_some());
        let endpoint = iysgate::app::listener::Endpoint {
            listener,
            tls: http_tls.clone(),
        };
        iysgate::app::listener::spawn_http(endpoint, router, shutdown.clone(), &tasks);
        tracing::info!(%addr, "receiving İYS push at /iys/push");
    }
    let holder = format!(
        "{}-{}",
        std::process::id(),
        iysgate::auth::to_hex(&key[..4])
    );
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

async fn run_mock_iys(args: iysgate::app::config::MockIysArgs) -> Result<(), String> {
    use iysgate::iys::mock::{MockConfig, MockIys, RateLimits, SeedRecord};
    use iysgate::iys::wire::{ConsentStatus, ConsentType, RecipientType};
    telemetry::init_logging(&args.log)?;
    let mut config = MockConfig {
        hold_back: args.hold_back,
        batch_delay: args.batch_delay,
        ..MockConfig::default()
    };
    if args.no_rate_limits {
        config.rate_limits = RateLimits::disabled();
    }
    let mock = MockIys::new(config);
    if args.seed > 0 {
        let at = app::system_clock().now_turkey() - chrono::Duration::days(1);
        let records = (0..args.seed).map(|i| SeedRecord {
            recipient: iysgate::iys::mock::seeded_recipient(i),
            recipient_type: RecipientType::Bireysel,
            consent_type: ConsentType::Mesaj,
            status: ConsentStatus::Onay,
            source: "HS_WEB".into(),
            consent_date: Some(at),
            creation_date: Some(at),
        });
        let n = mock.seed(700_001, records).map_err(|e| e.to_string())?;
        tracing::info!(records = n, "seeded brand 700001");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if args.citizen_rate > 0.0 {
        mock.spawn_citizen(args.citizen_rate, 2026, stop_rx);
    }
    let listener = app::bind(args.listen).await.map_err(|e| e.to_string())?;
    println!(
        "mock İYS on http://{}: user mock / password mock, iysCode 700000, brands 700000 and 700001",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let served = mock
        .serve_with_shutdown(listener, async {
            app::shutdown_signal().await;
        })
        .await;
    let _ = stop_tx.send(true);
    served.map_err(|e| e.to_string())
}

async fn run_load(args: iysgate::app::config::LoadArgs) -> Result<(), String> {
    use iysgate::domain::Channel;
    use iysgate::load::filter::{FilterRun, ListKind, run_filter};
    use iysgate::load::tenants::{TenantsRun, run_tenants};
    use iysgate::load::{
        ClosedLoop, Progress, Target, demo_recipients, run_closed_loop, run_open_loop,
    };
    fn emit<T: serde::Serialize>(json: bool, report: &T, summary: &str) -> Result<(), String> {
        if json {
            println!(
                "{}",
                serde_json::to_string(report).map_err(|e| e.to_string())?
            );
        } else {
            println!("{summary}");
        }
        Ok(())
    }
    let target = match args.target.as_str() {
        "iysgate" => Target::Iysgate,
        "echo" => Target::Echo,
        other => return Err(format!("--target {other:?}: expected iysgate or echo")),
    };
    let progress = Progress::default();
    let planned = match args.scenario.as_str() {
        "mixed-tenants" => Some(args.duration * 2 + std::time::Duration::from_secs(1)),
        "email" | "cold-start" => None,
        _ => Some(args.duration),
    };
    let line = (!args.quiet).then(|| progress.show("answered", planned));
    let checks = if args.scenario == "email" || args.scenario == "cold-start" {
        Arc::default()
    } else if let Some(path) = &args.recipients_file {
        Arc::new(read_lines("--recipients-file", path)?)
    } else {
        Arc::new(demo_recipients(
            args.records,
            args.seed,
            50_000,
            Channel::Mesaj,
        ))
    };
    let sms = |api_key: String, progress: Progress| ClosedLoop {
        addr: args.addr.clone(),
        target,
        api_key,
        brand: args.brand,
        connections: args.connections,
        in_flight: args.in_flight,
        duration: args.duration,
        recipients: Arc::clone(&checks),
        progress,
        honour_retry_info: false,
        batch: args.batch,
    };
    match args.scenario.as_str() {
        "sms" => {
            let run = sms(args.api_key.clone(), progress);
            let report = if args.rate > 0 {
                run_open_loop(run, args.rate).await
            } else {
                run_closed_loop(run).await
            }
            .map_err(|e| e.to_string())?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        "email" => {
            let (kind, channel) = match args.list.as_str() {
                "phones" => (ListKind::Phones, Channel::Mesaj),
                "emails" => (ListKind::Emails, Channel::Eposta),
                "email-strings" => (ListKind::EmailStrings, Channel::Eposta),
                other => {
                    return Err(format!(
                        "--list {other:?}: expected phones, emails or email-strings"
                    ));
                }
            };
            let pool = demo_recipients(args.records, args.seed, 500_000, channel);
            let run = FilterRun {
                addr: args.addr.clone(),
                api_key: args.api_key.clone(),
                brand: args.brand,
                kind,
                total: args.recipients,
                chunk: args.chunk,
                streams: args.connections,
                pool: Arc::new(pool),
                server_pid: args.server_pid,
                progress,
            };
            let report = run_filter(run).await.map_err(|e| e.to_string())?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        "mixed-tenants" => {
            if args.rate == 0 || args.flood_api_key.is_empty() {
                return Err(
                    "mixed-tenants needs --rate (the steady tenant's calls/s) and --flood-api-key"
                        .into(),
                );
            }
            let mut flood = sms(args.flood_api_key.clone(), Progress::default());
            flood.connections = args.flood_connections;
            flood.in_flight = args.flood_in_flight;
            flood.honour_retry_info = args.flood_honours_retry;
            let run = TenantsRun {
                steady: sms(args.api_key.clone(), progress),
                steady_rate: args.rate,
                flood,
            };
            let report = run_tenants(run).await.map_err(|e| e.to_string())?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        "sync-burst" => {
            use iysgate::load::burst::{BurstRun, run_burst};
            let path = args
                .targets_file
                .as_ref()
                .ok_or("sync-burst needs --targets-file")?;
            let targets = read_lines("--targets-file", path)?;
            if args.rate == 0 {
                return Err("sync-burst needs --rate (the steady Checks per second)".into());
            }
            let run = BurstRun {
                steady: sms(args.api_key.clone(), progress),
                steady_rate: args.rate,
                targets: Arc::new(targets),
                trigger_url: args.trigger_url.clone(),
                trigger_body: args.trigger_body.clone(),
                timeout: args.duration,
            };
            let report = run_burst(run).await.map_err(|e| e.to_string())?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        "cold-start" => {
            let started = args
                .started_unix_ms
                .ok_or("cold-start needs --started-unix-ms (the server's start)")?;
            let report =
                iysgate::load::cold::wait_serving(&args.addr, started, args.records, args.duration)
                    .await
                    .map_err(|e| e.to_string())?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        other => Err(format!(
            "--scenario {other:?}: expected sms, email, mixed-tenants, sync-burst or cold-start"
        )),
    }
}

async fn run_import(args: iysgate::app::config::ImportArgs) -> Result<(), String> {
    use iysgate::domain::BusinessCalendar;
    use iysgate::write::evidence::Recorder;
    let calendar = BusinessCalendar::embedded();
    let store = app::open_evidence(
        args.store.database_url.as_deref(),
        &args.store.evidence_file,
        calendar.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let recorder = Recorder {
        client: "import".into(),
        key_sha256: None,
    };
    let now = app::system_clock().now_turkey();
    let summary = iysgate::write::import::import_file(
        &store,
        &args.file,
        args.brand,
        &recorder,
        now,
        &calendar,
        None,
        import_progress(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "{} rows: {} stored now, {} stored by an earlier run, {} refused",
        summary.rows,
        summary.stored,
        summary.already_stored,
        summary.refused.len()
    );
    for (reason, n) in summary.refused_by_reason() {
        println!("  {n:>8}  {reason}");
    }
    for r in summary.refused.iter().take(50) {
        println!("  line {}: {}: {}", r.line, r.field, r.reason);
    }
    if summary.refused.len() > 50 {
        println!(
            "  … {} more (use --json for all)",
            summary.refused.len() - 50
        );
    }
    Ok(())
}

/// The import's progress on stderr: on a terminal a bar redrawn at most ten times a second
/// (share of the file, rows, rate, time left); in a log a line per tenth of the file.
fn import_progress() -> impl FnMut(iysgate::write::import::ImportProgress) {
    use std::io::IsTerminal;
    const WIDTH: usize = 30;
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut drawn: Option<std::time::Instant> = None;
    let mut tenths = 0;
    move |p| {
        let done = p.bytes >= p.total_bytes;
        let fraction = p.bytes as f64 / p.total_bytes.max(1) as f64;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let rate = p.rows as f64 / secs;
        if terminal {
            if !done && drawn.is_some_and(|t| t.elapsed().as_millis() < 100) {
                return;
            }
            drawn = Some(std::time::Instant::now());
            let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
            let left = if fraction > 0.0 {
                secs * (1.0 - fraction) / fraction
            } else {
                0.0
            };
            eprint!(
                "\r[{}{}] {:5.1}%  {} rows  {:.0} rows/s  {:.0} s left   ",
                "#".repeat(filled),
                " ".repeat(WIDTH - filled),
                fraction * 100.0,
                p.rows,
                rate,
                left
            );
            if done {
                eprintln!();
            }
        } else {
            let tenth = (fraction * 10.0) as u32;
            if tenth > tenths || done {
                tenths = tenth;
                eprintln!(
                    "import: {:.0}% of the file, {} rows, {:.0} rows/s",
                    fraction * 100.0,
                    p.rows,
                    rate
                );
            }
        }
    }
}

/// The non-empty lines of a file named by `flag`, trimmed.
fn read_lines(flag: &str, path: &std::path::Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(format!("{flag} {}: no recipients", path.display()));
    }
    Ok(lines)
}

async fn finish(line: Option<iysgate::load::progress::ProgressLine>) {
    if let Some(line) = line {
        line.finish().await;
    }
}
