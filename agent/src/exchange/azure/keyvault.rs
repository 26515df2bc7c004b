//! Key Vault as a secret source: `GET <secret url>?api-version=7.4` with
//! the entra credential's token as `Authorization: Bearer`. The answer's
//! `value` is parsed straight into a [`Credential`]; like a Vault KV field
//! it has no expiry and is re-read on a schedule.

use serde_json::Value;
use url::Url;

use crate::config::KeyVaultSecret;
use crate::exchange::answer::{self, Loose};
use crate::exchange::{ExchangeError, Issued, NotObtained};
use crate::http::{endpoint, Header, HttpClient};
use crate::identity::truncate;
use crate::secret::{redact, Credential, Secret};
use crate::wipe::WipedJson;

/// The Key Vault REST API version lanyard speaks.
pub const API_VERSION: &str = "7.4";

#[derive(Debug)]
pub(in crate::exchange) struct SecretRead {
    pub cfg: KeyVaultSecret,
}

/// `GET /secrets/<name>` answer (SecretBundle); only `value` is kept.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct SecretBundle {
    value: Option<Loose<Credential>>,
}

impl SecretRead {
    pub(in crate::exchange) fn describe(&self) -> String {
        format!(
            "Key Vault secret {} read with {:?}",
            self.cfg.url, self.cfg.from
        )
    }

    fn request_url(&self) -> Url {
        let mut u = self.cfg.url.clone();
        u.query_pairs_mut().append_pair("api-version", API_VERSION);
        u
    }

    pub(in crate::exchange) async fn read(
        &self,
        http: &HttpClient,
        name: &str,
        token: Option<&Credential>,
    ) -> Result<Issued, ExchangeError> {
        let token = token.ok_or_else(|| ExchangeError::Parent {
            name: name.to_owned(),
            parent: self.cfg.from.clone(),
            reason: Box::new(NotObtained),
        })?;
        let url = self.request_url();
        let auth = Header::Secret(
            http::header::AUTHORIZATION,
            zeroize::Zeroizing::new(format!("Bearer {}", token.expose())),
        );
        let resp = http.get(&url, &[auth]).await?;
        if !resp.status.is_success() {
            return Err(refusal(&url, resp.status, &resp.body, &[token.as_secret()]));
        }
        let bad = |problem: &str| ExchangeError::BadAnswer {
            service: endpoint(&url),
            status: resp.status.as_u16(),
            problem: problem.into(),
        };
        let v: SecretBundle = answer::parse(&resp.body).map_err(bad)?;
        let value = v
            .value
            .and_then(|t| t.0)
            .filter(|t| !t.as_secret().is_empty())
            .ok_or_else(|| bad("no value (a secret bundle's `value` string)"))?;
        Ok(Issued {
            value,
            lifetime: None,
            granularity: std::time::Duration::ZERO,
            renewable: false,
            about: Vec::new(),
        })
    }
}

/// Key Vault's error: `{"error":{"code","message","innererror":{"code"}}}`;
/// the inner code is the more specific (`ForbiddenByRbac`, `SecretNotFound`).
fn refusal(url: &Url, status: http::StatusCode, body: &[u8], known: &[&Secret]) -> ExchangeError {
    let parsed = WipedJson::parse(body).ok();
    let err = parsed.as_deref().and_then(|v| v.get("error"));
    let Some(Value::Object(e)) = err else {
        return crate::exchange::refusal(url, status, body, known);
    };
    let outer = e.get("code").and_then(Value::as_str).unwrap_or("");
    let inner = e
        .get("innererror")
        .and_then(|i| i.get("code"))
        .and_then(Value::as_str);
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
    let code = inner.unwrap_or(outer).to_owned();
    ExchangeError::Refused {
        service: endpoint(url),
        status: status.as_u16(),
        detail: truncate(&redact(&format!("{code}: {msg}"), known), 500),
        code: (!code.is_empty()).then_some(code),
    }
}
