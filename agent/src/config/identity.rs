//! The `[identity]` and `[login]` tables: where the job's identity token
//! comes from, and the IdP a developer signs in to.

use std::path::PathBuf;

use super::keyword;
use super::model::{IdentityConfig, LoginConfig, LoginFlow, Platform};
use super::raw::{Diag, Table};
use super::values::{is_env_name, one_of, url};

/// `source = "auto"`: detect the platform from the environment.
const AUTO: &str = "auto";

/// The keys `[identity]` accepts (also the rows `docs/config.md` must have).
pub(crate) const IDENTITY_KEYS: &[&str] = &[
    "source",
    "audience",
    "variable",
    "path",
    "buildkite_agent",
    "scrub_request_env",
];

pub(super) fn identity(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<IdentityConfig> {
    let Some(mut t) = t else {
        return Some(IdentityConfig {
            source: None,
            audience: None,
            variable: None,
            path: None,
            buildkite_agent: "buildkite-agent".into(),
            scrub_request_env: true,
            login: None,
        });
    };
    let source = t.string(d, "source");
    let audience = t.string(d, "audience");
    let variable = t.string(d, "variable");
    let path = t.string(d, "path");
    let agent = t.string(d, "buildkite_agent");
    let scrub = t.bool(d, "scrub_request_env");
    let kind = match &source {
        None => None,
        Some(s) if s.v == AUTO => None,
        Some(s) => match keyword::parse::<Platform>(&s.v) {
            Some(k) => Some(k),
            None => {
                d.err(
                    &s.span,
                    &t.key("source"),
                    format!(
                        "unknown identity source {:?}; expected one of: {AUTO}, {}",
                        s.v,
                        keyword::names::<Platform>().join(", ")
                    ),
                );
                None
            }
        },
    };
    if let Some(a) = &audience {
        if a.v.trim().is_empty() {
            d.err(&a.span, &t.key("audience"), "expected a non-empty audience");
        }
    }
    if kind == Some(Platform::Env) && variable.is_none() {
        d.err(
            &t.span.clone(),
            &t.key("variable"),
            "source = \"env\" needs `variable`, the environment variable that holds the token",
        );
    }
    if let Some(v) = &variable {
        if !is_env_name(&v.v) {
            d.err(
                &v.span,
                &t.key("variable"),
                format!(
                    "expected an environment variable name (letters, digits, _), got {:?}",
                    v.v
                ),
            );
        }
    }
    if kind == Some(Platform::File) && path.is_none() {
        d.err(
            &t.span.clone(),
            &t.key("path"),
            "source = \"file\" needs `path`, the token file",
        );
    }
    t.finish(d, IDENTITY_KEYS);
    Some(IdentityConfig {
        source: kind,
        audience: audience.map(|a| a.v),
        variable: variable.map(|v| v.v),
        path: path.map(|p| PathBuf::from(p.v)),
        buildkite_agent: agent
            .map(|a| a.v)
            .unwrap_or_else(|| "buildkite-agent".into()),
        scrub_request_env: scrub.map(|s| s.v).unwrap_or(true),
        login: None,
    })
}

pub(crate) const LOGIN_KEYS: &[&str] = &["issuer", "client_id", "scopes", "flow"];

pub(super) fn login(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<Option<LoginConfig>> {
    let Some(mut t) = t else { return Some(None) };
    let issuer = t.string(d, "issuer");
    let client_id = t.string(d, "client_id");
    let scopes = t.strings(d, "scopes");
    let flow = t.string(d, "flow");
    t.finish(d, LOGIN_KEYS);
    let issuer = match &issuer {
        Some(i) => url(d, &t.key("issuer"), i),
        None => {
            d.err(
                &t.span,
                &t.key("issuer"),
                "[login] needs `issuer`, the company IdP's OIDC issuer URL, e.g. \"https://login.example.com\"",
            );
            None
        }
    };
    let client_id = match &client_id {
        Some(c) if !c.v.trim().is_empty() => Some(c.v.clone()),
        Some(c) => {
            d.err(
                &c.span,
                &t.key("client_id"),
                "expected a non-empty client id",
            );
            None
        }
        None => {
            d.err(
                &t.span,
                &t.key("client_id"),
                "[login] needs `client_id`, the IdP's public (native) client for lanyard",
            );
            None
        }
    };
    let mut list = Vec::new();
    if let Some(s) = &scopes {
        for sc in &s.v {
            if sc.is_empty()
                || sc
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            {
                d.err(
                    &s.span,
                    &t.key("scopes"),
                    format!("expected scope names without spaces or quotes, got {sc:?}"),
                );
            } else if sc != "openid" && sc != "offline_access" && !list.contains(sc) {
                list.push(sc.clone());
            }
        }
    }
    let flow = match &flow {
        None => Some(LoginFlow::Device),
        Some(f) => one_of::<LoginFlow>(d, &t.key("flow"), f),
    };
    Some(Some(LoginConfig {
        issuer: issuer?,
        client_id: client_id?,
        scopes: list,
        flow: flow?,
    }))
}
