//! OpenBao in dev mode: a real Vault-compatible server.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

pub struct Bao {
    pub proc: Proc,
    pub addr: String,
}

pub const BAO_AUDIENCE: &str = "https://bao.test";

impl Bao {
    /// `bao server -dev` on a port P where P+1 is free too (bao binds both).
    pub fn start() -> Bao {
        for _ in 0..10 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind");
                let p = l.local_addr().expect("addr").port();
                if p == u16::MAX || TcpListener::bind(("127.0.0.1", p + 1)).is_err() {
                    continue;
                }
                p
            };
            let dir = tempfile::tempdir().expect("tempdir");
            let log = dir.path().join("bao.log");
            let child = Command::new(bao_bin())
                .args([
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    "-dev-root-token-id=root",
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("log"))
                .stderr(std::fs::File::create(dir.path().join("bao.err")).expect("log"))
                .spawn()
                .expect("start bao");
            let mut proc = Proc {
                name: "openbao".into(),
                child,
                log,
                _dir: dir,
            };
            let addr = format!("http://127.0.0.1:{port}");
            // Readiness: the health endpoint, bounded; an early exit (port
            // taken between our check and bao's bind) retries on a new port.
            let deadline = std::time::Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                if curl("GET", &format!("{addr}/v1/sys/health"), &[], None).0 == 200 {
                    return Bao { proc, addr };
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "openbao not healthy in {READY_TIMEOUT:?}:\n{}",
                    proc.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start openbao on a free port pair");
    }

    pub fn api(&self, method: &str, path: &str, body: Option<Value>, token: &str) -> (u16, String) {
        let b = body.map(|b| b.to_string());
        curl(
            method,
            &format!("{}/v1/{path}", self.addr),
            &[
                ("x-vault-token", token),
                ("content-type", "application/json"),
            ],
            b.as_deref(),
        )
    }

    fn ok(&self, method: &str, path: &str, body: Value) {
        let (code, out) = self.api(method, path, Some(body), "root");
        assert!((200..300).contains(&code), "{method} {path}: {code} {out}");
    }

    /// JWT auth against the issuer, a role bound to repository acme/app, a
    /// policy that reads secret/data/ci/*, and the KV secret.
    pub fn setup_jwt(&self, issuer: &str, ttl: &str, max_ttl: &str, kv_value: &str) {
        self.ok("POST", "sys/auth/jwt", json!({"type": "jwt"}));
        self.ok(
            "POST",
            "auth/jwt/config",
            json!({"oidc_discovery_url": issuer, "bound_issuer": issuer}),
        );
        self.ok(
            "PUT",
            "sys/policies/acl/ci-read",
            json!({"policy": "path \"secret/data/ci/*\" { capabilities = [\"read\"] }"}),
        );
        self.ok(
            "POST",
            "auth/jwt/role/ci",
            json!({
                "role_type": "jwt", "user_claim": "sub", "bound_audiences": [BAO_AUDIENCE],
                "bound_claims": {"repository": "acme/app"}, "token_policies": ["ci-read"],
                "token_ttl": ttl, "token_max_ttl": max_ttl,
            }),
        );
        self.ok(
            "POST",
            "secret/data/ci/stripe",
            json!({"data": {"api_key": kv_value}}),
        );
    }
}
