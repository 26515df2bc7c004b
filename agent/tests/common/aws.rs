//! AWS peers: moto's server (real STS, IAM and Secrets Manager
//! behaviour, from PyPI `moto[server]`) and `peers/aws_sts.py` (an STS that
//! misbehaves on purpose).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

pub fn aws_venv() -> PathBuf {
    need(&peers().join("aws-venv/bin/python"));
    peers().join("aws-venv")
}

/// `moto_server` on a free loopback port. It cannot bind port 0 and report
/// it, so a port is picked first; a start that fails (the port was taken in
/// between) picks another. Up means: this process is alive and answered a
/// real moto request (`/moto-api/data.json`), so another listener on the
/// port cannot pass for it.
pub struct Moto {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
    /// The CA its certificate chains to, when it serves https.
    pub ca: Option<PathBuf>,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(None)
    }

    /// moto serving https with `cert`/`key` (chaining to `ca`).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Moto {
        Self::start_with(Some((cert, key, ca)))
    }

    fn start_with(tls: Option<(&Path, &Path, &Path)>) -> Moto {
        let bin = need(&aws_venv().join("bin/moto_server"));
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("moto.log");
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((cert, key, _)) = tls {
                cmd.arg("-s").arg("-c").arg(cert).arg("-k").arg(key);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("log"))
                .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("log"))
                .spawn()
                .expect("start moto_server");
            let mut proc = Proc::adopt("moto", child, log, dir);
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}");
            let ca = tls.map(|t| t.2.to_owned());
            let end = Instant::now() + READY_TIMEOUT;
            loop {
                if !proc.alive() {
                    eprintln!("moto: port {port} was taken before moto bound it; picking another");
                    break;
                }
                let (code, body) =
                    moto_call(&url, ca.as_deref(), "GET", "/moto-api/data.json", None);
                if code == 200 && serde_json::from_str::<Value>(&body).is_ok() && proc.alive() {
                    return Moto {
                        proc,
                        port,
                        url,
                        ca,
                    };
                }
                assert!(
                    Instant::now() < end,
                    "moto never answered on {port}; log:\n{}",
                    proc.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto could not bind a free port in 5 attempts");
    }

    /// moto's own record of the role sessions it issued (keys included):
    /// what the tests check never shows in lanyard's output.
    pub fn assumed_roles(&self) -> Vec<Value> {
        let (code, body) = moto_call(
            &self.url,
            self.ca.as_deref(),
            "GET",
            "/moto-api/data.json",
            None,
        );
        assert_eq!(code, 200, "{body}");
        json_of(&body)["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A moto API call, trusting `ca` for https: (status, body).
fn moto_call(
    url: &str,
    ca: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "text/plain")]
    } else {
        &[]
    };
    curl_ca(ca, method, &format!("{url}{path}"), headers, body)
}

/// `peers/aws_sts.py` in one of its modes.
pub struct AwsSts {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
}

