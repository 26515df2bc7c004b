//! Hostile clients against the real binary: ambiguous HTTP/1.1 framing on
//! the plain listener and inside an intercepted TLS tunnel (one code path),
//! hostile bytes that must still be audited, `Proxy-*` headers, TLS
//! handshakes that name no route, ALPN, and a routed name that starts
//! answering from an impostor. After every test the canary (the job's
//! credential) must be absent from every other host, output and the audit.

mod common;

use std::collections::HashMap;

use common::job::Job;
use common::*;
use serde_json::Value;

/// The hostile cases of `peers/hostile_client.py`, with the status each
/// must get. Every one of them must close the connection and send nothing
/// upstream.
const REFUSED: &[(&str, u16, &str)] = &[
    ("ext-unterminated-quote", 400, "case-equote"),
    ("lf-after-size", 400, "case-lfsize"),
    ("lf-after-data", 400, "case-lfdata"),
    ("size-21-digits", 400, "case-size21"),
    ("ext-no-name", 400, "case-extnoname"),
    ("ext-too-long", 400, "case-extlong"),
    ("bad-chunk-after-a-pause", 400, "case-pausechunk"),
    ("cr-in-size-line", 400, "case-crsize"),
    ("trailer-bare-lf", 400, "case-trailerlf"),
    ("header-bare-lf", 400, "case-hdrlf"),
    ("request-line-bare-lf", 400, "case-rllf"),
    ("bare-cr-in-value", 400, "case-barecr"),
    ("ctl-in-path", 400, "case-ctl"),
    ("nul-in-value", 400, "case-nul"),
    ("non-utf8-path", 400, "case-nonutf8"),
    ("long-header", 431, "case-long"),
    ("many-headers", 431, "case-many"),
    ("cl-te", 400, "case-clte"),
    ("two-cl", 400, "case-twocl"),
    ("cl-plus-sign", 400, "case-clplus"),
    ("te-gzip", 501, "case-tegzip"),
    ("two-hosts", 400, "case-twohosts"),
    ("space-before-colon", 400, "case-spcolon"),
    ("obs-fold", 400, "case-obsfold"),
    ("http-0.9-ish", 400, "case-version"),
    ("lt-in-path", 400, "case-ltpath"),
    ("bad-absolute-uri", 400, "case-badabs"),
];

fn run_cases(job: &Job, mode: &str) -> (HashMap<String, Value>, String) {
    let py = python().display().to_string();
    let client = root().join("agent/tests/peers/hostile_client.py");
    let records = job.up.records_path();
    let script = format!(
        "UP_RECORDS={} {py} {} {mode}",
        records.display(),
        client.display()
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    let results = out
        .lines()
        .map(json_of)
        .map(|v| (v["case"].as_str().expect("case").to_owned(), v))
        .collect();
    (results, format!("{out}\n{err}"))
}

/// Audit records whose path carries `marker`.
fn audited(job: &Job, marker: &str) -> Vec<Value> {
    job.audit_lines()
        .into_iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.contains(marker)))
        .collect()
}

