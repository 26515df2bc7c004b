//! `lanyard login` and `lanyard logout`: the edge of the developer-login
//! flow (identity/login/ does the protocol). Prompts go to stderr; the
//! result line goes to stdout. No token is ever printed.

use crate::command::{CommandError, ExitCode};
use crate::config::{Config, LoginFlow};
use crate::env::Env;
use crate::http::HttpClient;
use crate::identity::format_time;
use crate::identity::login;

fn say(line: &str) {
    eprintln!("{line}");
}

/// The `[login]` table and an HTTP client, or what is missing.
fn prepare<'a>(
    cfg: &'a Config,
    missing: &'static str,
) -> Result<(&'a crate::config::LoginConfig, HttpClient), CommandError> {
    let Some(lc) = &cfg.identity.login else {
        return Err(CommandError::NoLogin {
            path: cfg.path.clone(),
            missing,
        });
    };
    let proxy = crate::outbound::UpstreamProxy::from_env(&crate::env::ProcessEnv)?;
    Ok((
        lc,
        HttpClient::new(
            cfg.upstream.extra_ca.as_deref(),
            &std::sync::Arc::new(proxy),
        )?,
    ))
}

pub async fn login(
    cfg: &Config,
    flow: Option<LoginFlow>,
    env: &dyn Env,
) -> Result<ExitCode, CommandError> {
    let (lc, http) = prepare(
        cfg,
        "add one with `issuer` and `client_id` (see README, \"On a laptop\")",
    )?;
    let flow = flow.unwrap_or(lc.flow);
    let (id, file) = login::login(lc, flow, &http, env, &say).await?;
    println!(
        "lanyard: logged in as {} at {}; ID token valid until {}; refresh token saved to {} (mode 0600)",
        id.who(),
        id.issuer,
        format_time(id.expires),
        file.path.display()
    );
    Ok(ExitCode::Ok)
}

/// 1 when the file was removed but the IdP's revocation failed (said on
/// stdout with the reason).
pub async fn logout(cfg: &Config, env: &dyn Env) -> Result<ExitCode, CommandError> {
    let (lc, http) = prepare(cfg, "nothing to log out of")?;
    match login::logout(lc, &http, env).await? {
        out if !out.found => {
            println!(
                "lanyard: not logged in to {} (no {}); nothing to do",
                lc.issuer.as_str().trim_end_matches('/'),
                out.path.display()
            );
            Ok(ExitCode::Ok)
        }
        out => {
            let revoked = match (&out.revoked, &out.revoke_error) {
                (Some(true), _) => "revoked at the IdP".to_owned(),
                (Some(false), _) => {
                    "not revoked: the IdP advertises no revocation_endpoint (it expires on its own)"
                        .to_owned()
                }
                (None, Some(e)) => format!("NOT revoked at the IdP: {e}"),
                (None, None) => "not revoked".to_owned(),
            };
            println!(
                "lanyard: logged out; removed {}; refresh token {revoked}",
                out.path.display()
            );
            if out.revoke_error.is_some() {
                Ok(ExitCode::Failed)
            } else {
                Ok(ExitCode::Ok)
            }
        }
    }
}
