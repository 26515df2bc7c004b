//! Keycloak (the Quarkus distribution that `scripts/install-peers.sh`
//! installs and builds) as the real federation server: one instance per
//! test binary, shared through a `OnceLock`, and one realm per test whose
//! identity provider is that test's own CI issuer.
//!
//! Keycloak takes tens of seconds to start on two cores, so it is started
//! once. A static is never dropped, so the server is not stopped by a
//! `Drop`: it runs under `sh`, which waits on a pipe from this process and
//! kills Keycloak by PID when the pipe closes (when the test binary exits,
//! however it exits).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

pub const KEYCLOAK_VERSION: &str = "26.5.6";
/// The identity provider's alias in each realm.
pub const IDP: &str = "ci";
/// The client that authenticates with the CI token itself (federated JWT).
pub const FEDERATED_CLIENT: &str = "lanyard-ci";
/// A confidential client for the token exchange and the JWT authorization grant.
pub const CLIENT: &str = "lanyard-kc";
pub const CLIENT_SECRET: &str = "kc-client-secret-canary-3d91";
/// The subject GitHub tokens from `issuer.py` carry.
pub const GITHUB_SUB: &str = "repo:acme/app:ref:refs/heads/main";

/// Why: Keycloak 26.5 took 25 to 60 s to become ready on this 2-core
/// machine while others built; past three minutes it is broken, not slow.
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Keycloak {
    pub url: String,
    /// kc.sh's PID (its java is its child).
    pub pid: u32,
    admin_password: String,
    log: PathBuf,
    /// Closing it (process exit) makes the `sh` guard kill Keycloak.
    _guard: Mutex<ChildStdin>,
    /// The `sh` guard, reaped by init once this process is gone.
    _sh: Mutex<Child>,
    _dir: tempfile::TempDir,
}

static SHARED: OnceLock<Keycloak> = OnceLock::new();

/// The test binary's Keycloak, started on first use.
pub fn keycloak() -> &'static Keycloak {
    SHARED.get_or_init(Keycloak::start)
}

pub fn keycloak_home() -> PathBuf {
    need(&peers().join(format!("keycloak-{KEYCLOAK_VERSION}/bin/kc.sh")));
    peers().join(format!("keycloak-{KEYCLOAK_VERSION}"))
}

