//! `exchange = "entra"` (Entra ID federated client assertion) and a `from`
//! read of a Key Vault secret with it. Shapes are checked here, so that a
//! typo is a config error with a line number, not an AADSTS code at the
//! job's start.

use url::Url;

use super::Keys;
use crate::config::model::{CredentialConfig, CredentialKind, Entra, KeyVaultSecret};
use crate::config::raw::{At, Diag, Table};
use crate::config::values::{duration, required, url};
use crate::config::DEFAULT_KV_REFRESH;

/// The keys only this kind takes (besides `name`, `exchange`, `client_id`,
/// `scope`, `audience`).
pub(super) const KEYS: &[&str] = &["tenant", "authority"];

/// Entra's public cloud; sovereign clouds and tests set `authority`.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The audience Entra's federated identity credentials expect by default.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The DNS suffixes of Key Vault in the public and sovereign clouds.
const VAULT_SUFFIXES: &[&str] = &[
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
];

/// The raw values of [`KEYS`].
pub(super) struct AzureKeys {
    tenant: Option<At<String>>,
    authority: Option<At<String>>,
}

impl AzureKeys {
    pub(super) fn read(d: &mut Diag<'_>, t: &mut Table<'_>) -> AzureKeys {
        AzureKeys {
            tenant: t.string(d, "tenant"),
            authority: t.string(d, "authority"),
        }
    }

    pub(super) fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        [("tenant", &self.tenant), ("authority", &self.authority)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.span.clone())))
            .collect()
    }
}

