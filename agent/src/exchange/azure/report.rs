//! What `status` and `doctor` show about an entra credential: the app, the
//! tenant and authority, the scope, the federated assertion that was sent
//! (issuer, subject, audience: what the federated identity credential must
//! equal), when the token ends, the managed-identity resource and the
//! routes. Nothing here is a secret; the token itself never is shown.

use serde::{Deserialize, Serialize};

use crate::config::Entra;

/// The keys of [`crate::exchange::Issued::about`] for an Entra token.
pub const ABOUT_ISSUER: &str = "federated_issuer";
pub const ABOUT_SUBJECT: &str = "federated_subject";
pub const ABOUT_EXPIRES: &str = "expires_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraReport {
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    pub authority: String,
    /// The `aud` the CI token was minted for.
    pub assertion_audience: String,
    /// The CI token's `iss` and `sub` at the last exchange.
    pub federated_issuer: Option<String>,
    pub federated_subject: Option<String>,
    /// When the current token ends (Entra's `expires_in`), RFC 3339.
    pub expires_at: Option<String>,
    /// The `resource` the managed-identity endpoint serves a placeholder for.
    pub managed_identity_resource: String,
    /// The routes whose credential this is.
    pub routes: Vec<String>,
}

impl EntraReport {
    pub fn new(cfg: &Entra, about: &[(&'static str, String)], routes: Vec<String>) -> EntraReport {
        let get = |k: &str| about.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        EntraReport {
            tenant: cfg.tenant.clone(),
            client_id: cfg.client_id.clone(),
            scope: cfg.scope.clone(),
            authority: cfg.authority.as_str().trim_end_matches('/').to_owned(),
            assertion_audience: cfg.audience.clone(),
            federated_issuer: get(ABOUT_ISSUER),
            federated_subject: get(ABOUT_SUBJECT),
            expires_at: get(ABOUT_EXPIRES),
            managed_identity_resource: cfg.scope.trim_end_matches("/.default").to_owned(),
            routes,
        }
    }

    /// Lines for a terminal (no indentation).
    pub fn lines(&self) -> Vec<String> {
        let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.into());
        vec![
            format!(
                "app {} in tenant {} at {}, scope {}",
                self.client_id, self.tenant, self.authority, self.scope
            ),
            format!(
                "federated assertion sent: issuer {}, subject {}, audience {}",
                or(&self.federated_issuer, "(not yet sent)"),
                or(&self.federated_subject, "(not yet sent)"),
                self.assertion_audience
            ),
            format!(
                "token expires at {} (Entra cannot revoke it)",
                or(&self.expires_at, "(unknown)")
            ),
            format!(
                "managed-identity endpoint: a placeholder for resource {} (the real token only on its routes)",
                self.managed_identity_resource
            ),
            if self.routes.is_empty() {
                "routes using it: none".into()
            } else {
                format!("routes using it: {}", self.routes.join(", "))
            },
        ]
    }
}
