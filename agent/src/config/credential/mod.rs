//! `[[credential]]` entries: one reader per exchange kind (`oauth`:
//! token-exchange and jwt-bearer; `vault`: vault and vault-kv reads;
//! passthrough here), after the keys every kind shares are checked.

pub(super) mod aws;
pub(super) mod azure;
pub(super) mod google;
mod oauth;
pub(super) mod port;
mod vault;

use std::ops::Range;

use super::keyword;
use super::model::{CredentialConfig, CredentialKind, ExchangeKind};
use super::raw::{At, Diag, Table};
use super::values::is_name;

const CREDENTIAL_KEYS: &[&str] = &[
    "name",
    "exchange",
    "from",
    "token_url",
    "issuer",
    "revocation_url",
    "audience",
    "resource",
    "scope",
    "subject_token_type",
    "requested_token_type",
    "subject_issuer",
    "client_id",
    "client_secret_env",
    "client_auth",
    "lifetime",
    "address",
    "mount",
    "role",
    "namespace",
    "secret",
    "refresh",
];
/// The keys every `from` read takes.
const FROM_KEYS: &[&str] = &["name", "from", "secret", "refresh"];
/// The keys of both OAuth kinds (`jwt-bearer` takes only these).
const OAUTH_KEYS: &[&str] = &[
    "name",
    "exchange",
    "token_url",
    "issuer",
    "revocation_url",
    "audience",
    "resource",
    "scope",
    "lifetime",
    "client_id",
];
/// The keys `token-exchange` takes besides [`OAUTH_KEYS`].
const TOKEN_EXCHANGE_KEYS: &[&str] = &[
    "subject_token_type",
    "requested_token_type",
    "subject_issuer",
    "client_secret_env",
    "client_auth",
];
/// The keys `jwt-authorization-grant` takes besides [`OAUTH_KEYS`].
const CLIENT_AUTH_KEYS: &[&str] = &["client_secret_env", "client_auth"];

/// Every key a `[[credential]]` may have, read once whatever the kind, so
/// that each wrong type is reported.
struct Keys {
    name: Option<At<String>>,
    exchange: Option<At<String>>,
    from: Option<At<String>>,
    token_url: Option<At<String>>,
    issuer: Option<At<String>>,
    revocation_url: Option<At<String>>,
    audience: Option<At<Vec<String>>>,
    resource: Option<At<Vec<String>>>,
    scope: Option<At<Vec<String>>>,
    subject_token_type: Option<At<String>>,
    requested_token_type: Option<At<String>>,
    subject_issuer: Option<At<String>>,
    client_id: Option<At<String>>,
    client_secret_env: Option<At<String>>,
    client_auth: Option<At<String>>,
    lifetime: Option<At<String>>,
    address: Option<At<String>>,
    mount: Option<At<String>>,
    role: Option<At<String>>,
    namespace: Option<At<String>>,
    secret: Option<At<String>>,
    refresh: Option<At<String>>,
    aws: aws::AwsKeys,
    azure: azure::AzureKeys,
    port: port::PortKeys,
    google: google::GoogleKeys,
}

impl Keys {
    fn read(d: &mut Diag<'_>, t: &mut Table<'_>) -> Keys {
        let k = Keys {
            name: t.string(d, "name"),
            exchange: t.string(d, "exchange"),
            from: t.string(d, "from"),
            token_url: t.string(d, "token_url"),
            issuer: t.string(d, "issuer"),
            revocation_url: t.string(d, "revocation_url"),
            audience: t.strings(d, "audience"),
            resource: t.strings(d, "resource"),
            scope: t.strings(d, "scope"),
            subject_token_type: t.string(d, "subject_token_type"),
            requested_token_type: t.string(d, "requested_token_type"),
            subject_issuer: t.string(d, "subject_issuer"),
            client_id: t.string(d, "client_id"),
            client_secret_env: t.string(d, "client_secret_env"),
            client_auth: t.string(d, "client_auth"),
            lifetime: t.string(d, "lifetime"),
            address: t.string(d, "address"),
            mount: t.string(d, "mount"),
            role: t.string(d, "role"),
            namespace: t.string(d, "namespace"),
            secret: t.string(d, "secret"),
            refresh: t.string(d, "refresh"),
            aws: aws::AwsKeys::read(d, t),
            azure: azure::AzureKeys::read(d, t),
            port: port::PortKeys::read(d, t),
            google: google::GoogleKeys::read(d, t),
        };
        t.finish(d, &accepted_keys());
        k
    }

