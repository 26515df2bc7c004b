//! Google Cloud: the `gcp-workload-identity` exchange (STS, then
//! generateAccessToken) and the GCE metadata server on the listener, with
//! the real binary, the real google-auth and google-cloud-storage clients,
//! against `peers/google.py`, a strict STS / IAM Credentials / storage API
//! that verifies the job's token against the CI issuer's JWKS.

mod common;

use std::collections::HashMap;

use common::google::{google_venv, GcpJob, Google, GITHUB_SUB, PROVIDER, SERVICE_ACCOUNT};
use common::*;
use serde_json::Value;

const GREETING: &str = "gcs-object-canary-7d31e9";

/// One gcp-workload-identity credential with `extra` keys, routes for the
/// peer's storage API (`/storage/` and the media downloads' `/download/`).
fn config(port: u16, extra: &str) -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"gcs\"\nexchange = \"gcp-workload-identity\"\nprovider = \"{PROVIDER}\"\n\
         token_url = \"{{GOOGLE}}/v1/token\"\niamcredentials_url = \"{{GOOGLE}}\"\n{extra}\n\
         [[route]]\nurl = \"http://127.0.0.1:{port}/storage/\"\ncredential = \"gcs\"\n\n\
         [[route]]\nurl = \"http://127.0.0.1:{port}/download/storage/\"\ncredential = \"gcs\"\n\n\
         [audit]\nfile = \"{{AUDIT}}\"\n"
    )
}

fn sa() -> String {
    format!("service_account = \"{SERVICE_ACCOUNT}\"\n")
}

fn start(peer_args: &[&str], extra: &str) -> (Google, GcpJob) {
    let issuer = Issuer::start();
    let object = format!("ci-bucket/greeting={GREETING}");
    let mut args = vec!["--object", &object];
    args.extend_from_slice(peer_args);
    let google = Google::start(&issuer.url, &args);
    let job = GcpJob::new(issuer, &google, &config(google.port, extra));
    (google, job)
}

const CLIENT: &str = r#"
import os
import google.auth
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage

creds, project = google.auth.default()
port = os.environ["PORT"]
r = AuthorizedSession(creds).get(f"http://127.0.0.1:{port}/storage/v1/b/ci-bucket/o/greeting?alt=media")
print("status", r.status_code)
print("body", r.text)
print("type", type(creds).__module__ + "." + type(creds).__name__)
print("project", project)
print("email", creds.service_account_email)
print("token", creds.token)
client = storage.Client(project=project, credentials=creds, client_options={"api_endpoint": f"http://127.0.0.1:{port}"})
print("storage", client.bucket("ci-bucket").blob("greeting").download_as_text())
"#;

