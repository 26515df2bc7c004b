//! The unmodified `google-cloud-storage` client with `google.auth.default()`,
//! at its real endpoint `https://storage.googleapis.com` (port 443), through
//! `lanyard run`.
//!
//! The host name is put on loopback in private namespaces
//! (tests/common/netns.rs). On 127.0.0.1:443, `peers/google.py` serves a
//! `storage.googleapis.com` certificate from a test CA that lanyard trusts
//! through `[upstream] extra_ca`, and checks every request's bearer (only
//! a token its generateAccessToken issued passes) before forwarding it to
//! fake-gcs-server (a real Cloud Storage emulator built from the Go module
//! proxy), which accepts any bearer. The client trusts lanyard's per-job CA
//! from `REQUESTS_CA_BUNDLE` and gets a placeholder from lanyard's metadata
//! server.

mod common;

use common::google::{google_venv, FakeGcs, GcpJob, Google, GITHUB_SUB, PROVIDER, SERVICE_ACCOUNT};
use common::netns::{ca_and_leaf, with_private_hosts};
use common::*;
use serde_json::Value;

const HOST: &str = "storage.googleapis.com";
const GREETING: &str = "gcs-real-host-canary-4b17c2";
const NEW_VALUE: &str = "gcs-upload-canary-d0e5a8";
/// fake-gcs-server's port: the namespace's loopback is the test's own.
const BACKEND_PORT: u16 = 4443;

const CLIENT: &str = r#"import json, os, requests
import google.auth
from google.cloud import storage
out = {}
creds, project = google.auth.default()
client = storage.Client(project=project, credentials=creds)
out["endpoint"] = client._connection.API_BASE_URL
bucket = client.bucket("ci-bucket")
out["got"] = bucket.blob("greeting").download_as_text()
bucket.blob("report.txt").upload_from_string(os.environ["NEW_VALUE"])
out["reread"] = bucket.blob("report.txt").download_as_text()
out["listed"] = sorted(b.name for b in client.list_blobs("ci-bucket"))
# The client scoped its own copy; ask the metadata server as the library does.
from google.auth.transport.requests import Request
creds.refresh(Request())
ph = creds.token
out["placeholder"] = ph
# The placeholder to a host that is not its route (the peer's plain port).
r = requests.get("http://127.0.0.1:" + os.environ["PORT"] + "/storage/v1/b/ci-bucket",
                 headers={"Authorization": "Bearer " + ph})
out["elsewhere"] = r.status_code
# The placeholder straight to storage, lanyard bypassed: refused.
s = requests.Session()
s.trust_env = False
r = s.get("https://storage.googleapis.com/storage/v1/b/ci-bucket/o/greeting", params={"alt": "media"},
          headers={"Authorization": "Bearer " + ph}, verify=os.environ["STORAGE_CA"])
out["bypassed"] = r.status_code
out["bypassed_body"] = r.text
print(json.dumps(out))
"#;

fn config() -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"gcs\"\nexchange = \"gcp-workload-identity\"\nprovider = \"{PROVIDER}\"\n\
         token_url = \"{{GOOGLE}}/v1/token\"\niamcredentials_url = \"{{GOOGLE}}\"\n\
         service_account = \"{SERVICE_ACCOUNT}\"\n\n\
         [[route]]\nurl = \"https://{HOST}/\"\ncredential = \"gcs\"\n\n\
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
    storage: Vec<Value>,
}

