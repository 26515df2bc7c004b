//! The command line: parses arguments, sets up logging, runs a command.
//! The only place that prints a command's error and turns the outcome into
//! the exit status (the codes: [`ExitCode`], documented in README).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::command::{CommandError, ExitCode};
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
        /// With --url: send one GET there through the route's credential and explain the answer (Tyk's refusals among them).
        #[arg(long, requires = "url")]
        probe: bool,
        /// Show the token's personal claims (user_email, user_login, user_id, actor, ...), masked by default.
        #[arg(long)]
        show_personal: bool,
        /// Show every claim of the token, not only those that decide trust (iss, sub, aud, times, repository, ref, environment, ...).
        #[arg(long)]
        all_claims: bool,
    },
    /// Start, run CMD with the proxy environment, tear down, exit with CMD's status.
    Run {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override [identity] audience.
        #[arg(long)]
        audience: Option<String>,
        /// The job's maximum lifetime: when it passes, CMD is ended and lanyard exits 124 (the per-job CA expires 5 minutes after it).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "6h")]
        max_lifetime: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Start detached for the whole job; return when ready and print or write the job's environment.
    Start {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override [identity] audience.
        #[arg(long)]
        audience: Option<String>,
        /// How to hand over the environment: sh (export lines), dotenv (a file), github ($GITHUB_ENV).
        #[arg(long, value_enum, default_value = "sh")]
        export: crate::daemon::Export,
        /// The dotenv file (default: <state>/lanyard.env).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Stop by itself after this long (default: $CI_JOB_TIMEOUT seconds, else 6h).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_lifetime: Option<std::time::Duration>,
        /// Stop by itself when this process ends (default: the parent of the calling shell; 0 disables).
        #[arg(long)]
        watch_pid: Option<i32>,
    },
    /// Developer login on a laptop: sign in to the [login] IdP (device flow, or PKCE in a browser) and keep the refresh token in a private file.
    Login {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override [login] flow.
        #[arg(long, value_enum)]
        flow: Option<FlowArg>,
    },
    /// Remove the stored developer login and revoke it at the IdP (when the IdP offers revocation). Idempotent.
    Logout {
        /// Config file (default: $LANYARD_CONFIG, then ./lanyard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Revoke all credentials, print the audit summary, remove the CA bundle and state. Idempotent.
    Stop,
    /// Running or not, routes and credential lifetimes (never values).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    #[command(name = "__daemon", hide = true)]
    Daemon {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration)]
        max_lifetime: std::time::Duration,
        #[arg(long)]
        watch_pid: i32,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FlowArg {
    Device,
    Pkce,
}

pub fn main() -> i32 {
    // First, before anything reads a secret (the environment already holds
    // the identity inputs): no other process of the same user may read our
    // memory or environment through /proc, attach with ptrace, or get a
    // core dump. Children get their own flag back when they exec.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("lanyard: warning: cannot mark this process non-dumpable ({e}); other processes of this user may read its memory");
    }
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        with_double_dash_tip(e, &args).exit()
    });
    init_logging();
    let name = cli.command.name();
    let is_run = matches!(cli.command, Command::Run { .. });
    match execute(cli.command) {
        Ok(code) => code.code(),
        Err(e) => {
            match &e {
                CommandError::Config(_) | CommandError::Workers(_) | CommandError::Runtime(_) => {
                    eprintln!("lanyard: {e}")
                }
                _ => eprintln!("lanyard {name}: {e}"),
            }
            exit_code(&e, is_run).code()
        }
    }
}

/// The exit code for an error (the codes themselves: [`ExitCode`]).
fn exit_code(e: &CommandError, is_run: bool) -> ExitCode {
    match e {
        CommandError::Config(_) | CommandError::NoCommand | CommandError::NoLogin { .. } => {
            ExitCode::Usage
        }
        CommandError::Workers(_) if is_run => ExitCode::StartFailed,
        CommandError::Workers(_) => ExitCode::Usage,
        CommandError::RunDir(_) | CommandError::NotStarted { .. } => ExitCode::StartFailed,
        CommandError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ExitCode::NotFound
        }
        CommandError::Spawn { .. } => ExitCode::NotExecutable,
        CommandError::Runtime(_)
        | CommandError::Start(_)
        | CommandError::BadAnswer(_)
        | CommandError::Signals(_)
        | CommandError::Http(_)
        | CommandError::Login(_)
        | CommandError::UpstreamProxy(_) => ExitCode::Failed,
    }
}

impl Command {
    /// The name in error lines: `lanyard <name>: ...`.
    fn name(&self) -> &'static str {
        match self {
            Command::Doctor { .. } => "doctor",
            Command::Run { .. } => "run",
            Command::Start { .. } => "start",
            Command::Login { .. } => "login",
            Command::Logout { .. } => "logout",
            Command::Stop => "stop",
            Command::Status { .. } => "status",
            Command::Daemon { .. } => "daemon",
        }
    }
}

