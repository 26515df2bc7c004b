//! `doctor`'s likely causes for an Entra ID or Key Vault refusal. Entra
//! names every error `AADSTS<n>`; the common ones for a federated
//! credential are a mismatch between the token and the app's federated
//! identity credential (issuer, subject, audience must match exactly), an
//! expired assertion, and an app or tenant that does not exist.

use crate::config::{Entra, KeyVaultSecret};
use crate::exchange::ExchangeError;
use crate::identity::{format_time, UnverifiedClaims};

/// The refused error's code, looking through retries.
fn code(e: &ExchangeError) -> Option<&str> {
    match e {
        ExchangeError::Refused { code, .. } => code.as_deref(),
        ExchangeError::Retried { last, .. } => code(last),
        _ => None,
    }
}

/// Hints for an Entra refusal, or `None` when `e` is not one.
pub fn entra_hints(
    e: &ExchangeError,
    cfg: &Entra,
    claims: &UnverifiedClaims,
) -> Option<Vec<String>> {
    let code = code(e)?;
    let n = code.strip_prefix("AADSTS")?;
    let iss = claims.text("iss").unwrap_or_else(|| "(no iss)".into());
    let sub = claims.text("sub").unwrap_or_else(|| "(no sub)".into());
    let aud = claims.audiences();
    let sent = format!("issuer {iss:?}, subject {sub:?}, audience {aud:?}");
    let fic = format!(
        "app {} (tenant {}) needs a federated identity credential whose issuer, subject and audience equal this token's exactly: {sent}",
        cfg.client_id, cfg.tenant
    );
    let hint = match n {
        "70021" | "700211" | "700212" | "700213" => vec![
            format!("no federated identity credential matched the token: {fic}"),
            subject_shape(claims),
        ],
        "700024" => vec![match claims.exp() {
            Some(exp) => format!(
                "the client assertion had expired when Entra read it (exp {}): on GitHub and Buildkite lanyard mints a fresh token for each exchange; a GitLab id_token lives only as long as the job, and a clock far off makes a fresh one look expired",
                format_time(exp)
            ),
            None => "the client assertion has no exp claim".into(),
        }],
        "700016" => vec![format!(
            "no application {} in tenant {}: check `client_id` (the application (client) ID, not the object ID) and `tenant`; an app from another tenant needs a service principal in this one",
            cfg.client_id, cfg.tenant
        )],
        "90002" | "90023" => vec![format!(
            "tenant {} was not found at {}: check `tenant`, and `authority` for a sovereign cloud",
            cfg.tenant, cfg.authority
        )],
        "70011" | "1002012" => vec![format!(
            "scope {:?} is not accepted: client credentials take one resource's application ID URI followed by /.default",
            cfg.scope
        )],
        "500011" => vec![format!(
            "the resource of scope {:?} has no service principal in tenant {}: is the resource right, and is it used in this tenant?",
            cfg.scope, cfg.tenant
        )],
        "50027" | "50013" | "5002727" => vec![format!(
            "Entra could not validate the assertion ({sent}): its issuer must publish OpenID discovery and JWKS that Entra can reach"
        )],
        _ => vec![format!(
            "Entra refused with {code} (app {}, tenant {}, token {sent}); Microsoft explains each code at https://login.microsoftonline.com/error?code={n}",
            cfg.client_id, cfg.tenant
        )],
    };
    Some(hint)
}

/// Hints for a refused Key Vault read.
pub fn keyvault_hints(e: &ExchangeError, cfg: &KeyVaultSecret) -> Option<Vec<String>> {
    let (status, code) = match e {
        ExchangeError::Refused { status, code, .. } => (*status, code.as_deref().unwrap_or("")),
        _ => return None,
    };
    let hint = match (status, code) {
        (_, "SecretNotFound") | (404, _) => format!(
            "no secret at {} (or not that version): check `secret`'s vault, name and version",
            cfg.url
        ),
        (_, "ForbiddenByFirewall") => {
            "the vault's network rules refuse this runner's address: allow it, or run where the vault is reachable".into()
        }
        (403, _) => format!(
            "the app of {:?} may not read this secret: grant it the \"Key Vault Secrets User\" role on the vault (RBAC), or `get` on secrets in an access policy",
            cfg.from
        ),
        (401, _) => format!(
            "Key Vault did not accept {:?}'s token: its scope must be https://vault.azure.net/.default and its tenant the vault's",
            cfg.from
        ),
        _ => return None,
    };
    Some(vec![hint])
}

