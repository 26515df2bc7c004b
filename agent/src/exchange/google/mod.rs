//! Google Cloud workload identity federation (`exchange =
//! "gcp-workload-identity"`): the job's token at Google's STS (RFC 8693,
//! form-encoded; `audience` is the provider's full resource name), then,
//! with `service_account`, IAM Credentials' `generateAccessToken` with the
//! federated token as the bearer. `hints` explains the refusals for
//! `doctor`.

pub mod hints;

use std::time::{Duration, SystemTime};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use url::Url;

use super::answer::{self, Loose, TokenAnswer};
use super::{refusal, seconds, ExchangeError, Issued, Revoked};
use crate::config::GcpWorkloadIdentity;
use crate::http::{endpoint, FormValue, Header, HttpClient};
use crate::identity::{truncate, IdentityToken};
use crate::secret::{redact, Credential, Secret};
use crate::wipe::WipedJson;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Why: a token valid for more than 12 hours is more than either step can
/// grant; treat it as a service error rather than trusting it.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
pub(super) struct GcpExchange {
    pub cfg: GcpWorkloadIdentity,
}

/// `generateAccessToken`'s answer.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct SaToken {
    #[serde(rename = "accessToken")]
    access_token: Option<Loose<Credential>>,
    #[serde(rename = "expireTime")]
    expire_time: Option<Loose<String>>,
}

impl GcpExchange {
    pub(super) fn describe(&self) -> String {
        let c = &self.cfg;
        let mut s = format!(
            "Google workload identity federation at {} (provider {}, token audience {:?}, scope {})",
            endpoint(&c.token_url),
            c.provider,
            c.audience,
            c.scope.join(" ")
        );
        if let Some(sa) = &c.service_account {
            s.push_str(&format!(
                ", then generateAccessToken for {sa} at {} (lifetime {}s",
                endpoint(&c.iamcredentials_url),
                c.lifetime.as_secs()
            ));
            if !c.delegates.is_empty() {
                s.push_str(&format!(", delegates {}", c.delegates.join(", ")));
            }
            s.push(')');
        }
        s
    }

    pub(super) async fn obtain(
        &self,
        http: &HttpClient,
        id: &IdentityToken,
    ) -> Result<Issued, ExchangeError> {
        let federated = self.sts(http, id).await?;
        let Some(sa) = &self.cfg.service_account else {
            return Ok(federated);
        };
        self.impersonate(http, sa, &federated.value, id.jwt.as_secret())
            .await
    }

    /// Google's STS: the job's token for a federated access token.
    async fn sts(&self, http: &HttpClient, id: &IdentityToken) -> Result<Issued, ExchangeError> {
        let url = &self.cfg.token_url;
        let audience = self.cfg.sts_audience();
        let scope = self.cfg.scope.join(" ");
        let form: Vec<(&str, FormValue<'_>)> = vec![
            ("grant_type", FormValue::Plain(GRANT)),
            ("audience", FormValue::Plain(&audience)),
            ("scope", FormValue::Plain(&scope)),
            ("requested_token_type", FormValue::Plain(ACCESS_TOKEN)),
            ("subject_token_type", FormValue::Plain(JWT)),
            ("subject_token", FormValue::Secret(id.jwt.as_secret())),
        ];
        let resp = http.post_form(url, &[], &form).await?;
        if !resp.status.is_success() {
            return Err(refusal(url, resp.status, &resp.body, &[id.jwt.as_secret()]));
        }
        let bad = |problem: &str| ExchangeError::BadAnswer {
            service: endpoint(url),
            status: resp.status.as_u16(),
            problem: problem.into(),
        };
        let v: TokenAnswer = answer::parse(&resp.body).map_err(bad)?;
        let token = v
            .access_token
            .and_then(|t| t.0)
            .filter(|t| !t.as_secret().is_empty())
            .ok_or_else(|| bad("no access_token"))?;
        if let Some(Loose(Some(tt))) = &v.token_type {
            if !tt.eq_ignore_ascii_case("bearer") {
                return Err(bad(&format!(
                    "token_type {tt:?}; only Bearer tokens can be attached to requests"
                )));
            }
        }
        let lifetime = match seconds(v.expires_in.as_ref()) {
            None => return Err(bad("no expires_in")),
            Some(0) => return Err(bad("expires_in 0")),
            Some(s) if Duration::from_secs(s) > MAX_LIFETIME => {
                return Err(bad(&format!(
                    "expires_in {s}s, more than 12 hours; refusing a long-lived token"
                )))
            }
            Some(s) => Duration::from_secs(s),
        };
        Ok(Issued {
            value: token,
            lifetime: Some(lifetime),
            granularity: super::WHOLE_SECONDS,
            renewable: false,
            about: vec![("principal", self.cfg.sts_audience())],
        })
    }

