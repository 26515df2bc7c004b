//! `lanyard doctor --url U --probe` against hostile upstreams
//! (agent/tests/peers/hostile.py): an upstream that echoes the credential
//! back in every shape, a URL no route covers, a huge and a slow answer,
//! and a `--method` other than GET.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SHAPES: &[&str] = &[
    "whole",
    "first",
    "second",
    "hex",
    "b64-header-0",
    "b64-header-1",
    "b64-header-2",
    "b64-token-0",
    "b64-token-1",
    "b64-token-2",
    "b64url-header-0",
    "b64url-header-1",
    "b64url-header-2",
    "b64url-token-0",
    "b64url-token-1",
    "b64url-token-2",
];

struct Probe {
    _iss: Issuer,
    dir: tempfile::TempDir,
    token: String,
}

/// Routes to `port`: `/ci/` with the passthrough token as a Bearer header,
/// `/git/` with it as HTTP Basic's password.
fn setup(port: u16) -> Probe {
    let iss = Issuer::start();
    let token = iss.mint("github", "https://gateway.example.com", 600, json!({}));
    let dir = tempfile::tempdir().expect("tmp");
    write_config(
        dir.path(),
        &format!(
            r#"[identity]
source = "env"
variable = "LANYARD_TEST_TOKEN"

[[credential]]
name = "jwt"
exchange = "passthrough"

[[route]]
name = "api"
url = "http://127.0.0.1:{port}/ci/"
credential = "jwt"

[[route]]
name = "git"
url = "http://127.0.0.1:{port}/git/"
credential = "jwt"
format = "basic"
"#
        ),
    );
    Probe {
        _iss: iss,
        dir,
        token,
    }
}

impl Probe {
    fn doctor(&self, extra: &[&str]) -> (i32, String, String, Duration) {
        let cfg = self.dir.path().join("lanyard.toml").display().to_string();
        let mut args = vec!["doctor", "--config", &cfg];
        args.extend_from_slice(extra);
        let t = Instant::now();
        let (code, out, err) = lanyard(&args, &[("LANYARD_TEST_TOKEN", &self.token)]);
        (code, out, err, t.elapsed())
    }
}

/// No 16-character run of anything the upstream echoed (other than Tyk's
/// own error text) shows in `out`.
fn assert_no_echo(out: &str, echoed: &Value, shape: &str) {
    for (k, v) in echoed.as_object().expect("echo body") {
        let v = v.as_str().expect("string");
        // Tyk's own words, and the in-error echo after them.
        let v = match k.as_str() {
            "error" if v == "Key not authorized" => continue,
            "error" => v
                .strip_prefix("Key not authorized: bad token ")
                .expect("in-error echo"),
            _ => v,
        };
        assert!(v.len() >= 16, "{shape}: {k} is too short to check: {v}");
        for i in 0..=v.len() - 16 {
            let w = &v[i..i + 16];
            assert!(
                !out.contains(w),
                "{shape}: a piece of the echoed {k} ({w}) is in doctor's output:\n{out}"
            );
        }
    }
}

#[test]
fn a_probe_whose_upstream_echoes_the_credential_prints_none_of_it_in_any_shape() {
    for status in ["403", "200"] {
        let up = Hostile::start("echo", &["--status", status]);
        let p = setup(up.port);
        for route in ["ci", "git"] {
            for shape in SHAPES.iter().chain(&["all", "in-error"]) {
                let url = format!("http://127.0.0.1:{}/{route}/{shape}", up.port);
                let (code, out, err, _) = p.doctor(&["--url", &url, "--probe"]);
                let seen = up.events();
                let echo = seen
                    .iter()
                    .rev()
                    .find(|e| e["event"] == "echo")
                    .unwrap_or_else(|| panic!("the probe sent nothing:\n{out}\n{err}"));
                assert!(
                    out.contains(&format!("answer: {status}")),
                    "{route}/{shape}:\n{out}\n{err}"
                );
                assert_eq!(code, if status == "200" { 0 } else { 1 }, "{out}\n{err}");
                if status == "403" {
                    let cause = if *shape == "in-error" {
                        "likely cause: Tyk verified the signature but refused a claim (bad token "
                    } else {
                        "likely cause: Tyk could not verify the token"
                    };
                    assert!(out.contains(cause), "the refusal is still explained: {out}");
                }
                assert_absent(&[&out, &err], &p.token, "the CI token");
                assert_no_echo(&out, &echo["body"], &format!("{status} {route}/{shape}"));
                assert_no_echo(&err, &echo["body"], &format!("{status} {route}/{shape}"));
            }
        }
        // Sanity: the upstream did get the credential, in both forms.
        let auths: Vec<String> = up
            .requests()
            .iter()
            .filter_map(|r| r["auth"].as_str().map(str::to_owned))
            .collect();
        assert!(auths.iter().any(|a| a == &format!("Bearer {}", p.token)));
        assert!(auths.iter().any(|a| a.starts_with("Basic ")));
    }
}

#[test]
fn a_probe_to_a_url_no_route_covers_sends_nothing() {
    let up = Hostile::start("echo", &[]);
    let p = setup(up.port);
    for url in [
        format!("http://127.0.0.1:{}/other/x", up.port),
        format!("http://localhost:{}/ci/x", up.port),
        format!("https://127.0.0.1:{}/ci/x", up.port),
        format!("http://someone:pw@127.0.0.1:{}/ci/x", up.port),
        format!("http://127.0.0.1:{}/ci/../other/x", up.port),
    ] {
        let (code, out, err, _) = p.doctor(&["--url", &url, "--probe"]);
        assert_eq!(
            code, 1,
            "{url}: a probe not sent is a failed check\n{out}\n{err}"
        );
        assert!(out.contains("  not sent: "), "{url}:\n{out}\n{err}");
        assert!(!out.contains("answer:"), "{url}:\n{out}");
    }
    assert_eq!(
        up.connections(),
        0,
        "a probe reached the upstream: {:?}",
        up.events()
    );
}

#[test]
fn a_probe_reads_at_most_a_bounded_body_and_waits_a_bounded_time() {
    let huge = Hostile::start("huge", &["--count", "512"]);
    let p = setup(huge.port);
    let (code, out, err, took) = p.doctor(&[
        "--url",
        &format!("http://127.0.0.1:{}/ci/x", huge.port),
        "--probe",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("sent a response larger than 65536 bytes"),
        "{out}\n{err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let slow = Hostile::start("drip", &["--interval", "0.5"]);
    let p = setup(slow.port);
    let (code, out, err, took) = p.doctor(&[
        "--url",
        &format!("http://127.0.0.1:{}/ci/x", slow.port),
        "--probe",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("did not answer within 10s"), "{out}\n{err}");
    assert!(
        took < Duration::from_secs(20),
        "the probe waited {took:?} for a dripping body"
    );
}

#[test]
fn the_probe_sends_only_get_and_says_so() {
    let up = Hostile::start("echo", &["--status", "200"]);
    let p = setup(up.port);
    for method in ["DELETE", "POST", "get"] {
        let url = format!("http://127.0.0.1:{}/ci/whole", up.port);
        let (code, out, err, _) = p.doctor(&["--url", &url, "--method", method, "--probe"]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains(&format!("probe GET {url}")), "{out}");
        if method != "get" {
            assert!(
                out.contains(&format!(
                    "the probe sends GET only: {method} was explained above, not sent"
                )),
                "{out}"
            );
        }
    }
    let methods: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r["method"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(methods, ["GET", "GET", "GET"]);
}
