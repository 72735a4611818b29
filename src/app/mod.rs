//! Assembles a serving process and runs it: the gRPC services (consent checks, health,
//! reflection), the metrics endpoint, the freshness watcher, and shutdown in a fixed order
//! (health NOT_SERVING, stop accepting, drain in-flight calls under a grace bound).

pub mod config;
pub mod demo;
pub mod listener;
pub mod run;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ConsentService, Limits};
use crate::app::config::ServeArgs;
use crate::app::listener::{Endpoint, GrpcSettings};
use crate::app::tls::ReloadingTls;
use crate::auth::{ApiKeys, KeysError};
use crate::check::index::{ConsentIndex, EmailKeyer};
use crate::check::store::Consents;
use crate::check::{Checker, Freshness};
use crate::domain::calendar::CalendarError;
use crate::domain::{BrandPolicy, BusinessCalendar, Clock, SystemClock};
use crate::pb;
use crate::pb::FILE_DESCRIPTOR_SET;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("calendar: {0}")]
    Calendar(#[from] CalendarError),
    #[error("brands file {path}: {reason}")]
    Brands { path: String, reason: String },
    #[error("{0}")]
    Iys(String),
    #[error("--admin-key-sha256: expected 64 hex digits (the SHA-256 of an API key)")]
    AdminKey,
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
    Evidence(#[from] crate::write::evidence::EvidenceError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::app::tls::TlsError),
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
) -> Result<crate::write::evidence::EvidenceStore, StartError> {
    use crate::write::evidence::{EvidenceStore, FileStore, PgStore};
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

/// The İYS client of `--iys-url` with the İYS user of the flags, its token kept in `tokens`.
fn iys_client(
    url: &str,
    args: &ServeArgs,
    tokens: Arc<dyn crate::iys::token::TokenStore>,
) -> Result<crate::iys::client::IysClient, String> {
    use crate::iys::client::{Credentials, IysClient, RetryPolicy};
    let credentials = Credentials {
        username: args.iys_username.clone(),
        password: args.iys_password.clone(),
    };
    let retry = RetryPolicy {
        request_timeout: args.iys_timeout,
        ..RetryPolicy::default()
    };
    IysClient::new(url, credentials, tokens, retry).map_err(|e| format!("İYS client: {e}"))
}

/// The İYS account of `--iys-url`/`--iys-code`, shared by the uploader and the
/// reconciliation (one token between them); none without `--iys-url`.
pub fn iys_account(args: &ServeArgs) -> Result<Option<crate::api::admin::IysAccount>, String> {
    let Some(url) = &args.upload_iys_url else {
        return Ok(None);
    };
    if args.iys_code == 0 || args.iys_username.is_empty() {
        return Err("--iys-url needs --iys-code and the İYS user (IYSGATE_IYS_USERNAME, IYSGATE_IYS_PASSWORD)".into());
    }
    let tokens = Arc::new(crate::iys::token::MemoryTokenStore::new());
    Ok(Some(crate::api::admin::IysAccount {
        client: iys_client(url, args, tokens)?,
        iys_code: args.iys_code,
    }))
}

/// With `--redis-url`, the İYS account keeps its token in Redis beside the sync worker's, so
/// the deployment holds one token (İYS limits how often tokens may be asked for).
pub async fn share_iys_token(app: &mut App, args: &ServeArgs) -> Result<(), String> {
    let (Some(redis), Some(url), Some(account)) =
        (&args.redis_url, &args.upload_iys_url, &mut app.iys)
    else {
        return Ok(());
    };
    let tokens =
        crate::iys::token::RedisTokenStore::connect(redis, &args.redis_prefix, &args.iys_username)
            .await
            .map_err(|e| format!("İYS token store: {e}"))?;
    account.client = iys_client(url, args, Arc::new(tokens))?;
    Ok(())
}

/// Starts the uploader when the app has an İYS account and an evidence store: it drains the
/// evidence outbox to İYS, and each registration it records is applied to this process's
/// index (the pending ONAY becomes ALLOW) and, on a replica, published to the others
/// (`record::on_registered`).
pub fn spawn_uploader(
    app: &App,
    args: &ServeArgs,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let (Some(account), Some(store)) = (&app.iys, &app.evidence) else {
        return Ok(());
    };
    let on_registered =
        crate::write::record::on_registered(Arc::clone(&app.consents), app.shared.clone(), tasks);
    let config = crate::write::uploader::UploaderConfig {
        poll_delay: args.upload_poll_delay,
        ..crate::write::uploader::UploaderConfig::default()
    };
    let uploader = crate::write::uploader::Uploader::new(
        (**store).clone(),
        std::collections::HashMap::from([(account.iys_code, account.client.clone())]),
        config,
        Arc::clone(app.checker.clock_arc()),
        on_registered,
    )
    .map_err(|e| format!("uploader: {e}"))?;
    spawn_led(
        "uploader",
        Arc::clone(store),
        tasks,
        shutdown,
        move |stop| uploader.clone().run(stop),
    );
    Ok(())
}

/// Runs `work` in this process only while it is the deployment's one `role` process
/// ([`crate::write::evidence::Leadership`]: a PostgreSQL advisory lock shared by every replica on
/// the same database; with the file store, always). A process that is not the leader tries
/// again every 5 s; one that loses the lock cancels the work and goes back to trying, so the
/// uploader and the daily reconciliation run once per deployment however many replicas are
/// given `--iys-url`.
fn spawn_led<F, Fut>(
    role: &'static str,
    store: Arc<crate::write::evidence::EvidenceStore>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const CHECK: Duration = Duration::from_secs(5);
    tasks.spawn(async move {
        while !shutdown.is_cancelled() {
            let lead = store.try_lead(role).await.unwrap_or_else(|e| {
                tracing::warn!(role, error = %e, "cannot ask for leadership");
                None
            });
            let Some(mut lead) = lead else {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(CHECK) => continue,
                }
            };
            tracing::info!(role, "this process now leads");
            metrics::gauge!("iysgate_leader", "role" => role).set(1.0);
            let stop = shutdown.child_token();
            let running = tokio::spawn(work(stop.clone()));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(CHECK) => {}
                }
                if !lead.still_held().await {
                    tracing::warn!(role, "lost leadership (database connection ended)");
                    break;
                }
            }
            stop.cancel();
            let _ = running.await;
            metrics::gauge!("iysgate_leader", "role" => role).set(0.0);
        }
    });
}

