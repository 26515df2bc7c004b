//! `exchange = "token-exchange"` (RFC 8693), `exchange = "jwt-bearer"`
//! (RFC 7523 client assertion) and `exchange = "jwt-authorization-grant"`
//! (RFC 7523 authorization grant): an OAuth token endpoint and how lanyard
//! authenticates to it.

use serde::Deserialize;
use url::Url;

use super::Keys;
use crate::config::keyword;
use crate::config::model::{ClientAuth, CredentialKind, OAuthEndpoint, SubjectTokenType};
use crate::config::raw::{Diag, Table};
use crate::config::values::{duration, is_env_name, one_of, url};
use crate::config::DEFAULT_LIFETIME;

pub(super) fn token_exchange(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<CredentialKind> {
    let endpoint = endpoint(d, t, k);
    let stt = match &k.subject_token_type {
        None => Some(SubjectTokenType::Jwt),
        Some(s) => {
            let short = s.v.strip_prefix(SubjectTokenType::URN_PREFIX);
            // The URN itself is no keyword: a bad one is reported as given.
            keyword::parse::<SubjectTokenType>(short.unwrap_or(&s.v))
                .or_else(|| one_of(d, &t.key("subject_token_type"), s))
        }
    };
    let client = client_auth(d, t, k);
    Some(CredentialKind::TokenExchange {
        endpoint: endpoint?,
        subject_token_type: stt?,
        requested_token_type: k.requested_token_type.as_ref().map(|r| r.v.clone()),
        subject_issuer: k.subject_issuer.as_ref().map(|r| r.v.clone()),
        client: client?,
    })
}

pub(super) fn jwt_authorization_grant(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    k: &Keys,
) -> Option<CredentialKind> {
    let endpoint = endpoint(d, t, k);
    let client = client_auth(d, t, k);
    Some(CredentialKind::JwtAuthorizationGrant {
        endpoint: endpoint?,
        client: client?,
    })
}

pub(super) fn jwt_bearer(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<CredentialKind> {
    let endpoint = endpoint(d, t, k);
    // Optional (RFC 7521 §4.2): a server that finds the client from the
    // assertion may refuse a client_id that is not the assertion's `sub`
    // (Keycloak's federated client authentication does).
    let cid = match &k.client_id {
        Some(c) if c.v.is_empty() => {
            d.err(&c.span, &t.key("client_id"), "`client_id` is empty; remove it to let the server find the client from the job's token, or name the application whose federated credential trusts this job");
            None
        }
        Some(c) => Some(Some(c.v.clone())),
        None => Some(None),
    };
    Some(CredentialKind::JwtBearer {
        endpoint: endpoint?,
        client_id: cid?,
    })
}

fn endpoint(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<OAuthEndpoint> {
    let tu = k.token_url.as_ref().map(|u| url(d, &t.key("token_url"), u));
    let is = k.issuer.as_ref().map(|u| url(d, &t.key("issuer"), u));
    let ru = k
        .revocation_url
        .as_ref()
        .map(|u| url(d, &t.key("revocation_url"), u));
    if k.token_url.is_none() && k.issuer.is_none() {
        d.err(
            &t.span,
            &t.key("token_url"),
            "needs `token_url` (the token endpoint), or `issuer` to discover it",
        );
        return None;
    }
    let mut res = Vec::new();
    if let Some(r) = &k.resource {
        for s in &r.v {
            match Url::parse(s) {
                Ok(u) if u.fragment().is_none() => res.push(u),
                _ => d.err(
                    &r.span,
                    &t.key("resource"),
                    format!("expected an absolute URI without a fragment (RFC 8707), got {s:?}"),
                ),
            }
        }
    }
    let lt = match &k.lifetime {
        Some(l) => duration(d, &t.key("lifetime"), l),
        None => Some(DEFAULT_LIFETIME),
    };
    Some(OAuthEndpoint {
        token_url: tu.flatten(),
        issuer: is.flatten(),
        revocation_url: ru.flatten(),
        audience: k.audience.as_ref().map(|a| a.v.clone()).unwrap_or_default(),
        resource: res,
        scope: k
            .scope
            .as_ref()
            .map(|s| s.v.join(" "))
            .filter(|s| !s.is_empty()),
        lifetime: lt?,
    })
}

fn client_auth(d: &mut Diag<'_>, t: &Table<'_>, k: &Keys) -> Option<ClientAuth> {
    let (client_id, secret_env, method) = (&k.client_id, &k.client_secret_env, &k.client_auth);
    if let Some(s) = secret_env {
        if !is_env_name(&s.v) {
            d.err(&s.span, &t.key("client_secret_env"), format!("expected the name of an environment variable that holds the client secret, got {:?}", s.v));
            return None;
        }
    }
    let m = match method {
        Some(m) => one_of::<Method>(d, &t.key("client_auth"), m)?,
        None if secret_env.is_some() => Method::Basic,
        None => Method::None,
    };
    match (m, client_id, secret_env) {
        (Method::None, cid, None) => Some(ClientAuth::None {
            client_id: cid.as_ref().map(|c| c.v.clone()),
        }),
        (Method::None, _, Some(s)) => {
            d.err(&s.span, &t.key("client_secret_env"), "client_auth = \"none\" sends no secret; remove client_secret_env or pick \"basic\"/\"post\"");
            None
        }
        (Method::Basic, Some(cid), Some(s)) => Some(ClientAuth::Basic {
            client_id: cid.v.clone(),
            secret_env: s.v.clone(),
        }),
        (Method::Post, Some(cid), Some(s)) => Some(ClientAuth::Post {
            client_id: cid.v.clone(),
            secret_env: s.v.clone(),
        }),
        (Method::Basic | Method::Post, _, _) => {
            let span = method.as_ref().map_or(t.span.clone(), |m| m.span.clone());
            d.err(
                &span,
                &t.key("client_auth"),
                format!(
                    "client_auth = {:?} needs both `client_id` and `client_secret_env`",
                    keyword::name(&m)
                ),
            );
            None
        }
    }
}

/// `client_auth`: how lanyard authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Method {
    Basic,
    Post,
    None,
}
