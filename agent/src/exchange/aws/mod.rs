//! `aws-web-identity`: STS `AssumeRoleWithWebIdentity`, the query API
//! (form-encoded POST, unsigned: the identity token is the proof), answered
//! in XML. STS has no revocation: a role session's keys expire on their own,
//! and lanyard re-exchanges before they do.

mod answer;
pub mod hints;
mod report;
pub(super) mod secrets;

use std::time::{Duration, SystemTime};

use super::{ExchangeError, Issued, Revoked};
use crate::config::AwsWebIdentity;
use crate::http::{endpoint, FormValue, HttpClient, HttpError};
use crate::identity::{format_time, truncate, IdentityToken, UnverifiedClaims};
use crate::secret::{redact, Credential, Secret};
pub use answer::AwsKeys;
pub use report::SessionReport;

const API_VERSION: &str = "2011-06-15";
/// Why 3: one attempt and two retries ride out a restarting endpoint or a
/// throttle without holding a job's start for long.
pub const ATTEMPTS: u32 = 3;
/// One attempt's bound. STS answers in well under a second; a slower
/// answer is a broken path, and the next attempt may take another.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The keys of [`Issued::about`] for a role session.
pub const ABOUT_ASSUMED_ROLE: &str = "assumed_role_arn";
pub const ABOUT_SESSION: &str = "session_name";
const BACKOFF: Duration = Duration::from_millis(500);
/// STS refusal codes that say "try again", not "no".
const RETRYABLE_CODES: &[&str] = &["Throttling", "IDPCommunicationError", "ServiceUnavailable"];

#[derive(Debug)]
pub(super) struct Sts {
    pub cfg: AwsWebIdentity,
}

/// What one attempt came to.
enum Attempt {
    Done(Result<Issued, ExchangeError>),
    Retry(ExchangeError),
}