fn check_framing(mode: &str) {
    let job = Job::new("");
    let (res, log) = run_cases(&job, mode);
    // Every case is checked before failing, so one run shows them all.
    let mut wrong = Vec::new();
    for (case, status, marker) in REFUSED {
        let Some(r) = res.get(*case) else {
            wrong.push(format!("{case}: no result"));
            continue;
        };
        if r["statuses"] != serde_json::json!([status]) {
            wrong.push(format!("{case}: expected exactly one {status}: {r}"));
        }
        if r["closed"] != true {
            wrong.push(format!("{case}: the connection stayed open"));
        }
        if !r["body"].as_str().is_some_and(|b| b.contains("\"rule\"")) {
            wrong.push(format!("{case}: the refusal does not name its rule: {r}"));
        }
        let recs = audited(&job, marker);
        let ok = recs.len() == 1
            && recs[0]["status"] == *status
            && recs[0]["decision"] == "denied"
            && recs[0]["reason"].as_str().is_some_and(|r| !r.is_empty());
        if !ok {
            wrong.push(format!("{case}: expected one denied audit record with status {status} and a reason: {recs:?}"));
        }
    }
    assert!(wrong.is_empty(), "{mode}:\n{}", wrong.join("\n"));
    // The HTTP/2 client preface gets an HTTP/1.1 400, a closed
    // connection and its own audit record.
    let h2 = &res["h2-prior-knowledge"];
    assert_eq!(h2["statuses"], serde_json::json!([400]), "{h2}");
    assert_eq!(h2["closed"], true, "{h2}");
    let pri = job.audit_lines();
    let pri: Vec<&Value> = pri.iter().filter(|l| l["method"] == "PRI").collect();
    assert_eq!(pri.len(), 1, "{pri:?}");
    assert_eq!(pri[0]["status"], 400, "{pri:?}");
    // A good request, then a bad one: the first is answered and reaches
    // the upstream; the second is refused and the connection closes.
    let pipe = &res["pipelined-then-bad"];
    assert_eq!(pipe["statuses"], serde_json::json!([200, 400]), "{pipe}");
    assert_eq!(pipe["closed"], true, "{pipe}");
    assert_eq!(audited(&job, "case-pipebad").len(), 1);
    // Strict, well-formed input still works: chunk extensions, quoted
    // strings, trailers, pipelining.
    let good = &res["good-chunked"];
    assert_eq!(good["statuses"], serde_json::json!([200]), "{good}");
    let got = job.received("/v1/case-goodchunk");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "hello world", "{got:?}");
    assert_eq!(header_values(&got[0], "authorization").len(), 1);
    let both = &res["good-pipelined"];
    assert_eq!(both["statuses"], serde_json::json!([200, 200]), "{both}");
    assert_eq!(job.received("/v1/case-goodpipe2")[0]["body"], "abc");
    // Nothing of any refused case reached the upstream: no head, no
    // credential, and the smuggled request was never read as a request.
    let reached: Vec<String> = job
        .up
        .records()
        .iter()
        .filter_map(|r| r["path"].as_str().map(String::from))
        .collect();
    for (case, _, marker) in REFUSED {
        assert!(
            !reached.iter().any(|p| p.contains(marker)),
            "{mode} {case} reached the upstream: {reached:?}"
        );
    }
    assert!(!reached.iter().any(|p| p.contains("case-pipebad")));
    // One request, one JSON line, whatever bytes it carried.
    let audit = std::fs::read_to_string(&job.audit).expect("audit");
    for line in audit.lines() {
        let v: Value = serde_json::from_str(line).expect("each audit line is JSON");
        assert!(v.is_object());
    }
    assert!(
        !audit.contains('\u{1b}') && !audit.contains('\u{1}'),
        "control characters are escaped in the audit file"
    );
    if mode == "reverse" {
        // The reverse URL's secret segment is masked, even in a refused
        // head. A body refused after its head was resolved is audited as
        // every routed request is: with the route's upstream path.
        for rec in audited(&job, "case-")
            .into_iter()
            .filter(|r| r["decision"] == "denied")
        {
            let path = rec["path"].as_str().unwrap_or_default();
            assert!(
                path.starts_with("/r/[secret]/api/case-") || path.starts_with("/v1/case-"),
                "{rec}"
            );
        }
    }
    job.assert_no_leak(&[&log]);
}

#[test]
fn ambiguous_framing_inside_an_intercepted_tunnel_is_refused_before_anything_goes_upstream() {
    check_framing("tunnel");
}

#[test]
fn ambiguous_framing_on_the_plain_listener_is_refused_before_anything_goes_upstream() {
    check_framing("reverse");
}

