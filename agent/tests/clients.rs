//! Real clients through lanyard: Python (requests, urllib), Node (undici),
//! git over HTTPS/HTTP2 behind nginx, and WebSocket upgrades. Clients get
//! only the environment lanyard exports.

mod common;

use std::process::Command;

use common::job::{bearer, Job};
use common::*;

#[test]
fn python_requests_and_urllib_work_with_the_exported_environment() {
    let job = Job::new("");
    let py = python().display().to_string();
    let script = format!(
        r#"{py} - <<'EOF'
import os, urllib.request, requests
port = os.environ["UP"]
r = requests.get(f"https://127.0.0.1:{{port}}/v1/requests", headers={{"Authorization": "Bearer forged"}})
print("requests", r.status_code)
with urllib.request.urlopen(f"https://127.0.0.1:{{port}}/v1/urllib") as u:
    print("urllib", u.status)
EOF"#
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("requests 200") && out.contains("urllib 200"),
        "{out}\n{err}"
    );
    for p in ["/v1/requests", "/v1/urllib"] {
        let recs = job.received(p);
        assert_eq!(recs.len(), 1, "{p}");
        assert_eq!(
            header_values(&recs[0], "authorization"),
            [bearer(&job)],
            "{p}"
        );
    }
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn node_uses_the_proxy_through_undicis_env_proxy_agent() {
    let job = Job::new("");
    let modules = root().join("agent/tests/peers/sts/node_modules");
    let script = r#"node -e '
const { EnvHttpProxyAgent, setGlobalDispatcher, fetch } = require("undici");
setGlobalDispatcher(new EnvHttpProxyAgent());
fetch(`https://127.0.0.1:${process.env.UP}/v1/node`).then(async r => {
  console.log("node", r.status); process.exit(r.status === 200 ? 0 : 1);
}).catch(e => { console.error(e); process.exit(1); });
'"#;
    let node_path = modules.display().to_string();
    let (code, out, err) = job.run_env(script, &[("NODE_PATH", &node_path)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("node 200"), "{out}");
    let recs = job.received("/v1/node");
    assert_eq!(recs.len(), 1);
    assert_eq!(header_values(&recs[0], "authorization"), [bearer(&job)]);
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn git_clone_over_https_through_nginx_with_a_basic_token_route_uses_http2_upstream() {
    let job = Job::new("");
    let (cert, key) = job.up.leaf();
    let git = GitServer::start(&cert, &key, &job.token);
    let text = std::fs::read_to_string(&job.config).expect("config");
    let text = text.replace(
        "[upstream]",
        &format!(
            "[[route]]\nurl = \"https://127.0.0.1:{}/git/\"\ncredential = \"gh\"\nformat = \"basic\"\nusername = \"x-access-token\"\n\n[upstream]",
            git.port
        ),
    );
    std::fs::write(&job.config, text).expect("config");
    let dest = job.dir.path().join("clone");
    let script = format!(
        "git clone -q https://127.0.0.1:{}/git/app.git {} && cat {}/README",
        git.port,
        dest.display(),
        dest.display()
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}\nnginx:\n{}", git.nginx.log_text());
    assert!(out.contains("served through lanyard"), "{out}");
    let proto = git.protocol_log();
    assert!(
        proto
            .lines()
            .any(|l| l.starts_with("HTTP/2.0 GET /git/app.git/info/refs 200")),
        "lanyard should speak HTTP/2 to nginx (ALPN): {proto}"
    );
    // Without lanyard the server refuses: the token really is required.
    let plain = Command::new("git")
        .args([
            "ls-remote",
            &format!("https://127.0.0.1:{}/git/app.git", git.port),
        ])
        .env("GIT_SSL_NO_VERIFY", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(!plain.status.success());
    job.assert_no_leak(&[&out, &err, &git.nginx.log_text()]);
}

const WS_CLIENT: &str = r#"python3 - <<'P'
import base64, os, socket, ssl, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
s = socket.create_connection((proxy.hostname, proxy.port))
target = f"127.0.0.1:{os.environ['UP']}"
s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
key = base64.b64encode(os.urandom(16)).decode()
t.sendall((f"GET {os.environ['WS_PATH']} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
resp = b""
while b"\r\n\r\n" not in resp:
    b = t.recv(1)
    if not b:
        break
    resp += b
print("status=" + resp.split(b" ")[1].decode() if b" " in resp else "status=none")
if b" 101 " in resp:
    t.sendall(b"ping-through-lanyard")
    got = b""
    while len(got) < 20:
        b = t.recv(64)
        if not b:
            break
        got += b
    print("echo=" + got.decode())
P"#;

#[test]
fn websocket_upgrades_carry_the_credential_only_on_routes_that_allow_them() {
    // Regression guard for two promises: a route with websocket = true
    // upgrades with the credential injected; a route without it refuses.
    let job = Job::new(
        "[[route]]\nurl = \"https://127.0.0.1:{UP}/ws/\"\ncredential = \"gh\"\nwebsocket = true\n",
    );
    // The extra route needs the upstream's port: rewrite the placeholder.
    let text = std::fs::read_to_string(&job.config).expect("config");
    std::fs::write(&job.config, text.replace("{UP}", &job.up.port.to_string())).expect("config");
    let (code, out, err) = job.run_env(WS_CLIENT, &[("WS_PATH", "/ws/chat")]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("status=101"), "{out}\n{err}");
    assert!(out.contains("echo=ping-through-lanyard"), "{out}\n{err}");
    let recs = job.received("/ws/chat");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(header_values(&recs[0], "authorization"), [bearer(&job)]);

    // The default route (/v1/) has no websocket = true: refused, never upgraded.
    let (code, out2, err2) = job.run_env(WS_CLIENT, &[("WS_PATH", "/v1/chat")]);
    assert_eq!(code, 0, "stdout:\n{out2}\nstderr:\n{err2}");
    assert!(out2.contains("status=403"), "{out2}\n{err2}");
    assert!(job.received("/v1/chat").is_empty());
    job.assert_no_leak(&[&out, &err, &out2, &err2]);
}