/// Each day at `--reconcile-at` (Turkey time), reconciles the day before for every stored
/// brand of the app's İYS account; brands that fail (İYS not ready or unreachable) are tried
/// again every 15 minutes until they succeed or the next day's run takes over.
pub fn spawn_reconcile_schedule(
    app: &App,
    args: &ServeArgs,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let Some(at) = args.reconcile_at else {
        return Ok(());
    };
    let (Some(account), Some(store)) = (app.iys.clone(), app.evidence.clone()) else {
        return Err("--reconcile-at needs --iys-url (and the evidence store)".into());
    };
    let confirm = args.reconcile_confirm;
    let clock = Arc::clone(app.checker.clock_arc());
    let holdings = app.serving();
    spawn_led(
        "reconcile",
        Arc::clone(&store),
        tasks,
        shutdown,
        move |stop| {
            reconcile_daily(
                account.clone(),
                Arc::clone(&store),
                holdings.clone(),
                at,
                confirm,
                Arc::clone(&clock),
                stop,
            )
        },
    );
    Ok(())
}

/// The schedule of [`spawn_reconcile_schedule`], until `stop`.
async fn reconcile_daily(
    account: crate::api::admin::IysAccount,
    store: Arc<crate::write::evidence::EvidenceStore>,
    holdings: crate::write::reconcile::Serving,
    at: chrono::NaiveTime,
    confirm: bool,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    const RETRY: chrono::Duration = chrono::Duration::minutes(15);
    let mut retry: Option<(chrono::NaiveDate, Vec<u32>)> = None;
    loop {
        let now = clock.now_turkey();
        let next = next_run(now, at);
        let wake = match &retry {
            Some(_) => next.min(now + RETRY),
            None => next,
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep((wake - now).to_std().unwrap_or_default()) => {}
        }
        let now = clock.now_turkey();
        let (date, brands) = if now >= next {
            match store.brands().await {
                Ok(all) => (
                    now.date() - chrono::Duration::days(1),
                    all.into_iter()
                        .filter(|b| b.iys_code == account.iys_code)
                        .map(|b| b.brand_code)
                        .collect(),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "reconciliation: cannot list brands");
                    continue;
                }
            }
        } else if let Some(pending) = retry.take() {
            pending
        } else {
            continue;
        };
        let failed =
            reconcile_brands(&account, &store, &holdings, date, brands, confirm, &*clock).await;
        retry = (!failed.is_empty()).then_some((date, failed));
    }
}