impl Keycloak {
    fn start() -> Keycloak {
        let home = keycloak_home();
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("keycloak.log");
        let (http, mgmt) = (free_port(), free_port());
        let admin_password = format!("admin-{}-{}", std::process::id(), free_port());
        let t0 = Instant::now();
        // `$!` is kc.sh's PID; kc.sh passes SIGTERM on to its java and
        // waits for it. Keycloak's output goes to the log; the pipe
        // carries only that PID. The temp
        // dir (never dropped: the value is static) goes with it.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "\"$@\" </dev/null >&2 & kc=$!; echo $kc; read -r _; kill $kc; wait $kc; rm -rf \"$KC_TEST_DIR\"",
            )
            .arg("sh")
            .arg(home.join("bin/kc.sh"))
            .args([
                "start",
                "--optimized",
                "--cache=local",
                "--http-enabled=true",
                "--hostname-strict=false",
                "--http-host=127.0.0.1",
                &format!("--http-port={http}"),
                &format!("--http-management-port={mgmt}"),
            ])
            .env("KC_TEST_DIR", dir.path())
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", &admin_password)
            // Its transaction log and temp files go to the test's temp dir, not the install.
            .env(
                "JAVA_OPTS_APPEND",
                format!(
                    "-Dquarkus.transaction-manager.object-store.directory={d}/tx -Djava.io.tmpdir={d}",
                    d = dir.path().display()
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start keycloak");
        let mut pid = String::new();
        let mut out = child.stdout.take().expect("stdout");
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            pid.push(b[0] as char);
        }
        let pid: u32 = pid.trim().parse().expect("keycloak pid");
        let kc = Keycloak {
            url: format!("http://127.0.0.1:{http}"),
            pid,
            admin_password,
            log,
            _guard: Mutex::new(child.stdin.take().expect("stdin")),
            _sh: Mutex::new(child),
            _dir: dir,
        };
        // Ready means Keycloak's own readiness check says UP (database and
        // realms loaded), not merely a listening port.
        let ready = format!("http://127.0.0.1:{mgmt}/health/ready");
        loop {
            let (code, body) = curl("GET", &ready, &[], None);
            if code == 200 && body.contains("UP") {
                break;
            }
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            assert!(
                alive && t0.elapsed() < START_TIMEOUT,
                "Keycloak {} (pid {pid}) not ready after {:?}; log:\n{}",
                if alive {
                    "is running but"
                } else {
                    "exited and is"
                },
                t0.elapsed(),
                kc.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("keycloak: ready in {:?} at {}", t0.elapsed(), kc.url);
        kc
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A fresh admin token (the master realm's tokens live 60 s).
    fn admin_token(&self) -> String {
        let (code, out) = curl(
            "POST",
            &format!("{}/realms/master/protocol/openid-connect/token", self.url),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "grant_type=password&client_id=admin-cli&username=admin&password={}",
                self.admin_password
            )),
        );
        assert_eq!(code, 200, "admin login: {out}");
        json_of(&out)["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// One admin REST call; panics unless the status is 2xx.
    pub fn admin(&self, method: &str, path: &str, body: Value) -> String {
        let auth = format!("Bearer {}", self.admin_token());
        let text = body.to_string();
        let (code, out) = curl(
            method,
            &format!("{}/admin{path}", self.url),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            (!body.is_null()).then_some(text.as_str()),
        );
        assert!((200..300).contains(&code), "{method} {path}: {code} {out}");
        out
    }

    /// A new realm that trusts `issuer` (a test's `issuer.py`) as the
    /// identity provider `ci`, with the clients the tests use. The
    /// federated client accepts CI tokens whose `sub` is `subject`.
    pub fn realm(&self, issuer: &str, subject: &str) -> Realm {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.admin("POST", "/realms", json!({"realm": name, "enabled": true}));
        self.admin(
            "POST",
            &format!("/realms/{name}/identity-provider/instances"),
            json!({
                "alias": IDP, "providerId": "oidc", "enabled": true,
                "config": {
                    "issuer": issuer,
                    "useJwksUrl": "true", "jwksUrl": format!("{issuer}/jwks.json"),
                    "validateSignature": "true",
                    // The broker login endpoints are never used here, but the provider needs them.
                    "authorizationUrl": format!("{issuer}/authorize"),
                    "tokenUrl": format!("{issuer}/token"),
                    "clientId": "keycloak", "clientSecret": "unused", "clientAuthMethod": "client_secret_post",
                    // Federated client authentication (client-auth-federated).
                    "supportsClientAssertions": "true",
                    // A CI token is reused for as long as it lives (GitLab's cannot be re-minted).
                    "supportsClientAssertionReuse": "true",
                    // The JWT authorization grant (jwt-authorization-grant).
                    "jwtAuthorizationGrantEnabled": "true",
                    "jwtAuthorizationGrantAssertionReuseAllowed": "true",
                    // External-to-internal token exchange (v2) validates through these two.
                    "tokenIntrospectionUrl": format!("{issuer}/introspect"),
                    "userInfoUrl": format!("{issuer}/userinfo"),
                    "disableTypeClaimCheck": "true",
                    "syncMode": "IMPORT",
                }
            }),
        );
        self.admin(
            "POST",
            &format!("/realms/{name}/clients"),
            json!({
                "clientId": FEDERATED_CLIENT, "enabled": true, "publicClient": false,
                "serviceAccountsEnabled": true, "standardFlowEnabled": false,
                "clientAuthenticatorType": "federated-jwt",
                "attributes": {"jwt.credential.issuer": IDP, "jwt.credential.sub": subject},
            }),
        );
        self.admin(
            "POST",
            &format!("/realms/{name}/clients"),
            json!({
                "clientId": CLIENT, "enabled": true, "publicClient": false,
                "secret": CLIENT_SECRET, "standardFlowEnabled": false,
                "attributes": {
                    "standard.token.exchange.enabled": "true",
                    "oauth2.jwt.authorization.grant.enabled": "true",
                    "oauth2.jwt.authorization.grant.idp": IDP,
                },
            }),
        );
        Realm {
            issuer: format!("{}/realms/{name}", self.url),
            name,
        }
    }

    /// Links a realm user to the CI identity `subject`, as the JWT
    /// authorization grant needs (it maps tokens to existing users only).
    /// Returns the username.
    pub fn link_user(&self, realm: &Realm, subject: &str) -> String {
        let username = subject.replace([':', '/'], "-");
        self.admin(
            "POST",
            &format!("/realms/{}/users", realm.name),
            json!({"username": username, "enabled": true}),
        );
        let out = self.admin(
            "GET",
            &format!(
                "/realms/{}/users?exact=true&username={username}",
                realm.name
            ),
            Value::Null,
        );
        let id = json_of(&out)[0]["id"].as_str().expect("user id").to_owned();
        self.admin(
            "POST",
            &format!("/realms/{}/users/{id}/federated-identity/{IDP}", realm.name),
            json!({"identityProvider": IDP, "userId": subject, "userName": username}),
        );
        username
    }

    /// Keycloak's own verdict on a token (RFC 7662 introspection, with the
    /// confidential client's credentials).
    pub fn introspect(&self, realm: &Realm, token: &str) -> Value {
        let (code, out) = curl(
            "POST",
            &format!("{}/protocol/openid-connect/token/introspect", realm.issuer),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "client_id={CLIENT}&client_secret={CLIENT_SECRET}&token={token}"
            )),
        );
        assert_eq!(code, 200, "introspect: {out}");
        json_of(&out)
    }
}

/// The claims of a token whose RS256 signature verifies against the
/// realm's JWKS (PyJWT), with `iss` the realm; panics otherwise.
pub fn verify_jwt(realm: &Realm, token: &str) -> Value {
    let script = "import json, sys, jwt\n\
        realm, token = sys.argv[1], sys.stdin.read().strip()\n\
        key = jwt.PyJWKClient(realm + '/protocol/openid-connect/certs').get_signing_key_from_jwt(token)\n\
        print(json.dumps(jwt.decode(token, key.key, algorithms=['RS256'], issuer=realm, options={'verify_aud': False})))\n";
    let mut child = Command::new(python())
        .args(["-c", script, &realm.issuer])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(token.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("verify");
    assert!(
        out.status.success(),
        "the token does not verify against {}: {}",
        realm.issuer,
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&String::from_utf8_lossy(&out.stdout))
}

pub struct Realm {
    pub name: String,
    /// `<keycloak>/realms/<name>`: the audience federated client
    /// assertions must carry.
    pub issuer: String,
}

impl Realm {
    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer)
    }
}
