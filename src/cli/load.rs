//! `iysgate load` and `iysgate echo-server`: the load generator's scenarios and the bare-tonic
//! baseline they are compared against (dev-tools).

use std::sync::Arc;

use crate::app;
use crate::app::config::{ConfigError, EchoServerArgs, ListArg, LoadArgs, LoadTarget, Scenario};
use crate::cli::Error;

/// Serves the echo baseline until SIGINT/SIGTERM.
///
/// # Errors
/// When the port cannot be bound or serving fails.
pub async fn echo_server(args: EchoServerArgs) -> Result<(), Error> {
    let listener = app::bind(args.listen).await?;
    println!("echo baseline on {}", args.listen);
    Ok(crate::load::serve_echo(listener, app::shutdown_signal()).await?)
}

/// Runs one scenario and prints its report (summary, or JSON with `--json`).
///
/// # Errors
/// A flag the scenario needs is missing, or the run fails.
pub async fn run(args: LoadArgs) -> Result<(), Error> {
    use crate::domain::Channel;
    use crate::load::filter::{FilterRun, ListKind, run_filter};
    use crate::load::tenants::{TenantsRun, run_tenants};
    use crate::load::{
        ClosedLoop, Progress, Target, demo_recipients, run_closed_loop, run_open_loop,
    };
    fn emit<T: serde::Serialize>(json: bool, report: &T, summary: &str) -> Result<(), Error> {
        if json {
            println!("{}", serde_json::to_string(report)?);
        } else {
            println!("{summary}");
        }
        Ok(())
    }
    let target = match args.target {
        LoadTarget::Iysgate => Target::Iysgate,
        LoadTarget::Echo => Target::Echo,
    };
    let progress = Progress::default();
    let planned = match args.scenario {
        Scenario::MixedTenants => Some(args.duration * 2 + std::time::Duration::from_secs(1)),
        Scenario::Email | Scenario::ColdStart => None,
        Scenario::Sms | Scenario::SyncBurst => Some(args.duration),
    };
    let line = (!args.quiet).then(|| progress.show("answered", planned));
    let checks = if matches!(args.scenario, Scenario::Email | Scenario::ColdStart) {
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
    match args.scenario {
        Scenario::Sms => {
            let run = sms(args.api_key.clone(), progress);
            let report = if args.rate > 0 {
                run_open_loop(run, args.rate).await
            } else {
                run_closed_loop(run).await
            }?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        Scenario::Email => {
            let (kind, channel) = match args.list {
                ListArg::Phones => (ListKind::Phones, Channel::Mesaj),
                ListArg::Emails => (ListKind::Emails, Channel::Eposta),
                ListArg::EmailStrings => (ListKind::EmailStrings, Channel::Eposta),
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
            let report = run_filter(run).await?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        Scenario::MixedTenants => {
            if args.rate == 0 || args.flood_api_key.is_empty() {
                return Err(ConfigError::Scenario {
                    scenario: "mixed-tenants",
                    needs: "--rate (the steady tenant's calls/s) and --flood-api-key",
                }
                .into());
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
            let report = run_tenants(run).await?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        Scenario::SyncBurst => {
            use crate::load::burst::{BurstRun, run_burst};
            let path = args.targets_file.as_ref().ok_or(ConfigError::Scenario {
                scenario: "sync-burst",
                needs: "--targets-file",
            })?;
            let targets = read_lines("--targets-file", path)?;
            if args.rate == 0 {
                return Err(ConfigError::Scenario {
                    scenario: "sync-burst",
                    needs: "--rate (the steady Checks per second)",
                }
                .into());
            }
            let run = BurstRun {
                steady: sms(args.api_key.clone(), progress),
                steady_rate: args.rate,
                targets: Arc::new(targets),
                trigger_url: args.trigger_url.clone(),
                trigger_body: args.trigger_body.clone(),
                timeout: args.duration,
            };
            let report = run_burst(run).await?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
        Scenario::ColdStart => {
            let started = args.started_unix_ms.ok_or(ConfigError::Scenario {
                scenario: "cold-start",
                needs: "--started-unix-ms (the server's start)",
            })?;
            let report =
                crate::load::cold::wait_serving(&args.addr, started, args.records, args.duration)
                    .await?;
            finish(line).await;
            emit(args.json, &report, &report.summary())
        }
    }
}

/// The non-empty lines of a file named by `flag`, trimmed.
fn read_lines(flag: &'static str, path: &std::path::Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(Error::NoRecipients {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(lines)
}

async fn finish(line: Option<crate::load::progress::ProgressLine>) {
    if let Some(line) = line {
        line.finish().await;
    }
}