    /// Where each key other than `name`, `exchange` and `from` was given.
    fn given(&self) -> Vec<(&'static str, Range<usize>)> {
        let s = |v: &Option<At<String>>| v.as_ref().map(|v| v.span.clone());
        let l = |v: &Option<At<Vec<String>>>| v.as_ref().map(|v| v.span.clone());
        [
            ("token_url", s(&self.token_url)),
            ("issuer", s(&self.issuer)),
            ("revocation_url", s(&self.revocation_url)),
            ("audience", l(&self.audience)),
            ("resource", l(&self.resource)),
            ("scope", l(&self.scope)),
            ("subject_token_type", s(&self.subject_token_type)),
            ("requested_token_type", s(&self.requested_token_type)),
            ("subject_issuer", s(&self.subject_issuer)),
            ("client_id", s(&self.client_id)),
            ("client_secret_env", s(&self.client_secret_env)),
            ("client_auth", s(&self.client_auth)),
            ("lifetime", s(&self.lifetime)),
            ("address", s(&self.address)),
            ("mount", s(&self.mount)),
            ("role", s(&self.role)),
            ("namespace", s(&self.namespace)),
            ("secret", s(&self.secret)),
            ("refresh", s(&self.refresh)),
        ]
        .into_iter()
        .filter_map(|(k, span)| span.map(|span| (k, span)))
        .chain(self.aws.given())
        .chain(self.azure.given())
        .chain(self.port.given())
        .chain(self.google.given())
        .collect()
    }
}

pub(super) fn credential(
    d: &mut Diag<'_>,
    mut t: Table<'_>,
    earlier: &[CredentialConfig],
) -> Option<CredentialConfig> {
    let k = Keys::read(d, &mut t);
    let name = name(d, &t, &k, earlier);
    // Checked before building the kind, so that keys that mean nothing for
    // it are reported even when the kind is invalid.
    refuse_keys_that_do_not_apply(d, &t, &k);
    let kind = match (&k.exchange, &k.from) {
        (Some(e), Some(f)) => {
            d.err(
                &f.span,
                &t.key("from"),
                format!(
                    "a credential has either `exchange` or `from`, not both (exchange = {:?})",
                    e.v
                ),
            );
            return None;
        }
        (None, None) => {
            d.err(&t.span, &t.key("exchange"), format!("every [[credential]] needs `exchange` (one of: {}) or `from` (a vault, aws-web-identity or entra credential, with `secret`)", keyword::names::<ExchangeKind>().join(", ")));
            return None;
        }
        (None, Some(f)) if aws::names_aws(f, earlier) => aws::secret_read(d, &t, &k, f, earlier),
        (None, Some(f)) if azure::names_entra(f, earlier) => {
            aws::refuse_secret_keys(d, &t, &k);
            azure::keyvault_read(d, &t, &k, f, earlier)
        }
        (None, Some(f)) => {
            aws::refuse_secret_keys(d, &t, &k);
            vault::kv_read(d, &t, &k, f, earlier)
        }
        (Some(e), None) => match keyword::parse::<ExchangeKind>(&e.v) {
            Some(ExchangeKind::TokenExchange) => oauth::token_exchange(d, &t, &k),
            Some(ExchangeKind::JwtBearer) => oauth::jwt_bearer(d, &t, &k),
            Some(ExchangeKind::JwtAuthorizationGrant) => oauth::jwt_authorization_grant(d, &t, &k),
            Some(ExchangeKind::Vault) => vault::login(d, &t, &k),
            Some(ExchangeKind::Passthrough) => passthrough(d, &t, &k),
            Some(ExchangeKind::AwsWebIdentity) => aws::web_identity(d, &t, &k, earlier),
            Some(ExchangeKind::Entra) => azure::entra(d, &t, &k),
            Some(ExchangeKind::Port) => port::port(d, &t, &k, earlier),
            Some(ExchangeKind::GcpWorkloadIdentity) => google::workload_identity(d, &t, &k),
            None => {
                d.err(
                    &e.span,
                    &t.key("exchange"),
                    format!(
                        "unknown exchange {:?}; expected one of: {}",
                        e.v,
                        keyword::names::<ExchangeKind>().join(", ")
                    ),
                );
                return None;
            }
        },
    };
    Some(CredentialConfig {
        name: name?,
        kind: kind?,
    })
}

fn name(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys, earlier: &[CredentialConfig]) -> Option<String> {
    match &k.name {
        None => {
            d.err(
                &t.span,
                &t.key("name"),
                "every [[credential]] needs a `name`",
            );
            None
        }
        Some(n) if !is_name(&n.v) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!(
                    "expected a name of lowercase letters, digits, - and _ (at most 64), got {:?}",
                    n.v
                ),
            );
            None
        }
        Some(n) if earlier.iter().any(|c| c.name == n.v) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!("credential {:?} is defined twice", n.v),
            );
            None
        }
        Some(n) => Some(n.v.clone()),
    }
}

