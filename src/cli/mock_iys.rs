//! `iysgate mock-iys`: the mock İYS as a process, for integration and load tests (dev-tools).

use crate::app::{self, config::MockIysArgs};

/// Serves the mock İYS until SIGINT/SIGTERM.
///
/// # Errors
/// When the port cannot be bound or seeding fails.
pub async fn run(args: MockIysArgs) -> Result<(), crate::cli::Error> {
    use crate::domain::{Channel, ConsentStatus, RecipientType};
    use crate::iys::mock::{MockConfig, MockIys, RateLimits, SeedRecord};
    crate::telemetry::init_logging(&args.logging.filter(), args.logging.log_format)?;
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
            recipient: crate::iys::mock::seeded_recipient(i),
            recipient_type: RecipientType::Bireysel,
            consent_type: Channel::Mesaj,
            status: ConsentStatus::Onay,
            source: "HS_WEB".into(),
            consent_date: Some(at),
            creation_date: Some(at),
        });
        let n = mock.seed(700_001, records)?;
        tracing::info!(records = n, "seeded brand 700001");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if args.citizen_rate > 0.0 {
        mock.spawn_citizen(args.citizen_rate, 2026, stop_rx);
    }
    let listener = app::bind(args.listen).await?;
    println!(
        "mock İYS on http://{}: user mock / password mock, iysCode 700000, brands 700000 and 700001",
        listener.local_addr()?
    );
    let served = mock
        .serve_with_shutdown(listener, async {
            app::shutdown_signal().await;
        })
        .await;
    let _ = stop_tx.send(true);
    Ok(served?)
}