/// The first `at` (time of day) after `now`.
fn next_run(now: crate::domain::TurkeyTime, at: chrono::NaiveTime) -> crate::domain::TurkeyTime {
    let today = now.date().and_time(at);
    if now < today {
        today
    } else {
        today + chrono::Duration::days(1)
    }
}

/// Reconciles `date` for each of `brands`; returns those that failed.
async fn reconcile_brands(
    account: &crate::api::admin::IysAccount,
    store: &crate::write::evidence::EvidenceStore,
    holdings: &crate::write::reconcile::Serving,
    date: chrono::NaiveDate,
    brands: Vec<u32>,
    confirm: bool,
    clock: &dyn Clock,
) -> Vec<u32> {
    let mut failed = Vec::new();
    for brand in brands {
        let target = crate::write::reconcile::Target {
            iys_code: account.iys_code,
            brand,
            date,
            confirm,
        };
        match crate::write::report::reconcile_day(
            &account.client,
            store,
            holdings,
            target,
            clock.now_utc(),
        )
        .await
        {
            Ok(report) => {
                if let Some(r) = &report.reconciliation {
                    tracing::info!(
                        brand,
                        %date,
                        rows = r.file_rows,
                        mismatches = r.mismatches.len(),
                        repaired = r.repaired,
                        agreement = r.agreement.as_str(),
                        "reconciled with İYS"
                    );
                    metrics::counter!("iysgate_reconcile_mismatches_total")
                        .increment(r.mismatches.len() as u64);
                }
            }
            Err(e) => {
                tracing::warn!(brand, %date, error = %e, "reconciliation failed; will retry");
                metrics::counter!("iysgate_reconcile_failures_total").increment(1);
                failed.push(brand);
            }
        }
    }
    failed
}

/// The keys a serving process answers: those of flags and files (`base`) and the API clients
/// kept in the evidence store. A key present in both refuses, naming the client.
pub async fn served_keys(
    base: &ApiKeys,
    store: &crate::write::evidence::EvidenceStore,
) -> Result<ApiKeys, StartError> {
    let mut keys = base.clone();
    for client in store.clients().await? {
        keys.insert(client.key_sha256, client.to_auth())?;
    }
    Ok(keys)
}

/// Adds the API clients kept in the evidence store (`iysgate client add`) to the ones given by
/// flags and files. A key present in both refuses the start, naming the client.
pub async fn add_stored_clients(
    app: &mut App,
    store: &crate::write::evidence::EvidenceStore,
) -> Result<usize, StartError> {
    let keys = served_keys(&app.base_keys, store).await?;
    let stored = keys.len() - app.base_keys.len();
    app.keys = Arc::new(keys);
    Ok(stored)
}

