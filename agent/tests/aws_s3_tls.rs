//! An S3 upload over lanyard's 8 MiB signing bound. Over TLS (an
//! intercepted https route to moto serving https, its certificate from a
//! test CA lanyard trusts through `[upstream] extra_ca`) the body goes as
//! `UNSIGNED-PAYLOAD` and arrives whole, and moto, with its checks on,
//! verified the signature. Over plain http the same upload is refused with
//! 413 and nothing reaches moto.

mod common;

use common::aws::{aws_venv, ci_role, Moto};
use common::*;
use serde_json::Value;

const ROLE: &str = "arn:aws:iam::123456789012:role/ci-deploy";
/// Over the 8 MiB bound lanyard hashes bodies up to.
const SIZE: usize = 9 * 1024 * 1024 + 17;

#[test]
fn an_s3_put_over_the_signing_bound_goes_unsigned_payload_over_tls_and_is_refused_over_http() {
    // The recording upstream is only here for its test CA and leaf
    // certificate (SAN 127.0.0.1), which moto then serves.
    let ca_source = Upstream::start(false);
    let ca = ca_source.ca.clone().expect("test CA");
    let (cert, key) = ca_source.leaf();
    let tls = Moto::start_tls(&cert, &key, &ca);
    tls.boto(
        &(ci_role(&["s3:PutObject", "s3:GetObject"])
            + "client('s3').create_bucket(Bucket='ci-bucket')\n"),
    );
    // One unsigned request left: lanyard's AssumeRoleWithWebIdentity.
    tls.auth_after(1);
    let plain = Moto::start();
    plain.boto("client('s3').create_bucket(Bucket='ci-bucket')\n");

    let issuer = Issuer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let audit = d.join("audit.jsonl");
    let text = format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\n\
         region = \"us-east-1\"\nsts_endpoint = \"{t}\"\nduration = \"15m\"\n\n\
         [[route]]\nname = \"tls\"\nurl = \"{t}/\"\ncredential = \"aws\"\naws_service = \"s3\"\naws_region = \"us-east-1\"\n\n\
         [[route]]\nname = \"plain\"\nurl = \"{p}/\"\ncredential = \"aws\"\naws_service = \"s3\"\naws_region = \"us-east-1\"\n\n\
         [upstream]\nextra_ca = \"{ca}\"\n\n[audit]\nfile = \"{audit}\"\n",
        t = tls.url,
        p = plain.url,
        ca = ca.display(),
        audit = audit.display(),
    );
    let config = write_config(d, &text).display().to_string();
    // Random bytes: a body that is not all one byte, so a cut or a
    // reordering shows in the hash.
    let body: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("big.bin"), &body).expect("body");
    let script = format!(
        "cd {d}; env > child.env\n\
         echo sent: $(sha256sum big.bin | cut -d' ' -f1)\n\
         aws s3api put-object --endpoint-url {t} --region us-east-1 --bucket ci-bucket --key big --body big.bin --output json\n\
         aws s3api get-object --endpoint-url {t} --region us-east-1 --bucket ci-bucket --key big got.bin --output json >/dev/null\n\
         echo tls-got: $(wc -c < got.bin) $(sha256sum got.bin | cut -d' ' -f1)\n\
         echo plain-cli: $(aws s3api put-object --endpoint-url {p} --region us-east-1 --bucket ci-bucket --key big --body big.bin 2>&1 | tr '\\n' ' ')\n\
         echo plain-curl: $(curl -s -o /dev/null -w '%{{http_code}}' -X PUT --data-binary @big.bin {p}/ci-bucket/big2)\n",
        d = d.display(),
        t = tls.url,
        p = plain.url,
    );
    let gha = issuer.gha_url();
    let home = d.display().to_string();
    let path = format!(
        "{}:{}",
        aws_venv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out, err) = lanyard(
        &["run", "--config", &config, "--", "sh", "-c", &script],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.bearer),
            ("HOME", &home),
            ("PATH", &path),
            ("LANYARD_LOG", "info"),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");

    // Over TLS: the whole object, byte for byte.
    let want = out
        .lines()
        .find_map(|l| l.strip_prefix("sent: "))
        .expect("the sent body's hash")
        .trim()
        .to_owned();
    assert_eq!(want.len(), 64, "{want}");
    assert!(
        out.contains(&format!("tls-got: {SIZE} {want}")),
        "{out}\n{err}"
    );
    // moto checked the signature on that PUT (its checks were on and
    // still are: keys it never issued are refused).
    tls.assert_checks_on();
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .map(json_of)
        .filter(|l| l.get("decision").is_some())
        .collect();
    let put = lines
        .iter()
        .find(|l| l["method"] == "PUT" && l["route"] == "tls")
        .unwrap_or_else(|| panic!("no PUT through the tls route: {lines:#?}"));
    assert_eq!(put["decision"], "signed", "{put}");
    assert_eq!(put["status"], 200, "{put}");
    assert!(
        put["bytes_in"].as_u64().unwrap_or(0) >= SIZE as u64
            || put["bytes_out"].as_u64().unwrap_or(0) >= SIZE as u64,
        "{put}"
    );

    // Over plain http: refused with 413 before anything was sent.
    let cli = out
        .lines()
        .find(|l| l.starts_with("plain-cli:"))
        .expect("plain-cli");
    assert!(cli.contains("413"), "{cli}");
    assert!(out.contains("plain-curl: 413"), "{out}");
    let plain_puts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["method"] == "PUT" && l["route"] == "plain")
        .collect();
    assert!(
        !plain_puts.is_empty() && plain_puts.iter().all(|l| l["status"] == 413),
        "{plain_puts:#?}"
    );
    let listed =
        plain.boto("print(client('s3').list_objects_v2(Bucket='ci-bucket').get('KeyCount', 0))\n");
    assert_eq!(listed.trim(), "0", "the plain moto received an object");

    // No real key or placeholder in lanyard's output or audit.
    let child = std::fs::read_to_string(d.join("child.env")).expect("env dump");
    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    for r in tls.assumed_roles() {
        for k in ["access_key_id", "secret_access_key", "session_token"] {
            let v = r[k].as_str().expect("key part");
            assert_absent(&[&out, &err, &audit_text, &child], v, "a real AWS key");
        }
    }
    for l in child.lines() {
        for p in [
            "AWS_ACCESS_KEY_ID=",
            "AWS_SECRET_ACCESS_KEY=",
            "AWS_SESSION_TOKEN=",
        ] {
            if let Some(v) = l.strip_prefix(p) {
                assert_absent(&[&err, &audit_text], v, "a placeholder");
            }
        }
    }
}
