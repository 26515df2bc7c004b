//! What `status` and `doctor` say about a role session: the assumed-role
//! ARN and session name STS answered with, the region, when the keys end,
//! whether the container-credentials endpoint serves them, and which
//! routes use the credential. Nothing here is secret.

use serde::{Deserialize, Serialize};

use super::{AwsKeys, ABOUT_ASSUMED_ROLE, ABOUT_SESSION};
use crate::config::AwsWebIdentity;
use crate::identity::format_time;
use crate::secret::Credential;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`, as STS said.
    pub assumed_role_arn: Option<String>,
    pub session_name: Option<String>,
    pub region: String,
    /// When the keys end (STS's `Expiration`), RFC 3339.
    pub expires_at: Option<String>,
    /// Served on the AWS container-credentials endpoint (the job sees the keys).
    pub container_endpoint: bool,
    /// The routes whose credential this is.
    pub routes: Vec<String>,
}

impl SessionReport {
    pub fn new(
        cfg: &AwsWebIdentity,
        about: &[(&'static str, String)],
        value: Option<&Credential>,
        routes: Vec<String>,
    ) -> SessionReport {
        let get = |k: &str| about.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        SessionReport {
            assumed_role_arn: get(ABOUT_ASSUMED_ROLE),
            session_name: get(ABOUT_SESSION),
            region: cfg.region.clone(),
            expires_at: value
                .and_then(AwsKeys::from_credential)
                .map(|k| format_time(k.expiration)),
            container_endpoint: cfg.container_endpoint,
            routes,
        }
    }

    /// Lines for a terminal (no indentation).
    pub fn lines(&self) -> Vec<String> {
        let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.into());
        vec![
            format!(
                "assumed role {} (session {}), region {}",
                or(&self.assumed_role_arn, "(STS named none)"),
                or(&self.session_name, "-"),
                self.region
            ),
            format!(
                "keys expire at {} (STS cannot revoke them)",
                or(&self.expires_at, "(unknown)")
            ),
            if self.container_endpoint {
                "container-credentials endpoint: on (the job can fetch these short-lived keys)"
                    .into()
            } else {
                "container-credentials endpoint: off".into()
            },
            if self.routes.is_empty() {
                "routes using it: none".into()
            } else {
                format!("routes using it: {}", self.routes.join(", "))
            },
        ]
    }
}
