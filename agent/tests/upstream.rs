//! What lanyard does with upstream answers: redirects are not followed,
//! pooled connections are reused per destination only, and a 401 gets one
//! refresh and one replay.

mod common;

use common::job::{bearer, Job};
use common::*;

#[test]
fn redirects_are_not_followed_and_a_followed_redirect_carries_no_credential() {
    // The route covers the upstream root, where /redirect lives.
    let job2 = Job::new("");
    let text = std::fs::read_to_string(&job2.config)
        .expect("config")
        .replace("/v1/\"", "/\"");
    std::fs::write(&job2.config, text).expect("config");
    let (code, out2, err2) = job2.run(
        r#"curl -sS -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP/redirect?to=https://127.0.0.1:$OTHER/landing"
curl -sS -L -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP/redirect?to=https://127.0.0.1:$OTHER/landing""#,
    );
    assert_eq!(code, 0, "{out2}\n{err2}");
    assert_eq!(
        out2.lines().collect::<Vec<_>>(),
        ["302", "200"],
        "{out2}\n{err2}"
    );
    // lanyard did not follow: the other host got exactly one request (curl's).
    let landed = job2.other.records();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert!(
        header_values(&landed[0], "authorization").is_empty(),
        "{landed:?}"
    );
    job2.assert_no_leak(&[&out2, &err2]);
}

#[test]
fn pooled_upstream_connections_are_reused_per_destination_and_never_across() {
    // Two plain upstreams: `a` is routed (gets the credential), `b` is not.
    // curl sends all four requests over one proxy connection, alternating.
    let a = Upstream::start(true);
    let b = Upstream::start(true);
    let job = Job::new(&format!(
        "[[route]]\nname = \"plain\"\nurl = \"http://127.0.0.1:{}/v1/\"\ncredential = \"gh\"\n",
        a.port
    ));
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let (code, out, err) = job.run_env(
        r#"curl -sS --fail-with-body -H 'Authorization: Bearer client-own' \
             "http://127.0.0.1:$PA/v1/one" "http://127.0.0.1:$PB/two" \
             "http://127.0.0.1:$PA/v1/three" "http://127.0.0.1:$PB/four""#,
        &[("PA", &pa), ("PB", &pb)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (ra, rb) = (a.records(), b.records());
    assert_eq!(ra.len(), 2, "{ra:?}");
    assert_eq!(rb.len(), 2, "{rb:?}");
    for r in &ra {
        assert_eq!(header_values(r, "authorization"), [bearer(&job)], "{r}");
    }
    for r in &rb {
        // Untouched: the client's own header, never the route's credential.
        assert_eq!(
            header_values(r, "authorization"),
            ["Bearer client-own"],
            "{r}"
        );
    }
    // Each destination's second request rode its first one's connection.
    assert_eq!(
        ra[0]["peer"], ra[1]["peer"],
        "upstream connection to a not reused"
    );
    assert_eq!(
        rb[0]["peer"], rb[1]["peer"],
        "upstream connection to b not reused"
    );
    assert_absent(
        &[&b.raw_records()],
        &job.token,
        "the credential (at the unrouted host)",
    );
    job.assert_no_leak(&[&out, &err]);
}

#[test]
fn a_401_triggers_one_refresh_and_one_replay_with_a_fresh_credential() {
    // GitHub's source mints a new token for every exchange, so a refresh
    // really changes the value.
    let job = Job::with_identity(
        "[identity]\nsource = \"github\"\naudience = \"https://api.test\"\n",
        "",
    );
    let gha = job.issuer.gha_url();
    let (code, out, err) = job.run_env(
        r#"curl -sS -X POST -d 'payload=1' -o /dev/null -w '%{http_code}\n' "https://127.0.0.1:$UP/v1/reject-first"
env | grep -c ACTIONS_ID_TOKEN_REQUEST || true"#,
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &gha),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &job.issuer.bearer),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["200", "0"],
        "{out}\n{err}"
    );
    let recs = job.received("/v1/reject-first");
    assert_eq!(recs.len(), 2, "one try, one replay: {recs:?}");
    let a = header_values(&recs[0], "authorization");
    let b = header_values(&recs[1], "authorization");
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a, b, "the replay must carry a fresh credential");
    assert_eq!(recs[1]["body"], "payload=1", "the body is replayed");
    let line = job
        .audit_lines()
        .into_iter()
        .find(|l| l["path"] == "/v1/reject-first")
        .expect("audit");
    assert_eq!(line["status"], 200);
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("replayed once")),
        "{line}"
    );
    for v in a.iter().chain(&b) {
        let tok = v.trim_start_matches("Bearer ");
        assert_absent(
            &[&out, &err, &job.other.raw_records()],
            tok,
            "a rotated credential",
        );
    }
    assert_absent(
        &[&out, &err],
        &job.issuer.bearer,
        "the GitHub request token",
    );
}