/// Keys that were given but mean nothing for this kind.
fn refuse_keys_that_do_not_apply(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) {
    let exchange = k
        .exchange
        .as_ref()
        .map(|e| keyword::parse::<ExchangeKind>(&e.v));
    let applicable = applicable_keys(exchange, k.from.is_some());
    let kind_label = match (&k.exchange, &k.from) {
        (Some(e), _) => format!("exchange = {:?}", e.v),
        _ => "from".to_owned(),
    };
    for (key, span) in k.given() {
        if !applicable.iter().any(|keys| keys.contains(&key)) {
            d.err(
                &span,
                &t.key(key),
                format!("`{key}` does not apply to a credential with {kind_label}"),
            );
        }
    }
}

/// Every key a `[[credential]]` table accepts, whatever its kind (the
/// parser's list; `docs/config.md` documents each under its kinds).
pub(crate) fn accepted_keys() -> Vec<&'static str> {
    [
        CREDENTIAL_KEYS,
        aws::KEYS,
        aws::SECRET_KEYS,
        azure::KEYS,
        port::KEYS,
        google::KEYS,
    ]
    .concat()
}

/// The keys that apply to a credential: `exchange` as parsed (`None` when
/// absent, `Some(None)` when unknown) and whether it has `from`. A `from`
/// read of a vault or entra credential takes none of [`aws::SECRET_KEYS`]
/// (refused by [`aws::refuse_secret_keys`]); see [`from_keys`].
pub(crate) fn applicable_keys(
    exchange: Option<Option<ExchangeKind>>,
    from: bool,
) -> &'static [&'static [&'static str]] {
    match (exchange, from) {
        (None, true) => &[FROM_KEYS, aws::SECRET_KEYS],
        (Some(Some(ExchangeKind::TokenExchange)), false) => &[OAUTH_KEYS, TOKEN_EXCHANGE_KEYS],
        (Some(Some(ExchangeKind::JwtBearer)), false) => &[OAUTH_KEYS],
        (Some(Some(ExchangeKind::JwtAuthorizationGrant)), false) => &[OAUTH_KEYS, CLIENT_AUTH_KEYS],
        (Some(Some(ExchangeKind::Vault)), false) => {
            &[&["name", "exchange", "address", "mount", "role", "namespace"]]
        }
        (Some(Some(ExchangeKind::Passthrough)), false) => &[&["name", "exchange", "audience"]],
        (Some(Some(ExchangeKind::AwsWebIdentity)), false) => {
            &[&["name", "exchange", "audience"], aws::KEYS]
        }
        (Some(Some(ExchangeKind::Entra)), false) => &[
            &["name", "exchange", "client_id", "scope", "audience"],
            azure::KEYS,
        ],
        (Some(Some(ExchangeKind::Port)), false) => &[
            &["name", "exchange", "client_id", "client_secret_env"],
            port::KEYS,
        ],
        (Some(Some(ExchangeKind::GcpWorkloadIdentity)), false) => &[
            &[
                "name",
                "exchange",
                "audience",
                "scope",
                "lifetime",
                "token_url",
            ],
            google::KEYS,
        ],
        _ => &[CREDENTIAL_KEYS],
    }
}

/// The keys a `from` read takes, by the kind of the credential it names;
/// `None` for a kind no `from` can name. The parse checks the same lists
/// in two steps ([`applicable_keys`], then [`aws::refuse_secret_keys`]
/// with its own message); `docs/config.md`'s test reads them from here.
#[cfg(test)]
pub(crate) fn from_keys(parent: ExchangeKind) -> Option<Vec<&'static str>> {
    match parent {
        ExchangeKind::Vault | ExchangeKind::Entra => Some(FROM_KEYS.to_vec()),
        ExchangeKind::AwsWebIdentity => Some([FROM_KEYS, aws::SECRET_KEYS].concat()),
        _ => None,
    }
}

/// `exchange = "passthrough"`: the identity token itself.
fn passthrough(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<CredentialKind> {
    let aud = k.audience.as_ref().and_then(|a| {
        if a.v.len() > 1 {
            d.err(
                &a.span,
                &t.key("audience"),
                "passthrough takes one audience (the one the platform token is minted for)",
            );
        }
        a.v.first().cloned()
    });
    Some(CredentialKind::Passthrough { audience: aud })
}