fn run_in_namespace() -> Outcome {
    let certs = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = ca_and_leaf(certs.path(), &[HOST]);
    let _gcs = FakeGcs::start(BACKEND_PORT, &[("ci-bucket", "greeting", GREETING)]);
    let issuer = Issuer::start();
    let backend = format!("http://127.0.0.1:{BACKEND_PORT}");
    let google = Google::start(
        &issuer.url,
        &[
            "--service-account",
            SERVICE_ACCOUNT,
            "--subject",
            GITHUB_SUB,
            "--storage-port",
            "443",
            "--storage-cert",
            &cert.display().to_string(),
            "--storage-key",
            &key.display().to_string(),
            "--storage-backend",
            &backend,
        ],
    );
    assert_eq!(google.storage_port, Some(443));
    let text = config().replace("{CA}", &ca.display().to_string());
    let job = GcpJob::new(issuer, &google, &text);
    let script = job.dir.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("client");
    let env_file = job.dir.path().join("child.env");
    let sh = format!(
        "env > {} && {} {}",
        env_file.display(),
        google_venv().display(),
        script.display()
    );
    let port = google.port.to_string();
    let (code, out, err) = job.run(
        &["sh", "-c", &sh],
        &[
            ("PORT", &port),
            ("STORAGE_CA", &ca.display().to_string()),
            ("NEW_VALUE", NEW_VALUE),
        ],
    );
    Outcome {
        code,
        out,
        err,
        env: std::fs::read_to_string(&env_file).unwrap_or_default(),
        audit: job.audit_text(),
        issued: google.issued(),
        storage: google.requests("storage"),
    }
}

#[test]
fn the_unmodified_storage_client_reads_and_writes_storage_googleapis_com_through_lanyard() {
    let o = match with_private_hosts(&[HOST], run_in_namespace) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("SKIPPED google-cloud-storage against {HOST}: {why}");
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
    assert_eq!(res["endpoint"], format!("https://{HOST}"), "{res}");
    assert_eq!(res["got"], GREETING, "{res}");
    assert_eq!(res["reread"], NEW_VALUE, "{res}");
    assert_eq!(
        res["listed"],
        serde_json::json!(["greeting", "report.txt"]),
        "{res}"
    );
    let placeholder = res["placeholder"].as_str().expect("placeholder");
    assert!(placeholder.starts_with("lanyard-placeholder-gcp-"), "{res}");
    // Elsewhere: refused by lanyard, never reaching the peer.
    assert_eq!(res["elsewhere"], 403, "{res}");
    // Bypassing lanyard, the storage front refuses the placeholder.
    assert_eq!(res["bypassed"], 401, "{res}");
    assert!(
        res["bypassed_body"]
            .as_str()
            .is_some_and(|b| b.contains("Invalid Credentials")),
        "{res}"
    );

    // Every request reached the front at the real host name; all but the
    // bypass carried the service account's real token (the placeholder,
    // replaced by lanyard), and they covered a download, an upload and a list.
    let st = &o.storage;
    assert!(st.iter().all(|r| r["host"] == HOST), "{st:#?}");
    let (bypass, through): (Vec<&Value>, Vec<&Value>) =
        st.iter().partition(|r| r["bearer"] == "placeholder");
    assert_eq!(bypass.len(), 1, "{st:#?}");
    assert!(
        through.iter().all(|r| r["bearer"] == "issued-sa"),
        "{st:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r["method"] == "POST" && r["path"] == "/upload/storage/v1/b/ci-bucket/o"),
        "{st:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r["method"] == "GET"
                && r["path"] == "/download/storage/v1/b/ci-bucket/o/greeting"),
        "{st:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r["method"] == "GET" && r["path"] == "/storage/v1/b/ci-bucket/o"),
        "{st:#?}"
    );

    let lines: Vec<Value> = o
        .audit
        .lines()
        .map(json_of)
        .filter(|l| l.get("decision").is_some())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "injected" && l["credential"] == "gcs" && l["host"] == HOST),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["decision"] == "denied"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("placeholder Google token"))),
        "{lines:#?}"
    );

    // The child's environment holds no real token; nothing leaked.
    assert!(o.env.contains("GCE_METADATA_HOST="), "{}", o.env);
    assert!(!o.issued.is_empty());
    for t in &o.issued {
        assert_absent(&[out, err, &o.audit, &o.env], t, "a Google access token");
    }
    assert_absent(&[&o.env], placeholder, "a placeholder fetched later");
}
