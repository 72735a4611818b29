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
    crate::telemetry::init_logging(&args.serve.log)?;
    let secret = auth::generate_key()?;
    let brands: Vec<String> = demo::BRANDS.iter().map(|b| b.code.to_string()).collect();
    let mut serve = args.serve.clone();
    serve.clients.push(format!(
        "name=demo;sha256={};brands={};retailers=*",
        auth::to_hex(&auth::hash_key(&secret)),
        brands.join(",")
    ));
    let demo = Demo {
        records: args.records,
        seed: args.seed,
        secret,
        tour: print_tour,
    };
    Ok(run::serve(serve, Some(demo)).await?)
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