impl AwsSts {
    pub fn start(mode: &str, args: &[&str]) -> AwsSts {
        let (proc, port, dir) = start_mode_peer("aws_sts.py", mode, args);
        AwsSts {
            proc,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn lines(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .collect()
    }

    /// `peers/aws_sts.py --mode moto`: forwards AssumeRoleWithWebIdentity
    /// to `moto` (signed with the front user's keys, see [`sts_front_user`])
    /// and answers with moto's real role session, its Expiration `ttl`
    /// seconds away.
    pub fn forwarding_to(moto: &Moto, front: &(String, String), ttl: u32) -> AwsSts {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(aws_venv().join("bin/python"));
        cmd.arg(root().join("agent/tests/peers/aws_sts.py"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--mode", "moto", "--ttl", &ttl.to_string()])
            .args(["--upstream", &moto.url])
            .args(["--front-key", &front.0, "--front-secret", &front.1]);
        let (proc, v) = spawn_ready("aws_sts moto", cmd);
        let port = v["port"].as_u64().expect("port") as u16;
        AwsSts {
            proc,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Each request's form (the token as its decoded claims).
    pub fn requests(&self) -> Vec<Value> {
        self.lines("requests.jsonl")
    }

    /// Every key set it handed out.
    pub fn issued(&self) -> Vec<Value> {
        self.lines("issued.jsonl")
    }
}

impl Moto {
    /// Runs a boto3 script against this moto (`endpoint` and `region` are
    /// set, `json` imported); panics with its output when it fails.
    pub fn boto(&self, script: &str) -> String {
        let py = aws_venv().join("bin/python");
        let full = format!(
            "import json, boto3\nendpoint = {url:?}\nregion = 'us-east-1'\n\
             def client(name):\n    return boto3.client(name, endpoint_url=endpoint, region_name=region)\n{script}",
            url = self.url
        );
        let mut cmd = Command::new(py);
        cmd.args(["-c", &full])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        if let Some(ca) = &self.ca {
            cmd.env("AWS_CA_BUNDLE", ca);
        }
        let out = cmd.output().expect("run boto3");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "boto3 script failed:\n{so}\n{se}");
        so
    }

    /// moto's checks are on: a call signed with keys it never issued is
    /// refused before any policy is looked at.
    pub fn assert_checks_on(&self) {
        let out = self.boto(
            "try:\n    client('secretsmanager').get_secret_value(SecretId='ci/db')\n    print('served')\n\
             except Exception as e:\n    print('refused', e)\n",
        );
        assert!(
            out.starts_with("refused")
                && (out.contains("InvalidClientTokenId") || out.contains("SignatureDoesNotMatch")),
            "moto's signature checks are off: {out}"
        );
        assert!(!out.contains("canary"), "{out}");
    }

    /// Turns moto's signature and IAM policy checks on after `free` more
    /// requests (`/moto-api/reset-auth`).
    pub fn auth_after(&self, free: u32) {
        let (code, body) = moto_call(
            &self.url,
            self.ca.as_deref(),
            "POST",
            "/moto-api/reset-auth",
            Some(&free.to_string()),
        );
        assert_eq!(code, 200, "{body}");
    }
}

/// A boto3 set-up snippet (for [`Moto::boto`]): role `ci-deploy`, trusting
/// the test issuer, allowed exactly `actions` on every resource.
pub fn ci_role(actions: &[&str]) -> String {
    format!(
        r#"
iam = client('iam')
trust = json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow',
    'Principal': {{'Federated': 'arn:aws:iam::123456789012:oidc-provider/issuer'}},
    'Action': 'sts:AssumeRoleWithWebIdentity'}}]}})
iam.create_role(RoleName='ci-deploy', AssumeRolePolicyDocument=trust)
iam.put_role_policy(RoleName='ci-deploy', PolicyName='ci', PolicyDocument=json.dumps({{
    'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Resource': '*', 'Action': {actions:?}}}]}}))
"#
    )
}

/// An IAM user allowed exactly `sts:AssumeRoleWithWebIdentity`: moto,
/// unlike real STS, checks that call's signature once its checks are on,
/// so a forwarding STS peer signs it with these keys `(id, secret)`.
/// Call before the checks are turned on.
pub fn sts_front_user(moto: &Moto) -> (String, String) {
    let out = moto.boto(
        r#"
iam = client('iam')
iam.create_user(UserName='sts-front')
iam.put_user_policy(UserName='sts-front', PolicyName='front', PolicyDocument=json.dumps({
    'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Resource': '*',
    'Action': 'sts:AssumeRoleWithWebIdentity'}]}))
k = iam.create_access_key(UserName='sts-front')['AccessKey']
print(k['AccessKeyId'] + ' ' + k['SecretAccessKey'])
"#,
    );
    let (id, secret) = out.trim().split_once(' ').expect("front keys");
    (id.to_owned(), secret.to_owned())
}

/// The role the AWS tests assume.
pub const ROLE: &str = "arn:aws:iam::123456789012:role/ci-deploy";

/// A job with one aws-web-identity credential, run as GitHub.
pub struct AwsJob {
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub config: String,
    pub state: String,
    pub audit: String,
}

