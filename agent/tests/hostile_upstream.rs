//! Hostile upstreams (issue #11): a response framed two ways, a burst of
//! 401s, an upstream that never answers and one that drips. Each test runs
//! `lanyard run -- <real curl>` against `peers/hostile.py` (raw sockets) or
//! the real token service, and checks what the upstream itself recorded.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

/// A job whose one route (`api`, plain http to loopback) leads to `port`.
struct Job {
    dir: tempfile::TempDir,
    config: PathBuf,
    audit: PathBuf,
    env: Vec<(String, String)>,
    _issuer: Issuer,
}

impl Job {
    /// The credential is the job's own token (passthrough); `proxy` is the
    /// body of the `[proxy]` table.
    fn passthrough(port: u16, proxy: &str) -> Job {
        let issuer = Issuer::start();
        let token = issuer.mint("github", "https://api.test", 600, json!({}));
        let credential = "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n\n\
             [[credential]]\nname = \"gh\"\nexchange = \"passthrough\"\n";
        Job::new(
            issuer,
            credential,
            port,
            proxy,
            vec![("LANYARD_TEST_TOKEN".into(), token)],
        )
    }

    fn new(
        issuer: Issuer,
        credential: &str,
        port: u16,
        proxy: &str,
        env: Vec<(String, String)>,
    ) -> Job {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl");
        let name = if credential.contains("\"gw\"") {
            "gw"
        } else {
            "gh"
        };
        let text = format!(
            "{credential}\n[[route]]\nname = \"api\"\nurl = \"http://127.0.0.1:{port}/v1/\"\n\
             credential = \"{name}\"\n\n[proxy]\n{proxy}\n\n[audit]\nfile = \"{audit}\"\n",
            audit = audit.display(),
        );
        let config = write_config(dir.path(), &text);
        Job {
            dir,
            config,
            audit,
            env,
            _issuer: issuer,
        }
    }

    /// `lanyard run -- sh -c SCRIPT`; `$UP` is the hostile upstream's port.
    fn run(&self, port: u16, script: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
        let up = port.to_string();
        let home = self.dir.path().display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("UP", &up), ("HOME", &home)];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        env.extend_from_slice(extra);
        let config = self.config.display().to_string();
        lanyard(
            &["run", "--config", &config, "--", "sh", "-c", script],
            &env,
        )
    }

    fn audit_for(&self, path: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(json_of)
            .filter(|l| l["path"] == path)
            .collect()
    }
}

