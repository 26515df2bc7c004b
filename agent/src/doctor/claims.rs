//! The token's claims in doctor's report: only those that decide trust
//! unless `--all-claims`, and personal ones masked unless
//! `--show-personal`.

use super::*;

/// Claims a trust policy is written against, shown by default: the
/// registered ones (RFC 7519) and each platform's documented trust
/// claims. The rest (run numbers, commit, jti, ...) only with
/// `--all-claims`, so the report shows what decides a refusal.
pub(super) const TRUST: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "azp",
    // GitHub Actions.
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "ref",
    "ref_type",
    "environment",
    "event_name",
    "job_workflow_ref",
    "workflow_ref",
    "runner_environment",
    "enterprise",
    "enterprise_id",
    // GitLab CI.
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "ref_path",
    "ref_protected",
    "environment_protected",
    "deployment_tier",
    "pipeline_source",
    "ci_config_ref_uri",
    // CircleCI.
    "oidc.circleci.com/project-id",
    "oidc.circleci.com/context-ids",
    "oidc.circleci.com/vcs-origin",
    "oidc.circleci.com/vcs-ref",
    "oidc.circleci.com/ssh-rerun",
    // Buildkite.
    "organization_slug",
    "organization_id",
    "pipeline_slug",
    "pipeline_id",
    "build_branch",
    "build_tag",
    "build_source",
    "cluster_id",
    // Bitbucket Pipelines.
    "workspaceUuid",
    "repositoryUuid",
    "branchName",
    "deploymentEnvironmentUuid",
];

/// Claims that name a person (who triggered the job), masked by doctor
/// unless `--show-personal`: GitLab `user_email`, `user_login`, `user_id`,
/// `user_identities`, `user_access_level`; GitHub `actor`, `actor_id`,
/// `triggering_actor`; Buildkite `build_creator*`; a login's `email`,
/// `name`, `preferred_username`. None of them decides trust on its own
/// that a maintainer should paste into an issue.
pub(super) const PERSONAL: &[&str] = &[
    "user_email",
    "user_login",
    "user_id",
    "user_identities",
    "user_access_level",
    "actor",
    "actor_id",
    "triggering_actor",
    "build_creator",
    "build_creator_email",
    "email",
    "name",
    "preferred_username",
];

pub(super) fn print(c: &UnverifiedClaims, verified: bool, opts: &Options, out: &mut String) {
    if verified {
        let _ = writeln!(
            out,
            "  claims (verified by lanyard as above; the token service verifies them again):"
        );
    } else {
        let _ = writeln!(out, "  claims (UNVERIFIED: decoded without checking the signature; the token service verifies them):");
    }
    let mut hidden = 0;
    for (k, v) in c.display_pairs() {
        if !opts.all_claims && !TRUST.contains(&k.as_str()) {
            hidden += 1;
            continue;
        }
        let shown = match k.as_str() {
            "exp" | "iat" | "nbf" => match v.parse::<u64>() {
                Ok(s) => {
                    let t = std::time::UNIX_EPOCH + Duration::from_secs(s);
                    let rel = match t.duration_since(std::time::SystemTime::now()) {
                        Ok(d) => format!("in {}", human(d)),
                        Err(e) => format!("{} ago", human(e.duration())),
                    };
                    format!("{v} ({}, {rel})", format_time(t))
                }
                Err(_) => v,
            },
            p if PERSONAL.contains(&p) && !opts.show_personal => {
                "(personal, masked; --show-personal shows it)".into()
            }
            _ => v,
        };
        let _ = writeln!(out, "    {k}: {}", sanitize(&shown));
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "    {hidden} other claim{} hidden (--all-claims shows them)",
            plural(hidden)
        );
    }
}
