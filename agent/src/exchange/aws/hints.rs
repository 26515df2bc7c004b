//! `doctor`'s likely causes for an STS refusal. STS says little
//! ("Not authorized to perform sts:AssumeRoleWithWebIdentity"); what is
//! usually wrong is one condition of the role's trust policy, so the hints
//! name the condition keys (`<issuer>:aud`, `<issuer>:sub`) with the values
//! this job's token actually has, and the `sub` shapes each platform uses.

use crate::config::AwsSecret;
use crate::exchange::ExchangeError;
use crate::identity::{format_time, UnverifiedClaims};

/// The refusal codes of `AssumeRoleWithWebIdentity` that these hints explain.
pub const CODES: &[&str] = &[
    "AccessDenied",
    "InvalidIdentityToken",
    "ExpiredTokenException",
    "IDPRejectedClaim",
    "IDPCommunicationError",
    "ValidationError",
    "MalformedPolicyDocument",
    "PackedPolicyTooLarge",
    "RegionDisabledException",
];

/// Hints for an STS refusal, or `None` when `e` is not one (the general
/// hints apply then).
pub fn hints(
    e: &ExchangeError,
    audience: &[String],
    claims: &UnverifiedClaims,
) -> Option<Vec<String>> {
    let e = match e {
        ExchangeError::Retried {
            last,
            attempts,
            service,
        } => match last.as_ref() {
            ExchangeError::Refused {
                code: Some(code), ..
            } if CODES.contains(&code.as_str()) => last.as_ref(),
            _ => {
                return Some(vec![format!(
                    "STS at {service} gave no usable answer in {attempts} attempts: check `sts_endpoint` / `region`, and the network or proxy between this runner and AWS"
                )])
            }
        },
        e => e,
    };
    let ExchangeError::Refused {
        code: Some(code),
        detail,
        ..
    } = e
    else {
        return None;
    };
    if !CODES.contains(&code.as_str()) {
        return None;
    }
    let iss = claims.text("iss").unwrap_or_else(|| "(no iss)".into());
    // The IAM condition key prefix is the issuer without its scheme.
    let key = iss
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let sub = claims.text("sub").unwrap_or_else(|| "(absent)".into());
    let aud = claims.audiences();
    let asked = audience.first().cloned().unwrap_or_default();
    let mut out = Vec::new();
    match code.as_str() {
        "AccessDenied" | "IDPRejectedClaim" => {
            out.push(format!(
                "the role's trust policy did not accept this token: it must allow sts:AssumeRoleWithWebIdentity for the principal \
                 Federated = \"arn:aws:iam::<account>:oidc-provider/{key}\", with the condition \"{key}:aud\" = {asked:?} \
                 (the token's aud is {aud:?}) and \"{key}:sub\" matching {sub:?}"
            ));
            out.push(sub_shape(claims, &sub));
        }
        "InvalidIdentityToken" => {
            out.push(format!(
                "STS could not verify the token: the account needs an IAM OIDC identity provider whose URL is exactly the token's iss ({iss}) \
                 and whose audiences (client IDs) include {asked:?}; the token's aud is {aud:?}"
            ));
            if detail.to_lowercase().contains("aud") {
                out.push(format!(
                    "audience mismatch: set the credential's `audience` (or [identity] audience) to a client ID the OIDC provider lists; lanyard asked for {asked:?}"
                ));
            }
        }
        "ExpiredTokenException" => out.push(match claims.exp() {
            Some(exp) => format!(
                "the CI token had expired when STS read it (exp {}): GitHub and Buildkite tokens are minted afresh for each exchange; a GitLab id_token lives only as long as the job, and a clock far off makes a fresh one look expired",
                format_time(exp)
            ),
            None => "the CI token has no exp claim".into(),
        }),
        "IDPCommunicationError" => out.push(format!(
            "STS could not fetch the issuer's keys from {iss}/.well-known/openid-configuration; it retries, and so does lanyard"
        )),
        "ValidationError" => out.push(
            "STS rejected a parameter: a `duration` over the role's maximum session duration (1 h unless raised), a session name, or the role ARN's shape"
                .into(),
        ),
        "MalformedPolicyDocument" | "PackedPolicyTooLarge" => out.push(
            "the session `policy` or `policy_arns` is not accepted: check the JSON policy grammar and its size".into(),
        ),
        _ => out.push(
            "STS is not enabled in this region for the account: pick another `region` or enable it in the account settings".into(),
        ),
    }
    Some(out)
}

/// Hints for a refused `GetSecretValue`.
pub fn secret_hints(e: &ExchangeError, cfg: &AwsSecret) -> Option<Vec<String>> {
    let ExchangeError::Refused {
        code: Some(code), ..
    } = e
    else {
        return None;
    };
    let hint = match code.as_str() {
        "AccessDenied" | "AccessDeniedException" => format!(
            "the role's permissions policy does not allow secretsmanager:GetSecretValue on {:?} (and kms:Decrypt on its key when that is a customer-managed key), or the secret's resource policy denies the role",
            cfg.secret_id
        ),
        "ResourceNotFoundException" => format!(
            "no secret {:?}{} in {}: check `secret` (a name, or the full ARN) and the aws credential's `region`",
            cfg.secret_id,
            cfg.version_stage
                .as_deref()
                .map(|v| format!(" with version stage {v}"))
                .unwrap_or_default(),
            cfg.region
        ),
        "DecryptionFailure" => {
            "Secrets Manager could not decrypt the value: the role needs kms:Decrypt on the secret's KMS key".into()
        }
        "InvalidSignatureException" | "SignatureDoesNotMatch" | "IncompleteSignature" => {
            "the request's signature was refused: is lanyard's clock right (SigV4 allows 5 minutes), and is `secrets_endpoint` the service itself, not a proxy that rewrites requests?".into()
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "ExpiredTokenException" => {
            "the role session's keys were not accepted: they expired, or the endpoint belongs to another partition or account".into()
        }
        _ => return None,
    };
    Some(vec![hint])
}

/// The `sub` shapes the trust policy's `:sub` condition must match.
fn sub_shape(claims: &UnverifiedClaims, sub: &str) -> String {
    if claims.str("repository").is_some() && claims.str("run_id").is_some() {
        let repo = claims.text("repository").unwrap_or_default();
        let custom = if sub.starts_with("repo:") {
            ""
        } else {
            " This sub is customised (the repository's or organisation's OIDC `include_claim_keys`, e.g. the immutable repository_owner_id/repository_id form); the trust policy must match that form."
        };
        format!(
            "GitHub: sub is \"repo:{repo}:ref:refs/heads/<branch>\" for a branch, \"repo:{repo}:environment:<name>\" when the job names an environment, \"repo:{repo}:pull_request\" for a pull request; use StringLike with a * only where you mean it.{custom}"
        )
    } else if let Some(p) = claims.str("project_path") {
        format!(
            "GitLab: sub is \"project_path:{p}:ref_type:branch:ref:<branch>\" (ref_type tag for tags); the id_token must be declared with `aud` = the audience above in .gitlab-ci.yml `id_tokens`"
        )
    } else {
        format!("the trust policy's sub condition must match the token's sub {sub:?}")
    }
}
