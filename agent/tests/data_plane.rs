//! The data plane end to end: `lanyard run -- <real client>` against real
//! servers on loopback. Clients get only the environment lanyard exports.
//! After every test the canary (the job's credential) must be absent from
//! every other host, every response, every log and the audit file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::job::{bearer, Job};
use common::*;
use serde_json::Value;

#[test]
fn curl_gets_exactly_one_credential_and_the_audit_and_summary_show_it() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"curl -sS -H 'Authorization: Bearer client-forged' -H 'authorization: x' \
             -H 'X-Lanyard-Internal: 1' -H 'Proxy-Authorization: Basic Zm9vOmJhcg==' \
             "https://127.0.0.1:$UP/v1/hello?q=1""#,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(r#""path": "/v1/hello""#), "{out}");
    let recs = job.received("/v1/hello");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(header_values(&recs[0], "authorization"), [bearer(&job)]);
    assert!(header_values(&recs[0], "x-lanyard-internal").is_empty());
    assert!(header_values(&recs[0], "proxy-authorization").is_empty());
    let lines = job.audit_lines();
    assert_eq!(lines[0]["event"], "job", "{lines:?}");
    assert_eq!(lines[0]["job"]["repository"], "acme/app");
    let hit = lines
        .iter()
        .find(|l| l["path"] == "/v1/hello")
        .expect("audit line");
    assert_eq!(hit["decision"], "injected");
    assert_eq!(hit["route"], "api");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["credential"], "gh");
    assert!(hit["fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));
    for k in [
        "ts",
        "route",
        "method",
        "scheme",
        "host",
        "port",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "decision",
        "credential",
        "fingerprint",
    ] {
        assert!(hit.get(k).is_some(), "audit key {k} missing: {hit}");
    }
    // The summary table at teardown, on stderr.
    assert!(
        err.contains("route") && err.contains("api") && err.contains("200×1"),
        "{err}"
    );
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn underscore_and_case_spellings_of_a_custom_header_are_replaced() {
    let job = Job::new(
        "[[route]]\nurl = \"https://127.0.0.1:PORT/keyed/\"\ncredential = \"gh\"\nheader = \"X-Api-Key\"\nformat = \"{token}\"\n",
    );
    // The route needs the real port: rewrite the config.
    let text = std::fs::read_to_string(&job.config)
        .expect("config")
        .replace("PORT", &job.up.port.to_string());
    std::fs::write(&job.config, text).expect("config");
    let (code, out, err) = job.run(
        r#"curl -sS -H 'X-Api-Key: forged' -H 'x_api_key: forged2' -H 'X_API_KEY: forged3' \
             "https://127.0.0.1:$UP/keyed/x""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let recs = job.received("/keyed/x");
    assert_eq!(recs.len(), 1);
    let spellings: Vec<&Value> = recs[0]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| {
            h[0].as_str()
                .is_some_and(|n| n.to_ascii_lowercase().replace('_', "-") == "x-api-key")
        })
        .collect();
    assert_eq!(spellings.len(), 1, "{spellings:?}");
    assert_eq!(spellings[0][1], job.token.as_str());
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn missing_or_wrong_proxy_secret_gets_407_and_nothing_reaches_upstream() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"P="${LANYARD_PROXY##*@}"
curl -sS -o /dev/null -D - -x "http://$P" "https://127.0.0.1:$UP/v1/nosecret"; echo "rc=$?"
curl -sS -o /dev/null -D - -x "http://lanyard:wrong@$P" "https://127.0.0.1:$UP/v1/wrong"; echo "rc=$?"
curl -sS -x "http://$P" "http://127.0.0.1:$UP/v1/plain" -D -; echo "rc=$?""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.matches("407").count() >= 3, "{out}");
    assert!(
        out.contains("Proxy-Authenticate: Basic realm=\"lanyard\"")
            || out.contains("proxy-authenticate: Basic realm=\"lanyard\""),
        "{out}"
    );
    assert!(job.received("/v1/").is_empty(), "{:?}", job.up.records());
    let denied = job
        .audit_lines()
        .iter()
        .filter(|l| l["status"] == 407)
        .count();
    assert!(denied >= 3, "{:?}", job.audit_lines());
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn another_user_is_refused_before_any_http() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        eprintln!("SKIPPED another_user_is_refused_before_any_http: needs root to run a client as another user (setpriv)");
        return;
    }
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"setpriv --reuid=65534 --regid=65534 --clear-groups curl -sS -k -x "$HTTPS_PROXY" "https://127.0.0.1:$UP/v1/other-user" 2>&1; echo "rc=$?""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("403"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    assert!(job.received("/v1/").is_empty());
    assert!(
        job.audit_lines().iter().any(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("uid 65534"))),
        "{:?}",
        job.audit_lines()
    );
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn browser_style_requests_are_refused() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"P="${LANYARD_PROXY##*@}"
curl -s -o /dev/null -w '%{http_code}\n' --noproxy '*' -H 'Origin: https://evil.example' "$LANYARD_URL_API/x"
curl -s -o /dev/null -w '%{http_code}\n' --noproxy '*' -H 'Sec-Fetch-Site: cross-site' "$LANYARD_URL_API/x"
curl -s -o /dev/null -w '%{http_code}\n' --noproxy '*' -H "Host: evil.example:${P##*:}" "$LANYARD_URL_API/x"
curl -s -o /dev/null -w '%{http_code}\n' --noproxy '*' "$LANYARD_URL_API/ok""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes, ["403", "403", "400", "200"], "{out}\n{err}");
    assert_eq!(job.received("/v1/").len(), 1, "only the last one passes");
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn connect_sni_and_host_must_agree() {
    let job = Job::new("");
    let py = python().display().to_string();
    // SNI for another name than the CONNECT host; then a Host header for
    // another host inside a correct tunnel.
    let script = format!(
        r#"curl -sS -o /dev/null -w '%{{http_code}}\n' -H "Host: localhost:$UP" "https://127.0.0.1:$UP/v1/host-mismatch"
{py} - <<'EOF'
import base64, os, socket, ssl
proxy = os.environ["LANYARD_PROXY"]
secret = proxy.split("@")[0].rsplit(":", 1)[1]
host, port = proxy.rsplit("@", 1)[1].split(":")
s = socket.create_connection((host, int(port)))
auth = base64.b64encode(f"lanyard:{{secret}}".encode()).decode()
s.sendall(f"CONNECT 127.0.0.1:{{os.environ['UP']}} HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: Basic {{auth}}\r\n\r\n".encode())
print("connect", s.recv(1024).split(b"\r\n")[0].decode())
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
try:
    ctx.wrap_socket(s, server_hostname="evil.example")
    print("sni accepted")
except Exception as e:
    print("sni refused", type(e).__name__)
EOF"#
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().next() == Some("400"), "{out}\n{err}");
    assert!(out.contains("connect HTTP/1.1 200"), "{out}");
    assert!(out.contains("sni refused"), "{out}");
    assert!(job.received("/v1/").is_empty());
    let reasons: Vec<String> = job
        .audit_lines()
        .iter()
        .filter_map(|l| l["reason"].as_str().map(String::from))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("does not match the CONNECT host")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("SNI \"evil.example\"")),
        "{reasons:?}"
    );
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn look_alike_hosts_get_no_credential() {
    let job = Job::new("");
    let py = python().display().to_string();
    let script = format!(
        r#"curl -sS -o /dev/null -w '%{{http_code}}\n' "https://localhost:$UP/v1/lookalike"
{py} - <<'EOF'
import base64, os, socket
proxy = os.environ["LANYARD_PROXY"]
secret = proxy.split("@")[0].rsplit(":", 1)[1]
host, port = proxy.rsplit("@", 1)[1].split(":")
auth = base64.b64encode(f"lanyard:{{secret}}".encode()).decode()
for target in ["0x7f.0.0.1", "2130706433", "127.0.0.1.", "user@127.0.0.1"]:
    s = socket.create_connection((host, int(port)))
    s.sendall(f"CONNECT {{target}}:{{os.environ['UP']}} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {{auth}}\r\n\r\n".encode())
    print(target, s.recv(1024).split(b"\r\n")[0].decode())
EOF"#
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    // `localhost` is another name for the same server, without a route:
    // it is tunnelled, and the server sees no credential.
    assert_eq!(out.lines().next(), Some("200"), "{out}\n{err}");
    let recs = job.received("/v1/lookalike");
    assert_eq!(recs.len(), 1);
    assert!(
        header_values(&recs[0], "authorization").is_empty(),
        "{recs:?}"
    );
    assert!(out.contains("0x7f.0.0.1 HTTP/1.1 400"), "{out}");
    assert!(out.contains("2130706433 HTTP/1.1 400"), "{out}");
    assert!(out.contains("user@127.0.0.1 HTTP/1.1 400"), "{out}");
    // A trailing dot is the same host, canonicalised: intercepted, not refused.
    assert!(out.contains("127.0.0.1. HTTP/1.1 200"), "{out}");
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn path_tricks_are_refused_and_never_reach_upstream() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"for p in '/v1/../admin' '/v1/%2e%2e/admin' '/v1%2fadmin' '/v1/..%2fadmin' '/v1/a%5c..%5cadmin' '/v1//admin' '/v1/%2E./admin'; do
  curl -sS --path-as-is -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP$p"
done
curl -sS -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP/admin"
curl -sS -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP/v1""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(
        codes,
        ["400", "400", "400", "400", "400", "400", "400", "403", "200"],
        "{out}\n{err}"
    );
    let recs = job.up.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["path"], "/v1");
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn refusals_name_the_rule_in_header_and_body() {
    let job = Job::new("");
    let text = std::fs::read_to_string(&job.config)
        .expect("config")
        .replace(
            "credential = \"gh\"\n\n",
            "credential = \"gh\"\nmethods = [\"GET\"]\n\n",
        );
    std::fs::write(&job.config, text).expect("config");
    let (code, out, err) = job.run(r#"curl -sS -D - -X DELETE "https://127.0.0.1:$UP/v1/thing""#);
    assert_eq!(code, 0, "{out}\n{err}");
    // After curl's CONNECT answer: the refusal, over HTTP/2 inside the tunnel.
    assert!(
        out.contains("HTTP/2 403") || out.contains("HTTP/1.1 403"),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("x-lanyard-rule: method delete is not allowed"),
        "{out}"
    );
    assert!(
        out.contains(r#""rule":"method DELETE is not allowed on https://127.0.0.1:"#),
        "{out}"
    );
    assert!(job.up.records().is_empty());
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn smuggling_framings_are_refused_with_400_and_close() {
    let job = Job::new("");
    let py = python().display().to_string();
    let script = format!(
        r#"{py} - <<'EOF'
import os, socket
base = os.environ["LANYARD_URL_API"]
hostport, path = base[len("http://"):].split("/", 1)
host, port = hostport.split(":")
cases = {{
  "cl+te": f"POST /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  "two-cl": f"POST /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
  "obs-fold": f"GET /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nX-A: a\r\n b\r\n\r\n",
  "h2c": f"GET /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
  "te-xchunked": f"POST /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nTransfer-Encoding: xchunked\r\n\r\n",
  "bare-lf-space": f"GET /{{path}}/x HTTP/1.1\r\nHost: {{hostport}}\r\nContent-Length : 4\r\n\r\nabcd",
}}
for name, raw in cases.items():
    s = socket.create_connection((host, int(port)))
    s.settimeout(10)
    s.sendall(raw.encode())
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        closed = True
    except socket.timeout:
        closed = False
    print(name, data.split(b"\r\n")[0].decode() or "(no answer)", "closed" if closed else "open")
EOF"#
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    for name in [
        "cl+te",
        "two-cl",
        "obs-fold",
        "h2c",
        "te-xchunked",
        "bare-lf-space",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}\n{err}"));
        assert!(
            line.contains(" 400 ") || line.contains(" 501 "),
            "{name} must be refused: {line}\n{out}"
        );
        assert!(
            line.ends_with("closed"),
            "{name} must close the connection: {line}"
        );
    }
    assert!(job.up.records().is_empty(), "{:?}", job.up.records());
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn egress_deny_refuses_unrouted_hosts_and_allow_tunnels_them_untouched() {
    let deny = Job::new("[proxy]\negress = \"deny\"\n");
    let (code, out, err) = deny.run(
        r#"curl -sS -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$OTHER/x" 2>&1; echo "rc=$?""#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("403") || out.contains("CONNECT tunnel failed, response 403"),
        "{out}"
    );
    assert!(deny.other.records().is_empty());
    let allow = Job::new("");
    let (code, out2, err2) = allow.run(
        r#"curl -sS -H 'Authorization: Bearer mine' -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$OTHER/x""#,
    );
    assert_eq!(code, 0, "{out2}\n{err2}");
    assert_eq!(out2.trim(), "200");
    let recs = allow.other.records();
    assert_eq!(recs.len(), 1);
    // Untouched: the client's own header goes through, nothing is added.
    assert_eq!(header_values(&recs[0], "authorization"), ["Bearer mine"]);
    assert!(allow
        .audit_lines()
        .iter()
        .any(|l| l["decision"] == "tunnelled"));
    deny.assert_no_leak(&[&out, &err]);
    allow.assert_no_leak(&[&out2, &err2]);
}

#[test]
fn run_exits_with_the_commands_status_and_refuses_to_run_without_credentials() {
    let job = Job::new("");
    let (code, _, _) = job.run("exit 7");
    assert_eq!(code, 7);
    let (code, _, _) = job.run("kill -TERM $$");
    assert_eq!(code, 128 + 15);
    // No identity: the command must not run at all.
    let marker = job.dir.path().join("ran");
    let config = job.config.display().to_string();
    let script = format!("touch {}", marker.display());
    let (code, out, err) = lanyard(
        &["run", "--config", &config, "--", "sh", "-c", &script],
        &[],
    );
    assert_eq!(code, 125, "{out}\n{err}");
    assert!(err.contains("LANYARD_TEST_TOKEN is not set"), "{err}");
    assert!(!marker.exists(), "the command ran without credentials");
    let (code, _, err) = job.run_env("true", &[]);
    assert_eq!(code, 0, "{err}");
    let missing = lanyard(
        &["run", "--config", &config, "--", "/nonexistent/cmd"],
        &[("LANYARD_TEST_TOKEN", &job.token)],
    );
    assert_eq!(missing.0, 127, "{missing:?}");
}

/// The CA bundle written for clients holds public certificates only, and
/// the job CA inside it is name-constrained.
#[test]
fn the_ca_bundle_is_public_and_name_constrained_and_removed_after_the_run() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"echo "$SSL_CERT_FILE"; grep -c 'PRIVATE KEY' "$SSL_CERT_FILE" || true
awk '/# lanyard per-job CA/{f=1;next} f' "$SSL_CERT_FILE" | openssl x509 -noout -text | grep -A4 'Name Constraints'
for v in REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO LANYARD_CA_FILE; do eval "[ \"\$$v\" = \"$SSL_CERT_FILE\" ]" || echo "mismatch $v"; done"#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let mut lines = out.lines();
    let bundle = PathBuf::from(lines.next().expect("path"));
    assert_eq!(
        lines.next(),
        Some("0"),
        "no private key in the bundle:\n{out}"
    );
    assert!(
        out.contains("Name Constraints") && out.contains("IP:127.0.0.1/255.255.255.255"),
        "{out}"
    );
    assert!(!out.contains("mismatch"), "{out}");
    assert!(
        !Path::new(&bundle).exists(),
        "the bundle must not outlive the run"
    );
    job.assert_no_leak(&[&out, &err]);
}

/// A WebSocket client through the proxy, as a real tool drives it: CONNECT
/// with the proxy secret, TLS with the exported CA bundle, the RFC 6455
/// upgrade, then bytes both ways. Prints `status=<101|...>` and `echo=<...>`.
#[test]
fn trace_headers_reach_routed_upstreams_only() {
    let job = Job::new("");
    let text = std::fs::read_to_string(&job.config).expect("config");
    std::fs::write(
        &job.config,
        text.replace("[audit]\n", "[audit]\ntrace_headers = true\n"),
    )
    .expect("config");
    let (code, out, err) = job.run(
        r#"curl -sS "https://127.0.0.1:$UP/v1/traced" && curl -sS "https://127.0.0.1:$OTHER/untraced""#,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let recs = job.received("/v1/traced");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        header_values(&recs[0], "x-lanyard-commit"),
        ["0123456789abcdef0123456789abcdef01234567"]
    );
    assert_eq!(header_values(&recs[0], "x-lanyard-pipeline"), ["4242"]);
    let other = job.other.records();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(header_values(&other[0], "x-lanyard-commit").is_empty());
    assert!(header_values(&other[0], "x-lanyard-pipeline").is_empty());
    job.assert_no_leak(&[&out, &err]);
}
