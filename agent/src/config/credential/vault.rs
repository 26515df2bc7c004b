//! `exchange = "vault"` (a Vault/OpenBao JWT login) and `from = "<vault
//! credential>"` (a KV v2 field read with it).

use super::Keys;
use crate::config::model::{CredentialConfig, CredentialKind};
use crate::config::raw::{At, Diag, Table};
use crate::config::values::{duration, url};
use crate::config::DEFAULT_KV_REFRESH;

pub(super) fn login(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<CredentialKind> {
    let address = match &k.address {
        Some(a) => url(d, &t.key("address"), a),
        None => {
            d.err(
                &t.span,
                &t.key("address"),
                "exchange = \"vault\" needs `address`, e.g. \"https://vault.example.com\"",
            );
            None
        }
    };
    let mount = k
        .mount
        .as_ref()
        .map(|m| m.v.clone())
        .unwrap_or_else(|| "jwt".into());
    if mount.is_empty() || mount.contains("..") || mount.starts_with('/') {
        d.err(
            &t.span,
            &t.key("mount"),
            format!("expected an auth mount path such as \"jwt\", got {mount:?}"),
        );
    }
    let role = match &k.role {
        Some(r) if !r.v.is_empty() && !r.v.contains('/') => Some(r.v.clone()),
        Some(r) => {
            d.err(
                &r.span,
                &t.key("role"),
                format!("expected a role name, got {:?}", r.v),
            );
            None
        }
        None => {
            d.err(
                &t.span,
                &t.key("role"),
                "exchange = \"vault\" needs `role`, the JWT auth role to log in with",
            );
            None
        }
    };
    Some(CredentialKind::Vault {
        address: address?,
        mount,
        role: role?,
        namespace: k.namespace.as_ref().map(|n| n.v.clone()),
    })
}

/// `from`: a KV v2 field read with a vault credential defined above.
pub(super) fn kv_read(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
    f: &At<String>,
    earlier: &[CredentialConfig],
) -> Option<CredentialKind> {
    let (path, field) = match &k.secret {
        None => {
            d.err(&t.span, &t.key("secret"), "a `from` credential needs `secret = \"<kv-v2 path>#<field>\"`, e.g. \"secret/data/ci/stripe#api_key\"");
            (None, None)
        }
        Some(s) => match s.v.split_once('#') {
            Some((p, f))
                if !p.is_empty()
                    && !f.is_empty()
                    && !p.starts_with('/')
                    && !p.contains("..")
                    && p.contains("/data/") =>
            {
                (Some(p.to_owned()), Some(f.to_owned()))
            }
            _ => {
                d.err(&s.span, &t.key("secret"), format!("expected \"<mount>/data/<path>#<field>\" (a KV v2 read path and a field), got {:?}", s.v));
                (None, None)
            }
        },
    };
    match earlier.iter().find(|c| c.name == f.v) {
        Some(CredentialConfig {
            kind: CredentialKind::Vault { .. },
            ..
        }) => {}
        Some(other) => d.err(
            &f.span,
            &t.key("from"),
            format!(
                "`from` must name a vault, aws-web-identity or entra credential; {:?} is {}",
                f.v,
                other.kind.label()
            ),
        ),
        None => d.err(
            &f.span,
            &t.key("from"),
            format!(
                "no vault, aws-web-identity or entra credential named {:?} is defined above this one",
                f.v
            ),
        ),
    }
    let refresh = match &k.refresh {
        Some(r) => duration(d, &t.key("refresh"), r),
        None => Some(DEFAULT_KV_REFRESH),
    };
    Some(CredentialKind::VaultKv {
        from: f.v.clone(),
        path: path?,
        field: field?,
        refresh: refresh?,
    })
}
