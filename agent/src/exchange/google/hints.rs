//! `doctor`'s likely causes for a refusal from Google's STS (OAuth errors:
//! `invalid_grant`, `invalid_target`, …) or IAM Credentials (Google API
//! statuses: `PERMISSION_DENIED`, `NOT_FOUND`, …).

use crate::config::GcpWorkloadIdentity;
use crate::exchange::ExchangeError;
use crate::identity::UnverifiedClaims;

/// The refused error's code and detail, looking through retries.
fn refused(e: &ExchangeError) -> Option<(&str, &str)> {
    match e {
        ExchangeError::Refused { code, detail, .. } => Some((code.as_deref()?, detail)),
        ExchangeError::Retried { last, .. } => refused(last),
        _ => None,
    }
}

/// The principal a pool grants roles to, for this token's subject.
fn principal(cfg: &GcpWorkloadIdentity, claims: &UnverifiedClaims) -> String {
    let pool = cfg
        .provider
        .rsplit_once("/providers/")
        .map_or(cfg.provider.as_str(), |(p, _)| p);
    match claims.text("repository") {
        Some(repo) => format!("principalSet://iam.googleapis.com/{pool}/attribute.repository/{repo} (with attribute.repository mapped from assertion.repository)"),
        None => format!(
            "principal://iam.googleapis.com/{pool}/subject/{}",
            claims.text("sub").unwrap_or_else(|| "<sub>".into())
        ),
    }
}

/// Hints for a Google refusal, or `None` when `e` is not one.
pub fn hints(
    e: &ExchangeError,
    cfg: &GcpWorkloadIdentity,
    claims: &UnverifiedClaims,
) -> Option<Vec<String>> {
    let (code, detail) = refused(e)?;
    let lower = detail.to_ascii_lowercase();
    let iss = claims.text("iss").unwrap_or_else(|| "(no iss)".into());
    let sub = claims.text("sub").unwrap_or_else(|| "(no sub)".into());
    let aud = claims.audiences();
    let hint = match code {
        "invalid_grant" if lower.contains("attribute condition") => format!(
            "the provider's attribute condition rejected this token (issuer {iss:?}, subject {sub:?}): check the condition of {} against the token's claims (`lanyard doctor` shows them), e.g. assertion.repository_owner == '<org>'",
            cfg.provider
        ),
        "invalid_grant" if lower.contains("audience") => format!(
            "the token's audience {aud:?} is not one the provider allows: by default the provider accepts \"https://iam.googleapis.com/{}\"; set `audience` to the provider's allowed audience, or add this one to it",
            cfg.provider
        ),
        "invalid_grant" => format!(
            "STS did not accept the token (issuer {iss:?}, subject {sub:?}): the provider's issuer URI must equal the token's iss, its JWKS must be reachable by Google, and the token must be fresh (exp within the hour)"
        ),
        "invalid_target" => format!(
            "no such provider, or it or its pool is disabled or deleted: {} (the project number, not its ID)",
            cfg.sts_audience()
        ),
        "invalid_scope" | "invalid_request" => format!(
            "STS did not accept the request: scope {:?} must be OAuth scopes such as https://www.googleapis.com/auth/cloud-platform",
            cfg.scope
        ),
        "PERMISSION_DENIED" if lower.contains("getaccesstoken") || lower.contains("serviceaccounts") => format!(
            "the federated identity may not impersonate {}: grant roles/iam.workloadIdentityUser on that service account to {}{}",
            cfg.service_account.as_deref().unwrap_or("(no service_account)"),
            principal(cfg, claims),
            if cfg.delegates.is_empty() { String::new() } else { "; with delegates, each account in the chain needs roles/iam.serviceAccountTokenCreator on the next".into() }
        ),
        "PERMISSION_DENIED" if lower.contains("has not been used") || lower.contains("is disabled") => {
            "the IAM Service Account Credentials API (iamcredentials.googleapis.com) is not enabled in the service account's project: enable it".into()
        }
        "PERMISSION_DENIED" => format!(
            "IAM Credentials refused: check that {} grants roles/iam.workloadIdentityUser to {}",
            cfg.service_account.as_deref().unwrap_or("(no service_account)"),
            principal(cfg, claims)
        ),
        "NOT_FOUND" => format!(
            "no service account {}: check `service_account` (its email) and that it is not deleted or disabled",
            cfg.service_account.as_deref().unwrap_or("(none)")
        ),
        "INVALID_ARGUMENT" if lower.contains("lifetime") => format!(
            "lifetime {}s is more than allowed: above 1h needs the organization policy constraints/iam.allowServiceAccountCredentialLifetimeExtension to list {}",
            cfg.lifetime.as_secs(),
            cfg.service_account.as_deref().unwrap_or("the service account")
        ),
        "UNAUTHENTICATED" => "IAM Credentials did not accept the federated token: is the STS endpoint (`token_url`) Google's, and the scope cloud-platform?".into(),
        _ => return None,
    };
    Some(vec![hint])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GcpWorkloadIdentity {
        GcpWorkloadIdentity {
            provider: "projects/42/locations/global/workloadIdentityPools/ci-pool/providers/gh"
                .into(),
            audience: "https://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/ci-pool/providers/gh".into(),
            token_url: url::Url::parse("https://sts.googleapis.com/v1/token").expect("url"),
            scope: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            service_account: Some("deployer@my-proj.iam.gserviceaccount.com".into()),
            delegates: Vec::new(),
            lifetime: std::time::Duration::from_secs(3600),
            iamcredentials_url: url::Url::parse("https://iamcredentials.googleapis.com")
                .expect("url"),
            project_id: None,
        }
    }

    fn refused(code: &str, detail: &str) -> ExchangeError {
        ExchangeError::Refused {
            service: "x".into(),
            status: 400,
            detail: detail.into(),
            code: Some(code.into()),
        }
    }

    #[test]
    fn sts_and_iam_refusals_have_their_hints() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(
                r#"{"iss":"https://token.actions.githubusercontent.com","sub":"repo:a/b:ref:refs/heads/main","aud":"x","repository":"a/b","exp":1}"#
            )
        );
        let c = UnverifiedClaims::decode(&jwt).expect("claims");
        let h = |code: &str, d: &str| hints(&refused(code, d), &cfg(), &c).map(|v| v.join("\n"));
        let cond = h(
            "invalid_grant",
            "invalid_grant: The given credential is rejected by the attribute condition.",
        )
        .expect("hint");
        assert!(cond.contains("attribute condition rejected"), "{cond}");
        let denied = h("PERMISSION_DENIED", "PERMISSION_DENIED: Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).").expect("hint");
        assert!(
            denied.contains("roles/iam.workloadIdentityUser")
                && denied.contains("principalSet://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/ci-pool/attribute.repository/a/b"),
            "{denied}"
        );
        assert!(h("invalid_target", "x")
            .expect("hint")
            .contains("//iam.googleapis.com/projects/42"));
        assert!(h("SOMETHING_ELSE", "x").is_none());
    }
}