impl Sts {
    pub(super) fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "AWS STS AssumeRoleWithWebIdentity at {} (role {}, session {}, duration {}, region {}, audience {:?})",
            endpoint(&c.sts_endpoint),
            c.role_arn,
            c.session_name
                .as_deref()
                .unwrap_or("named from the CI claims"),
            humantime::format_duration(c.duration),
            c.region,
            c.audience
        )
    }

    pub(super) fn audience(&self) -> &str {
        &self.cfg.audience
    }

    pub(super) async fn obtain(
        &self,
        http: &HttpClient,
        id: &IdentityToken,
    ) -> Result<Issued, ExchangeError> {
        let session = self
            .cfg
            .session_name
            .clone()
            .unwrap_or_else(|| session_name(&id.claims));
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 2)).await;
            }
            match self.attempt(http, id, &session).await {
                Attempt::Done(r) => return r,
                Attempt::Retry(e) => {
                    tracing::debug!(endpoint = %endpoint(&self.cfg.sts_endpoint), attempt, error = %e, "STS attempt failed; retrying");
                    last = Some(e);
                }
            }
        }
        Err(ExchangeError::Retried {
            service: endpoint(&self.cfg.sts_endpoint),
            attempts: ATTEMPTS,
            last: Box::new(last.unwrap_or_else(|| ExchangeError::Setup {
                name: String::new(),
                problem: "no attempt was made".into(),
            })),
        })
    }

    async fn attempt(&self, http: &HttpClient, id: &IdentityToken, session: &str) -> Attempt {
        let c = &self.cfg;
        let duration = c.duration.as_secs().to_string();
        let mut form: Vec<(&str, FormValue<'_>)> = vec![
            ("Action", FormValue::Plain("AssumeRoleWithWebIdentity")),
            ("Version", FormValue::Plain(API_VERSION)),
            ("RoleArn", FormValue::Plain(&c.role_arn)),
            ("RoleSessionName", FormValue::Plain(session)),
            ("WebIdentityToken", FormValue::Secret(id.jwt.as_secret())),
            ("DurationSeconds", FormValue::Plain(&duration)),
        ];
        if let Some(p) = &c.policy {
            form.push(("Policy", FormValue::Plain(p)));
        }
        let keys: Vec<String> = (1..=c.policy_arns.len())
            .map(|i| format!("PolicyArns.member.{i}.arn"))
            .collect();
        for (k, arn) in keys.iter().zip(&c.policy_arns) {
            form.push((k, FormValue::Plain(arn)));
        }
        let sent = tokio::time::Instant::now();
        let call = http.post_form(&c.sts_endpoint, &[], &form);
        let resp = match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Err(_) => {
                return Attempt::Retry(ExchangeError::Http(HttpError::Transport {
                    endpoint: endpoint(&c.sts_endpoint),
                    cause: format!("no whole answer within {}s", ATTEMPT_TIMEOUT.as_secs()).into(),
                }))
            }
            Ok(Err(
                e @ (HttpError::Timeout { .. }
                | HttpError::Transport { .. }
                | HttpError::Body { .. }),
            )) => return Attempt::Retry(e.into()),
            Ok(Err(e)) => return Attempt::Done(Err(e.into())),
            Ok(Ok(r)) => r,
        };
        if !resp.status.is_success() {
            let e = self.refusal(resp.status, &resp.body, id.jwt.as_secret());
            let retry = resp.status.is_server_error()
                || matches!(&e, ExchangeError::Refused { code: Some(code), .. } if RETRYABLE_CODES.contains(&code.as_str()));
            return if retry {
                Attempt::Retry(e)
            } else {
                Attempt::Done(Err(e))
            };
        }
        Attempt::Done(self.parse(resp.status, &resp.body, sent.elapsed(), session))
    }

    /// `<ErrorResponse>`: the AWS code and message; anything else (a proxy's
    /// HTML page) as the shared refusal, its body truncated. The identity
    /// token is redacted from both.
    fn refusal(&self, status: http::StatusCode, body: &[u8], jwt: &Secret) -> ExchangeError {
        let text = String::from_utf8_lossy(body);
        match answer::xml_error(&text) {
            Some((code, msg)) => ExchangeError::Refused {
                service: endpoint(&self.cfg.sts_endpoint),
                status: status.as_u16(),
                detail: truncate(&redact(&format!("{code}: {msg}"), &[jwt]), 500),
                code: Some(code),
            },
            None => super::refusal(&self.cfg.sts_endpoint, status, body, &[jwt]),
        }
    }

    fn parse(
        &self,
        status: http::StatusCode,
        body: &[u8],
        elapsed: Duration,
        session: &str,
    ) -> Result<Issued, ExchangeError> {
        let bad = |problem: String| ExchangeError::BadAnswer {
            service: endpoint(&self.cfg.sts_endpoint),
            status: status.as_u16(),
            problem,
        };
        let text =
            std::str::from_utf8(body).map_err(|_| bad("a body that is not UTF-8 text".into()))?;
        let r: answer::Response =
            quick_xml::de::from_str(text).map_err(|e| bad(answer::describe_parse_error(&e)))?;
        let c = r.assume_role_with_web_identity_result.credentials;
        for (what, v) in [
            ("AccessKeyId", &c.access_key_id.0),
            ("SecretAccessKey", &c.secret_access_key.0),
            ("SessionToken", &c.session_token.0),
        ] {
            if v.expose().trim().is_empty() || v.expose().contains(char::is_whitespace) {
                return Err(bad(format!("an empty or malformed {what}")));
            }
        }
        let expiration = answer::parse_expiration(&c.expiration)
            .ok_or_else(|| bad("an Expiration that is not an RFC 3339 time".into()))?;
        let until = expiration
            .duration_since(SystemTime::now())
            .map_err(|_| bad(format!("keys that expired at {}", format_time(expiration))))?;
        // Counted from when the request was sent (the store's start), the
        // keys live at least the DurationSeconds asked for (STS refuses
        // rather than shortening); `until` is read from this clock now,
        // after the answer came. The shorter of the two is safe against a
        // clock that runs slow or fast.
        let lifetime = until.saturating_add(elapsed).min(self.cfg.duration);
        let keys = AwsKeys {
            access_key_id: c.access_key_id.0,
            secret_access_key: c.secret_access_key.0,
            session_token: c.session_token.0,
            expiration,
        };
        let mut about = Vec::new();
        if let Some(u) = &r.assume_role_with_web_identity_result.assumed_role_user {
            tracing::info!(role = %u.arn.trim(), subject = ?r.assume_role_with_web_identity_result.subject_from_web_identity_token, expires = %format_time(expiration), "AWS role session started");
            about.push((ABOUT_ASSUMED_ROLE, truncate(u.arn.trim(), 2048)));
        }
        about.push((ABOUT_SESSION, session.to_owned()));
        Ok(Issued {
            value: keys.to_credential(),
            lifetime: Some(lifetime),
            // Expiration is whole seconds at real STS.
            granularity: super::WHOLE_SECONDS,
            renewable: false,
            about,
        })
    }

    /// STS has no revocation for role sessions.
    pub(super) fn revoke(&self, value: &Credential) -> Revoked {
        let why = "STS cannot revoke a role session's keys; lanyard forgot them at teardown";
        match AwsKeys::from_credential(value) {
            Some(k) => Revoked::ExpiresAt {
                at: k.expiration,
                why,
            },
            None => Revoked::NotRevocable(why),
        }
    }
}

/// The default `RoleSessionName`: `lanyard-<repository>-<run>` from the CI
/// claims (GitHub `repository`/`run_id`, GitLab `project_path`/`job_id`,
/// else `sub`), in STS's alphabet (`[\w+=,.@-]`, 2 to 64 characters). It
/// shows in CloudTrail and in the assumed-role ARN.
pub fn session_name(claims: &UnverifiedClaims) -> String {
    let first = |keys: &[&str]| keys.iter().find_map(|k| claims.text(k));
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '/' | ':' => '.',
                c if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) => c,
                _ => '-',
            })
            .collect()
    };
    let what = first(&["repository", "project_path", "pipeline_slug", "sub"])
        .map(|s| clean(&s))
        .unwrap_or_default();
    let run = first(&["run_id", "job_id", "build_number", "pipeline_id"])
        .map(|s| clean(&s))
        .unwrap_or_default();
    let run = truncate_chars(&run, 20);
    let room = 64 - "lanyard-".len() - if run.is_empty() { 0 } else { run.len() + 1 };
    let what = truncate_chars(&what, room);
    let mut name = String::from("lanyard");
    for part in [what, run] {
        if !part.is_empty() {
            name.push('-');
            name.push_str(&part);
        }
    }
    name
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests;