#[test]
fn every_proxy_header_and_every_connection_named_header_is_stripped() {
    let job = Job::new("");
    let (code, out, err) = job.run(
        r#"for url in "https://127.0.0.1:$UP/v1/hop-tls" "$LANYARD_URL_API/hop-reverse"; do
  curl -sS -o /dev/null -w '%{http_code}\n' -H 'Proxy-Foo: canary-proxy' -H 'Proxy-Authorization: Basic Zm9vOmJhcg==' \
    -H 'Proxy-Connection: keep-alive' -H 'Connection: X-Hop, Keep-Alive' -H 'X-Hop: canary-hop' -H 'Keep-Alive: 5' \
    -H 'X-Kept: yes' "$url"
done"#,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["200", "200"],
        "{out}\n{err}"
    );
    let recs = job.received("/v1/hop-");
    assert_eq!(recs.len(), 2, "{recs:?}");
    for r in &recs {
        let names: Vec<String> = r["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| h[0].as_str().unwrap_or_default().to_ascii_lowercase())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("proxy-")
                || n == "x-hop"
                || n == "keep-alive"
                || n == "connection"),
            "hop-by-hop headers reached the upstream: {names:?}"
        );
        assert_eq!(header_values(r, "x-kept"), ["yes"]);
    }
    assert!(!job.up.raw_records().contains("canary-"));
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn tls_handshakes_that_name_no_route_get_no_certificate_and_only_http11_is_offered() {
    // A second route on a DNS name (the upstream's leaf also names localhost).
    let job = Job::new(
        "[[route]]\nname = \"byname\"\nurl = \"https://localhost:{UP}/v2/\"\ncredential = \"gh\"\n",
    );
    let py = python().display().to_string();
    let script = format!(
        r#"{py} - <<'PY'
import base64, os, socket, ssl
proxy = os.environ["LANYARD_PROXY"]
secret = proxy.split("@")[0].rsplit(":", 1)[1]
host, port = proxy.rsplit("@", 1)[1].split(":")
up = os.environ["UP"]
def tunnel(authority):
    s = socket.create_connection((host, int(port)))
    auth = base64.b64encode(f"lanyard:{{secret}}".encode()).decode()
    s.sendall(f"CONNECT {{authority}} HTTP/1.1\r\nHost: {{authority}}\r\nProxy-Authorization: Basic {{auth}}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s
def hello(authority, sni, alpn=None):
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    try:
        t = ctx.wrap_socket(tunnel(authority), server_hostname=sni)
        return "accepted " + str(t.selected_alpn_protocol())
    except (ssl.SSLError, OSError) as e:
        return "refused " + type(e).__name__
print("name-without-sni", hello(f"localhost:{{up}}", None))
print("name-with-sni", hello(f"localhost:{{up}}", "localhost", ["http/1.1"]))
print("ip-without-sni", hello(f"127.0.0.1:{{up}}", None))
print("alpn", hello(f"127.0.0.1:{{up}}", None, ["h2", "http/1.1"]))
PY
P="${{LANYARD_PROXY##*@}}"; S="${{LANYARD_PROXY%@*}}"; S="${{S##*:}}"
if openssl s_client -proxy "$P" -proxy_user lanyard -proxy_pass "pass:$S" -connect "localhost:$UP" \
     -servername 127.0.0.1 -CAfile "$SSL_CERT_FILE" -verify_return_error </dev/null >/dev/null 2>&1; then
  echo "name-with-ip-sni accepted"
else
  echo "name-with-ip-sni refused"
fi"#
    );
    let (code, out, err) = job.run(&script);
    assert_eq!(code, 0, "{out}\n{err}");
    let says = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("{k} missing:\n{out}\n{err}"))
            .to_owned()
    };
    assert!(says("name-without-sni").contains("refused"), "{out}");
    assert!(says("name-with-ip-sni").contains("refused"), "{out}");
    assert_eq!(says("name-with-sni"), "name-with-sni accepted http/1.1");
    // An IP route: clients send no SNI for an address (RFC 6066), and the
    // leaf names exactly the CONNECT address.
    assert!(says("ip-without-sni").starts_with("ip-without-sni accepted"));
    assert_eq!(
        says("alpn"),
        "alpn accepted http/1.1",
        "h2 is never offered"
    );
    let reasons: Vec<String> = job
        .audit_lines()
        .iter()
        .filter_map(|l| l["reason"].as_str().map(String::from))
        .collect();
    assert!(
        reasons
            .iter()
            .filter(|r| r.contains("names no server"))
            .count()
            >= 2,
        "{reasons:?}"
    );
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn a_routed_name_answered_by_an_impostor_gets_no_credential() {
    // `localhost:UP` is routed. After one good request its server goes
    // away and another takes the port, with a certificate the job's trust
    // does not vouch for: what DNS rebinding or a squatter looks like.
    let job = Job::new(
        "[[route]]\nname = \"byname\"\nurl = \"https://localhost:{UP}/v2/\"\ncredential = \"gh\"\n",
    );
    let impostor = tempfile::tempdir().expect("tmp");
    let py = python().display().to_string();
    let peer = root().join("agent/tests/peers/upstream.py");
    let script = format!(
        r#"curl -sS -o /dev/null -w 'first %{{http_code}}\n' "https://localhost:$UP/v2/first"
kill "$REAL_PID"
# The real server is the test's child: gone once it is a zombie.
while [ -e "/proc/$REAL_PID" ] && [ "$(awk '{{print $3}}' "/proc/$REAL_PID/stat")" != Z ]; do sleep 0.05; done
{py} {peer} --dir "$IMP" --port "$UP" > "$IMP/ready" 2>"$IMP/log" &
IPID=$!
n=0; until [ -s "$IMP/ready" ] || [ $n -ge 400 ]; do n=$((n+1)); sleep 0.05; done
cat "$IMP/ready" "$IMP/log"
curl -sS -o /dev/null -w 'second %{{http_code}}\n' "https://localhost:$UP/v2/second"
kill "$IPID""#,
        peer = peer.display()
    );
    let pid = job.up.proc.pid().to_string();
    let imp = impostor.path().display().to_string();
    let (code, out, err) = job.run_env(&script, &[("REAL_PID", &pid), ("IMP", &imp)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("first 200"), "{out}\n{err}");
    assert!(
        out.contains(&format!("\"port\": {}", job.up.port)),
        "the impostor took the port: {out}\n{err}"
    );
    assert!(out.contains("second 502"), "{out}\n{err}");
    // The impostor's handshake failed on lanyard's side: it never saw a
    // request, so it never saw the credential.
    let seen = std::fs::read_to_string(impostor.path().join("records.jsonl")).unwrap_or_default();
    assert!(seen.is_empty(), "{seen}");
    let line = job
        .audit_lines()
        .into_iter()
        .find(|l| l["path"] == "/v2/second")
        .expect("audited");
    assert_eq!(line["status"], 502);
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("certificate")),
        "{line}"
    );
    job.assert_no_leak(&[&out, &err, &seen]);
}

