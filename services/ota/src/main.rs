//! `ota`: the whole platform in one binary. `ota serve` runs any subset of
//! the services; every other subcommand is the command-line client of a
//! running server's management API.

mod artifacts;
mod cli;
mod client;
mod config;
mod events;
mod files;
mod listener;
mod metric_catalog;
mod node;
mod serve;
mod simulate;
mod telemetry;

// jemalloc with huge pages: see `ota_common::alloc` for why.
#[cfg(unix)]
#[global_allocator]
static ALLOC: ota_common::alloc::Jemalloc = ota_common::alloc::Jemalloc;
#[cfg(unix)]
ota_common::jemalloc_options!();

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use figment::providers::Serialized;
use figment::Figment;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "ota",
    version,
    about = "Over-the-air update platform for vehicle fleets"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    conn: client::Connection,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the platform (all services by default).
    Serve(ServeArgs),
    /// Apply database migrations and exit (for deployments that migrate
    /// before rolling out).
    Migrate(ServeArgs),
    /// Manage vehicles in the inventory.
    #[command(subcommand)]
    Vehicles(cli::vehicles::VehiclesCmd),
    /// Check, explain and preview CEL targeting rules.
    #[command(subcommand)]
    Rules(cli::rules::RulesCmd),
    /// Manage management-API tokens.
    #[command(subcommand)]
    Tokens(cli::tokens::TokensCmd),
    /// Register and inspect software packages.
    #[command(subcommand)]
    Packages(cli::packages::PackagesCmd),
    /// Create, approve, launch and follow update campaigns.
    #[command(subcommand)]
    Campaigns(cli::campaigns::CampaignsCmd),
    /// Show the audit log of packages and campaigns, newest first.
    Audit(cli::audit::AuditArgs),
    /// Inspect and repair the staged documents vehicles fetch.
    #[command(subcommand)]
    Staging(cli::staging::StagingCmd),
    /// Simulate a fleet of vehicles over HTTP, MQTT or hawkBit DDI: they
    /// fetch their actions, download, install and report like real ones.
    Simulate(simulate::SimulateArgs),
    /// The roles, peer variables, `OTA_*` variables and exported metrics
    /// as JSON, for deployment tooling (`infra/ota-describe.json` is this
    /// output).
    #[command(hide = true)]
    Describe,
}

/// Flags override ota.toml and OTA_* variables.
#[derive(clap::Args, Debug, Serialize)]
struct ServeArgs {
    /// Config file (default: ./ota.toml when present).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Comma-separated services to run, or "all".
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_addr: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// auto (readable on a terminal, JSON lines otherwise), json or text.
    #[arg(long, value_parser = ["auto", "json", "text"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<config::Config> {
        config::load(
            self.config.as_deref(),
            Figment::from(Serialized::globals(self)),
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        default_sigpipe();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(cli));
    // Background work that ignores shutdown (the embedded broker's) must not
    // keep the process alive once run() has returned.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CLI ends quietly when its reader goes away (`ota vehicles list |
/// head`), as Unix tools do; Rust's runtime ignores SIGPIPE, which would
/// turn the next print into a panic. The server keeps ignoring it: a
/// vehicle that hangs up must not end the process.
#[allow(unsafe_code)]
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; setting
    // a signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Serve(args) => {
            let cfg = args.load()?;
            let telemetry = telemetry::init(&cfg.log, cfg.log_format)?;
            if let Err(e) = serve::run(cfg, telemetry).await {
                tracing::error!(error = format!("{e:#}"), "ota failed");
                return Err(e);
            }
            Ok(0)
        }
        Cmd::Migrate(args) => {
            let cfg = args.load()?;
            let url = cfg.database_url();
            ota_db::Db::connect(&url, &ota_db::DbOptions::default())
                .await?
                .close()
                .await;
            println!("database {} is migrated", ota_db::redact(&url));
            Ok(0)
        }
        Cmd::Vehicles(cmd) => cli::vehicles::run(cmd, &cli.conn).await,
        Cmd::Rules(cmd) => cli::rules::run(cmd, &cli.conn).await,
        Cmd::Tokens(cmd) => cli::tokens::run(cmd, &cli.conn).await.map(|_| 0),
        Cmd::Packages(cmd) => cli::packages::run(cmd, &cli.conn).await,
        Cmd::Campaigns(cmd) => cli::campaigns::run(cmd, &cli.conn).await,
        Cmd::Audit(args) => cli::audit::run(args, &cli.conn).await,
        Cmd::Staging(cmd) => cli::staging::run(cmd, &cli.conn).await.map(|_| 0),
        Cmd::Simulate(args) => simulate::run(args, &cli.conn).await,
        Cmd::Describe => {
            println!("{}", serde_json::to_string_pretty(&config::contract())?);
            Ok(0)
        }
    }
}
