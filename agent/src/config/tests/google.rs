//! `exchange = "gcp-workload-identity"`: defaults, each bad value named,
//! and the example.

use super::*;

const PROVIDER: &str =
    "projects/123456789012/locations/global/workloadIdentityPools/ci-pool/providers/github";

#[test]
fn each_bad_gcp_value_is_named() {
    let src = format!(
        "[[credential]]\nname = \"g\"\nexchange = \"gcp-workload-identity\"\nprovider = \"projects/my-project/locations/global/workloadIdentityPools/ci-pool/providers/github\"\n\
         service_account = \"deployer@example.com\"\nscope = [\"cloud-platform\"]\nlifetime = \"13h\"\ntoken_url = \"http://sts.example.com/v1/token\"\nproject_id = \"X\"\nrole = \"x\"\n\
         [[credential]]\nname = \"f\"\nexchange = \"gcp-workload-identity\"\nprovider = \"{PROVIDER}\"\ndelegates = [\"a@p.iam.gserviceaccount.com\"]\nlifetime = \"30m\"\n"
    );
    let m: Vec<String> = errors(&src)
        .into_iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect();
    let m = m.join("\n");
    for want in [
        "credential[0].provider: expected \"projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>\" (the number, not the project ID",
        "credential[0].service_account: expected a service account's email",
        "credential[0].scope: expected OAuth scopes",
        "credential[0].lifetime: expected whole seconds up to 12h",
        "credential[0].token_url: expected an https:// URL",
        "credential[0].project_id: expected a project ID",
        "credential[0].role: `role` does not apply to a credential with exchange = \"gcp-workload-identity\"",
        "credential[1].delegates: `delegates` is the chain to `service_account`",
        "credential[1].lifetime: `lifetime` is the impersonated token's",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let missing = errors("[[credential]]\nname = \"g\"\nexchange = \"gcp-workload-identity\"\n");
    assert!(
        missing
            .iter()
            .any(|e| e.message.contains("needs `provider`")),
        "{missing:?}"
    );
}

#[test]
fn a_federated_only_credential_takes_the_defaults() {
    let c = parse(&format!(
        "[[credential]]\nname = \"g\"\nexchange = \"gcp-workload-identity\"\nprovider = \"//iam.googleapis.com/{PROVIDER}\"\n"
    ))
    .expect("valid");
    let CredentialKind::GcpWorkloadIdentity(g) = &c.credentials[0].kind else {
        panic!("not gcp: {:?}", c.credentials[0].kind)
    };
    assert_eq!(g.provider, PROVIDER);
    assert_eq!(g.audience, format!("https://iam.googleapis.com/{PROVIDER}"));
    assert_eq!(g.token_url.as_str(), "https://sts.googleapis.com/v1/token");
    assert_eq!(g.scope, ["https://www.googleapis.com/auth/cloud-platform"]);
    assert_eq!(g.service_account, None);
    assert_eq!(g.project_id, None);
}

#[test]
fn the_github_gcp_example_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let c = Config::load(&root.join("examples/github-gcp.toml")).expect("valid");
    let CredentialKind::GcpWorkloadIdentity(g) = &c.credentials[0].kind else {
        panic!("not gcp: {:?}", c.credentials[0].kind)
    };
    assert_eq!(g.project_id.as_deref(), Some("acme-ci"));
    assert_eq!(g.sts_audience(), format!("//iam.googleapis.com/{PROVIDER}"));
    assert_eq!(g.lifetime, std::time::Duration::from_secs(3600));
    assert_eq!(c.credentials[0].kind.label(), "gcp-workload-identity");
}

#[test]
fn stale_google_variables_count_only_with_a_gcp_credential() {
    let env = crate::env::MapEnv::new([
        ("GOOGLE_APPLICATION_CREDENTIALS", "/tmp/key.json"),
        ("GOOGLE_OAUTH_ACCESS_TOKEN", ""),
        ("GOOGLE_CLOUD_PROJECT", "kept"),
    ]);
    let gcp = parse(&format!(
        "[[credential]]\nname = \"g\"\nexchange = \"gcp-workload-identity\"\nprovider = \"{PROVIDER}\"\n"
    ))
    .expect("valid");
    assert_eq!(
        crate::config::gcp_overriding_variables(&gcp.credentials, &env),
        [
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_OAUTH_ACCESS_TOKEN"
        ]
    );
    let other = parse("[[credential]]\nname = \"p\"\nexchange = \"passthrough\"\n").expect("valid");
    assert!(crate::config::gcp_overriding_variables(&other.credentials, &env).is_empty());
}