    fn generate_url(&self, sa: &str) -> Result<Url, ExchangeError> {
        let base = self.cfg.iamcredentials_url.as_str().trim_end_matches('/');
        let s = format!("{base}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken");
        Url::parse(&s).map_err(|cause| ExchangeError::BadUrl {
            name: sa.to_owned(),
            context: "the generateAccessToken URL: ".into(),
            cause,
        })
    }

    /// IAM Credentials: the federated token for the service account's.
    async fn impersonate(
        &self,
        http: &HttpClient,
        sa: &str,
        federated: &Credential,
        jwt: &Secret,
    ) -> Result<Issued, ExchangeError> {
        let url = self.generate_url(sa)?;
        let mut body = serde_json::json!({
            "scope": self.cfg.scope,
            "lifetime": format!("{}s", self.cfg.lifetime.as_secs()),
        });
        if !self.cfg.delegates.is_empty() {
            let d: Vec<String> = self
                .cfg
                .delegates
                .iter()
                .map(|e| format!("projects/-/serviceAccounts/{e}"))
                .collect();
            body["delegates"] = d.into();
        }
        let auth = Header::Secret(
            http::header::AUTHORIZATION,
            zeroize::Zeroizing::new(format!("Bearer {}", federated.expose())),
        );
        let bytes = body.to_string().into_bytes();
        let resp = http.post_json(&url, &[auth], Some(&bytes)).await?;
        let known = [federated.as_secret(), jwt];
        if !resp.status.is_success() {
            return Err(google_refusal(&url, resp.status, &resp.body, &known));
        }
        let bad = |problem: &str| ExchangeError::BadAnswer {
            service: endpoint(&url),
            status: resp.status.as_u16(),
            problem: problem.into(),
        };
        let v: SaToken = answer::parse(&resp.body).map_err(bad)?;
        let token = v
            .access_token
            .and_then(|t| t.0)
            .filter(|t| !t.as_secret().is_empty())
            .ok_or_else(|| bad("no accessToken"))?;
        let exp = v
            .expire_time
            .and_then(|t| t.0)
            .ok_or_else(|| bad("no expireTime"))?;
        let exp = OffsetDateTime::parse(exp.trim(), &Rfc3339)
            .map(SystemTime::from)
            .map_err(|_| bad("an expireTime that is not an RFC 3339 time"))?;
        let lifetime = exp
            .duration_since(SystemTime::now())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad("an expireTime in the past"))?;
        if lifetime > MAX_LIFETIME {
            return Err(bad(
                "an expireTime more than 12 hours away; refusing a long-lived token",
            ));
        }
        Ok(Issued {
            value: token,
            lifetime: Some(lifetime),
            // An absolute time to the second, read after the answer.
            granularity: super::WHOLE_SECONDS,
            renewable: false,
            about: vec![("service_account", sa.to_owned())],
        })
    }

    pub(super) fn revoke(&self, _value: &Credential) -> Revoked {
        Revoked::NotRevocable(
            "Google does not revoke service account or workload identity federation access tokens (oauth2.googleapis.com/revoke is for user grants); they expire by themselves, an hour unless `lifetime` says otherwise",
        )
    }
}

/// A Google API error: `{"error":{"code":403,"message":…,"status":"PERMISSION_DENIED"}}`;
/// `status` is the code doctor explains. Anything else: the OAuth shape or
/// the body, as for every service.
pub(super) fn google_refusal(
    url: &Url,
    status: http::StatusCode,
    body: &[u8],
    known: &[&Secret],
) -> ExchangeError {
    let parsed = WipedJson::parse(body).ok();
    let err = parsed.as_deref().and_then(|v| v.get("error"));
    let Some(Value::Object(e)) = err else {
        return refusal(url, status, body, known);
    };
    let code = e.get("status").and_then(Value::as_str).unwrap_or("");
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
    let detail = if code.is_empty() {
        msg.to_owned()
    } else {
        format!("{code}: {msg}")
    };
    ExchangeError::Refused {
        service: endpoint(url),
        status: status.as_u16(),
        detail: truncate(&redact(&detail, known), 500),
        code: (!code.is_empty()).then(|| code.to_owned()),
    }
}