/// `http://localhost` routes are allowed because localhost is loopback. A
/// resolver that says otherwise (a hosts file or DNS answer naming another
/// address) must not get the credential sent in the clear to that address:
/// lanyard refuses the connection (502) and sends nothing.
#[test]
fn a_localhost_route_that_resolves_off_loopback_gets_no_credential() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    // Local to the namespace, but not a loopback address.
    const ELSEWHERE: &str = "10.99.0.1";
    let hosts = format!("{ELSEWHERE} localhost\n");
    let inside = common::netns::with_hosts_file(&hosts, &[&format!("{ELSEWHERE}/32")], || {
        let job = Job::new(
            "[[route]]\nname = \"local\"\nurl = \"http://localhost:{UP}/v3/\"\ncredential = \"gh\"\n",
        );
        // What answers at the address `localhost` now names, on the
        // routed port: it records every byte it is sent.
        let listener =
            std::net::TcpListener::bind((ELSEWHERE, job.up.port)).expect("bind the impostor");
        listener.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::<u8>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (got2, stop2) = (got.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).expect("blocking");
                        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                            .expect("timeout");
                        let mut buf = Vec::new();
                        let _ = s.read_to_end(&mut buf);
                        got2.lock().expect("lock").extend_from_slice(&buf);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        let (code, out, err) =
            job.run("curl -sS --noproxy '' -w '\\n%{http_code}\\n' \"http://localhost:$UP/v3/x\"");
        stop.store(true, Ordering::SeqCst);
        reader.join().expect("reader");
        let seen = String::from_utf8_lossy(&got.lock().expect("lock")).into_owned();
        let audit = job.audit_lines();
        job.assert_no_leak(&[&out, &err, &seen]);
        (code, out, err, seen, audit)
    });
    let (code, out, err, seen, audit) = match inside {
        Ok(v) => v,
        Err(why) => {
            eprintln!("SKIPPED localhost off loopback: {why}");
            return;
        }
    };
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        seen.is_empty(),
        "the address localhost named was sent: {seen}"
    );
    let (body, status) = out.trim_end().rsplit_once('\n').expect("body and status");
    assert_eq!(status, "502", "{out}\n{err}");
    assert!(body.contains("not a loopback address"), "{body}");
    let line = audit
        .iter()
        .find(|l| l["path"] == "/v3/x")
        .expect("audited");
    assert_eq!(line["status"], 502, "{line}");
}
