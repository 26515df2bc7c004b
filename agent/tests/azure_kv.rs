//! The unmodified `azure-keyvault-secrets` `SecretClient` with
//! `DefaultAzureCredential`, at its real URL
//! `https://myvault.vault.azure.net` (port 443), through `lanyard run`.
//!
//! No Key Vault emulator could be installed here (see
//! agent/tests/peers/README.md), so the vault is `peers/entra.py`'s strict
//! Key Vault: it accepts only tokens its own token endpoint issued (after
//! verifying lanyard's client assertion against the CI issuer's JWKS), and
//! answers a request without one with Key Vault's challenge. The host name
//! is put on loopback in private namespaces (tests/common/netns.rs); the
//! vault serves a `*.vault.azure.net` certificate from a test CA that
//! lanyard trusts through `[upstream] extra_ca`, and the SDK trusts
//! lanyard's per-job CA from `REQUESTS_CA_BUNDLE`.

mod common;

use std::path::{Path, PathBuf};

use common::azure::{azure_venv, AzureJob, Entra, CLIENT_ID, GITHUB_SUB, TENANT};
use common::netns::with_private_hosts;
use common::*;
use serde_json::Value;

const HOST: &str = "myvault.vault.azure.net";
const DB_PASSWORD: &str = "kv-sdk-canary-0e7d55";
const NEW_VALUE: &str = "kv-sdk-set-canary-93a1f2";

/// A test CA and a leaf for `*.vault.azure.net` it signed, as PEM files:
/// (ca, cert, key).
fn vault_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "lanyard test vault CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["*.vault.azure.net".to_owned()]).expect("leaf");
    leaf.use_authority_key_identifier_extension = true;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let paths = (
        dir.join("vault-ca.pem"),
        dir.join("vault.pem"),
        dir.join("vault.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("ca pem");
    std::fs::write(&paths.1, leaf_cert.pem()).expect("leaf pem");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("leaf key");
    paths
}

const CLIENT: &str = r#"import json, os, requests
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
out = {}
client = SecretClient(vault_url="https://myvault.vault.azure.net", credential=DefaultAzureCredential())
out["got"] = client.get_secret("db-password").value
try:
    out["set"] = client.set_secret("api-key", os.environ["NEW_VALUE"]).value
    out["reread"] = client.get_secret("api-key").value
except Exception as e:
    out["set_error"] = type(e).__name__ + ": " + str(e)
ph = ManagedIdentityCredential().get_token("https://vault.azure.net/.default").token
out["placeholder"] = ph
# The placeholder to a host that is not its route (the peer's plain port).
r = requests.get("http://127.0.0.1:" + os.environ["ENTRA_PORT"] + "/secrets/db-password",
                 params={"api-version": "7.4"}, headers={"Authorization": "Bearer " + ph})
out["elsewhere"] = r.status_code
# The placeholder straight to the vault, lanyard bypassed: the vault refuses it.
s = requests.Session()
s.trust_env = False
r = s.get("https://myvault.vault.azure.net/secrets/db-password", params={"api-version": "7.4"},
          headers={"Authorization": "Bearer " + ph}, verify=os.environ["VAULT_CA"])
out["bypassed"] = r.status_code
out["bypassed_body"] = r.text
print(json.dumps(out))
"#;

fn config() -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"kv\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\n\
         client_id = \"{CLIENT_ID}\"\nscope = \"https://vault.azure.net/.default\"\nauthority = \"{{ENTRA}}\"\n\n\
         [[route]]\nurl = \"https://{HOST}/\"\ncredential = \"kv\"\n\n\
         [upstream]\nextra_ca = \"{{CA}}\"\n\n[audit]\nfile = \"{{AUDIT}}\"\n"
    )
}

struct Outcome {
    code: i32,
    out: String,
    err: String,
    env: String,
    audit: String,
    issued: Vec<String>,
    vault_requests: Vec<Value>,
}

