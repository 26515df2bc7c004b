//! Azure: Entra ID's federated client assertion (`exchange = "entra"`, the
//! RFC 7523 grant of `oauth` with Entra's endpoint, scope and audience) and
//! Key Vault secrets read with its token (`keyvault`). `hints` explains
//! AADSTS codes for `doctor`; `report` is what `status` and `doctor` show.

pub mod hints;
pub(super) mod keyvault;
mod report;

pub use report::EntraReport;

use super::oauth::{Grant, OAuth};
use super::{Client, ExchangeError, Issued, Revoked};
use crate::config::{Entra, OAuthEndpoint, DEFAULT_LIFETIME};
use crate::http::{endpoint, HttpClient};
use crate::identity::IdentityToken;
use crate::secret::Credential;

#[derive(Debug)]
pub(super) struct EntraExchange {
    pub cfg: Entra,
    oauth: OAuth,
}

impl EntraExchange {
    pub(super) async fn prepare(
        name: &str,
        http: &HttpClient,
        cfg: &Entra,
    ) -> Result<Self, ExchangeError> {
        // No `audience` form field: Entra reads the scope; the audience is
        // the identity token's own `aud`.
        let ep = OAuthEndpoint {
            token_url: Some(cfg.token_url.clone()),
            issuer: None,
            revocation_url: None,
            audience: Vec::new(),
            resource: Vec::new(),
            scope: Some(cfg.scope.clone()),
            lifetime: DEFAULT_LIFETIME,
        };
        let client = Client::None {
            client_id: Some(cfg.client_id.clone()),
        };
        let oauth = OAuth::prepare(name, http, &ep, Grant::ClientAssertion, client).await?;
        Ok(EntraExchange {
            cfg: cfg.clone(),
            oauth,
        })
    }

    pub(super) fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "Entra ID federated credential of app {} in tenant {} at {}, scope {:?}, assertion audience {:?}",
            c.client_id,
            c.tenant,
            endpoint(&c.token_url),
            c.scope,
            c.audience
        )
    }

    /// The identity token is fetched for each exchange by the caller, so
    /// on GitHub and Buildkite each assertion is freshly minted (Entra
    /// refuses an expired one: AADSTS700024).
    pub(super) async fn obtain(
        &self,
        http: &HttpClient,
        id: &IdentityToken,
    ) -> Result<Issued, ExchangeError> {
        let mut issued = self.oauth.obtain(http, id).await?;
        // What the federated identity credential matched, for status and
        // doctor (public claims, bounded).
        let short = |s: String| s.chars().take(512).collect::<String>();
        if let Some(iss) = id.claims.text("iss") {
            issued.about.push((report::ABOUT_ISSUER, short(iss)));
        }
        if let Some(sub) = id.claims.text("sub") {
            issued.about.push((report::ABOUT_SUBJECT, short(sub)));
        }
        if let Some(l) = issued.lifetime {
            let at = crate::identity::format_time(std::time::SystemTime::now() + l);
            issued.about.push((report::ABOUT_EXPIRES, at));
        }
        Ok(issued)
    }

    pub(super) fn revoke(&self, _value: &Credential) -> Revoked {
        Revoked::NotRevocable(
            "Entra ID access tokens cannot be revoked; they expire by themselves (about an hour)",
        )
    }
}
