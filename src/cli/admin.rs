//! `iysgate brand …` and `iysgate client …`: administration of the evidence store from the
//! command line (many providers and brands in one deployment). API keys are shown once and
//! stored only as SHA-256 digests; `serve` loads the stored clients at start.

use crate::app::config::{BrandCommand, ClientCommand, ReconcileArgs, ReportArgs, StoreArgs};
use crate::auth::{self, RetailerGrant};
use crate::cli::Error;
use crate::domain::{BrandPolicy, BusinessCalendar};
use crate::write::evidence::{Brand, EvidenceStore};

async fn open(args: &StoreArgs) -> Result<EvidenceStore, Error> {
    crate::app::open_evidence(
        args.database_url.as_deref(),
        &args.evidence_file,
        BusinessCalendar::embedded(),
    )
    .await
    .map_err(Error::from)
}

pub async fn brand(cmd: BrandCommand) -> Result<(), Error> {
    let now = chrono::Utc::now();
    match cmd {
        BrandCommand::Add {
            store,
            iys_code,
            brand_code,
            name,
            allow_unregistered_tacir,
        } => {
            let store = open(&store).await?;
            crate::write::accounts::ensure_provider(&store, iys_code, now).await?;
            let brand = Brand {
                brand_code,
                iys_code,
                name,
                policy: BrandPolicy {
                    allow_unregistered_tacir,
                },
            };
            store.add_brand(&brand, now).await?;
            println!("brand {brand_code} of provider {iys_code} added");
        }
        BrandCommand::List { store } => {
            let store = open(&store).await?;
            println!("{:>10}  {:>10}  {:<6}  name", "brand", "iysCode", "TACIR");
            for b in store.brands().await? {
                let tacir = if b.policy.allow_unregistered_tacir {
                    "allow"
                } else {
                    "check"
                };
                println!(
                    "{:>10}  {:>10}  {tacir:<6}  {}",
                    b.brand_code, b.iys_code, b.name
                );
            }
        }
    }
    Ok(())
}

fn retailers(text: Option<&str>) -> Result<RetailerGrant, Error> {
    match text {
        None => Ok(RetailerGrant::None),
        Some("*") => Ok(RetailerGrant::Any),
        Some(list) => list
            .split(',')
            .map(|c| c.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(RetailerGrant::Only)
            .map_err(|_| Error::Retailers(list.to_owned())),
    }
}

pub async fn client(cmd: ClientCommand) -> Result<(), Error> {
    let now = chrono::Utc::now();
    match cmd {
        ClientCommand::Add { store, name } => {
            let store = open(&store).await?;
            let secret = auth::generate_key()?;
            store
                .add_client(&name, auth::hash_key(&secret), now)
                .await?;
            println!("client {name} added; its API key (shown once): {secret}");
            println!("grant it brands with: iysgate client grant --name {name} --brand CODE");
        }
        ClientCommand::Grant {
            store,
            name,
            brand,
            retailers: list,
        } => {
            let grant = retailers(list.as_deref())?;
            let store = open(&store).await?;
            store.grant(&name, brand, &grant, now).await?;
            println!("client {name} granted brand {brand}");
        }
        ClientCommand::Revoke { store, name, brand } => {
            let store = open(&store).await?;
            let revoked = store.revoke(&name, brand).await?;
            println!(
                "client {name}: brand {brand} {}",
                if revoked {
                    "revoked"
                } else {
                    "was not granted"
                }
            );
        }
        ClientCommand::List { store } => {
            let store = open(&store).await?;
            for c in store.clients().await? {
                let brands: Vec<String> = c.to_auth().brands().map(|b| b.to_string()).collect();
                println!("{:<20}  brands {}", c.name, brands.join(","));
            }
        }
    }
    Ok(())
}

pub async fn report(args: ReportArgs) -> Result<(), Error> {
    let now = chrono::Utc::now();
    let date = args
        .date
        .unwrap_or_else(|| crate::domain::time::to_turkey(now).date());
    let report = if let Some(addr) = &args.addr {
        let request = crate::cli::client::with_key(
            crate::pb::GetDailyReportRequest {
                brand_code: args.brand.into(),
                date: date.format("%Y-%m-%d").to_string(),
            },
            &args.api_key,
        )?;
        let reply = admin_client(addr).await?.get_daily_report(request).await?;
        crate::api::admin::report_from_pb(reply.get_ref())?
    } else {
        let store = open(&args.store).await?;
        crate::write::report::daily_report(&store, args.brand, date, now).await?
    };
    print_report(&report, args.format)
}

/// `iysgate reconcile`: Admin.Reconcile on a running server, the report printed.
pub async fn reconcile(args: ReconcileArgs) -> Result<(), Error> {
    use crate::pb;
    let mut admin = admin_client(&args.addr).await?;
    let request = crate::cli::client::with_key(
        pb::ReconcileRequest {
            brand_code: args.brand.into(),
            date: args
                .date
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            confirm: args.confirm,
        },
        &args.api_key,
    )?;
    let reply = admin.reconcile(request).await?;
    let report = crate::api::admin::report_from_pb(reply.get_ref())?;
    print_report(&report, args.format)
}

async fn admin_client(
    addr: &str,
) -> Result<crate::pb::admin_client::AdminClient<tonic::transport::Channel>, Error> {
    crate::pb::admin_client::AdminClient::connect(addr.to_owned())
        .await
        .map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })
}

fn print_report(
    report: &crate::write::report::DailyReport,
    format: crate::app::config::ReportFormat,
) -> Result<(), Error> {
    use crate::app::config::ReportFormat;
    match format {
        ReportFormat::Table => print!("{}", report.table()),
        ReportFormat::Csv => print!("{}", report.csv()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

/// `iysgate migrate`: applies the evidence store's PostgreSQL migrations and exits.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn migrate(args: &crate::app::config::MigrateArgs) -> Result<(), Error> {
    crate::write::evidence::PgStore::connect(
        &args.database_url,
        crate::domain::BusinessCalendar::embedded(),
    )
    .await?;
    println!("evidence store migrated");
    Ok(())
}