/// A response with both Content-Length and Transfer-Encoding is refused
/// with 502, and the connection it came on is never used again: every
/// repeat (one curl, one client connection, one worker, so one pool) must
/// reach the upstream on a new connection.
#[test]
fn a_response_framed_two_ways_is_refused_and_its_connection_never_reused() {
    let up = Hostile::start("clte", &[]);
    let job = Job::passthrough(up.port, "");
    let url = "http://127.0.0.1:$UP/v1/two-ways";
    let (code, out, err) = job.run(
        up.port,
        &format!("curl -sS --max-time 20 -w '\\n%{{http_code}}\\n' {url} {url} {url} {url}"),
        &[("LANYARD_WORKER_THREADS", "1")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let codes: Vec<&str> = out.lines().filter(|l| l.len() == 3).collect();
    assert_eq!(codes, ["502"; 4], "{out}\n{err}");
    let body = json_of(out.lines().next().expect("a body"));
    let rule = body["rule"].as_str().expect("rule");
    assert!(
        rule.contains("Content-Length") && rule.contains("Transfer-Encoding"),
        "{body}"
    );
    let reqs = up.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    let mut conns: Vec<u64> = reqs.iter().map(|r| r["conn"].as_u64().unwrap()).collect();
    conns.dedup();
    assert_eq!(
        conns.len(),
        4,
        "a connection that sent an ambiguous response was reused: {reqs:?}"
    );
    assert_eq!(up.connections(), 4);
    let lines = job.audit_for("/v1/two-ways");
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert_eq!(l["status"], 502, "{l}");
        assert_eq!(l["decision"], "failed", "{l}");
        assert!(
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Transfer-Encoding")),
            "{l}"
        );
    }
}

/// Eight requests draw 401 at once (the upstream holds every stale answer
/// until all eight arrived). The token service must see exactly one
/// refresh, and each request exactly one replay, with that one new value.
#[test]
fn a_burst_of_concurrent_401s_makes_exactly_one_refresh() {
    const N: usize = 8;
    let up = Hostile::start("burst401", &["--count", &N.to_string()]);
    let issuer = Issuer::start();
    let sts = Sts::start(&issuer.url, 600);
    let subject = issuer.mint("github", "https://sts.test", 600, json!({}));
    let credential = format!(
        "[identity]\nsource = \"env\"\nvariable = \"CI_JOB_JWT\"\n\n\
         [[credential]]\nname = \"gw\"\nexchange = \"token-exchange\"\n\
         token_url = \"{}\"\nclient_id = \"lanyard-public\"\nclient_auth = \"none\"\n\
         audience = \"https://api.test\"\nscope = \"deploy\"\n",
        sts.token_endpoint
    );
    let job = Job::new(
        issuer,
        &credential,
        up.port,
        "",
        vec![("CI_JOB_JWT".into(), subject)],
    );
    let exchanges = || sts.proc.log_text().matches("token-exchange ok").count();
    let script = format!(
        "for i in $(seq {N}); do curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}\\n' \
         -X POST -d \"n=$i\" http://127.0.0.1:$UP/v1/burst & done; wait"
    );
    let (code, out, err) = job.run(up.port, &script, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["200"; N], "{out}\n{err}");
    assert_eq!(
        exchanges(),
        2,
        "one exchange at start and exactly one refresh for the burst:\n{}",
        sts.proc.log_text()
    );
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2 * N, "one try and one replay each: {reqs:?}");
    let auth = |r: &Value| r["auth"].as_str().unwrap_or_default().to_owned();
    let first = auth(&reqs[0]);
    let stale = reqs.iter().filter(|r| auth(r) == first).count();
    assert_eq!(stale, N, "{reqs:?}");
    let mut fresh: Vec<String> = reqs.iter().map(auth).filter(|a| *a != first).collect();
    fresh.dedup();
    assert_eq!(fresh.len(), 1, "every replay carries the one new value");
    let lines = job.audit_for("/v1/burst");
    assert_eq!(lines.len(), N, "{lines:?}");
    for l in &lines {
        assert_eq!(l["status"], 200, "{l}");
        assert!(
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("replayed once")),
            "{l}"
        );
    }
    for v in reqs.iter().map(auth) {
        let tok = v.trim_start_matches("Bearer ");
        assert_absent(&[&out, &err], tok, "an exchanged credential");
    }
}

/// An upstream that reads the request and never answers gets a 504 with a
/// JSON body naming the timeout, long before the 90 s idle timeout would
/// have closed the client's connection without an answer.
#[test]
fn a_hanging_upstream_gets_a_504_naming_the_header_timeout() {
    // Why both: a request with a body waits for the answer on another
    // path (the body is sent first) than one without.
    for (what, curl_args) in [("a GET", ""), ("a POST with a body", "-d payload ")] {
        let up = Hostile::start("hang", &[]);
        let job = Job::passthrough(up.port, "upstream_header_timeout = \"2s\"");
        let (code, out, err) = job.run(
            up.port,
            &format!(
                "curl -sS --max-time 60 {curl_args}-w '\\n%{{http_code}} %{{time_total}}\\n' http://127.0.0.1:$UP/v1/hang"
            ),
            &[],
        );
        assert_eq!(code, 0, "{what}: {out}\n{err}");
        let (body, last) = out.trim_end().rsplit_once('\n').expect("two lines");
        let (status, secs) = last.split_once(' ').expect("status and time");
        assert_eq!(status, "504", "{what}: {out}\n{err}");
        // A sanity bound, far from both the 2 s timeout and the 90 s idle one.
        let secs: f64 = secs.parse().expect("time");
        eprintln!("hanging upstream, {what}: 504 after {secs} s");
        assert!(secs < 45.0, "{what}: answered only after {secs} s");
        let rule = json_of(body)["rule"].as_str().expect("rule").to_owned();
        assert!(
            rule.contains("upstream_header_timeout") && rule.contains("2s"),
            "{what}: {rule}"
        );
        assert_eq!(
            up.requests().len(),
            1,
            "{what}: the request reached the upstream"
        );
        let lines = job.audit_for("/v1/hang");
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert_eq!(lines[0]["status"], 504, "{what}");
        assert_eq!(lines[0]["decision"], "failed", "{what}");
        assert!(
            lines[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("upstream_header_timeout")),
            "{what}: {}",
            lines[0]
        );
    }
}