/// Applies every event kept in the evidence store to the index, as the process that recorded
/// it did: registered when İYS accepted it or already held it from another record, else
/// pending (a RET stays DENY whether or not İYS took it). The embedded default runs this at start, so a recorded RET survives a restart;
/// a replica gets the same from Redis instead. Returns how many events were applied.
///
/// # Errors
/// A store failure.
pub async fn apply_recorded(
    store: &crate::write::evidence::EvidenceStore,
    consents: &Consents,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, crate::write::evidence::EvidenceError> {
    use crate::domain::{ConsentEvent, Registration};
    let mut applied = 0;
    for brand in store.brands().await? {
        let events = store
            .events_between(
                brand.brand_code,
                chrono::DateTime::UNIX_EPOCH,
                now + chrono::Duration::days(1),
            )
            .await?;
        for stored in events {
            let (key, event) = if let Some(settled) = crate::write::uploader::settled_event(&stored)
            {
                settled
            } else {
                let e = &stored.event;
                let pending = ConsentEvent {
                    status: e.status,
                    source: e.source,
                    consent_date: e.consent_date,
                    registration: Registration::Pending,
                    retailer_access: e.retailer_access.clone(),
                };
                (crate::write::uploader::key_of(e), pending)
            };
            let _ = consents.apply(key, event);
            applied += 1;
        }
    }
    Ok(applied)
}

/// Registers provider `iys_code` unless it is already there.
pub async fn ensure_provider(
    store: &crate::write::evidence::EvidenceStore,
    iys_code: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), crate::write::evidence::EvidenceError> {
    use crate::write::evidence::{EvidenceError, Provider};
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
    store: &crate::write::evidence::EvidenceStore,
    iys_code: u32,
    brands: &[(u32, &str, crate::domain::BrandPolicy)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StartError> {
    use crate::write::evidence::{Brand, EvidenceError};
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
    /// The keys of flags and files, without the stored clients.
    pub base_keys: Arc<ApiKeys>,
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<Metrics>,
    /// Where recorded consents are kept (`ConsentRecords`); none: that service refuses.
    pub evidence: Option<Arc<crate::write::evidence::EvidenceStore>>,
    /// The İYS account for uploads and reconciliation (`--iys-url`).
    pub iys: Option<crate::api::admin::IysAccount>,
    /// SHA-256 digests of the admin keys (`--admin-key-sha256`).
    pub admin_keys: Vec<[u8; 32]>,
    /// A replica's shared state (`--redis-url`): what this process records, and the
    /// registrations its uploader sees, are published there for the other replicas. None: they
    /// stay in this process.
    pub shared: Option<crate::sync::redis::SharedState>,
    /// TLS of the listeners (`--tls-cert`); none: plaintext (the loopback demo).
    pub tls: Option<ServerTls>,
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
    /// What the reconciliation compares with and repairs: this process's records, published
    /// to the other replicas when there are any.
    pub fn serving(&self) -> crate::write::reconcile::Serving {
        crate::write::reconcile::Serving {
            consents: Arc::clone(&self.consents),
            shared: self.shared.clone(),
        }
    }

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
        let admin_keys = args
            .admin_keys
            .iter()
            .map(|hex| crate::auth::from_hex(hex.trim()).ok_or(StartError::AdminKey))
            .collect::<Result<Vec<_>, _>>()?;
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
            base_keys: Arc::new(keys.clone()),
            keys: Arc::new(keys),
            freshness,
            metrics: Arc::new({
                // Register the handles with the Prometheus recorder, not the no-op default.
                crate::telemetry::install_metrics();
                Metrics::register()
            }),
            evidence: None,
            iys: iys_account(args).map_err(StartError::Iys)?,
            admin_keys,
            shared: None,
            tls: ServerTls::load(&args.tls)?,
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
    if let Some(tls) = &app.tls {
        tls.spawn_reload(args.tls.tls_reload, tasks, &shutdown);
    }
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
            max_in_flight_per_key: args.max_in_flight_per_key,
            max_queue_delay: args.max_queue_delay,
            quota_hold: args.quota_hold,
        },
    )
    .with_evidence(app.evidence.clone())
    .with_shared(app.shared.clone());
    let service = Arc::new(service);
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

/// Re-reads the stored API clients every `every` and serves them when they changed (added,
/// granted or revoked through another replica's Admin service or the CLI).
fn spawn_clients_reload(
    service: Arc<ConsentService>,
    base: Arc<ApiKeys>,
    store: Arc<crate::write::evidence::EvidenceStore>,
    every: Duration,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    tasks.spawn(async move {
        let mut current: Option<ApiKeys> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match served_keys(&base, &store).await {
                Ok(keys) if current.as_ref() != Some(&keys) => {
                    // The first pass only notes what the start loaded.
                    if current.is_some() {
                        tracing::info!(clients = keys.len(), "API clients changed: reloaded");
                        service.replace_keys(Arc::new(keys.clone()));
                    }
                    current = Some(keys);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reloading API clients failed; keeping the current ones"),
            }
        }
    });
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

/// Serves `/metrics` (Prometheus text) until shutdown, over TLS when `tls` is given.
pub async fn serve_metrics(
    addr: SocketAddr,
    tls: Option<Arc<ReloadingTls>>,
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

/// The system clock as the shared clock type.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_runs_at_the_next_time_of_day() {
        let at = chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        let t = |s: &str| crate::domain::time::parse_iys(s).unwrap();
        assert_eq!(
            next_run(t("2026-05-20 01:00:00"), at),
            t("2026-05-20 02:30:00")
        );
        assert_eq!(
            next_run(t("2026-05-20 02:30:00"), at),
            t("2026-05-21 02:30:00")
        );
        assert_eq!(
            next_run(t("2026-05-20 23:59:59"), at),
            t("2026-05-21 02:30:00")
        );
    }

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
