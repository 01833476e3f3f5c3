use std::process::ExitCode;

use clap::Parser;
use gatehouse::accounts::Accounts;
use gatehouse::app::{App, shutdown_signal};
use gatehouse::cli::{Cli, Command};
use gatehouse::config::Config;
use gatehouse::{cli, store, telemetry};
use tokio::net::TcpListener;

/// `gatehouse check`'s status for a denied request.
const DENIED: u8 = 3;

/// mimalloc: a fifth less CPU per Check than the system allocator under
/// load (allocation is a tenth of the profile with glibc; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Check(args) = cli.command {
        // A client: no configuration or database needed.
        let allowed = cli::run_check(cli.json, args).await?;
        return Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(DENIED) });
    }
    if let Command::Doctor(args) = &cli.command {
        // Reports a configuration that does not load instead of stopping at it.
        let report = gatehouse::doctor::run(cli.config.as_deref(), args.envoy.as_deref()).await;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.text());
        }
        return Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    run_command(cli).await.map(|()| ExitCode::SUCCESS)
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init(config.log_json)?;
    telemetry::set_log_emails(config.log_emails);
    let json = cli.json;
    match cli.command {
        Command::Serve(args) => {
            if let Some(addr) = args.grpc_addr {
                config.grpc_addr = addr;
            }
            if let Some(addr) = args.http_addr {
                config.http_addr = addr;
            }
            serve(config).await
        }
        Command::Migrate => {
            let store = store::connect(config.database_url.as_str(), true, config.database_timeout).await?;
            if json {
                println!("{}", serde_json::json!({"migrated": true, "backend": store.backend()}));
            } else {
                println!("database schema is up to date ({})", store.backend());
            }
            Ok(())
        }
        Command::Users(cmd) => cli::run_users(accounts(&config).await?, json, cmd).await,
        Command::Groups(cmd) => cli::run_groups(accounts(&config).await?, json, cmd).await,
        Command::Keys(cmd) => cli::run_keys(accounts(&config).await?, json, cmd).await,
        Command::Usage(args) => cli::run_usage(accounts(&config).await?, json, args).await,
        Command::Check(_) => anyhow::bail!("check is a client command"),
        Command::Doctor(_) => anyhow::bail!("doctor runs before the configuration is loaded"),
    }
}

/// Account management straight on the store, for the operator commands.
async fn accounts(config: &Config) -> anyhow::Result<Accounts> {
    let store = store::connect_with(&config.database_settings(), config.auto_migrate).await?;
    Ok(Accounts::new(store, config.roles, config.accounts.clone(), None, gatehouse::clock::system()))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let grpc = TcpListener::bind(config.grpc_addr).await?;
    let http = TcpListener::bind(config.http_addr).await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let app = App::build(config).await?;
    let summary = app.config.summary(grpc_addr, http_addr, app.authorizer.policy().rules().len());
    tracing::info!("gatehouse listening: {summary}");
    app.serve(grpc, http, shutdown).await
}