/// A test that fails before its own `stop` must not leave a daemon behind
/// (it was started with `--watch-pid 0`, so nothing else ends it): `stop` is
/// idempotent, so calling it again after a test's own stop is harmless.
impl Drop for AwsJob {
    fn drop(&mut self) {
        if std::path::Path::new(&self.state).join("pid").exists() {
            let _ = self.lanyard(&["stop"]);
        }
    }
}

impl AwsJob {
    /// One aws-web-identity credential against `sts`, nothing routed.
    pub fn new(sts: &str, extra: &str) -> AwsJob {
        let issuer = Issuer::start();
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl").display().to_string();
        let text = format!(
            "[identity]\nsource = \"auto\"\n\n\
             [[credential]]\nname = \"aws\"\nexchange = \"aws-web-identity\"\nrole_arn = \"{ROLE}\"\n\
             region = \"us-east-1\"\nsts_endpoint = \"{sts}\"\nduration = \"15m\"\n{extra}\n\
             [audit]\nfile = \"{audit}\"\n"
        );
        let config = write_config(dir.path(), &text).display().to_string();
        let state = dir.path().join("state").display().to_string();
        AwsJob {
            dir,
            issuer,
            config,
            state,
            audit,
        }
    }

    pub fn lanyard(&self, args: &[&str]) -> (i32, String, String) {
        let home = self.dir.path().display().to_string();
        let gha = self.issuer.gha_url();
        lanyard_in(
            Some(self.dir.path()),
            args,
            &[
                ("GITHUB_ACTIONS", "true"),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.issuer.bearer),
                ("LANYARD_STATE_DIR", &self.state),
                ("HOME", &home),
                ("LANYARD_LOG", "info"),
            ],
        )
    }

    pub fn start(&self) -> (i32, String, String) {
        self.lanyard(&["start", "--config", &self.config, "--watch-pid", "0"])
    }

    pub fn status_json(&self) -> Value {
        let (code, out, err) = self.lanyard(&["status", "--json"]);
        assert_eq!(code, 0, "{out}\n{err}");
        json_of(out.trim())
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

/// Each key part of each issued set is absent from every text.
pub fn assert_keys_absent(texts: &[&str], issued: &[Value]) {
    assert!(!issued.is_empty(), "no keys were issued");
    for keys in issued {
        for (part, key) in [
            ("access key id", "access_key_id"),
            ("secret access key", "secret_access_key"),
            ("session token", "session_token"),
            ("access key id", "AccessKeyId"),
            ("secret access key", "SecretAccessKey"),
            ("session token", "SessionToken"),
        ] {
            if let Some(v) = keys[key].as_str() {
                assert_absent(texts, v, part);
            }
        }
    }
    for t in texts {
        assert!(!t.contains("eyJ"), "a JWT leaked:\n{t}");
    }
}

/// moto with two roles, `ci-deploy` allowed GetSecretValue and
/// `ci-nosecrets` with no policy, one secret, and its signature and policy
/// checks on after the one unsigned STS call. (moto checks Secrets Manager
/// calls against resource `*`, so the denial is by role.)
pub fn moto_with_secrets(db: &str) -> Moto {
    let moto = Moto::start();
    let script = r#"
iam = client('iam')
trust = json.dumps({
    'Version': '2012-10-17',
    'Statement': [{'Effect': 'Allow', 'Principal': {'Federated': 'arn:aws:iam::123456789012:oidc-provider/issuer'},
                   'Action': 'sts:AssumeRoleWithWebIdentity'}]})
iam.create_role(RoleName='ci-deploy', AssumeRolePolicyDocument=trust)
iam.create_role(RoleName='ci-nosecrets', AssumeRolePolicyDocument=trust)
iam.put_role_policy(RoleName='ci-deploy', PolicyName='read-secrets', PolicyDocument=json.dumps({
    'Version': '2012-10-17',
    'Statement': [{'Effect': 'Allow', 'Action': 'secretsmanager:GetSecretValue', 'Resource': '*'}]}))
client('secretsmanager').create_secret(Name='ci/db', SecretString=json.dumps({'user': 'app', 'password': DB}))
"#;
    moto.boto(&script.replace("DB", &format!("{db:?}")));
    moto.auth_after(1);
    moto
}
