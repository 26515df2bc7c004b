//! The Tyk peer (agent/tests/peers/tyk.py; the real gateway could not be
//! built here, see agent/tests/peers/README.md): a tyk.conf with `secret`,
//! file-based API definitions and policies in a temp dir, on an ephemeral
//! loopback port. Stopped by PID when dropped (Proc).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use super::{python, root, spawn_ready, Proc};

pub struct Tyk {
    pub proc: Proc,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Tyk {
    /// `apis`: Classic API definitions; `policies`: id → policy.
    pub fn start(secret: &str, apis: &[Value], policies: Value) -> Tyk {
        let dir = tempfile::tempdir().expect("tmp");
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).expect("apps");
        for a in apis {
            let id = a["api_id"].as_str().expect("api_id");
            std::fs::write(apps.join(format!("{id}.json")), a.to_string()).expect("api");
        }
        let pol = dir.path().join("policies.json");
        std::fs::write(&pol, policies.to_string()).expect("policies");
        let conf = dir.path().join("tyk.conf");
        std::fs::write(
            &conf,
            json!({
                "listen_address": "127.0.0.1", "listen_port": 0, "secret": secret,
                "app_path": apps, "use_db_app_configs": false,
                "policies": {"policy_source": "file", "policy_path": pol},
            })
            .to_string(),
        )
        .expect("conf");
        let mut cmd = Command::new(python());
        cmd.arg(root().join("agent/tests/peers/tyk.py"))
            .arg("--conf")
            .arg(&conf);
        let (proc, v) = spawn_ready("tyk", cmd);
        let url = format!("http://127.0.0.1:{}", v["port"]);
        // Readiness: /hello answers.
        let (code, out) = super::curl("GET", &format!("{url}/hello"), &[], None);
        assert_eq!(code, 200, "tyk /hello: {out}");
        Tyk { proc, url, dir }
    }

    /// Where a test keeps an API definition for `tyk_api`.
    pub fn api_file(&self, id: &str) -> PathBuf {
        self.dir.path().join("apps").join(format!("{id}.json"))
    }
}

/// A Classic API definition: JWT auth against `jwks`, RS256.
pub fn jwt_api(id: &str, listen_path: &str, jwks: &str, extra: Value) -> Value {
    let mut a = json!({
        "api_id": id, "name": id, "org_id": "default", "active": true,
        "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:1/", "strip_listen_path": true},
        "enable_jwt": true, "jwt_signing_method": "rsa", "jwt_source": jwks,
        "jwt_default_policies": ["ci"],
        "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
    });
    if let (Some(m), Some(e)) = (a.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    a
}

impl Tyk {
    /// A Tyk key named `name` (POST /tyk/keys/<name>) whose jwt_data.secret
    /// is `pem` and which grants `api_id`: what an API without a jwt_source
    /// looks up by the token's kid (or identity claim).
    pub fn create_jwt_key(&self, secret: &str, name: &str, pem: &str, api_id: &str) {
        let body = json!({
            "jwt_data": {"secret": pem}, "quota_max": -1,
            "access_rights": {api_id: {"api_id": api_id, "versions": ["Default"]}},
        })
        .to_string();
        let (code, out) = super::curl(
            "POST",
            &format!("{}/tyk/keys/{name}", self.url),
            &[
                ("x-tyk-authorization", secret),
                ("content-type", "application/json"),
            ],
            Some(&body),
        );
        assert_eq!(code, 200, "create key {name}: {out}");
    }
}

/// The issuer's signing key: its `kid` and its public key as PEM (what a
/// Tyk key's jwt_data.secret holds).
pub fn issuer_key(issuer: &str) -> (String, String) {
    let (code, out) = super::curl("GET", &format!("{issuer}/jwks.json"), &[], None);
    assert_eq!(code, 200, "jwks: {out}");
    let jwk = super::json_of(&out)["keys"][0].clone();
    let script = "import json, sys, jwt\n\
        from cryptography.hazmat.primitives import serialization as s\n\
        k = jwt.PyJWK(json.loads(sys.argv[1])).key\n\
        sys.stdout.write(k.public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode())";
    let o = Command::new(python())
        .args(["-c", script, &jwk.to_string()])
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        jwk["kid"].as_str().expect("kid").to_owned(),
        String::from_utf8(o.stdout).expect("pem"),
    )
}
