//! Secrets Manager as a secret source: `GetSecretValue` (the JSON 1.1
//! protocol: `POST /`, `X-Amz-Target: secretsmanager.GetSecretValue`),
//! signed with SigV4 by the `aws-sigv4` crate using the current keys of the
//! aws-web-identity credential it names. Like a Vault KV field, the value
//! has no expiry and is re-read on a schedule.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::Value;

use super::AwsKeys;
use crate::config::AwsSecret;
use crate::exchange::{ExchangeError, Issued};
use crate::http::{endpoint, HttpClient};
use crate::identity::truncate;
use crate::secret::{redact, Credential, Secret};
use crate::wipe::WipedJson;

const TARGET: &str = "secretsmanager.GetSecretValue";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

#[derive(Debug)]
pub(in crate::exchange) struct SecretRead {
    pub cfg: AwsSecret,
}

impl SecretRead {
    pub(in crate::exchange) fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "Secrets Manager {}{} ({}) at {} read with {:?}",
            c.secret_id,
            c.field
                .as_deref()
                .map(|f| format!("#{f}"))
                .unwrap_or_default(),
            c.version_stage.as_deref().unwrap_or("AWSCURRENT"),
            endpoint(&c.endpoint),
            c.from
        )
    }

    pub(in crate::exchange) async fn read(
        &self,
        http: &HttpClient,
        name: &str,
        keys: Option<&Credential>,
    ) -> Result<Issued, ExchangeError> {
        let c = &self.cfg;
        let keys = keys.ok_or_else(|| ExchangeError::Parent {
            name: name.to_owned(),
            parent: c.from.clone(),
            reason: "not obtained".into(),
        })?;
        let setup = |problem: String| ExchangeError::Setup {
            name: name.to_owned(),
            problem,
        };
        let keys = AwsKeys::from_credential(keys)
            .ok_or_else(|| setup(format!("{:?} holds no AWS keys", c.from)))?;
        let mut body = serde_json::json!({ "SecretId": c.secret_id });
        if let Some(v) = &c.version_stage {
            body["VersionStage"] = Value::String(v.clone());
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let req = signed(&c.endpoint, &c.region, &keys, body)
            .map_err(|e| setup(format!("signing GetSecretValue: {e}")))?;
        let resp = http.request_raw(req).await?;
        let status = resp.status();
        let body = zeroize::Zeroizing::new(resp.into_body());
        let known = [
            &keys.access_key_id,
            &keys.secret_access_key,
            &keys.session_token,
        ];
        if !status.is_success() {
            return Err(refusal(c, status, &body, &known));
        }
        let bad = |problem: String| ExchangeError::BadAnswer {
            service: endpoint(&c.endpoint),
            status: status.as_u16(),
            problem,
        };
        let v = WipedJson::parse(&body).map_err(|_| bad("a body that is not JSON".into()))?;
        let text = match v.get("SecretString") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ if v.get("SecretBinary").is_some() => {
                return Err(bad(
                    "a binary secret (SecretBinary); only SecretString values can be attached"
                        .into(),
                ))
            }
            _ => return Err(bad("no SecretString".into())),
        };
        let value = match &c.field {
            None => Credential::new(text.as_str()),
            Some(field) => {
                let inner = WipedJson::parse(text.as_bytes()).map_err(|_| {
                    bad(format!(
                        "a SecretString that is not a JSON object, so it has no key {field:?}"
                    ))
                })?;
                let obj = inner.as_object().ok_or_else(|| {
                    bad(format!(
                        "a SecretString that is not a JSON object, so it has no key {field:?}"
                    ))
                })?;
                match obj.get(field) {
                    Some(Value::String(s)) if !s.is_empty() => Credential::new(s.as_str()),
                    Some(_) => {
                        return Err(bad(format!("key {field:?} that is not a non-empty string")))
                    }
                    None => {
                        // Key names only, never values.
                        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
                        return Err(bad(format!(
                            "no key {field:?}; the secret has: {}",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        Ok(Issued {
            value,
            lifetime: None,
            granularity: std::time::Duration::ZERO,
            renewable: false,
            about: Vec::new(),
        })
    }
}

/// The request, signed for `secretsmanager` in `region` with the keys.
fn signed(
    url: &url::Url,
    region: &str,
    keys: &AwsKeys,
    body: Vec<u8>,
) -> Result<http::Request<Vec<u8>>, String> {
    let identity: Identity = Credentials::new(
        keys.access_key_id.expose(),
        keys.secret_access_key.expose(),
        Some(keys.session_token.expose().to_owned()),
        Some(keys.expiration),
        "lanyard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("secretsmanager")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(url.as_str())
        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
        .header("x-amz-target", TARGET)
        .body(body)
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut req);
    Ok(req)
}

/// The JSON protocol's error: `__type` (possibly `prefix#Code`) and
/// `message`/`Message`; anything else as the shared refusal.
fn refusal(
    c: &AwsSecret,
    status: http::StatusCode,
    body: &[u8],
    known: &[&Secret],
) -> ExchangeError {
    let parsed = WipedJson::parse(body).ok();
    let code = parsed
        .as_deref()
        .and_then(|v| v.get("__type"))
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
    match code {
        Some(code) => {
            let msg = parsed
                .as_deref()
                .and_then(|v| v.get("message").or_else(|| v.get("Message")))
                .and_then(Value::as_str)
                .unwrap_or("");
            ExchangeError::Refused {
                service: endpoint(&c.endpoint),
                status: status.as_u16(),
                detail: truncate(&redact(&format!("{code}: {msg}"), known), 500),
                code: Some(code),
            }
        }
        None => match super::answer::xml_error(&String::from_utf8_lossy(body)) {
            Some((code, msg)) => ExchangeError::Refused {
                service: endpoint(&c.endpoint),
                status: status.as_u16(),
                detail: truncate(&redact(&format!("{code}: {msg}"), known), 500),
                code: Some(code),
            },
            None => super::super::refusal(&c.endpoint, status, body, known),
        },
    }
}
