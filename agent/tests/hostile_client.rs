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
];

fn run_cases(job: &Job, mode: &str) -> (HashMap<String, Value>, String) {
    let py = python().display().to_string();
    let client = root().join("agent/tests/peers/hostile_client.py");
    let script = format!("{py} {} {mode}", client.display());
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
        // The reverse URL's secret segment is masked, even in a refused head.
        for rec in audited(&job, "case-")
            .into_iter()
            .filter(|r| r["decision"] == "denied")
        {
            let path = rec["path"].as_str().unwrap_or_default();
            assert!(path.starts_with("/r/[secret]/api/case-"), "{rec}");
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
