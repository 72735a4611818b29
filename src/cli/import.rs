//! `iysgate import`: a CSV of consents collected elsewhere into the evidence store, with its
//! progress on stderr and the summary (or JSON) on stdout.

use crate::app::{self, config::ImportArgs};

/// Imports the file and prints what was stored and what was refused.
///
/// # Errors
/// When the store cannot be opened or the file read.
pub async fn run(args: ImportArgs) -> Result<(), crate::cli::Error> {
    use crate::domain::BusinessCalendar;
    use crate::write::evidence::Recorder;
    let calendar = BusinessCalendar::embedded();
    let store = app::open_evidence(
        args.store.database_url.as_deref(),
        &args.store.evidence_file,
        calendar.clone(),
    )
    .await?;
    let recorder = Recorder {
        client: "import".into(),
        key_sha256: None,
    };
    let now = app::system_clock().now_turkey();
    let summary = crate::write::import::import_file(
        &store,
        &args.file,
        args.brand,
        &recorder,
        now,
        &calendar,
        None,
        progress(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
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
fn progress() -> impl FnMut(crate::write::import::ImportProgress) {
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
