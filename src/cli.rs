//! Command line (clap): `run`, `check`, `demo`, `reload`. Parses arguments, loads the
//! policy through `config::load`, and reports errors with a non-zero exit code
//! (2 for an invalid policy set).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use portcullis::config::{self, ConfigError, Env, Overrides, ProcessEnv};
use portcullis::{Gateway, StartError, demo, telemetry};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Multi-tenant security gateway for SaaS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a policy directory.
    Run {
        /// Policy directory (gateway.toml, tiers/, tenants/).
        #[arg(long, default_value = "policies")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Validate a policy directory and report every problem (exit code 2 on errors).
    Check {
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        config: PathBuf,
    },
    /// Run the demo: three tenants on *.localhost with built-in echo apps, zero set-up.
    Demo {
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Ask a running gateway to reload its policy (operator token from PORTCULLIS_OPERATOR_TOKEN).
    Reload {
        /// Policy directory, to find the admin listener address.
        #[arg(long, default_value = "policies")]
        config: PathBuf,
        /// Admin listener address (instead of reading it from the policy).
        #[arg(long)]
        admin_listen: Option<String>,
    },
}

#[derive(Args, Clone, Default)]
struct OverrideArgs {
    /// Public listener address (IP:PORT).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address (IP:PORT).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Embedded store directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Store URL: sqlite:PATH or redis://HOST:PORT.
    #[arg(long)]
    store: Option<String>,
    /// One upstream URL for every tenant.
    #[arg(long)]
    upstream: Option<String>,
}

impl From<OverrideArgs> for Overrides {
    fn from(a: OverrideArgs) -> Self {
        Overrides {
            listen: a.listen,
            admin_listen: a.admin_listen,
            data: a.data,
            store: a.store,
            upstream: a.upstream,
        }
    }
}

/// Exit code for an invalid policy set.
const INVALID_POLICY: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config, overrides } => runtime().and_then(|rt| rt.block_on(run(config, overrides.into()))),
        Command::Demo { overrides } => runtime().and_then(|rt| rt.block_on(demo_main(overrides.into()))),
        Command::Reload { config, admin_listen } => runtime().and_then(|rt| rt.block_on(reload(config, admin_listen))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(StartError::Policy(errors)) = e.downcast_ref::<StartError>() {
                print_errors(errors);
                return ExitCode::from(INVALID_POLICY);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_errors(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "{} problem{} found",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

fn check(dir: &std::path::Path) -> ExitCode {
    match config::load(dir, &ProcessEnv, &Overrides::default()) {
        Ok(cfg) => {
            println!(
                "ok: {} tiers, {} tenants, policy digest {}",
                cfg.tiers.len(),
                cfg.tenants.len(),
                cfg.digest
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::from(INVALID_POLICY)
        }
    }
}

async fn run(dir: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let _guard = telemetry::init_logging();
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    let cfg = config::load(&dir, env.as_ref(), &overrides).map_err(StartError::Policy)?;
    let gateway = Gateway::bind(cfg, env, overrides).await?;
    tracing::info!(public = %gateway.public_addr()?, admin = %gateway.admin_addr()?, "listening");
    gateway.run().await?;
    Ok(())
}

async fn demo_main(overrides: Overrides) -> anyhow::Result<()> {
    let _guard = telemetry::init_logging();
    demo::run(overrides).await
}

async fn reload(dir: PathBuf, admin_listen: Option<String>) -> anyhow::Result<()> {
    let token = std::env::var("PORTCULLIS_OPERATOR_TOKEN")
        .map_err(|_| anyhow!("set PORTCULLIS_OPERATOR_TOKEN to an operator token"))?;
    let admin = match admin_listen {
        Some(a) => a,
        None => config::admin_address(&dir).map_err(|e| anyhow!("{e}"))?.to_string(),
    };
    let (status, body) = portcullis::admin::client::post(&admin, "/v1/reload", &token).await?;
    println!("{body}");
    if status == 200 {
        Ok(())
    } else {
        Err(anyhow!("reload refused (HTTP {status})"))
    }
}