fn run_in_namespace() -> Outcome {
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = vault_certs(certs.path());
    let issuer = Issuer::start();
    let entra = Entra::start(
        &issuer.url,
        &[
            "--subject",
            GITHUB_SUB,
            "--secret",
            &format!("db-password={DB_PASSWORD}"),
            "--vault-port",
            "443",
            "--vault-cert",
            &cert.display().to_string(),
            "--vault-key",
            &key.display().to_string(),
        ],
    );
    assert_eq!(entra.vault_port, Some(443));
    let entra_port = entra.url.rsplit(':').next().expect("port").to_owned();
    let text = config().replace("{CA}", &ca.display().to_string());
    let job = AzureJob::new(issuer, &entra, &text);
    let script = job.dir.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("client");
    let env_file = job.dir.path().join("child.env");
    let (code, out, err) = job.run(
        &format!(
            "env > {} && {} {}",
            env_file.display(),
            azure_venv().display(),
            script.display()
        ),
        &[
            ("ENTRA_PORT", &entra_port),
            ("VAULT_CA", &ca.display().to_string()),
            ("NEW_VALUE", NEW_VALUE),
        ],
    );
    Outcome {
        code,
        out,
        err,
        env: std::fs::read_to_string(&env_file).unwrap_or_default(),
        audit: job.audit_text(),
        issued: entra.issued(),
        vault_requests: entra
            .requests()
            .into_iter()
            .filter(|r| r.get("method").is_some())
            .collect(),
    }
}

#[test]
fn the_unmodified_secret_client_reads_and_writes_key_vault_through_lanyard() {
    let o = match with_private_hosts(&[HOST], run_in_namespace) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("SKIPPED SecretClient against {HOST}: {why}");
            return;
        }
    };
    let (out, err) = (&o.out, &o.err);
    assert_eq!(o.code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let res = json_of(
        out.lines()
            .rfind(|l| l.starts_with('{'))
            .expect("client output"),
    );
    assert_eq!(res["got"], DB_PASSWORD, "{res}");
    assert_eq!(res["set"], NEW_VALUE, "{res}");
    assert_eq!(res["reread"], NEW_VALUE, "{res}");
    let placeholder = res["placeholder"].as_str().expect("placeholder");
    assert!(
        placeholder.starts_with("lanyard-placeholder-azure-"),
        "{res}"
    );
    // Elsewhere: refused by lanyard, never reaching the peer.
    assert_eq!(res["elsewhere"], 403, "{res}");
    // Bypassing lanyard, the vault itself refuses the placeholder.
    assert_eq!(res["bypassed"], 401, "{res}");
    assert!(
        res["bypassed_body"]
            .as_str()
            .is_some_and(|b| b.contains("AKV10032")),
        "{res}"
    );

    // The vault saw every request at its real host name (the misplaced
    // placeholder never reached the peer's plain port). The write went as
    // the SDK sends it: a body-less probe without a token (lanyard let it
    // through bare, so the vault's challenge reached the SDK), then the
    // whole request with a token the vault accepted (the placeholder,
    // replaced by lanyard: the vault refuses placeholders, see above).
    let reqs = &o.vault_requests;
    assert!(reqs.iter().all(|r| r["host"] == HOST), "{reqs:#?}");
    let puts: Vec<&Value> = reqs.iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 2, "{reqs:#?}");
    assert_eq!(puts[0]["path"], "/secrets/api-key");
    assert_eq!(puts[0]["authorization_scheme"], "", "{puts:#?}");
    assert_eq!(puts[0]["content_length"], "0", "{puts:#?}");
    assert_eq!(puts[1]["authorization_scheme"], "Bearer", "{puts:#?}");
    assert_ne!(puts[1]["content_length"], "0", "{puts:#?}");

    let lines: Vec<Value> = o
        .audit
        .lines()
        .map(json_of)
        .filter(|l| l.get("decision").is_some())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "injected" && l["credential"] == "kv"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["decision"] == "tunnelled"
            && l["method"] == "PUT"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("challenge"))),
        "the probe went bare: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "served" && l["credential"] == "kv"),
        "the SDK fetched a placeholder: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["decision"] == "denied"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("placeholder Azure token"))),
        "{lines:#?}"
    );

    // The child's environment holds no real token and no secret.
    assert!(o.env.contains("IDENTITY_ENDPOINT="), "{}", o.env);
    assert!(!o.issued.is_empty());
    for t in &o.issued {
        assert_absent(&[out, err, &o.audit, &o.env], t, "an Entra token");
    }
    assert_absent(
        &[err, &o.audit, &o.env],
        DB_PASSWORD,
        "the Key Vault secret",
    );
    assert_absent(&[&o.env], placeholder, "a placeholder fetched later");
}
