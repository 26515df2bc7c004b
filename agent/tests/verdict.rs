//! `lanyard doctor --url U --method M` gives exactly the verdict of a
//! running `lanyard start` proxy for the same request sent by curl in
//! forward mode: the same status and the same `x-lanyard-rule`, or, when
//! the proxy forwards the request, a "forwarded" verdict.

mod common;

use std::process::Command;

use common::*;

/// What a row is expected to get, so that the test also fails when doctor
/// and the proxy agree on a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Forwarded,
    Status(u16),
}

struct Setup {
    dir: tempfile::TempDir,
    issuer: Issuer,
    routed: Upstream,
    unrouted: Upstream,
}

fn setup() -> Setup {
    Setup {
        dir: tempfile::tempdir().expect("tmp"),
        issuer: Issuer::start(),
        routed: Upstream::start(true),
        unrouted: Upstream::start(true),
    }
}

fn config(s: &Setup, egress: &str) -> String {
    let p = s.routed.port;
    let audit = s.dir.path().join(format!("audit-{egress}.jsonl"));
    let text = format!(
        "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n\n\
         [[credential]]\nname = \"gh\"\nexchange = \"passthrough\"\n\n\
         [[route]]\nurl = \"http://127.0.0.1:{p}/v1/\"\ncredential = \"gh\"\nread_only = true\n\n\
         [[route]]\nurl = \"http://localhost:{p}/w/\"\ncredential = \"gh\"\n\n\
         [[route]]\nurl = \"http://127.0.0.1:{p}/dev/\"\ncredential = \"gh\"\nidentities = [\"developer\"]\n\n\
         [proxy]\negress = \"{egress}\"\n\n[audit]\nfile = \"{audit}\"\n",
        audit = audit.display()
    );
    let sub = s.dir.path().join(egress);
    std::fs::create_dir_all(&sub).expect("dir");
    write_config(&sub, &text).display().to_string()
}

/// The rows: method, URL, what both must say.
fn rows(s: &Setup, egress: &str) -> Vec<(&'static str, String, Want)> {
    let p = s.routed.port;
    let q = s.unrouted.port;
    let r = |m: &'static str, path: &str, w: Want| (m, format!("http://127.0.0.1:{p}{path}"), w);
    vec![
        r("GET", "/v1/a", Want::Forwarded),
        r("GET", "/v1/a?x=%2f", Want::Forwarded),
        r("POST", "/v1/a", Want::Status(403)),
        r("DELETE", "/v1/a", Want::Status(403)),
        r("GET", "/v1%2fa", Want::Status(400)),
        r("GET", "/v1/a%2Fb", Want::Status(400)),
        r("GET", "/v1/%00", Want::Status(400)),
        r("GET", "/v1/%2541", Want::Status(400)),
        r("GET", "/v1/%2e%2e/admin", Want::Status(400)),
        r("GET", "/v1/../admin", Want::Status(400)),
        r("GET", "/v1/./a", Want::Status(400)),
        r("GET", "/v1//a", Want::Status(400)),
        r("GET", "/admin", Want::Status(403)),
        r("GET", "/v10", Want::Status(403)),
        r("POST", "/dev/x", Want::Status(403)),
        (
            "DELETE",
            format!("http://LOCALHOST:{p}/w/x"),
            Want::Forwarded,
        ),
        ("GET", format!("http://localhost.:{p}/w/x"), Want::Forwarded),
        (
            "GET",
            format!("http://Localhost.:{p}/v1/a"),
            Want::Status(403),
        ),
        (
            "GET",
            format!("http://127.0.0.1:{q}/anything"),
            if egress == "deny" {
                Want::Status(403)
            } else {
                Want::Forwarded
            },
        ),
    ]
}

/// The exported value of `name` in `start --export sh`'s output.
fn exported(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}='")))
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        .to_string()
}

/// curl through the proxy in forward mode, the URL as written: the status
/// and the `x-lanyard-rule` header (empty when none).
fn through_proxy(proxy: &str, method: &str, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--path-as-is",
            "--noproxy",
            "",
            "-x",
            proxy,
            "-X",
            method,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{x-lanyard-rule}",
            url,
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, rule) = text.split_once(' ').unwrap_or((&text, ""));
    (
        code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {url}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        rule.to_owned(),
    )
}

/// doctor's `verdict:` line for a URL and method.
fn doctor_verdict(config: &str, token: &str, home: &str, method: &str, url: &str) -> String {
    let (code, out, err) = lanyard(
        &[
            "doctor", "--config", config, "--url", url, "--method", method,
        ],
        &[("LANYARD_TEST_TOKEN", token), ("HOME", home)],
    );
    assert_eq!(code, 0, "doctor {method} {url}:\n{out}{err}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("verdict: "))
        .unwrap_or_else(|| panic!("doctor printed no verdict for {method} {url}:\n{out}"))
        .to_owned()
}

fn doctor_agrees_with_the_proxy(egress: &str) {
    let s = setup();
    let config = config(&s, egress);
    let token = s
        .issuer
        .mint("github", "https://api.test", 600, serde_json::json!({}));
    let home = s.dir.path().display().to_string();
    let state = s.dir.path().join(format!("state-{egress}"));
    let state = state.display().to_string();
    let env = [
        ("LANYARD_TEST_TOKEN", token.as_str()),
        ("HOME", home.as_str()),
        ("LANYARD_STATE_DIR", state.as_str()),
    ];
    let (code, out, err) = lanyard(
        &[
            "start",
            "--config",
            &config,
            "--export",
            "sh",
            "--watch-pid",
            "0",
        ],
        &env,
    );
    struct StopOnDrop<'a>(&'a [(&'a str, &'a str)]);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            lanyard(&["stop"], self.0);
        }
    }
    let _stop = StopOnDrop(&env);
    assert_eq!(code, 0, "start: {out}{err}");
    let proxy = exported(&out, "HTTP_PROXY");
    let mut failures = Vec::new();
    for (method, url, want) in rows(&s, egress) {
        let (status, rule) = through_proxy(&proxy, method, &url);
        let verdict = doctor_verdict(&config, &token, &home, method, &url);
        let proxy_says = if rule.is_empty() {
            Want::Forwarded
        } else {
            Want::Status(status)
        };
        let agree = if rule.is_empty() {
            verdict.starts_with("forwarded")
        } else {
            verdict == format!("{status}, x-lanyard-rule: {rule}")
        };
        if !agree || proxy_says != want {
            failures.push(format!(
                "{method} {url}\n  want:   {want:?}\n  proxy:  {status} {rule:?}\n  doctor: {verdict}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "egress = {egress}: doctor and the proxy disagree, or both are wrong:\n{}",
        failures.join("\n")
    );
    assert!(
        !s.unrouted.raw_records().contains(&token),
        "the unrouted host got the credential"
    );
}

#[test]
fn doctor_gives_the_proxys_verdict_under_egress_deny() {
    doctor_agrees_with_the_proxy("deny");
}

#[test]
fn doctor_gives_the_proxys_verdict_under_egress_allow() {
    doctor_agrees_with_the_proxy("allow");
}
