//! Vault / OpenBao: JWT login on `auth/<mount>/login`, `renew-self`,
//! `revoke-self`, and KV v2 reads with the resulting token.

use std::time::Duration;

use http::HeaderName;
use serde_json::Value;
use url::Url;

use super::{refusal, seconds, ExchangeError, Issued, Revoked};
use crate::http::{endpoint, Header, HttpClient};
use crate::identity::IdentityToken;
use crate::secret::Secret;
use crate::wipe::WipedJson;

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");
const NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-vault-namespace");

#[derive(Debug)]
pub(super) struct Vault {
    pub address: Url,
    pub mount: String,
    pub role: String,
    pub namespace: Option<String>,
}

fn api(address: &Url, path: &str) -> Result<Url, ExchangeError> {
    let base = address.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/v1/{path}")).map_err(|e| ExchangeError::Setup {
        name: String::new(),
        problem: format!("bad vault path {path:?}: {e}"),
    })
}

fn headers<'a>(namespace: Option<&'a str>, token: Option<&Secret>) -> Vec<Header<'a>> {
    let mut h = Vec::new();
    if let Some(ns) = namespace {
        h.push(Header::Plain(NAMESPACE_HEADER, ns));
    }
    if let Some(t) = token {
        h.push(Header::Secret(
            TOKEN_HEADER,
            zeroize::Zeroizing::new(t.expose().to_owned()),
        ));
    }
    h
}

/// `auth` block of a login or renew answer.
fn auth_of(url: &Url, status: http::StatusCode, body: &[u8]) -> Result<Issued, ExchangeError> {
    let bad = |p: &str| ExchangeError::BadAnswer {
        service: endpoint(url),
        status: status.as_u16(),
        problem: p.into(),
    };
    let v = WipedJson::parse(body).map_err(|_| bad("a body that is not JSON"))?;
    let auth = v.get("auth").ok_or_else(|| bad("no auth block"))?;
    let token = auth
        .get("client_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("no auth.client_token"))?;
    let lease = seconds(auth.get("lease_duration")).unwrap_or(0);
    let renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Issued {
        value: Secret::new(token),
        // lease_duration 0 is a root-like token without expiry.
        lifetime: (lease > 0).then(|| Duration::from_secs(lease)),
        granularity: super::WHOLE_SECONDS,
        renewable,
    })
}

impl Vault {
    pub(super) async fn login(
        &self,
        http: &HttpClient,
        id: &IdentityToken,
    ) -> Result<Issued, ExchangeError> {
        let url = api(&self.address, &format!("auth/{}/login", self.mount))?;
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "role": self.role, "jwt": id.jwt.expose() }))
                .unwrap_or_default(),
        );
        let resp = http
            .post_json(&url, &headers(self.namespace.as_deref(), None), Some(&body))
            .await?;
        if !resp.status.is_success() {
            return Err(refusal(&url, resp.status, &resp.body, &[&id.jwt]));
        }
        auth_of(&url, resp.status, &resp.body)
    }

    pub(super) async fn renew(
        &self,
        http: &HttpClient,
        token: &Secret,
    ) -> Result<Issued, ExchangeError> {
        let url = api(&self.address, "auth/token/renew-self")?;
        let resp = http
            .post_json(
                &url,
                &headers(self.namespace.as_deref(), Some(token)),
                Some(b"{}"),
            )
            .await?;
        if !resp.status.is_success() {
            return Err(refusal(&url, resp.status, &resp.body, &[token]));
        }
        auth_of(&url, resp.status, &resp.body)
    }

    pub(super) async fn revoke(
        &self,
        http: &HttpClient,
        token: &Secret,
    ) -> Result<Revoked, ExchangeError> {
        let url = api(&self.address, "auth/token/revoke-self")?;
        let resp = http
            .post_json(&url, &headers(self.namespace.as_deref(), Some(token)), None)
            .await?;
        if resp.status.is_success() {
            Ok(Revoked::Done("vault revoke-self"))
        } else {
            Err(refusal(&url, resp.status, &resp.body, &[token]))
        }
    }
}

/// GET `<path>` (a KV v2 `…/data/…` path) and take `data.data.<field>`.
pub(super) async fn read_kv(
    http: &HttpClient,
    address: &Url,
    namespace: Option<&str>,
    token: &Secret,
    path: &str,
    field: &str,
) -> Result<Issued, ExchangeError> {
    let url = api(address, path)?;
    let resp = http.get(&url, &headers(namespace, Some(token))).await?;
    if !resp.status.is_success() {
        return Err(refusal(&url, resp.status, &resp.body, &[token]));
    }
    let bad = |p: String| ExchangeError::BadAnswer {
        service: endpoint(&url),
        status: resp.status.as_u16(),
        problem: p,
    };
    let v = WipedJson::parse(&resp.body).map_err(|_| bad("a body that is not JSON".into()))?;
    let data = v
        .get("data")
        .and_then(|d| d.get("data"))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no data.data object (is this a KV v2 path with /data/?)".into()))?;
    let value = match data.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(bad(format!(
                "field {field:?} that is not a non-empty string"
            )))
        }
        None => {
            // Field names only, never values.
            let names: Vec<&str> = data.keys().map(String::as_str).collect();
            return Err(bad(format!(
                "no field {field:?}; the secret has: {}",
                names.join(", ")
            )));
        }
    };
    let lease = seconds(v.get("lease_duration")).unwrap_or(0);
    Ok(Issued {
        value: Secret::new(value.as_str()),
        lifetime: (lease > 0).then(|| Duration::from_secs(lease)),
        granularity: super::WHOLE_SECONDS,
        renewable: false,
    })
}
