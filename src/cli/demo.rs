//! `iysgate demo`: `serve` on a generated data set with a new API key, and the tour printed
//! once it is ready (what was generated, where it listens, commands to try).

use crate::app::config::DemoArgs;
use crate::app::demo;
use crate::app::run::{self, Demo, Tour};
use crate::auth;

/// Runs the demo until SIGINT/SIGTERM.
///
/// # Errors
/// As [`run::serve`].
pub async fn run(args: DemoArgs) -> Result<(), crate::cli::Error> {
    crate::telemetry::init_logging(&args.serve.logging.filter(), args.serve.logging.log_format)?;
    let secret = auth::generate_key()?;
    let brands: Vec<String> = demo::BRANDS.iter().map(|b| b.code.to_string()).collect();
    let mut serve = args.serve.clone();
    serve.clients.push(format!(
        "name=demo;sha256={};brands={};retailers=*",
        auth::to_hex(&auth::hash_key(&secret)),
        brands.join(",")
    ));
    #[cfg(feature = "dev-tools")]
    let mock_iys = if serve.upload_iys_url.is_none() {
        Some(start_mock_iys(&mut serve).await?)
    } else {
        None
    };
    #[cfg(not(feature = "dev-tools"))]
    let mock_iys = None;
    let demo = Demo {
        records: args.records,
        seed: args.seed,
        secret,
        tour: print_tour,
        mock_iys,
    };
    Ok(run::serve(serve, Some(demo)).await?)
}

/// Recipients of the changes the demo's mock İYS holds for yesterday.
#[cfg(feature = "dev-tools")]
const MOCK_CHANGES: [(
    &str,
    crate::domain::Channel,
    crate::domain::ConsentStatus,
    &str,
); 6] = {
    use crate::domain::Channel::{Eposta, Mesaj};
    use crate::domain::ConsentStatus::{Onay, Ret};
    [
        ("+905559000001", Mesaj, Ret, "IYS_WEB"),
        ("+905559000002", Mesaj, Ret, "IYS_MOBIL"),
        ("+905559000003", Mesaj, Ret, "IYS_KISAMESAJ"),
        ("+905559000004", Mesaj, Onay, "HS_WEB"),
        ("musteri1@example.com", Eposta, Onay, "HS_WEB"),
        ("musteri2@example.com", Eposta, Ret, "IYS_WEB"),
    ]
};

/// Starts the built-in mock İYS in this process for the demo's provider and brands (a random
/// password), with a few changes of yesterday for the first brand, and points the uploader
/// and the reconciliation at it.
#[cfg(feature = "dev-tools")]
async fn start_mock_iys(
    serve: &mut crate::app::config::ServeArgs,
) -> Result<crate::app::run::MockIysTour, crate::cli::Error> {
    use crate::domain::RecipientType;
    use crate::iys::mock::{Account, MockConfig, MockIys, SeedRecord};
    let password = auth::generate_key()?;
    let mock = MockIys::new(MockConfig {
        accounts: vec![Account::new(
            "demo",
            password.clone(),
            u64::from(demo::IYS_CODE),
            demo::BRANDS.iter().map(|b| u64::from(b.code)).collect(),
        )],
        // The real İYS waits five minutes before a batch's results; the demo's uploads are
        // single adds, answered at once, and its batches are answered after ten seconds.
        batch_delay: std::time::Duration::from_secs(10),
        ..MockConfig::default()
    });
    let yesterday = crate::app::system_clock().now_turkey().date() - chrono::Duration::days(1);
    let seeded =
        MOCK_CHANGES
            .iter()
            .enumerate()
            .map(|(i, (recipient, channel, status, source))| {
                let at = yesterday
                    .and_hms_opt(9 + u32::try_from(i).unwrap_or(0), 15, 0)
                    .unwrap_or_default();
                SeedRecord {
                    recipient: (*recipient).to_owned(),
                    recipient_type: RecipientType::Bireysel,
                    consent_type: *channel,
                    status: *status,
                    source: (*source).to_owned(),
                    consent_date: Some(at),
                    creation_date: Some(at),
                }
            });
    let seeded_changes = mock.seed(u64::from(demo::BRANDS[0].code), seeded)?;
    let listener = crate::app::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(mock.serve(listener));
    serve.upload_iys_url = Some(url.clone());
    serve.iys_username = "demo".into();
    serve.iys_password = password;
    serve.iys_code = demo::IYS_CODE;
    Ok(crate::app::run::MockIysTour {
        url,
        seeded_changes,
    })
}

/// The tour on stdout: the data set, the addresses, the API key and a command per sample.
fn print_tour(tour: &Tour<'_>) {
    let index = tour.app.consents.index();
    println!();
    println!(
        "iysgate demo: {} records ({} consent events) for {} brands, generated in {:.1} s",
        tour.summary.records,
        tour.summary.events,
        demo::BRANDS.len(),
        tour.took.as_secs_f64()
    );
    println!(
        "index: {} records, {:.1} bytes/record",
        index.len(),
        index.heap_bytes() as f64 / index.len().max(1) as f64
    );
    println!(
        "gRPC on {}; metrics on {}",
        tour.addr,
        tour.metrics
            .map_or("off".to_owned(), |m| format!("http://{m}/metrics"))
    );
    if let Some((addr, (user, password))) = tour.panel {
        println!();
        println!("compliance panel: http://{addr}/  (log in as {user:?}, password {password})");
    }
    if let Some(mock) = tour.mock_iys {
        println!(
            "built-in mock İYS on {} (this process): consents recorded or imported in the panel \
             are uploaded there within seconds;\n  it holds {} changes of yesterday for brand {} \
             that the index lacks: run yesterday's reconciliation\n  under Daily reports to see \
             them found and repaired, then run it again to confirm the agreement",
            mock.url,
            mock.seeded_changes,
            demo::BRANDS[0].code
        );
    }
    println!();
    println!(
        "API key (granted brands {}):",
        demo::BRANDS
            .iter()
            .map(|b| b.code.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  export IYSGATE_API_KEY={}", tour.secret);
    println!();
    println!(
        "Try (synthetic recipients of brand {}):",
        demo::BRANDS[0].code
    );
    for (sample, (recipient, channel)) in &tour.summary.samples {
        let retailer = if *sample == demo::Sample::WithRetailer {
            format!(" --retailer {}", demo::RETAILERS[0])
        } else {
            String::new()
        };
        println!(
            "  {:<16} iysgate check --addr http://{} --brand {} --channel {channel}{retailer} '{recipient}'",
            format!("{sample:?}:"),
            tour.addr,
            demo::BRANDS[0].code
        );
    }
    println!(
        "  {:<16} iysgate check --addr http://{} --brand {} --channel MESAJ '0555 000 00 00'",
        "NoRecord:",
        tour.addr,
        demo::BRANDS[0].code
    );
    println!();
}