pub(super) fn entra(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<CredentialKind> {
    let tenant = required(
        d,
        t,
        "tenant",
        k.azure.tenant.as_ref(),
        is_tenant,
        "expected a directory (tenant) ID such as \"72f988bf-86f1-41af-91ab-2d7cd011db47\" or a verified domain such as \"contoso.onmicrosoft.com\" (not common/organizations/consumers: an app's own tenant)",
        "exchange = \"entra\" needs `tenant`, the directory (tenant) ID of the app registration",
    );
    let client_id = required(
        d,
        t,
        "client_id",
        k.client_id.as_ref(),
        is_guid,
        "expected the application (client) ID, a GUID such as \"00000000-0000-0000-0000-000000000000\"",
        "exchange = \"entra\" needs `client_id`, the application (client) ID whose federated credential trusts this job",
    );
    let scope = match &k.scope {
        Some(s) if s.v.len() == 1 && is_default_scope(&s.v[0]) => Some(s.v[0].clone()),
        Some(s) => {
            d.err(&s.span, &t.key("scope"), format!("expected one resource's .default scope, such as \"https://vault.azure.net/.default\" (client credentials take one resource per credential; define one credential per resource), got {:?}", s.v));
            None
        }
        None => {
            d.err(&t.span, &t.key("scope"), "exchange = \"entra\" needs `scope`, one resource's .default scope such as \"https://vault.azure.net/.default\" or \"https://management.azure.com/.default\"");
            None
        }
    };
    let authority = match &k.azure.authority {
        None => Url::parse(DEFAULT_AUTHORITY).ok(),
        Some(a) => url(d, &t.key("authority"), a).and_then(|u| {
            if u.query().is_some() || u.fragment().is_some() {
                d.err(
                    &a.span,
                    &t.key("authority"),
                    format!(
                        "expected an authority host such as {DEFAULT_AUTHORITY:?}, without a query or fragment, got {:?}",
                        a.v
                    ),
                );
                None
            } else {
                Some(u)
            }
        }),
    };
    let audience = match &k.audience {
        None => Some(DEFAULT_AUDIENCE.to_owned()),
        Some(a) if a.v.len() == 1 && !a.v[0].is_empty() => Some(a.v[0].clone()),
        Some(a) => {
            d.err(&a.span, &t.key("audience"), format!("expected one audience (the federated credential's, {DEFAULT_AUDIENCE:?} unless it was changed), got {:?}", a.v));
            None
        }
    };
    let (tenant, authority) = (tenant?, authority?);
    let base = authority.as_str().trim_end_matches('/');
    let token_url = Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/token")).ok()?;
    Some(CredentialKind::Entra(Entra {
        tenant,
        client_id: client_id?,
        scope: scope?,
        authority,
        token_url,
        audience: audience?,
    }))
}

/// True when `from` names an entra credential defined above.
pub(super) fn names_entra(from: &At<String>, earlier: &[CredentialConfig]) -> bool {
    earlier
        .iter()
        .any(|c| c.name == from.v && matches!(c.kind, CredentialKind::Entra(_)))
}

/// `from = "<entra credential>"`: `secret = "https://<vault>.vault.azure.net/secrets/<name>[/<version>]"`.
pub(super) fn keyvault_read(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
    f: &At<String>,
    earlier: &[CredentialConfig],
) -> Option<CredentialKind> {
    let Some(CredentialKind::Entra(parent)) =
        earlier.iter().find(|c| c.name == f.v).map(|c| &c.kind)
    else {
        return None;
    };
    if !is_vault_scope(&parent.scope) {
        d.err(&f.span, &t.key("from"), format!("a Key Vault read needs an entra credential for Key Vault (scope = \"https://vault.azure.net/.default\"); {:?} has scope {:?}", f.v, parent.scope));
    }
    let url = match &k.secret {
        None => {
            d.err(&t.span, &t.key("secret"), "a Key Vault read needs `secret = \"https://<vault>.vault.azure.net/secrets/<name>\"`, optionally with `/<version>`");
            None
        }
        Some(s) => match secret_url(&s.v) {
            Ok(u) => Some(u),
            Err(why) => {
                d.err(&s.span, &t.key("secret"), format!("expected \"https://<vault>.vault.azure.net/secrets/<name>[/<version>]\" ({why}), got {:?}", s.v));
                None
            }
        },
    };
    let refresh = match &k.refresh {
        Some(r) => duration(d, &t.key("refresh"), r),
        None => Some(DEFAULT_KV_REFRESH),
    };
    Some(CredentialKind::KeyVaultSecret(KeyVaultSecret {
        from: f.v.clone(),
        url: url?,
        refresh: refresh?,
    }))
}

/// A Key Vault secret identifier: https on a Key Vault host (plain http to
/// a loopback host, for tests), `/secrets/<name>` with an optional version,
/// nothing else.
pub fn secret_url(s: &str) -> Result<Url, &'static str> {
    let u = Url::parse(s).map_err(|_| "not an absolute URL")?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("a URL here must not carry userinfo");
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("no query or fragment; lanyard adds api-version");
    }
    let host = u.host_str().unwrap_or_default();
    let on_vault_host = u.scheme() == "https"
        && u.port().is_none()
        && VAULT_SUFFIXES.iter().any(|sfx| {
            host.strip_suffix(sfx).is_some_and(|v| {
                (3..=24).contains(&v.len())
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        });
    let loopback_http = u.scheme() == "http" && crate::http::check_transport(&u).is_ok();
    if !(on_vault_host || loopback_http) {
        return Err("https on a <vault>.vault.azure.net host (or a sovereign cloud's), or plain http to a loopback host");
    }
    let parts: Vec<&str> = u.path().trim_start_matches('/').split('/').collect();
    let ok_name = |n: &str| {
        (1..=127).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let ok_version = |v: &str| v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit());
    match parts[..] {
        ["secrets", n] if ok_name(n) => Ok(u),
        ["secrets", n, v] if ok_name(n) && ok_version(v) => Ok(u),
        _ => Err("the path is /secrets/<name> (1 to 127 letters, digits and -) or /secrets/<name>/<32 hex digit version>"),
    }
}

/// A resource's `.default` scope: `https://...` or `api://...` followed by `/.default`.
fn is_default_scope(s: &str) -> bool {
    s.strip_suffix("/.default").is_some_and(|r| {
        Url::parse(r).is_ok_and(|u| matches!(u.scheme(), "https" | "api") && u.has_host())
            || is_guid(r)
    })
}

/// A Key Vault scope: `https://vault.<cloud suffix>/.default`.
fn is_vault_scope(s: &str) -> bool {
    s.strip_suffix("/.default")
        .and_then(|r| Url::parse(r).ok())
        .is_some_and(|u| u.host_str().is_some_and(|h| h.starts_with("vault.")))
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A tenant ID (GUID) or a domain name; not the multi-tenant aliases,
/// which client credentials cannot use.
fn is_tenant(s: &str) -> bool {
    if is_guid(s) {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    !matches!(lower.as_str(), "common" | "organizations" | "consumers")
        && (1..=253).contains(&s.len())
        && s.contains('.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_vault_secret_urls_are_checked_for_their_shape() {
        for good in [
            "https://kv-ci.vault.azure.net/secrets/db-password",
            "https://kv-ci.vault.azure.net/secrets/db-password/0123456789abcdef0123456789abcdef",
            "https://kv1.vault.usgovcloudapi.net/secrets/x",
            "http://127.0.0.1:8200/secrets/x",
        ] {
            assert!(secret_url(good).is_ok(), "{good}");
        }
        for bad in [
            "https://evil.example.com/secrets/x",
            "https://kv.vault.azure.net.evil.com/secrets/x",
            "http://kv-ci.vault.azure.net/secrets/x",
            "https://kv-ci.vault.azure.net:8443/secrets/x",
            "https://kv-ci.vault.azure.net/keys/x",
            "https://kv-ci.vault.azure.net/secrets/x/y",
            "https://kv-ci.vault.azure.net/secrets/under_score",
            "https://kv-ci.vault.azure.net/secrets/x?api-version=7.4",
            "https://u:p@kv-ci.vault.azure.net/secrets/x",
            "https://ab.vault.azure.net/secrets/x",
            "http://10.0.0.1/secrets/x",
        ] {
            assert!(secret_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenants_scopes_and_client_ids() {
        assert!(is_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(is_tenant("contoso.onmicrosoft.com"));
        for bad in ["common", "organizations", "consumers", "x/y", "", "a..b"] {
            assert!(!is_tenant(bad), "{bad}");
        }
        assert!(is_default_scope("https://vault.azure.net/.default"));
        assert!(is_default_scope("api://my-api/.default"));
        assert!(!is_default_scope("https://vault.azure.net"));
        assert!(!is_default_scope(
            "https://vault.azure.net/user_impersonation"
        ));
        assert!(is_vault_scope("https://vault.azure.net/.default"));
        assert!(!is_vault_scope("https://management.azure.com/.default"));
        assert!(is_guid("00000000-0000-0000-0000-000000000000"));
        assert!(!is_guid("0000000-0000-0000-0000-0000000000000"));
    }
}
