//! SigV4 in the proxy: unmodified AWS clients (the aws CLI, boto3, the
//! JavaScript SDK v3) with lanyard's placeholder keys, against moto with
//! its signature and IAM checks on. Each call works through lanyard, which
//! signs it afresh with the role session's keys, and fails without it. The
//! hostile cases first: placeholders sent anywhere else, and what cannot
//! be re-signed (presigned URLs, aws-chunked uploads, bodies over the
//! bound), are refused before anything reaches the upstream.

mod common;

use std::process::Command;

use common::aws::{aws_venv, ci_role, Moto};
use common::*;
use serde_json::Value;

const ROLE: &str = "arn:aws:iam::123456789012:role/ci-deploy";
const SECRET: &str = "db-password-canary-7c21";
const OBJECT: &str = "object-body-canary-91f3";

/// moto with role `ci-deploy` allowed exactly the calls the tests make,
/// a bucket and a secret; checks on after the one unsigned STS call.
fn moto_for_clients() -> Moto {
    let moto = Moto::start();
    let script = ci_role(&[
        "sts:GetCallerIdentity",
        "s3:PutObject",
        "s3:GetObject",
        "secretsmanager:GetSecretValue",
    ]) + r#"
client('s3').create_bucket(Bucket='ci-bucket')
client('secretsmanager').create_secret(Name='ci/db', SecretString=SECRET)
"#;
    moto.boto(&script.replace("SECRET", &format!("{SECRET:?}")));
    moto.auth_after(1);
    moto
}

/// A GitHub job whose config has the aws credential (STS at moto) and an
/// AWS route to `route_url` named `moto`, plus `extra` config.
struct AwsJob {
    issuer: Issuer,
    dir: tempfile::TempDir,
    config: String,
    audit: std::path::PathBuf,
}

impl AwsJob {
    fn new(moto: &Moto, route: &str) -> AwsJob {
        let issuer = Issuer::start();
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl");
        let text = format!(
            "[identity]\nsource = \"auto\"\n\n\
             [[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\n\
             region = \"us-east-1\"\nsts_endpoint = \"{m}\"\nduration = \"15m\"\n\n\
             {route}\n[audit]\nfile = \"{audit}\"\n",
            m = moto.url,
            audit = audit.display(),
        );
        let config = write_config(dir.path(), &text).display().to_string();
        AwsJob {
            issuer,
            dir,
            config,
            audit,
        }
    }

    /// `lanyard run -- sh -c script`, with the aws venv and node on PATH.
    fn run(&self, script: &str) -> (i32, String, String) {
        let gha = self.issuer.gha_url();
        let home = self.dir.path().display().to_string();
        let path = format!(
            "{}:{}",
            aws_venv().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let js = root().join("target/peers/aws-js").display().to_string();
        lanyard(
            &["run", "--config", &self.config, "--", "sh", "-c", script],
            &[
                ("GITHUB_ACTIONS", "true"),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer),
                ("HOME", &home),
                ("PATH", &path),
                ("AWS_JS", &js),
            ],
        )
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .filter(|l| l.get("decision").is_some())
            .collect()
    }

    fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

/// The role session keys moto issued, each part.
fn real_keys(moto: &Moto) -> Vec<String> {
    let roles = moto.assumed_roles();
    assert!(!roles.is_empty(), "moto issued no keys");
    roles
        .iter()
        .flat_map(|r| {
            ["access_key_id", "secret_access_key", "session_token"]
                .iter()
                .filter_map(|k| r[*k].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_real_keys_absent(moto: &Moto, texts: &[&str]) {
    for k in real_keys(moto) {
        assert_absent(texts, &k, "a real AWS key");
    }
}

/// `KEY=value` lines of `env` output.
fn env_of(dump: &str) -> std::collections::HashMap<String, String> {
    dump.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

const JS: &str = r#"
const { STSClient, GetCallerIdentityCommand } = require(process.env.AWS_JS + '/node_modules/@aws-sdk/client-sts');
new STSClient({ region: 'us-east-1' }).send(new GetCallerIdentityCommand({}))
  .then(r => console.log('js-arn:' + r.Arn))
  .catch(e => { console.log('js-error:' + e.name + ': ' + e.message); process.exit(3); });
"#;

const BOTO: &str = r#"
import boto3, os, sys
e = os.environ['M']
sts = boto3.client('sts', endpoint_url=e, region_name='us-east-1')
print('boto-arn:' + sts.get_caller_identity()['Arn'])
s3 = boto3.client('s3', endpoint_url=e, region_name='us-east-1')
s3.put_object(Bucket='ci-bucket', Key='boto', Body=b'boto-' + os.environ['O'].encode())
print('boto-object:' + s3.get_object(Bucket='ci-bucket', Key='boto')['Body'].read().decode())
sm = boto3.client('secretsmanager', endpoint_url=e, region_name='us-east-1')
print('boto-secret:' + sm.get_secret_value(SecretId='ci/db')['SecretString'])
"#;

#[test]
fn unmodified_aws_clients_work_through_lanyard_and_their_placeholder_keys_fail_without_it() {
    let moto = moto_for_clients();
    let route = format!(
        "[[route]]\nname = \"moto\"\nurl = \"{}/\"\ncredential = \"aws\"\naws_region = \"us-east-1\"\n",
        moto.url
    );
    let job = AwsJob::new(&moto, &route);
    let dir = job.dir.path();
    std::fs::write(dir.join("body.txt"), OBJECT).expect("body");
    std::fs::write(dir.join("boto.py"), BOTO).expect("boto");
    std::fs::write(dir.join("sts.js"), JS).expect("js");
    let script = format!(
        "set -e; cd {d}; M={m}; export M O={OBJECT}\n\
         env > child.env\n\
         aws sts get-caller-identity --endpoint-url $M --region us-east-1 --output text --query Arn | sed 's/^/cli-arn:/'\n\
         aws s3api put-object --endpoint-url $M --region us-east-1 --bucket ci-bucket --key cli --body body.txt >/dev/null\n\
         aws s3api get-object --endpoint-url $M --region us-east-1 --bucket ci-bucket --key cli got.txt >/dev/null; echo cli-object:$(cat got.txt)\n\
         aws secretsmanager get-secret-value --endpoint-url $M --region us-east-1 --secret-id ci/db --output text --query SecretString | sed 's/^/cli-secret:/'\n\
         python boto.py\n\
         AWS_ENDPOINT_URL=$LANYARD_URL_MOTO node sts.js\n\
         aws s3api delete-object --endpoint-url $M --region us-east-1 --bucket ci-bucket --key cli 2>&1 || echo cli-delete-refused\n",
        d = dir.display(),
        m = moto.url,
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let assumed = "arn:aws:sts::123456789012:assumed-role/ci-deploy/lanyard-acme.app-4242";
    for want in [
        format!("cli-arn:{assumed}"),
        format!("cli-object:{OBJECT}"),
        format!("cli-secret:{SECRET}"),
        format!("boto-arn:{assumed}"),
        format!("boto-object:boto-{OBJECT}"),
        format!("boto-secret:{SECRET}"),
        format!("js-arn:{assumed}"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}\n{err}");
    }
    // The role may not delete: AWS's own 403, through lanyard.
    assert!(
        out.contains("AccessDenied") && out.contains("cli-delete-refused"),
        "{out}"
    );

    // The child saw placeholders only, and every call was signed.
    let child = std::fs::read_to_string(dir.join("child.env")).expect("env dump");
    let env = env_of(&child);
    let id = env["AWS_ACCESS_KEY_ID"].clone();
    assert!(id.starts_with("ASIALANYARD") && id.len() == 20, "{id}");
    assert!(env["AWS_SESSION_TOKEN"].starts_with("lanyard-placeholder-"));
    assert_eq!(env["AWS_REQUEST_CHECKSUM_CALCULATION"], "when_required");
    assert_eq!(env["AWS_CA_BUNDLE"], env["SSL_CERT_FILE"]);
    let audit = job.audit();
    let signed: Vec<&Value> = audit.iter().filter(|l| l["decision"] == "signed").collect();
    // cli: sts, put, get, secret, delete; boto: sts, put, get, secret; js: sts.
    assert!(signed.len() >= 10, "{audit:#?}");
    assert!(signed
        .iter()
        .all(|l| l["route"] == "moto" && l["credential"] == "aws"));
    let text = job.audit_text();
    assert_real_keys_absent(&moto, &[&out, &err, &text, &child]);
    for p in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert_absent(&[&err, &text], &env[p], "a placeholder");
    }

    // Without lanyard, the same clients with the same placeholder keys are
    // refused by moto's signature check.
    let bare = |prog: &str, args: &[&str], extra: &[(&str, &str)]| {
        let mut c = Command::new(prog);
        c.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("AWS_JS", root().join("target/peers/aws-js"));
        for p in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            c.env(p, &env[p]);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        let o = c.output().expect(prog);
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let aws = aws_venv().join("bin/aws").display().to_string();
    let python = aws_venv().join("bin/python").display().to_string();
    let m = moto.url.as_str();
    for (what, (ok, text)) in [
        (
            "aws sts",
            bare(
                &aws,
                &[
                    "sts",
                    "get-caller-identity",
                    "--endpoint-url",
                    m,
                    "--region",
                    "us-east-1",
                ],
                &[],
            ),
        ),
        (
            "aws secretsmanager",
            bare(
                &aws,
                &[
                    "secretsmanager",
                    "get-secret-value",
                    "--endpoint-url",
                    m,
                    "--region",
                    "us-east-1",
                    "--secret-id",
                    "ci/db",
                ],
                &[],
            ),
        ),
        (
            "aws s3api",
            bare(
                &aws,
                &[
                    "s3api",
                    "get-object",
                    "--endpoint-url",
                    m,
                    "--region",
                    "us-east-1",
                    "--bucket",
                    "ci-bucket",
                    "--key",
                    "cli",
                    "x.txt",
                ],
                &[],
            ),
        ),
        (
            "boto3",
            bare(&python, &["boto.py"], &[("M", m), ("O", OBJECT)]),
        ),
        ("js", bare("node", &["sts.js"], &[("AWS_ENDPOINT_URL", m)])),
    ] {
        assert!(
            !ok,
            "{what} worked with placeholder keys and no lanyard:\n{text}"
        );
        assert!(
            [
                "InvalidClientTokenId",
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "UnrecognizedClientException"
            ]
            .iter()
            .any(|c| text.contains(c)),
            "{what}: not a signature refusal:\n{text}"
        );
        assert!(
            !text.contains(SECRET) && !text.contains(OBJECT),
            "{what}: {text}"
        );
    }
}

/// `curl` through lanyard, printing `== name`, the status line and the rule.
const CURL_FN: &str = "c() { echo \"== $1\"; shift; curl -s -o /dev/null -D - \"$@\" | tr -d '\\r' | grep -Ei '^(HTTP/|x-lanyard-rule)'; }\n";

/// The answer to the case named `name` in the script's output.
fn case<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no case {name} in:\n{out}"));
    let rest = &out[start + name.len() + 4..];
    &rest[..rest.find("== ").unwrap_or(rest.len())]
}

#[test]
fn placeholders_sent_elsewhere_and_requests_that_cannot_be_re_signed_reach_no_upstream() {
    // No auth checks needed: this is about what leaves lanyard.
    let moto = Moto::start();
    let aws_up = Upstream::start(true);
    let elsewhere = Upstream::start(true);
    let route = format!(
        "[[route]]\nname = \"up\"\nurl = \"http://127.0.0.1:{}/\"\ncredential = \"aws\"\naws_service = \"s3\"\naws_region = \"us-east-1\"\n",
        aws_up.port
    );
    let job = AwsJob::new(&moto, &route);
    let dir = job.dir.path();
    std::fs::write(dir.join("small"), "abc").expect("small");
    std::fs::write(dir.join("big"), vec![b'x'; 9 * 1024 * 1024]).expect("big");
    let script = format!(
        "cd {d}; U=http://127.0.0.1:{u}; E=http://127.0.0.1:{e}\n{CURL_FN}\
         c elsewhere-auth -H \"Authorization: AWS4-HMAC-SHA256 Credential=$AWS_ACCESS_KEY_ID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\" $E/a\n\
         c elsewhere-token -H \"X-Amz-Security-Token: $AWS_SESSION_TOKEN\" $E/b\n\
         c elsewhere-query \"$E/c?X-Amz-Credential=$AWS_ACCESS_KEY_ID%2F20260101\"\n\
         c elsewhere-plain $E/ok\n\
         echo '== elsewhere-cli'; aws sts get-caller-identity --endpoint-url $E --region us-east-1 2>&1 | head -c 600; echo\n\
         c presigned \"$U/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=$AWS_ACCESS_KEY_ID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00\"\n\
         c streaming -X PUT -H 'x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD' -H 'content-encoding: aws-chunked' --data-binary @small $U/b/s\n\
         c big -X PUT --data-binary @big $U/b/big\n\
         c big-chunked -X PUT -H 'Transfer-Encoding: chunked' --data-binary @big $U/b/big2\n\
         c host-disagrees -H 'Host: 127.0.0.1:1' $U/b/h\n\
         c signed -X PUT -H \"Authorization: AWS4-HMAC-SHA256 Credential=$AWS_ACCESS_KEY_ID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\" -H 'X-Amz-Date: 20000101T000000Z' --data-binary @small $U/b/ok\n\
         echo '== end'\n",
        d = dir.display(),
        u = aws_up.port,
        e = elsewhere.port,
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let placeholder_rule =
        "x-lanyard-rule: the request carries the job's placeholder AWS credentials";
    for name in ["elsewhere-auth", "elsewhere-token", "elsewhere-query"] {
        let a = case(&out, name);
        assert!(
            a.contains(" 403") && a.contains(placeholder_rule),
            "{name}: {a}"
        );
    }
    assert!(case(&out, "elsewhere-plain").contains(" 200"), "{out}");
    assert!(case(&out, "elsewhere-cli").contains("403"), "{out}");
    let p = case(&out, "presigned");
    assert!(
        p.contains(" 400") && p.contains("presigned URLs made in the job are signed with lanyard's placeholder keys and cannot work"),
        "{p}"
    );
    let s = case(&out, "streaming");
    assert!(
        s.contains(" 400") && s.contains("AWS_REQUEST_CHECKSUM_CALCULATION=when_required"),
        "{s}"
    );
    for name in ["big", "big-chunked"] {
        let b = case(&out, name);
        assert!(
            b.contains(" 413") && b.contains("over 8 MiB"),
            "{name}: {b}"
        );
    }
    assert!(case(&out, "host-disagrees").contains(" 400"), "{out}");
    assert!(case(&out, "signed").contains(" 200"), "{out}");

    // The AWS upstream saw one request: the signed one, with the real key
    // id, a fresh date and the body's hash; nothing half-signed.
    let recs = aws_up.records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["path"], "/b/ok");
    let roles = moto.assumed_roles();
    let id = roles[0]["access_key_id"].as_str().expect("key id");
    let auth = header_values(&recs[0], "authorization");
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(
        auth[0].starts_with(&format!("AWS4-HMAC-SHA256 Credential={id}/"))
            && auth[0].contains("/us-east-1/s3/aws4_request"),
        "{auth:?}"
    );
    assert_ne!(header_values(&recs[0], "x-amz-date"), ["20000101T000000Z"]);
    assert_eq!(
        header_values(&recs[0], "x-amz-content-sha256"),
        ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
    );
    // The other host saw only the plain request and the refused CLI call
    // never left: no placeholder and no real key reached it.
    let other = elsewhere.raw_records();
    assert_eq!(elsewhere.records().len(), 1, "{other}");
    let env_dump = other.clone();
    assert!(!env_dump.contains("AWS4-HMAC-SHA256"), "{other}");
    let text = job.audit_text();
    assert_real_keys_absent(&moto, &[&out, &err, &text, &other]);
    let audit = job.audit();
    let denied = audit
        .iter()
        .filter(|l| {
            l["decision"] == "denied"
                && l["reason"].as_str().is_some_and(|r| {
                    r.starts_with("the request carries the job's placeholder AWS credentials")
                })
        })
        .count();
    assert_eq!(denied, 4, "{audit:#?}");
    assert_eq!(
        audit.iter().filter(|l| l["decision"] == "signed").count(),
        1,
        "{audit:#?}"
    );
}

#[test]
fn doctor_on_the_github_aws_example_says_routes_sign_and_presigned_urls_will_not_work() {
    let moto = Moto::start();
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let text = std::fs::read_to_string(root().join("examples/github-aws.toml")).expect("example");
    let text = text.replace(
        "region = \"eu-west-3\"\n",
        &format!("region = \"eu-west-3\"\nsts_endpoint = \"{}\"\n", moto.url),
    );
    let text = text.replace(
        "lanyard-audit.jsonl",
        &dir.path().join("a.jsonl").display().to_string(),
    );
    let config = write_config(dir.path(), &text).display().to_string();
    let gha = issuer.gha_url();
    let home = dir.path().display().to_string();
    let (code, out, err) = lanyard(
        &["doctor", "--config", &config],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.bearer),
            ("HOME", &home),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        "https://*.amazonaws.com/ → aws",
        "signs each request with SigV4 (AWS); the job gets placeholder AWS keys",
        "note: presigned URLs made in the job will not work",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_real_keys_absent(&moto, &[&out, &err]);
}
