//! `lanyard login` and `lanyard logout`: the edge of the developer-login
//! flow (identity/login.rs does the protocol). Prompts go to stderr; the
//! result line goes to stdout. No token is ever printed.

use crate::config::{Config, LoginFlow};
use crate::doctor::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::env::Env;
use crate::http::HttpClient;
use crate::identity::format_time;
use crate::identity::login;

fn say(line: &str) {
    eprintln!("{line}");
}

/// The `[login]` table and an HTTP client, or the exit code after saying
/// what is missing.
fn prepare<'a>(
    cfg: &'a Config,
    cmd: &str,
    missing: &str,
) -> Result<(&'a crate::config::LoginConfig, HttpClient), i32> {
    let Some(lc) = &cfg.identity.login else {
        eprintln!(
            "lanyard {cmd}: {} has no [login] table; {missing}",
            cfg.path.display()
        );
        return Err(EXIT_CONFIG);
    };
    match HttpClient::new(cfg.upstream.extra_ca.as_deref()) {
        Ok(h) => Ok((lc, h)),
        Err(e) => {
            eprintln!("lanyard {cmd}: {e}");
            Err(EXIT_FAILED)
        }
    }
}

pub async fn login(cfg: &Config, flow: Option<LoginFlow>, env: &dyn Env) -> i32 {
    let (lc, http) = match prepare(
        cfg,
        "login",
        "add one with `issuer` and `client_id` (see README, \"On a laptop\")",
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let flow = flow.unwrap_or(lc.flow);
    match login::login(lc, flow, &http, env, &say).await {
        Ok((id, file)) => {
            println!(
                "lanyard: logged in as {} at {}; ID token valid until {}; refresh token saved to {} (mode 0600)",
                id.who(),
                id.issuer,
                format_time(id.expires),
                file.path.display()
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("lanyard login: {e}");
            EXIT_FAILED
        }
    }
}

pub async fn logout(cfg: &Config, env: &dyn Env) -> i32 {
    let (lc, http) = match prepare(cfg, "logout", "nothing to log out of") {
        Ok(p) => p,
        Err(code) => return code,
    };
    match login::logout(lc, &http, env).await {
        Ok(out) if !out.found => {
            println!(
                "lanyard: not logged in to {} (no {}); nothing to do",
                lc.issuer.as_str().trim_end_matches('/'),
                out.path.display()
            );
            EXIT_OK
        }
        Ok(out) => {
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
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
        Err(e) => {
            eprintln!("lanyard logout: {e}");
            EXIT_FAILED
        }
    }
}
