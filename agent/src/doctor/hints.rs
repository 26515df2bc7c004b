//! Likely causes of a token service's refusal, from its error and the
//! claims that were sent.

use super::*;

/// The audience fix where lanyard asks for the audience itself.
const AUDIENCE_FIX: &str =
    "set [identity] audience (or the credential's audience) to what the service expects";

/// The audience fix in the words of the platform that decides the
/// audience: on GitLab the pipeline does (`id_tokens:` `aud:`), CircleCI
/// and Bitbucket fix it themselves.
pub fn for_platform(hint: String, platform: crate::config::Platform) -> String {
    use crate::config::Platform;
    let fix = match platform {
        Platform::Gitlab => "GitLab sets the audience in the pipeline, not in lanyard: set `aud:` under the job's `id_tokens:` entry (the variable lanyard reads) to what the service expects",
        Platform::Github => "set [identity] audience (or the Action's `audience` input, or the credential's audience) to what the service expects",
        Platform::Buildkite => "set [identity] audience (lanyard asks `buildkite-agent oidc request-token --audience` for it) to what the service expects",
        Platform::Circleci => "CircleCI fixes aud to the organization ID and lanyard cannot change it: configure the service to expect the organization ID",
        Platform::Bitbucket => "Bitbucket fixes aud for the workspace and lanyard cannot change it: configure the service to expect the audience shown in Repository settings > OpenID Connect",
        _ => return hint,
    };
    hint.replace(AUDIENCE_FIX, fix)
}

/// Likely causes, from the service's own message and what was presented.
/// `assertion`: the job's token was the client's proof (RFC 7523 client
/// assertion), so a refused client means a trust that does not match it.
pub fn hints(
    e: &ExchangeError,
    sent_audience: &[String],
    claims: &UnverifiedClaims,
    assertion: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let text = e.to_string();
    let lower = text.to_lowercase();
    if let ExchangeError::Http(_) = e {
        out.push("the service did not answer: is it running, and is the address right?".into());
        return out;
    }
    // `claim "repository" does not match…` / `subject token repository "evil/app" is not allowed`
    for name in [
        "repository",
        "project_path",
        "ref",
        "environment",
        "sub",
        "job_workflow_ref",
        "ref_protected",
        "namespace_path",
    ] {
        if lower.contains(&format!("claim \"{name}\""))
            || lower.contains(&format!("token {name} "))
            || lower.contains(&format!("\"{name}\" does not match"))
        {
            let got = claims.text(name).unwrap_or_else(|| "(absent)".into());
            out.push(format!("the token's {name} claim is {got:?} and the service's rules (bound claims) do not accept it: run from the expected {name}, or change the role"));
        }
    }
    if lower.contains("aud") {
        out.push(format!(
            "audience mismatch: the token's aud is {:?}; lanyard asked for {}: {AUDIENCE_FIX}",
            claims.audiences(),
            if sent_audience.is_empty() {
                "no specific audience".into()
            } else {
                format!("{sent_audience:?}")
            }
        ));
    }
    if lower.contains("expired") || lower.contains("\"exp\"") || lower.contains("exp claim") {
        match claims.exp() {
            Some(exp) => out.push(format!("the token's exp is {}; tokens that cannot be re-minted (GitLab, Bitbucket, CircleCI) live only as long as the job", format_time(exp))),
            None => out.push("the token has no exp claim".into()),
        }
    }
    if lower.contains("role")
        && (lower.contains("not found")
            || lower.contains("could not be found")
            || lower.contains("invalid role"))
    {
        out.push("the role does not exist on this auth mount: check `role` and `mount`".into());
    }
    if (lower.contains("invalid_client") || lower.contains("client authentication")) && assertion {
        let text = |n: &str| claims.text(n).unwrap_or_else(|| "(absent)".into());
        out.push(format!(
            "the token service did not accept the job's token as the client's proof: it must trust issuer {:?} with subject {:?} for this client, and expect audience {:?} (Keycloak: an identity provider with that issuer and client assertions on, a client with clientAuthenticatorType federated-jwt, jwt.credential.issuer = the provider's alias and jwt.credential.sub = that subject; the audience is the realm's URL)",
            text("iss"),
            text("sub"),
            claims.audiences()
        ));
    } else if lower.contains("invalid_client") || lower.contains("client authentication") {
        out.push("the token service did not accept the client: check client_id, client_auth and the secret variable".into());
    }
    if lower.contains("permission denied") {
        out.push(
            "the token is valid but its policies do not allow this path (or it was revoked)".into(),
        );
    }
    if lower.contains("key")
        && (lower.contains("not found")
            || lower.contains("no key")
            || lower.contains("unknown key")
            || lower.contains("signature"))
    {
        out.push(
            "the service could not verify the signature: check its JWKS / discovery URL and issuer"
                .into(),
        );
    }
    if out.is_empty() && e.is_refusal() {
        out.push("the service's own message above is the best explanation; compare the claims listed under identity with the service's rules".into());
    }
    out
}
