//! Port (getport.io): `POST <api>/v1/auth/access_token` with
//! `{"clientId","clientSecret"}` as JSON; the answer is
//! `{"ok":true,"accessToken","expiresIn","tokenType":"Bearer"}` and an
//! error is `{"ok":false,"error":"<code>","message":"..."}`. Port hands
//! back the same active token while it is valid, so a refresh may return
//! the value already held (the store keeps its first expiry then). There
//! is no revocation: a token ends after `expiresIn` (3 hours).

use std::time::Duration;

use serde_json::Value;

use super::answer::{self, Loose};
use super::{seconds, ExchangeError, Issued, NotObtained, Revoked};
use crate::config::{Port, PortClientId, PortSecret};
use crate::env::Env;
use crate::http::{endpoint, HttpClient};
use crate::identity::truncate;
use crate::secret::{redact, Credential, Secret};
use crate::wipe::WipedJson;

/// Why: a token goes into an `Authorization` header on every routed
/// request; anything longer than this is not a Port token.
const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug)]
pub(super) struct PortExchange {
    pub cfg: Port,
    client_id: String,
    /// `None`: the secret is the parent credential's current value.
    secret: Option<Secret>,
}

/// The token answer; the token is parsed straight into a [`Credential`].
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PortAnswer {
    ok: Option<Value>,
    #[serde(rename = "accessToken")]
    access_token: Option<Loose<Credential>>,
    #[serde(rename = "expiresIn")]
    expires_in: Option<Value>,
    #[serde(rename = "tokenType")]
    token_type: Option<Loose<String>>,
}

impl PortExchange {
    /// Reads the client id and (unless it comes from a parent credential)
    /// the client secret from the job's environment.
    pub(super) fn prepare(name: &str, cfg: &Port, env: &dyn Env) -> Result<Self, ExchangeError> {
        let client_id = match &cfg.client_id {
            PortClientId::Literal(c) => c.clone(),
            PortClientId::Env(var) => env.non_empty(var).ok_or_else(|| ExchangeError::Setup {
                name: name.to_owned(),
                problem: format!("client id variable {var} is not set"),
            })?,
        };
        let secret = match &cfg.client_secret {
            PortSecret::Env(var) => Some(env.non_empty(var).map(Secret::new).ok_or_else(|| {
                ExchangeError::MissingSecret {
                    name: name.to_owned(),
                    variable: var.clone(),
                }
            })?),
            PortSecret::From(_) => None,
        };
        Ok(PortExchange {
            cfg: cfg.clone(),
            client_id,
            secret,
        })
    }

    pub(super) fn describe(&self) -> String {
        let from = match &self.cfg.client_secret {
            PortSecret::Env(v) => format!("variable {v}"),
            PortSecret::From(c) => format!("credential {c:?}"),
        };
        format!(
            "Port access token at {} for client {} (secret from {from})",
            endpoint(&self.cfg.token_url),
            self.client_id
        )
    }

