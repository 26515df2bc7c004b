//! Claims read from a JWT *without* verifying its signature. The type name
//! says so: these are for display (`doctor`), for the audit header and for
//! scheduling (exp), never for a trust decision. The token service verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimsError {
    #[error("not a JWT: expected three base64url parts separated by dots")]
    Shape,
    #[error("not a JWT: the payload is not base64url")]
    Base64,
    #[error("not a JWT: the payload is not a JSON object")]
    Json,
}

/// The payload of a JWT, decoded but not verified.
#[derive(Debug, Clone, Default)]
pub struct UnverifiedClaims(pub Map<String, Value>);

/// Claims shown first, in this order; the rest follow sorted.
pub const HEADLINE: &[&str] = &["iss", "aud", "sub", "exp", "iat", "nbf"];

impl UnverifiedClaims {
    pub fn decode(jwt: &str) -> Result<Self, ClaimsError> {
        let mut parts = jwt.split('.');
        let (Some(_h), Some(p), Some(_s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ClaimsError::Shape);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .map_err(|_| ClaimsError::Base64)?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(UnverifiedClaims(m)),
            _ => Err(ClaimsError::Json),
        }
    }

    pub fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }

    /// A claim as display text (strings bare, numbers and arrays as JSON).
    pub fn text(&self, k: &str) -> Option<String> {
        self.0.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        })
    }

    /// `aud` as a list (it may be a string or an array).
    pub fn audiences(&self) -> Vec<String> {
        match self.0.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `exp`, capped at the last second RFC 3339 can write (year 9999):
    /// the claim is unverified input, and `SystemTime` panics on overflow.
    pub fn exp(&self) -> Option<SystemTime> {
        const LAST: u64 = 253_402_300_799;
        let secs = self.0.get("exp")?.as_f64()?;
        (secs > 0.0).then(|| UNIX_EPOCH + Duration::from_secs((secs as u64).min(LAST)))
    }

    /// Time left before `exp`, zero when past; `None` without `exp`.
    pub fn remaining(&self) -> Option<Duration> {
        self.exp()
            .map(|e| e.duration_since(SystemTime::now()).unwrap_or_default())
    }

    pub fn is_expired(&self) -> bool {
        self.exp().is_some_and(|e| e <= SystemTime::now())
    }

    /// Every claim as (name, text), headline claims first.
    pub fn display_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for k in HEADLINE {
            if let Some(v) = self.text(k) {
                out.push((k.to_string(), v));
            }
        }
        let mut rest: Vec<_> = self
            .0
            .keys()
            .filter(|k| !HEADLINE.contains(&k.as_str()))
            .cloned()
            .collect();
        rest.sort();
        for k in rest {
            if let Some(v) = self.text(&k) {
                out.push((k, v));
            }
        }
        out
    }
}

/// What a job is, for the audit header and trace headers: a few claims that
/// every platform has under its own names.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobInfo {
    pub platform: String,
    pub repository: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub pipeline_id: Option<String>,
    pub job_id: Option<String>,
    pub subject: Option<String>,
}

impl JobInfo {
    pub fn from_claims(platform: &str, c: &UnverifiedClaims) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| c.text(k));
        JobInfo {
            platform: platform.to_owned(),
            repository: first(&[
                "repository",
                "project_path",
                "repositoryUuid",
                "pipeline_slug",
                "oidc.circleci.com/project-id",
            ]),
            git_ref: first(&[
                "ref",
                "branchName",
                "build_branch",
                "oidc.circleci.com/vcs-ref",
            ]),
            commit: first(&["sha", "build_commit", "oidc.circleci.com/vcs-origin"]),
            pipeline_id: first(&[
                "run_id",
                "pipeline_id",
                "pipelineUuid",
                "build_number",
                "oidc.circleci.com/pipeline-id",
            ]),
            job_id: first(&[
                "job_id",
                "stepUuid",
                "oidc.circleci.com/job-id",
                "run_attempt",
            ]),
            subject: c.text("sub"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"RS256"}"#),
            e.encode(payload)
        )
    }

    #[test]
    fn an_absurd_exp_is_capped_not_a_panic() {
        let c = UnverifiedClaims::decode(&jwt(r#"{"exp":1e300}"#)).expect("decode");
        let exp = c.exp().expect("exp");
        assert!(!c.is_expired());
        assert!(c.remaining().expect("remaining") > Duration::from_secs(1 << 30));
        assert_eq!(crate::identity::format_time(exp), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn decodes_payload_and_orders_headline_claims() {
        let c = UnverifiedClaims::decode(&jwt(
            r#"{"sub":"s","repository":"acme/app","iss":"i","aud":["a","b"],"exp":4102444800}"#,
        ))
        .expect("decode");
        let names: Vec<_> = c.display_pairs().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["iss", "aud", "sub", "exp", "repository"]);
        assert_eq!(c.audiences(), ["a", "b"]);
        assert!(!c.is_expired());
        assert_eq!(
            JobInfo::from_claims("github", &c).repository.as_deref(),
            Some("acme/app")
        );
    }

    #[test]
    fn refuses_non_jwts() {
        assert_eq!(
            UnverifiedClaims::decode("abc").unwrap_err(),
            ClaimsError::Shape
        );
        assert_eq!(
            UnverifiedClaims::decode("a.!!!.c").unwrap_err(),
            ClaimsError::Base64
        );
        assert_eq!(
            UnverifiedClaims::decode("a.bm90anNvbg.c").unwrap_err(),
            ClaimsError::Json
        );
        assert_eq!(
            UnverifiedClaims::decode("a.b.c.d").unwrap_err(),
            ClaimsError::Shape
        );
    }
}