fn execute(command: Command) -> Result<ExitCode, CommandError> {
    // Checked here so that a bad value stops every command at once.
    crate::proxy::server::worker_threads(&ProcessEnv).map_err(CommandError::Workers)?;
    if matches!(command, Command::Daemon { .. } | Command::Run { .. }) {
        // Why: reading the system roots overlaps the config, the exchange
        // and the per-job CA instead of delaying readiness.
        std::thread::spawn(|| {
            crate::http::native_roots();
        });
    }
    // Why: the control plane (exchange, rotation, the child process) is
    // light; the proxy runs on its own worker threads (proxy::server).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    rt.block_on(async move {
        match command {
            Command::Doctor {
                config,
                no_exchange,
                url,
                method,
                probe,
                show_personal,
                all_claims,
            } => {
                let cfg = load(config)?;
                let mut out = String::new();
                let code = doctor::run(
                    &cfg,
                    &ProcessEnv,
                    &doctor::Options {
                        exchange: !no_exchange,
                        url,
                        method: method.to_ascii_uppercase(),
                        probe,
                        show_personal,
                        all_claims,
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
                let cfg = load(config)?;
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
            Command::Start {
                config,
                audience,
                export,
                env_file,
                max_lifetime,
                watch_pid,
            } => {
                let path = Config::locate(config.as_deref(), &ProcessEnv)?;
                let path = std::path::absolute(&path).unwrap_or(path);
                let cfg = Config::load(&path)?;
                let stale_google =
                    crate::config::gcp_overriding_variables(&cfg.credentials, &ProcessEnv);
                crate::daemon::start(
                    &ProcessEnv,
                    crate::daemon::StartOptions {
                        config: path,
                        audience,
                        export,
                        env_file,
                        max_lifetime,
                        watch_pid,
                        stale_google,
                        no_proxy_warnings: crate::outbound::bypass::no_proxy_warnings(
                            &ProcessEnv,
                            &cfg.routes,
                        ),
                    },
                )
                .await
            }
            Command::Login { config, flow } => {
                let cfg = load(config)?;
                let flow = flow.map(|f| match f {
                    FlowArg::Device => crate::config::LoginFlow::Device,
                    FlowArg::Pkce => crate::config::LoginFlow::Pkce,
                });
                crate::login_cmd::login(&cfg, flow, &ProcessEnv).await
            }
            Command::Logout { config } => {
                let cfg = load(config)?;
                crate::login_cmd::logout(&cfg, &ProcessEnv).await
            }
            Command::Stop => crate::daemon::stop(&ProcessEnv).await,
            Command::Status { json } => crate::daemon::status(&ProcessEnv, json).await,
            Command::Daemon {
                state_dir,
                config,
                audience,
                max_lifetime,
                watch_pid,
            } => {
                // A new session: no controlling terminal, and no signal
                // aimed at the caller's process group reaches us.
                if let Err(e) = nix::unistd::setsid() {
                    eprintln!("lanyard daemon: setsid failed: {e}");
                }
                crate::daemon::daemon(
                    &ProcessEnv,
                    crate::daemon::DaemonOptions {
                        state_dir,
                        config,
                        audience,
                        max_lifetime,
                        watch_pid,
                    },
                )
                .await
            }
        }
    })
}

fn load(flag: Option<PathBuf>) -> Result<Config, ConfigErrors> {
    let path = Config::locate(flag.as_deref(), &ProcessEnv)?;
    Config::load(&path)
}

/// Logs go to stderr; `LANYARD_LOG` takes a tracing filter (default `warn`).
/// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// `lanyard run curl …` (the command without `--`): clap refuses `curl` as
/// an unexpected argument; add a tip with the line as it should be typed.
fn with_double_dash_tip(mut e: clap::Error, args: &[String]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let Some(run) = args.iter().skip(1).position(|a| a == "run").map(|i| i + 1) else {
        return e;
    };
    let Some(at) = args[run..].iter().position(|a| a == bad).map(|i| i + run) else {
        return e;
    };
    if bad.starts_with('-') {
        return e;
    }
    let quoted: Vec<String> = args[at..].iter().map(|a| shell_quote(a)).collect();
    let mut line = vec!["lanyard".to_owned()];
    line.extend(args[run..at].iter().map(|a| shell_quote(a)));
    line.push("--".to_owned());
    line.extend(quoted);
    let tip = format!(
        "the command goes after `--`, so that its own options stay its own: {}",
        line.join(" ")
    );
    e.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    e
}

/// `a` as a shell word: as is when it is plain, else in single quotes.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}
