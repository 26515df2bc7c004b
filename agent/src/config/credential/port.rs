//! `exchange = "port"`: Port's API (getport.io) access token from a client
//! id and secret. The secret comes from a CI variable (`client_secret_env`,
//! scrubbed from `lanyard run`'s child) or from a secret read defined above
//! (`client_secret_from`, e.g. a Vault KV field); never from the file.

use url::Url;

use super::Keys;
use crate::config::model::{CredentialConfig, CredentialKind, Port, PortClientId, PortSecret};
use crate::config::raw::{At, Diag, Table};
use crate::config::values::{is_env_name, url};

/// The keys only this kind takes (besides `name`, `exchange`, `client_id`,
/// `client_secret_env`).
pub(super) const KEYS: &[&str] = &["client_id_env", "client_secret_from", "api_url"];

/// Port's EU API; a US organisation sets `api_url = "https://api.us.getport.io"`.
pub const DEFAULT_API_URL: &str = "https://api.getport.io";

/// The raw values of [`KEYS`].
pub(super) struct PortKeys {
    client_id_env: Option<At<String>>,
    client_secret_from: Option<At<String>>,
    api_url: Option<At<String>>,
}

impl PortKeys {
    pub(super) fn read(d: &mut Diag<'_>, t: &mut Table<'_>) -> PortKeys {
        PortKeys {
            client_id_env: t.string(d, "client_id_env"),
            client_secret_from: t.string(d, "client_secret_from"),
            api_url: t.string(d, "api_url"),
        }
    }

    pub(super) fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        [
            ("client_id_env", &self.client_id_env),
            ("client_secret_from", &self.client_secret_from),
            ("api_url", &self.api_url),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.span.clone())))
        .collect()
    }
}

pub(super) fn port(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
    earlier: &[CredentialConfig],
) -> Option<CredentialKind> {
    let env_var = |d: &mut Diag<'_>, key: &str, v: &At<String>, what: &str| {
        if is_env_name(&v.v) {
            Some(v.v.clone())
        } else {
            d.err(
                &v.span,
                &t.key(key),
                format!(
                    "expected the name of an environment variable that holds {what}, got {:?}",
                    v.v
                ),
            );
            None
        }
    };
    let client_id = match (&k.client_id, &k.port.client_id_env) {
        (Some(c), None) if is_client_id(&c.v) => Some(PortClientId::Literal(c.v.clone())),
        (Some(c), None) => {
            d.err(
                &c.span,
                &t.key("client_id"),
                format!(
                    "expected Port's client id (letters, digits, - and _), got {:?}",
                    c.v
                ),
            );
            None
        }
        (None, Some(e)) => {
            env_var(d, "client_id_env", e, "Port's client id").map(PortClientId::Env)
        }
        (Some(_), Some(e)) => {
            d.err(
                &e.span,
                &t.key("client_id_env"),
                "give either `client_id` or `client_id_env`, not both",
            );
            None
        }
        (None, None) => {
            d.err(&t.span, &t.key("client_id"), "exchange = \"port\" needs `client_id` (Port's client id, from the Credentials page) or `client_id_env` (a CI variable holding it)");
            None
        }
    };
    let client_secret = match (&k.client_secret_env, &k.port.client_secret_from) {
        (Some(e), None) => {
            env_var(d, "client_secret_env", e, "Port's client secret").map(PortSecret::Env)
        }
        (None, Some(f)) => secret_from(d, t, f, earlier).map(PortSecret::From),
        (Some(_), Some(f)) => {
            d.err(
                &f.span,
                &t.key("client_secret_from"),
                "give either `client_secret_env` or `client_secret_from`, not both",
            );
            None
        }
        (None, None) => {
            d.err(&t.span, &t.key("client_secret_env"), "exchange = \"port\" needs the client secret from a CI variable (`client_secret_env = \"PORT_CLIENT_SECRET\"`) or from a secret read defined above (`client_secret_from = \"<credential>\"`, e.g. a Vault KV field); never the secret itself");
            None
        }
    };
    let api_url = match &k.port.api_url {
        None => Url::parse(DEFAULT_API_URL).ok(),
        Some(a) => url(d, &t.key("api_url"), a).and_then(|u| {
            if u.query().is_some() || u.fragment().is_some() || !matches!(u.path(), "" | "/") {
                d.err(&a.span, &t.key("api_url"), format!("expected Port's API base URL, such as {DEFAULT_API_URL:?} or \"https://api.us.getport.io\" (no path, query or fragment), got {:?}", a.v));
                None
            } else {
                Some(u)
            }
        }),
    }?;
    let base = api_url.as_str().trim_end_matches('/');
    let token_url = Url::parse(&format!("{base}/v1/auth/access_token")).ok()?;
    Some(CredentialKind::Port(Port {
        api_url,
        token_url,
        client_id: client_id?,
        client_secret: client_secret?,
    }))
}

/// `client_secret_from` names a secret read (a `from` credential) above.
fn secret_from(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    f: &At<String>,
    earlier: &[CredentialConfig],
) -> Option<String> {
    match earlier.iter().find(|c| c.name == f.v) {
        Some(c) if c.kind.parent().is_some() && !matches!(c.kind, CredentialKind::Port(_)) => {
            Some(f.v.clone())
        }
        Some(c) => {
            d.err(&f.span, &t.key("client_secret_from"), format!("`client_secret_from` must name a secret read (a credential with `from` and `secret`, such as a Vault KV field); {:?} is {}", f.v, c.kind.label()));
            None
        }
        None => {
            d.err(&f.span, &t.key("client_secret_from"), format!("no credential named {:?} is defined above this one (define the secret read, e.g. `from = \"vault\"` with `secret = \"secret/data/ci/port#client_secret\"`, first)", f.v));
            None
        }
    }
}

/// Port client ids are opaque tokens of letters and digits.
fn is_client_id(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
