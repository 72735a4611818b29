//! Work that runs beside serving, on a schedule or under a lease: the uploader and the daily
//! reconciliation (each in one process per deployment, by a PostgreSQL advisory lock), and the
//! periodic reload of the API clients kept in the evidence store.

use super::{App, StartError, served_keys};
use crate::api::ConsentService;
use crate::app::config::ServeArgs;
use crate::auth::ApiKeys;
use crate::domain::Clock;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts the uploader when the app has an İYS account and an evidence store: it drains the
/// evidence outbox to İYS, and each registration it records is applied to this process's
/// index (the pending ONAY becomes ALLOW) and, on a replica, published to the others
/// (`record::on_registered`).
pub fn spawn_uploader(
    app: &App,
    args: &ServeArgs,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
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
    )?;
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
pub(crate) fn spawn_led<F, Fut>(
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
) -> Result<(), StartError> {
    let Some(at) = args.reconcile_at else {
        return Ok(());
    };
    let (Some(account), Some(store)) = (app.iys.clone(), app.evidence.clone()) else {
        return Err(StartError::ReconcileNeedsIys);
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
pub(crate) async fn reconcile_daily(
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
pub(crate) fn next_run(
    now: crate::domain::TurkeyTime,
    at: chrono::NaiveTime,
) -> crate::domain::TurkeyTime {
    let today = now.date().and_time(at);
    if now < today {
        today
    } else {
        today + chrono::Duration::days(1)
    }
}

/// Reconciles `date` for each of `brands`; returns those that failed.
pub(crate) async fn reconcile_brands(
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

/// Re-reads the stored API clients every `every` and serves them when they changed (added,
/// granted or revoked through another replica's Admin service or the CLI).
pub(crate) fn spawn_clients_reload(
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
