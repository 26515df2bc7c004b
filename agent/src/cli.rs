//! The command line: parses arguments, sets up logging, runs a command.
//! The only place with `anyhow`-style reporting; exit codes are documented
//! in README.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigErrors};
use crate::doctor;
use crate::env::ProcessEnv;

#[derive(Parser, Debug)]
#[command(
    name = "lanyard",
    version,
    about = "Per-job credential sidecar for CI: the job's identity in, short-lived credentials attached to its API calls, no secret in the job"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain: detected platform, identity claims (unverified), each exchange's result or the service's refusal, routes.
    Doctor {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only check the config file; contact nothing.
        #[arg(long)]
        no_exchange: bool,
        /// Explain which route this URL would match.
        #[arg(long)]
        url: Option<String>,
        /// Method for --url.
        #[arg(long, default_value = "GET")]
        method: String,
    },
    /// Start, run CMD with the proxy environment, tear down, exit with CMD's status.
    Run {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override [identity] audience.
        #[arg(long)]
        audience: Option<String>,
        /// The job's maximum lifetime; the per-job CA expires 5 minutes after it.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "6h")]
        max_lifetime: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lanyard: cannot start the async runtime: {e}");
            return doctor::EXIT_FAILED;
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Doctor {
                config,
                no_exchange,
                url,
                method,
            } => {
                let cfg = match load(config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let mut out = String::new();
                let code = doctor::run(
                    &cfg,
                    &ProcessEnv,
                    &doctor::Options {
                        exchange: !no_exchange,
                        url,
                        method: method.to_ascii_uppercase(),
                    },
                    &mut out,
                )
                .await;
                print!("{out}");
                code
            }
            Command::Run {
                config,
                audience,
                max_lifetime,
                command,
            } => {
                let cfg = match load(config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                crate::run::run(
                    &cfg,
                    &ProcessEnv,
                    crate::run::RunOptions {
                        command,
                        audience,
                        max_lifetime,
                    },
                )
                .await
            }
        }
    })
}

fn load(flag: Option<PathBuf>) -> Result<Config, i32> {
    let path = Config::locate(flag.as_deref(), &ProcessEnv).map_err(|e| {
        eprintln!("lanyard: {e}");
        doctor::EXIT_CONFIG
    })?;
    Config::load(&path).map_err(|e: ConfigErrors| {
        eprintln!("lanyard: {e}");
        doctor::EXIT_CONFIG
    })
}

/// Logs go to stderr; `LANYARD_LOG` takes a tracing filter (default `warn`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
