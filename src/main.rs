//! The `gatehouse` binary: load `.env`, parse the command line, set up logging, dispatch.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use gatehouse::auth::password::PasswordHasher;
use gatehouse::cli::{Cli, Command};
use gatehouse::server::shutdown_signal;
use gatehouse::startup::Application;
use gatehouse::telemetry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("gatehouse: ignoring .env: {e}");
        }
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve(settings) => {
            telemetry::init(settings.log_format);
            let app = Application::build(*settings).await?;
            app.run(shutdown_signal()).await?;
        }
        Command::Migrate(db) => {
            telemetry::init_quiet();
            let store = gatehouse::store::connect(&db).await?;
            println!("schema is at version {}", store.schema_version().await?);
        }
        Command::User(cmd) => {
            telemetry::init_quiet();
            gatehouse::admin::user(cmd).await?;
        }
        Command::Audit(args) => {
            telemetry::init_quiet();
            gatehouse::admin::audit(args).await?;
        }
        Command::ImportSeed(args) => {
            telemetry::init_quiet();
            gatehouse::import::run(args).await?;
        }
        Command::UpgradeHashes(args) => {
            telemetry::init_quiet();
            gatehouse::admin::upgrade_hashes(args).await?;
        }
        Command::CheckConfig(settings) => {
            telemetry::init_quiet();
            gatehouse::admin::check_config(*settings).await?;
        }
        Command::HashBench { hashing, rounds } => {
            let hasher = PasswordHasher::new(&hashing)?;
            let mut blocks = Vec::new();
            hasher.hash_blocking("warm-up password", &mut blocks)?;
            let mut times = Vec::new();
            for _ in 0..rounds.max(1) {
                let start = Instant::now();
                hasher.hash_blocking("benchmark password 1234", &mut blocks)?;
                times.push(start.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            println!(
                "argon2id m={}KiB t={} p={}: median {:.2} ms per hash over {} rounds; ceiling {:.1} hashes/s on {} cores",
                hashing.argon2_memory_kib,
                hashing.argon2_iterations,
                hashing.argon2_parallelism,
                median * 1e3,
                times.len(),
                cores as f64 / median,
                cores
            );
        }
    }
    Ok(())
}