/// What the federated credential's subject looks like per platform.
fn subject_shape(claims: &UnverifiedClaims) -> String {
    if let (Some(repo), Some(_)) = (claims.text("repository"), claims.str("run_id")) {
        format!(
            "GitHub: the subject is \"repo:{repo}:ref:refs/heads/<branch>\" for a branch, \"repo:{repo}:environment:<name>\" when the job names an environment, \"repo:{repo}:pull_request\" for a pull request; a federated credential matches one subject exactly (no wildcards), or use a flexible federated identity credential"
        )
    } else if let Some(p) = claims.str("project_path") {
        format!("GitLab: the subject is \"project_path:{p}:ref_type:branch:ref:<branch>\"; declare the id_token with aud = the credential's audience in .gitlab-ci.yml `id_tokens`")
    } else {
        "the federated credential's subject must equal the token's sub exactly".into()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::secret::Secret;

    fn claims(payload: &str) -> UnverifiedClaims {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.c2ln", b(r#"{"alg":"RS256"}"#), b(payload));
        UnverifiedClaims::decode(&jwt).expect("claims")
    }

    fn entra() -> Entra {
        let token_url = url::Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token");
        Entra {
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "3fa85f64-5717-4562-b3fc-2c963f66afa6".into(),
            scope: "https://vault.azure.net/.default".into(),
            authority: url::Url::parse("https://login.microsoftonline.com").expect("url"),
            token_url: token_url.expect("url"),
            audience: "api://AzureADTokenExchange".into(),
        }
    }

    #[test]
    fn entra_error_codes_become_aadsts_codes_and_each_has_its_hint() {
        let url =
            url::Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").expect("url");
        let canary = Secret::from("assertion-canary-91c2".to_owned());
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range. assertion-canary-91c2","error_codes":[700024],"trace_id":"x"}"#;
        let e = crate::exchange::refusal(&url, http::StatusCode::BAD_REQUEST, body, &[&canary]);
        assert!(
            matches!(&e, ExchangeError::Refused { code: Some(c), detail, .. } if c == "AADSTS700024" && !detail.contains("assertion-canary-91c2") && detail.starts_with("invalid_client: AADSTS700024")),
            "{e:?}"
        );
        let c = claims(
            r#"{"iss":"https://token.actions.githubusercontent.com","sub":"repo:a/b:ref:refs/heads/main","aud":"api://AzureADTokenExchange","exp":1700000000,"repository":"a/b","run_id":"1"}"#,
        );
        let h = entra_hints(&e, &entra(), &c).expect("hints").join("\n");
        assert!(
            h.contains("the client assertion had expired when Entra read it"),
            "{h}"
        );

        let retried = ExchangeError::Retried {
            service: "x".into(),
            attempts: 3,
            last: Box::new(ExchangeError::Refused {
                service: "x".into(),
                status: 400,
                detail: String::new(),
                code: Some("AADSTS9999999".into()),
            }),
        };
        let h = entra_hints(&retried, &entra(), &c)
            .expect("hints")
            .join("\n");
        assert!(
            h.contains("https://login.microsoftonline.com/error?code=9999999"),
            "{h}"
        );
        // Not Entra's: the general hints apply.
        let other = ExchangeError::Refused {
            service: "x".into(),
            status: 400,
            detail: String::new(),
            code: Some("invalid_grant".into()),
        };
        assert!(entra_hints(&other, &entra(), &c).is_none());
    }
}
