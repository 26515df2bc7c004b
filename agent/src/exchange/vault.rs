//! Vault / OpenBao: JWT login on `auth/<mount>/login`, `renew-self`,
//! `revoke-self`, and KV v2 reads with the resulting token.

use std::time::Duration;

use http::HeaderName;
use serde_json::Value;
use url::Url;

use super::answer::{self, KvAnswer, Loose, VaultAnswer};
use super::{refusal_of, seconds, ExchangeError, Issued, Revoked};
use crate::http::{endpoint, Header, HttpClient};
use crate::identity::IdentityToken;
use crate::secret::Credential;

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
    Url::parse(&format!("{base}/v1/{path}")).map_err(|e| ExchangeError::BadUrl {
        name: String::new(),
        context: format!("bad vault path {path:?}: "),
        cause: e,
    })
}

fn headers<'a>(namespace: Option<&'a str>, token: Option<&Credential>) -> Vec<Header<'a>> {
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
    let v: VaultAnswer = answer::parse(body).map_err(bad)?;
    let auth = v
        .auth
        .ok_or_else(|| bad("no auth block"))?
        .0
        .unwrap_or_default();
    let token = auth
        .client_token
        .and_then(|t| t.0)
        .filter(|t| !t.as_secret().is_empty())
        .ok_or_else(|| bad("no auth.client_token"))?;
    let lease = seconds(auth.lease_duration.as_ref()).unwrap_or(0);
    let renewable = auth
        .renewable
        .as_ref()
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Issued {
        value: token,
        // lease_duration 0 is a root-like token without expiry.
        lifetime: (lease > 0).then(|| Duration::from_secs(lease)),
        granularity: super::WHOLE_SECONDS,
        renewable,
        about: Vec::new(),
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
            return Err(refusal_of(&url, &resp, &[id.jwt.as_secret()]));
        }
        auth_of(&url, resp.status, &resp.body)
    }

    pub(super) async fn renew(
        &self,
        http: &HttpClient,
        token: &Credential,
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
            return Err(refusal_of(&url, &resp, &[token.as_secret()]));
        }
        auth_of(&url, resp.status, &resp.body)
    }

    pub(super) async fn revoke(
        &self,
        http: &HttpClient,
        token: &Credential,
    ) -> Result<Revoked, ExchangeError> {
        let url = api(&self.address, "auth/token/revoke-self")?;
        let resp = http
            .post_json(&url, &headers(self.namespace.as_deref(), Some(token)), None)
            .await?;
        if resp.status.is_success() {
            Ok(Revoked::Done("vault revoke-self"))
        } else {
            Err(refusal_of(&url, &resp, &[token.as_secret()]))
        }
    }
}

/// GET `<path>` (a KV v2 `…/data/…` path) and take `data.data.<field>`.
pub(super) async fn read_kv(
    http: &HttpClient,
    address: &Url,
    namespace: Option<&str>,
    token: &Credential,
    path: &str,
    field: &str,
) -> Result<Issued, ExchangeError> {
    let url = api(address, path)?;
    let resp = http.get(&url, &headers(namespace, Some(token))).await?;
    if !resp.status.is_success() {
        return Err(refusal_of(&url, &resp, &[token.as_secret()]));
    }
    let bad = |p: String| ExchangeError::BadAnswer {
        service: endpoint(&url),
        status: resp.status.as_u16(),
        problem: p,
    };
    let v: KvAnswer = answer::parse(&resp.body).map_err(|p| bad(p.into()))?;
    let data = v
        .data
        .and_then(|d| d.0)
        .and_then(|d| d.data)
        .and_then(|d| d.0)
        .ok_or_else(|| bad("no data.data object (is this a KV v2 path with /data/?)".into()))?;
    let value = match data.get(field) {
        Some(Loose(Some(s))) if !s.is_empty() => Credential::new(s.expose()),
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
    let lease = seconds(v.lease_duration.as_ref()).unwrap_or(0);
    Ok(Issued {
        value,
        lifetime: (lease > 0).then(|| Duration::from_secs(lease)),
        granularity: super::WHOLE_SECONDS,
        renewable: false,
        about: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "hvs.canary-vault-token-0123456789";

    #[test]
    fn auth_blocks_are_read_into_a_credential_and_errors_never_show_it() {
        let url = Url::parse("http://127.0.0.1:8200/v1/auth/jwt/login").expect("url");
        let ok = auth_of(
            &url,
            http::StatusCode::OK,
            format!(
                r#"{{"auth":{{"client_token":"{CANARY}","lease_duration":"60","renewable":true}}}}"#
            )
            .as_bytes(),
        )
        .expect("issued");
        assert_eq!(ok.value.expose(), CANARY);
        assert_eq!(ok.lifetime, Some(Duration::from_secs(60)));
        assert!(ok.renewable);
        assert!(!format!("{ok:?}").contains(CANARY), "{ok:?}");
        for (body, problem) in [
            (format!(r#"{{"data":"{CANARY}"}}"#), "no auth block"),
            (
                format!(r#"{{"auth":null,"x":"{CANARY}"}}"#),
                "no auth.client_token",
            ),
            (format!(r#"{{"auth":"{CANARY}"}}"#), "no auth.client_token"),
            (
                format!(r#"{{"auth":{{"client_token":"{CANARY}","client_token":"y"}}}}"#),
                "an object that repeats a field",
            ),
            (
                format!(r#"{{"auth":{{"client_token":"{CANARY}"}}"#),
                "a body that is not JSON",
            ),
        ] {
            let e = auth_of(&url, http::StatusCode::OK, body.as_bytes()).expect_err("refused");
            let (shown, debug) = (e.to_string(), format!("{e:?}"));
            assert!(shown.contains(problem), "{shown}");
            assert!(
                !shown.contains(CANARY) && !debug.contains(CANARY),
                "{debug}"
            );
        }
    }
}