/// An upstream that sends its head and then a byte every half second is
/// cut by the minimum transfer rate, and, with that off, by the total
/// response bound: the client sees its connection close mid-body instead
/// of waiting for the 1000 promised bytes, and the audit line says why.
#[test]
fn a_dripping_upstream_is_cut_by_the_minimum_rate_or_the_total_bound() {
    let up = Hostile::start("drip", &["--interval", "0.5"]);
    let cases = [
        (
            "upstream_min_rate = 100\nupstream_rate_window = \"2s\"",
            "upstream_min_rate",
            "/v1/drip-rate",
        ),
        (
            "upstream_min_rate = 0\nupstream_response_timeout = \"3s\"",
            "upstream_response_timeout",
            "/v1/drip-total",
        ),
    ];
    for (proxy, key, path) in cases {
        let job = Job::passthrough(up.port, proxy);
        let (code, out, err) = job.run(
            up.port,
            &format!(
                "curl -sS --max-time 60 -o /dev/null -w '%{{http_code}} %{{size_download}} %{{time_total}}\\n' \
                 http://127.0.0.1:$UP{path}; echo \"exit=$?\""
            ),
            &[],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        let mut fields = lines[0].split(' ');
        let (status, got) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        eprintln!(
            "drip, {key}: {} bytes, cut after {} s",
            got,
            fields.next().unwrap_or("?")
        );
        assert_eq!(status, "200", "the head was passed on: {out}");
        let got: u64 = got.parse().expect("size");
        assert!(got < 1000, "{key}: the whole drip arrived: {out}");
        // 18: transfer closed with bytes remaining; never 28 (curl's own timeout).
        assert!(
            lines[1] != "exit=0" && lines[1] != "exit=28",
            "{key}: {out}\n{err}"
        );
        let audit = job.audit_for(path);
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0]["decision"], "failed", "{}", audit[0]);
        assert!(
            audit[0]["reason"].as_str().is_some_and(|r| r.contains(key)),
            "{key}: {}",
            audit[0]
        );
    }
}

/// The audit record is a drop guard: a client that goes away while the
/// upstream still owes the answer leaves exactly one audit line, written
/// when it went (the job sees it while the proxy still runs), never a
/// second one at teardown. Before the response head (the request handler
/// is dropped mid-request) and in the middle of the body.
#[test]
fn a_client_that_goes_mid_request_leaves_exactly_one_audit_line() {
    let cases = [
        ("hang", "/v1/gone-before-head"),
        ("drip", "/v1/gone-mid-body"),
    ];
    for (mode, path) in cases {
        let up = Hostile::start(mode, &["--interval", "0.2"]);
        let job = Job::passthrough(
            up.port,
            "upstream_header_timeout = \"60s\"\nupstream_response_timeout = \"60s\"\n\
             upstream_min_rate = 0",
        );
        let audit = job.audit.display().to_string();
        let script = format!(
            "curl -sS --max-time 2 -o /dev/null http://127.0.0.1:$UP{path}; echo \"curl=$?\"; \
             for i in $(seq 100); do grep -q '\"{path}\"' \"$AUDIT\" && {{ echo seen; exit 0; }}; \
             sleep 0.1; done; echo unseen"
        );
        let (code, out, err) = job.run(up.port, &script, &[("AUDIT", &audit)]);
        assert_eq!(code, 0, "{mode}: {out}\n{err}");
        assert!(
            out.contains("curl=28"),
            "{mode}: curl gave up itself: {out}\n{err}"
        );
        assert!(
            out.lines().any(|l| l == "seen"),
            "{mode}: no audit line while the proxy still ran: {out}\n{err}"
        );
        let lines = job.audit_for(path);
        assert_eq!(lines.len(), 1, "{mode}: {lines:?}");
        let l = &lines[0];
        assert_eq!(l["decision"], "injected", "{l}");
        if mode == "hang" {
            assert_eq!(l["status"], 0, "{l}");
            let why = "no answer was sent: the client went away (or the proxy stopped) first";
            assert_eq!(l["reason"], why, "{l}");
        } else {
            assert_eq!(l["status"], 200, "{l}");
            let sent = l["bytes_out"].as_u64().expect("bytes_out");
            assert!(sent < 1000, "{l}");
        }
    }
}
