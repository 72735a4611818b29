//! The `iysgate` binary: parses and validates the command line, builds the runtime, and hands
//! each command to one library function. Telemetry starts inside those functions, once the
//! command's log filter is known; nothing here binds a port or opens a store.

use std::process::ExitCode;

use iysgate::app::config::{Command, ConfigCommand, RuntimeFlavor};
use iysgate::app::config_file::{self, LoadError};
use iysgate::app::run;
use iysgate::cli::{admin, client, demo, import, keygen};

/// mimalloc instead of glibc malloc: the gRPC stack allocates per call (h2 frames, headers);
/// measured with `load-tests/compare.sh` (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The command line, its environment variables, the `--config` file and the secret files.
    let cli = match config_file::load(std::env::args_os()) {
        Ok(loaded) => loaded.cli,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("iysgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Config(ConfigCommand::Check { file, command }) = &cli.command {
        return match config_file::check(file, command) {
            Ok(effective) => {
                print!("{effective}");
                ExitCode::SUCCESS
            }
            Err(LoadError::Clap(e)) => {
                eprint!("{}", e.render());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("iysgate: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iysgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One library function per command.
async fn dispatch(command: Command) -> Result<(), iysgate::cli::Error> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Serve(args) => Ok(run::serve(args, None).await?),
        Command::Sync(args) => Ok(run::sync(args).await?),
        Command::Check(args) => Ok(client::check(&args).await?),
        Command::Filter(args) => {
            let (items, allowed) = client::filter(&args).await?;
            eprintln!("{items} recipients, {allowed} allowed");
            Ok(())
        }
        Command::Keygen(args) => keygen::run(&args),
        Command::Import(args) => import::run(args).await,
        Command::Brand(cmd) => admin::brand(cmd).await,
        Command::Report(args) => admin::report(args).await,
        Command::Reconcile(args) => admin::reconcile(args).await,
        Command::Client(cmd) => admin::client(cmd).await,
        Command::User(cmd) => iysgate::cli::user::run(cmd).await,
        Command::Migrate(args) => admin::migrate(&args).await,
        Command::Config(_) => unreachable!("`config check` is answered before the runtime starts"),
        #[cfg(feature = "dev-tools")]
        Command::MockIys(args) => iysgate::cli::mock_iys::run(args).await,
        #[cfg(feature = "dev-tools")]
        Command::Load(args) => iysgate::cli::load::run(args).await,
        #[cfg(feature = "dev-tools")]
        Command::EchoServer(args) => iysgate::cli::load::echo_server(args).await,
    }
}
