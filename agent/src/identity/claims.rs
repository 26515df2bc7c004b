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
/// every platform has under its own names. Each platform's own documented
/// claims fill each field; a field the platform's token does not carry stays
/// empty rather than take a claim that means something else.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobInfo {
    pub platform: String,
    pub repository: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    /// The run or pipeline: GitHub `run_id`, GitLab `pipeline_id`,
    /// Buildkite `build_number`, Bitbucket `pipelineUuid`.
    pub pipeline_id: Option<String>,
    /// This job: GitLab and Buildkite `job_id`, Bitbucket `stepUuid`,
    /// GitHub `check_run_id` where the token has it.
    pub job_id: Option<String>,
    /// GitHub `run_attempt` (a re-run of the same run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    pub subject: Option<String>,
}

/// Which claims mean what, per platform (their OIDC token references:
/// GitHub "OpenID Connect reference", GitLab "ID token payload", CircleCI
/// "OpenID Connect tokens", Buildkite "OIDC claims", Bitbucket "OIDC").
struct Names {
    repository: &'static [&'static str],
    git_ref: &'static [&'static str],
    commit: &'static [&'static str],
    pipeline: &'static [&'static str],
    job: &'static [&'static str],
    attempt: &'static [&'static str],
}

const GITHUB: Names = Names {
    repository: &["repository"],
    git_ref: &["ref"],
    commit: &["sha"],
    pipeline: &["run_id"],
    job: &["check_run_id"],
    attempt: &["run_attempt"],
};
const GITLAB: Names = Names {
    repository: &["project_path"],
    git_ref: &["ref"],
    commit: &["sha"],
    pipeline: &["pipeline_id"],
    job: &["job_id"],
    attempt: &[],
};
/// CircleCI's token names the repository (`vcs-origin`, a URL like
/// github.com/org/repo) and the ref, but no commit, pipeline or job.
const CIRCLECI: Names = Names {
    repository: &[
        "oidc.circleci.com/vcs-origin",
        "oidc.circleci.com/project-id",
    ],
    git_ref: &["oidc.circleci.com/vcs-ref"],
    commit: &[],
    pipeline: &[],
    job: &[],
    attempt: &[],
};
const BUILDKITE: Names = Names {
    repository: &["pipeline_slug"],
    git_ref: &["build_branch"],
    commit: &["build_commit"],
    pipeline: &["build_number"],
    job: &["job_id"],
    attempt: &[],
};
/// Bitbucket's token holds UUIDs and the branch; no commit.
const BITBUCKET: Names = Names {
    repository: &["repositoryUuid"],
    git_ref: &["branchName"],
    commit: &[],
    pipeline: &["pipelineUuid"],
    job: &["stepUuid"],
    attempt: &[],
};

impl JobInfo {
    pub fn from_claims(platform: &str, c: &UnverifiedClaims) -> Self {
        let names = match platform {
            "github" => &GITHUB,
            "gitlab" => &GITLAB,
            "circleci" => &CIRCLECI,
            "buildkite" => &BUILDKITE,
            "bitbucket" => &BITBUCKET,
            // A token from a file or a variable: known by its own claims.
            _ => Self::by_shape(c),
        };
        let first = |keys: &[&str]| keys.iter().find_map(|k| c.text(k));
        JobInfo {
            platform: platform.to_owned(),
            repository: first(names.repository),
            git_ref: first(names.git_ref),
            commit: first(names.commit),
            pipeline_id: first(names.pipeline),
            job_id: first(names.job),
            attempt: first(names.attempt),
            subject: c.text("sub"),
        }
    }

    /// The platform whose distinctive claims the token carries.
    fn by_shape(c: &UnverifiedClaims) -> &'static Names {
        let has = |k: &str| c.text(k).is_some();
        if has("oidc.circleci.com/project-id") || has("oidc.circleci.com/vcs-origin") {
            &CIRCLECI
        } else if has("stepUuid") || has("pipelineUuid") {
            &BITBUCKET
        } else if has("build_commit") || has("organization_slug") {
            &BUILDKITE
        } else if has("project_path") {
            &GITLAB
        } else {
            &GITHUB
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

    /// Each platform's documented claims land in the right fields, and a
    /// field the platform's token lacks stays empty.
    #[test]
    fn the_audit_header_maps_each_platforms_claims() {
        let info = |platform: &str, payload: serde_json::Value| {
            let c = UnverifiedClaims::decode(&jwt(&payload.to_string())).expect("decode");
            let j = JobInfo::from_claims(platform, &c);
            [
                j.repository,
                j.git_ref,
                j.commit,
                j.pipeline_id,
                j.job_id,
                j.attempt,
            ]
            .map(|v| v.unwrap_or_default())
        };
        let github = serde_json::json!({"sub": "repo:acme/app:ref:refs/heads/main",
            "repository": "acme/app", "ref": "refs/heads/main", "sha": "abc123",
            "run_id": "4242", "run_number": "7", "run_attempt": "2", "actor": "alice"});
        assert_eq!(
            info("github", github.clone()),
            ["acme/app", "refs/heads/main", "abc123", "4242", "", "2"],
            "GitHub: run_attempt is the attempt, not the job"
        );
        let mut with_check = github.clone();
        with_check["check_run_id"] = "99".into();
        assert_eq!(info("github", with_check)[4], "99");
        // A token from [identity] source = "env" is known by its claims.
        assert_eq!(info("env", github)[5], "2");
        let gitlab = serde_json::json!({"project_path": "group/app", "ref": "main",
            "sha": "def456", "pipeline_id": "555", "job_id": "777", "user_login": "bob"});
        assert_eq!(
            info("gitlab", gitlab.clone()),
            ["group/app", "main", "def456", "555", "777", ""]
        );
        assert_eq!(info("file", gitlab)[4], "777");
        let circle = serde_json::json!({
            "sub": "org/o1/project/p1/user/u1/vcs-origin/github.com/acme/app/vcs-ref/refs/heads/main",
            "oidc.circleci.com/project-id": "p1",
            "oidc.circleci.com/vcs-origin": "github.com/acme/app",
            "oidc.circleci.com/vcs-ref": "refs/heads/main",
            "oidc.circleci.com/context-ids": ["c1"]});
        assert_eq!(
            info("circleci", circle.clone()),
            ["github.com/acme/app", "refs/heads/main", "", "", "", ""],
            "CircleCI: vcs-origin is the repository, never the commit"
        );
        assert_eq!(info("env", circle)[0], "github.com/acme/app");
        let buildkite = serde_json::json!({"organization_slug": "acme",
            "pipeline_slug": "app", "build_number": 12, "build_branch": "main",
            "build_commit": "0a1b2c", "step_key": "test", "job_id": "0190-job",
            "agent_id": "0190-agent"});
        assert_eq!(
            info("buildkite", buildkite),
            ["app", "main", "0a1b2c", "12", "0190-job", ""]
        );
        let bitbucket = serde_json::json!({"repositoryUuid": "{r-1}",
            "branchName": "main", "pipelineUuid": "{p-1}", "stepUuid": "{s-1}",
            "workspaceUuid": "{w-1}"});
        assert_eq!(
            info("bitbucket", bitbucket),
            ["{r-1}", "main", "", "{p-1}", "{s-1}", ""]
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