#[test]
fn google_auth_default_finds_the_metadata_server_and_reaches_storage_with_the_real_token() {
    let (google, job) = start(
        &[
            "--service-account",
            SERVICE_ACCOUNT,
            "--subject",
            GITHUB_SUB,
        ],
        &sa(),
    );
    let client = job.dir.path().join("client.py");
    std::fs::write(&client, CLIENT).expect("client");
    let py = google_venv().display().to_string();
    let port = google.port.to_string();
    let (code, out, err) = job.run(&[&py, &client.display().to_string()], &[("PORT", &port)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let got: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(got.get("status"), Some(&"200"), "{out}\n{err}");
    assert_eq!(got.get("body"), Some(&GREETING), "{out}");
    assert_eq!(got.get("storage"), Some(&GREETING), "{out}");
    assert_eq!(
        got.get("type"),
        Some(&"google.auth.compute_engine.credentials.Credentials"),
        "{out}"
    );
    assert_eq!(got.get("project"), Some(&"acme-ci"), "{out}");
    assert_eq!(got.get("email"), Some(&SERVICE_ACCOUNT), "{out}");
    assert!(
        got.get("token")
            .is_some_and(|t| t.starts_with("lanyard-placeholder-gcp-")),
        "the client holds a placeholder: {out}"
    );

    // STS got the documented form, with the job's token for the provider.
    let sts = google.requests("sts");
    assert_eq!(sts.len(), 1, "{sts:?}");
    let s = &sts[0];
    assert_eq!(s["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(s["audience"], format!("//iam.googleapis.com/{PROVIDER}"));
    assert_eq!(s["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(
        s["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(
        s["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(
        s["subject_claims"]["aud"],
        format!("https://iam.googleapis.com/{PROVIDER}")
    );
    // IAM Credentials got the federated token and the JSON body.
    let iam = google.requests("iam");
    assert_eq!(iam.len(), 1, "{iam:?}");
    assert_eq!(iam[0]["bearer"], "issued-federated");
    assert_eq!(iam[0]["email"], SERVICE_ACCOUNT);
    assert_eq!(iam[0]["content_type"], "application/json");
    assert_eq!(
        iam[0]["body"],
        serde_json::json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"})
    );
    // Storage saw only the service account's token, never a placeholder.
    let st = google.requests("storage");
    assert!(st.len() >= 2, "{st:?}");
    assert!(st.iter().all(|r| r["bearer"] == "issued-sa"), "{st:?}");

    // The metadata fetches are audited; no real token anywhere the job sees.
    let audit = job.audit_lines();
    assert!(
        audit.iter().any(|l| l["decision"] == "served"
            && l["path"] == "/computeMetadata/v1/instance/service-accounts/default/token"
            && l["credential"] == "gcs"),
        "{audit:#?}"
    );
    let audit_text = job.audit_text();
    for t in google.issued() {
        assert_absent(&[&out, &err, &audit_text], &t, "a Google access token");
    }
}

#[test]
fn placeholders_elsewhere_and_metadata_strangers_are_refused_and_audited() {
    let (google, job) = start(&["--service-account", SERVICE_ACCOUNT], &sa());
    let (root, other_ip) = (is_root(), non_loopback_ip());
    let out_dir = job.dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let o = out_dir.display();
    let mut script = format!(
        r#"set -u
M="http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token"
F='Metadata-Flavor: Google'
c() {{ name=$1; shift; echo "$name $(curl -s -o {o}/$name -w '%{{http_code}}' --noproxy '*' "$@")"; }}
env > {o}/env
c no-header "$M"
c wrong-flavor -H 'Metadata-Flavor: google' "$M"
c origin -H "$F" -H 'Origin: https://evil.example' "$M"
c sec-fetch -H "$F" -H 'Sec-Fetch-Mode: cors' "$M"
c post -X POST -H "$F" "$M"
c host -H "$F" -H "Host: evil.example" "$M"
c forwarded -H "$F" -H "X-Forwarded-For: 10.0.0.1" "$M"
c ping -D {o}/ping-headers -H "$F" "http://$GCE_METADATA_IP/"
c project -H "$F" "http://$GCE_METADATA_HOST/computeMetadata/v1/project/project-id"
c info -H "$F" "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/?recursive=true"
c nowhere -H "$F" "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/zone"
c ok -H "$F" "$M"
P="$(sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p' {o}/ok)"
B="http://127.0.0.1:$PORT"
p() {{ name=$1; shift; echo "$name $(curl -s -o {o}/$name -w '%{{http_code}}' "$@")"; }}
p routed -H "Authorization: Bearer $P" "$B/storage/v1/b/ci-bucket/o/greeting?alt=media"
p passthrough -H "Authorization: Bearer $P" "http://localhost:$PORT/elsewhere"
p other-header -H "X-Goog-Token: $P" "http://localhost:$PORT/elsewhere"
p in-query "$B/storage/v1/b/ci-bucket?access_token=$P"
"#
    );
    if root {
        script.push_str("echo \"other-user $(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -H \"$F\" \"$M\")\"\n");
    } else {
        eprintln!("SKIPPED other-user case: needs root to run a client as another user (setpriv)");
    }
    match &other_ip {
        Some(ip) => script.push_str(&format!(
            "echo \"non-loopback $(curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' --interface {ip} -H \"$F\" \"$M\")\"\n"
        )),
        None => eprintln!("SKIPPED non-loopback case: this machine has no non-loopback IPv4 address"),
    }
    let port = google.port.to_string();
    let (code, out, err) = job.run(&["sh", "-c", &script], &[("PORT", &port)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let got: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    let mut want = vec![
        ("no-header", "403"),
        ("wrong-flavor", "403"),
        ("origin", "403"),
        ("sec-fetch", "403"),
        ("post", "405"),
        ("host", "400"),
        ("forwarded", "403"),
        ("ping", "200"),
        ("project", "200"),
        ("info", "200"),
        ("nowhere", "404"),
        ("ok", "200"),
        ("routed", "200"),
        ("passthrough", "403"),
        ("other-header", "403"),
        ("in-query", "403"),
    ];
    if root {
        want.push(("other-user", "403"));
    }
    if other_ip.is_some() {
        want.push(("non-loopback", "403"));
    }
    for (case, status) in &want {
        assert_eq!(got.get(case), Some(status), "{case}:\n{out}\n{err}");
    }
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap_or_default();
    assert!(
        read("ping-headers")
            .to_ascii_lowercase()
            .contains("metadata-flavor: google"),
        "{}",
        read("ping-headers")
    );
    assert_eq!(read("project"), "acme-ci");
    let info = json_of(&read("info"));
    assert_eq!(info["email"], SERVICE_ACCOUNT, "{info}");
    let ok = json_of(&read("ok"));
    let placeholder = ok["access_token"].as_str().expect("access_token");
    assert!(placeholder.starts_with("lanyard-placeholder-gcp-"), "{ok}");
    assert_eq!(ok["token_type"], "Bearer");
    assert!(
        ok["expires_in"]
            .as_u64()
            .is_some_and(|s| s > 3000 && s <= 3600),
        "{ok}"
    );
    assert_eq!(read("routed"), GREETING);

    // The peer saw one storage read, with the real token; no refused
    // request left lanyard, and no placeholder ever reached it.
    let st = google.requests("storage");
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0]["bearer"], "issued-sa");
    assert!(google.requests("other").is_empty());

    let lines = job.audit_lines();
    let on_endpoint: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/computeMetadata/"))
        })
        .collect();
    for rule in [
        "no Metadata-Flavor: Google header",
        "Metadata-Flavor must be Google",
        "cross-site request: Origin",
        "a browser request (sec-fetch-mode)",
        "only GET",
        "X-Forwarded-For",
    ] {
        assert!(
            on_endpoint.iter().any(|l| l["decision"] == "denied"
                && l["reason"].as_str().is_some_and(|r| r.contains(rule))),
            "no denied line with {rule:?}:\n{lines:#?}"
        );
    }
    let misplaced = lines
        .iter()
        .filter(|l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("placeholder Google token"))
        })
        .count();
    assert_eq!(misplaced, 3, "{lines:#?}");
    if other_ip.is_some() {
        assert!(
            lines.iter().any(|l| l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not from loopback"))),
            "{lines:#?}"
        );
    }
    let env = read("env");
    assert!(env.contains("GCE_METADATA_HOST=127.0.0.1:"), "{env}");
    assert!(env.contains("GCE_METADATA_IP=127.0.0.1:"), "{env}");
    assert!(!env.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{env}");
    let audit_text = job.audit_text();
    for t in google.issued() {
        assert_absent(
            &[&out, &err, &env, &audit_text],
            &t,
            "a Google access token",
        );
    }
    assert_absent(&[&audit_text], placeholder, "the placeholder");
}

#[test]
fn sts_and_iam_refusals_are_explained_in_googles_words_without_the_token() {
    // The provider's attribute condition wants another branch.
    let (google, job) = start(&["--subject", "repo:acme/app:environment:prod"], "");
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("invalid_grant: The given credential is rejected by the attribute condition."),
        "{out}"
    );
    assert!(
        out.contains("likely cause: the provider's attribute condition rejected this token"),
        "{out}"
    );
    assert!(out.contains(&format!("subject {GITHUB_SUB:?}")), "{out}");
    assert!(google.issued().is_empty());

    // The federated principal may not impersonate the service account.
    let (google, job) = start(&["--service-account", SERVICE_ACCOUNT, "--deny"], &sa());
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("PERMISSION_DENIED: Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."),
        "{out}"
    );
    assert!(out.contains("roles/iam.workloadIdentityUser"), "{out}");
    assert!(
        out.contains("principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/ci-pool/attribute.repository/acme/app"),
        "{out}"
    );
    let issued = google.issued();
    assert_eq!(issued.len(), 1, "the federated token only");
    assert_absent(&[&out, &err], &issued[0], "the federated token");

    // A token the peer cannot verify (another issuer's keys): STS quotes
    // it back in its description; lanyard shows the description redacted.
    let issuer = Issuer::start();
    let other = Issuer::start();
    let google = Google::start(&other.url, &[]);
    let job = GcpJob::new(issuer, &google, &config(google.port, ""));
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("invalid_grant: Invalid JWT signature."),
        "{out}"
    );
    assert!(!out.contains("eyJ"), "a JWT was shown: {out}");
    assert_absent(
        &[&out, &err],
        &job.issuer.bearer,
        "the GitHub request token",
    );
}

#[test]
fn garbage_answers_from_sts_or_iam_fail_closed_without_quoting_them() {
    for (peer, extra) in [("sts", String::new()), ("iam", sa())] {
        let (google, job) = start(
            &["--service-account", SERVICE_ACCOUNT, "--garbage", peer],
            &extra,
        );
        let (code, out, err) = job.doctor();
        assert_eq!(code, 1, "{peer}: {out}");
        assert!(
            out.contains("answered HTTP 200 with a body that is not JSON"),
            "{peer}: {out}"
        );
        assert!(
            !out.contains("having a moment"),
            "the body was quoted: {out}"
        );
        for t in google.issued() {
            assert_absent(&[&out, &err], &t, "a Google access token");
        }
    }
}

/// The client keeps calling storage until the peer has seen a third
/// generateAccessToken (or its deadline passes), then reports.
const LONG_CLIENT: &str = r#"
import json, os, time
import google.auth
from google.auth.transport.requests import AuthorizedSession

creds, _ = google.auth.default()
sess = AuthorizedSession(creds)
url = f"http://127.0.0.1:{os.environ['PORT']}/storage/v1/b/ci-bucket/o/greeting?alt=media"
log = os.path.join(os.environ["PEER_DIR"], "requests.jsonl")
def iam():
    with open(log) as f:
        return sum(1 for l in f if json.loads(l)["endpoint"] == "iam")
deadline, ok, bad = time.monotonic() + 40, 0, 0
while time.monotonic() < deadline:
    r = sess.get(url)
    if r.status_code == 200 and r.text == os.environ["WANT"]:
        ok += 1
    else:
        bad += 1
    if iam() >= 3:
        break
    time.sleep(0.2)
print("ok", ok)
print("bad", bad)
print("iam", iam())
"#;

#[test]
fn a_long_job_gets_fresh_tokens_before_expiry_with_a_fresh_ci_token_each_time() {
    // generateAccessToken grants 6 s: lanyard must re-exchange (STS, then
    // IAM) well before each expires, while the client keeps one placeholder.
    let (google, job) = start(
        &["--service-account", SERVICE_ACCOUNT, "--sa-ttl", "6"],
        &sa(),
    );
    let client = job.dir.path().join("long.py");
    std::fs::write(&client, LONG_CLIENT).expect("client");
    let py = google_venv().display().to_string();
    let port = google.port.to_string();
    let peer_dir = google.dir().display().to_string();
    let (code, out, err) = job.run(
        &[&py, &client.display().to_string()],
        &[("PORT", &port), ("PEER_DIR", &peer_dir), ("WANT", GREETING)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let got: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(got.get("bad"), Some(&"0"), "{out}\n{err}");
    assert!(
        got.get("iam")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 3),
        "{out}"
    );
    let st = google.requests("storage");
    assert!(st.iter().all(|r| r["bearer"] == "issued-sa"), "{st:?}");
    // Each exchange presented a freshly minted CI token.
    let jtis: std::collections::HashSet<String> = google
        .requests("sts")
        .iter()
        .map(|r| r["subject_claims"]["jti"].as_str().expect("jti").to_owned())
        .collect();
    assert!(jtis.len() >= 3, "{jtis:?}");
}
