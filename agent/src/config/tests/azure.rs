//! `exchange = "entra"` and Key Vault reads: defaults, the token URL, and
//! each bad value named.

use super::*;
use crate::config::{Entra, KeyVaultSecret};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";

fn entra(extra: &str) -> String {
    format!("[[credential]]\nname = \"az\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\nclient_id = \"{APP}\"\nscope = \"https://vault.azure.net/.default\"\n{extra}")
}

#[test]
fn an_entra_credential_builds_the_v2_token_url_and_takes_the_exchange_audience() {
    let c = parse(&entra("")).expect("config");
    let CredentialKind::Entra(Entra {
        token_url,
        audience,
        ..
    }) = &c.credentials[0].kind
    else {
        panic!("not entra: {:?}", c.credentials[0].kind)
    };
    assert_eq!(
        token_url.as_str(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(audience, "api://AzureADTokenExchange");
    assert_eq!(c.credentials[0].kind.label(), "entra");

    let src = entra("authority = \"http://127.0.0.1:9/\"\naudience = \"custom\"\n[[credential]]\nname = \"db\"\nfrom = \"az\"\nsecret = \"https://kv-ci.vault.azure.net/secrets/db\"\nrefresh = \"1m\"\n");
    let c = parse(&src).expect("config");
    assert!(
        matches!(&c.credentials[0].kind, CredentialKind::Entra(e) if e.token_url.as_str() == format!("http://127.0.0.1:9/{TENANT}/oauth2/v2.0/token") && e.audience == "custom")
    );
    let CredentialKind::KeyVaultSecret(KeyVaultSecret { url, refresh, from }) =
        &c.credentials[1].kind
    else {
        panic!("not key vault")
    };
    assert_eq!(url.as_str(), "https://kv-ci.vault.azure.net/secrets/db");
    assert_eq!((from.as_str(), refresh.as_secs()), ("az", 60));
    assert_eq!(c.credentials[1].kind.parent(), Some("az"));
}

#[test]
fn each_bad_entra_value_is_named() {
    let src = "[[credential]]\nname = \"az\"\nexchange = \"entra\"\ntenant = \"common\"\nclient_id = \"my-app\"\nscope = [\"https://vault.azure.net/.default\", \"https://management.azure.com/.default\"]\nauthority = \"http://login.example.com\"\naudience = [\"a\", \"b\"]\nrole = \"x\"\n\
               [[credential]]\nname = \"arm\"\nexchange = \"entra\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"3fa85f64-5717-4562-b3fc-2c963f66afa6\"\nscope = \"https://management.azure.com/.default\"\n\
               [[credential]]\nname = \"db\"\nfrom = \"arm\"\nsecret = \"https://evil.example.com/secrets/db\"\nversion_stage = \"x\"\n";
    let m: Vec<String> = errors(src)
        .into_iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect();
    let m = m.join("\n");
    for want in [
        "credential[0].tenant: expected a directory (tenant) ID",
        "credential[0].client_id: expected the application (client) ID, a GUID",
        "credential[0].scope: expected one resource's .default scope",
        "credential[0].authority: expected an https:// URL",
        "credential[0].audience: expected one audience",
        "credential[0].role: `role` does not apply to a credential with exchange = \"entra\"",
        "credential[2].from: a Key Vault read needs an entra credential for Key Vault (scope = \"https://vault.azure.net/.default\"); \"arm\" has scope \"https://management.azure.com/.default\"",
        "credential[2].secret: expected \"https://<vault>.vault.azure.net/secrets/<name>[/<version>]\"",
        "credential[2].version_stage: `version_stage` applies only to a Secrets Manager read",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let missing = errors("[[credential]]\nname = \"az\"\nexchange = \"entra\"\n");
    let keys: Vec<&str> = missing.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "credential[0].tenant",
            "credential[0].client_id",
            "credential[0].scope"
        ]
    );
}

#[test]
fn the_github_azure_example_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let c = Config::load(&root.join("examples/github-azure.toml")).expect("valid");
    let labels: Vec<&str> = c.credentials.iter().map(|c| c.kind.label()).collect();
    assert_eq!(labels, ["entra", "entra", "azure-key-vault"]);
}