    pub(super) async fn obtain(
        &self,
        http: &HttpClient,
        name: &str,
        parent: Option<&Credential>,
    ) -> Result<Issued, ExchangeError> {
        let secret: &Secret = match (&self.secret, parent, &self.cfg.client_secret) {
            (Some(s), _, _) => s,
            (None, Some(p), _) => p.as_secret(),
            (None, None, PortSecret::From(from)) => {
                return Err(ExchangeError::Parent {
                    name: name.to_owned(),
                    parent: from.clone(),
                    reason: Box::new(NotObtained),
                })
            }
            (None, None, PortSecret::Env(v)) => {
                return Err(ExchangeError::MissingSecret {
                    name: name.to_owned(),
                    variable: v.clone(),
                })
            }
        };
        let url = &self.cfg.token_url;
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "clientId": self.client_id,
                "clientSecret": secret.expose(),
            }))
            .unwrap_or_default(),
        );
        let resp = http.post_json(url, &[], Some(&body)).await?;
        let status = resp.status;
        if !status.is_success() {
            return Err(refusal(url, status, &resp.body, secret));
        }
        let bad = |problem: &str| ExchangeError::BadAnswer {
            service: endpoint(url),
            status: status.as_u16(),
            problem: problem.into(),
        };
        let a: PortAnswer = answer::parse(&resp.body).map_err(bad)?;
        if a.ok != Some(Value::Bool(true)) {
            // `ok: false` with a 200: Port's words if it gave them.
            return Err(match refusal(url, status, &resp.body, secret) {
                e @ ExchangeError::Refused { code: Some(_), .. } => e,
                _ => bad("no `\"ok\": true` (an answer that is not Port's success)"),
            });
        }
        let token = a
            .access_token
            .and_then(|t| t.0)
            .filter(|t| !t.as_secret().is_empty())
            .ok_or_else(|| bad("no accessToken (a string)"))?;
        if token.expose().len() > MAX_TOKEN_LEN
            || !token.expose().bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad(
                "an accessToken that cannot be sent in a header (too long, or spaces or control characters)",
            ));
        }
        if let Some(t) = a.token_type.as_ref().and_then(|t| t.0.as_deref()) {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(bad(&format!(
                    "tokenType {:?} (lanyard sends Port tokens as Bearer)",
                    truncate(t, 40)
                )));
            }
        }
        let lifetime = seconds(a.expires_in.as_ref())
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("no expiresIn (seconds until the token expires)"))?;
        Ok(Issued {
            value: token,
            lifetime: Some(Duration::from_secs(lifetime)),
            granularity: super::WHOLE_SECONDS,
            renewable: false,
            about: vec![("client", self.client_id.clone())],
        })
    }

    pub(super) fn revoke(&self) -> Revoked {
        Revoked::NotRevocable(
            "Port has no token revocation; an access token expires by itself (3 hours)",
        )
    }
}

/// Port's error `{"ok":false,"error":"<code>","message":"..."}` in its own
/// words, the client secret and token shapes redacted; anything else as
/// [`super::refusal`] reads it.
fn refusal(
    url: &url::Url,
    status: http::StatusCode,
    body: &[u8],
    secret: &Secret,
) -> ExchangeError {
    let parsed = WipedJson::parse(body).ok();
    let m = match parsed.as_deref() {
        Some(Value::Object(m)) => m,
        _ => return super::refusal(url, status, body, &[secret]),
    };
    let error = m.get("error").and_then(Value::as_str);
    let message = m.get("message").and_then(Value::as_str);
    let detail = match (error, message) {
        (Some(e), Some(msg)) => format!("{e}: {msg}"),
        (Some(e), None) => e.to_owned(),
        (None, Some(msg)) => msg.to_owned(),
        (None, None) => return super::refusal(url, status, body, &[secret]),
    };
    let detail = truncate(&redact(&detail, &[secret]), 500);
    ExchangeError::Refused {
        service: endpoint(url),
        status: status.as_u16(),
        code: error.map(|e| truncate(&redact(e, &[secret]), 80)),
        detail,
    }
}

/// `doctor`'s likely causes for a refused Port exchange.
pub(super) fn hints(e: &ExchangeError, x: &PortExchange) -> Option<Vec<String>> {
    let (status, code) = match e {
        ExchangeError::Refused { status, code, .. } => (*status, code.as_deref().unwrap_or("")),
        ExchangeError::Retried { last, .. } => return hints(last, x),
        _ => return None,
    };
    let from = match &x.cfg.client_secret {
        PortSecret::Env(v) => format!("the CI variable {v}"),
        PortSecret::From(c) => format!("the value credential {c:?} reads"),
    };
    let region = if x.cfg.api_url.host_str() == Some("api.getport.io") {
        " An organisation in Port's US region needs api_url = \"https://api.us.getport.io\"; EU credentials are refused there and vice versa."
    } else {
        ""
    };
    Some(vec![match (status, code) {
        (401 | 403, _) => format!(
            "Port did not accept client {} with the secret from {from}: copy both from Port's Credentials page (a regenerated secret ends the old one).{region}",
            x.client_id
        ),
        (422 | 400, _) => format!(
            "Port refused the request's shape ({code}): the client id and secret must both be non-empty strings; check {from}"
        ),
        (429, _) => "Port is rate limiting this organisation (429): a failed refresh is retried with backoff, a job's start is not".into(),
        _ => format!(
            "Port answered {status} {code} at {}: see https://status.port.io if it persists",
            endpoint(&x.cfg.token_url)
        ),
    }])
}
