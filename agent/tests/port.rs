//! Port (getport.io): the `port` exchange with the real binary against
//! `peers/port.py`, a strict peer of Port's documented access-token and
//! entity-upsert calls. The job upserts an entity through a lanyard route;
//! neither the client secret nor the access token reaches it.

mod common;

use common::port::{PortJob, PortPeer, CLIENT_ID, CLIENT_SECRET};
use common::*;

const UPSERT: &str = r#"curl -sS --fail-with-body -X POST "$PORT_API/v1/blueprints/microservice/entities?upsert=true" \
  -H 'Content-Type: application/json' \
  -d '{"identifier":"checkout","title":"Checkout","properties":{"commit":"abc123"}}'"#;

fn config(secret: &str, extra: &str) -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n{extra}\
         [[credential]]\nname = \"port\"\nexchange = \"port\"\nclient_id = \"{CLIENT_ID}\"\n{secret}\napi_url = \"{{PORT}}\"\n\n\
         [[route]]\nurl = \"{{PORT}}/v1/\"\ncredential = \"port\"\n\n\
         [audit]\nfile = \"{{AUDIT}}\"\n"
    )
}

fn env_config() -> String {
    config("client_secret_env = \"PORT_CLIENT_SECRET\"", "")
}

/// The upsert went through with the token Port issued, and nothing the job
/// could see holds the secret or the token.
fn assert_upserted(port: &PortPeer, job: &PortJob, out: &str, err: &str) {
    let issued = port.issued();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let ents = port.entities();
    assert!(!ents.is_empty(), "no entity upserted");
    for e in &ents {
        assert_eq!(e["identifier"], "checkout");
        assert_eq!(e["blueprint"], "microservice");
        assert_eq!(e["properties"]["commit"], "abc123");
        assert_eq!(e["token"], issued[0], "the peer did not see the real token");
    }
    let reqs = port.token_requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0]["keys"],
        serde_json::json!(["clientId", "clientSecret"])
    );
    assert_eq!(reqs[0]["clientId"], CLIENT_ID);
    assert_eq!(reqs[0]["secret_matches"], true);
    assert_eq!(reqs[0]["content_type"], "application/json");
    let audit = job.audit_text();
    assert!(audit.contains("\"decision\":\"injected\""), "{audit}");
    assert_absent(&[out, err, &audit], CLIENT_SECRET, "the Port client secret");
    assert_absent(&[out, err, &audit], &issued[0], "the Port access token");
}

#[test]
fn a_pipeline_upserts_an_entity_and_never_holds_the_client_secret_or_the_token() {
    let port = PortPeer::start(&[]);
    // Port's entity API refuses a call without the token, as lanyard's job would be.
    let (code, body) = curl(
        "POST",
        &format!(
            "{}/v1/blueprints/microservice/entities?upsert=true",
            port.url
        ),
        &[("content-type", "application/json")],
        Some(r#"{"identifier":"checkout"}"#),
    );
    assert_eq!(code, 401, "{body}");
    assert_eq!(json_of(&body)["ok"], false);

    let job = PortJob::new(Issuer::start(), &port, &env_config());
    // curl, then Port's documented call with the requests library, then the
    // environment the job had.
    let py = python().display().to_string();
    let script = format!(
        r#"{UPSERT} && echo && "$PY" -c '
import os, requests
r = requests.post(os.environ["PORT_API"] + "/v1/blueprints/microservice/entities",
                  params={{"upsert": "true"}},
                  json={{"identifier": "checkout", "title": "Checkout", "properties": {{"commit": "abc123"}}}})
print("requests:", r.status_code, r.json()["ok"])
' && env"#
    );
    let (code, out, err) = job.run(
        &script,
        &[
            ("PORT_CLIENT_SECRET", CLIENT_SECRET),
            ("PORT_API", &port.url),
            ("PY", &py),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("\"ok\": true"), "{out}");
    assert!(out.contains("requests: 201 True"), "{out}");
    assert_eq!(port.entities().len(), 2);
    // The variable holding the secret was scrubbed from the child.
    assert!(out.contains("HTTP_PROXY="), "env ran: {out}");
    assert!(
        !out.contains("PORT_CLIENT_SECRET"),
        "the secret's variable reached the job:\n{out}"
    );
    assert_upserted(&port, &job, &out, &err);
}

#[test]
fn the_client_secret_can_come_from_openbao_kv() {
    let issuer = Issuer::start();
    let bao = Bao::start();
    // The KV field secret/data/ci/stripe#api_key holds Port's client secret.
    bao.setup_jwt(&issuer.url, "60s", "120s", CLIENT_SECRET);
    let port = PortPeer::start(&[]);
    let vault = format!(
        "[[credential]]\nname = \"vault\"\nexchange = \"vault\"\naddress = \"{}\"\nrole = \"ci\"\n\n\
         [[credential]]\nname = \"port-secret\"\nfrom = \"vault\"\nsecret = \"secret/data/ci/stripe#api_key\"\n\n",
        bao.addr
    );
    let text = config("client_secret_from = \"port-secret\"", &vault).replace(
        "source = \"auto\"\n",
        &format!("source = \"auto\"\naudience = \"{BAO_AUDIENCE}\"\n"),
    );
    let job = PortJob::new(issuer, &port, &text);
    let (code, out, err) = job.run(
        &format!("{UPSERT} && echo && env"),
        &[("PORT_API", &port.url)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_upserted(&port, &job, &out, &err);

    let (code, out, err) = job.doctor(&[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("Port access token at")
            && out.contains("(secret from credential \"port-secret\")"),
        "{out}"
    );
    assert_absent(&[&out, &err], CLIENT_SECRET, "the Port client secret");
}

#[test]
fn port_refusals_are_shown_in_ports_words_with_the_secret_redacted() {
    // A wrong secret, and a hostile Port that quotes it back.
    let wrong = "wrong-port-secret-canary-0a9f";
    let port = PortPeer::start(&["--echo-secret"]);
    let job = PortJob::new(Issuer::start(), &port, &env_config());
    let (code, out, err) = job.doctor(&[("PORT_CLIENT_SECRET", wrong)]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("refused (401): unauthorized: Invalid client credentials"),
        "{out}"
    );
    assert!(out.contains("clientSecret '[redacted]'"), "{out}");
    assert!(
        out.contains(&format!("likely cause: Port did not accept client {CLIENT_ID} with the secret from the CI variable PORT_CLIENT_SECRET")),
        "{out}"
    );
    assert_absent(&[&out, &err], wrong, "the client secret");

    // `run` does not start the job, and says why in the same words.
    let marker = job.dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let (code, out, err) = job.run(&script, &[("PORT_CLIENT_SECRET", wrong)]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(!marker.exists(), "the job ran without its credential");
    assert!(
        err.contains("unauthorized: Invalid client credentials"),
        "{err}"
    );
    assert_absent(&[&out, &err], wrong, "the client secret");
    assert!(port.issued().is_empty());

    // No variable: named, before anything is sent.
    let (code, out, _) = job.doctor(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("client secret variable PORT_CLIENT_SECRET is not set"),
        "{out}"
    );
}

#[test]
fn garbage_answers_from_the_token_endpoint_fail_closed_naming_the_problem() {
    for (mode, want) in [
        ("notjson", "answered HTTP 200 with a body that is not JSON"),
        ("okfalse", "answered HTTP 200 with no `\"ok\": true`"),
        (
            "notoken",
            "answered HTTP 200 with no accessToken (a string)",
        ),
        (
            "badtoken",
            "answered HTTP 200 with an accessToken that cannot be sent in a header",
        ),
        (
            "basic",
            "answered HTTP 200 with tokenType \"Basic\" (lanyard sends Port tokens as Bearer)",
        ),
        (
            "noexpiry",
            "answered HTTP 200 with no expiresIn (seconds until the token expires)",
        ),
        ("huge", "sent a response larger than 1048576 bytes"),
        ("html401", "refused (401)"),
    ] {
        let port = PortPeer::start(&["--garbage", mode]);
        let job = PortJob::new(Issuer::start(), &port, &env_config());
        let env = [("PORT_CLIENT_SECRET", CLIENT_SECRET)];
        let (code, out, err) = job.doctor(&env);
        assert_eq!(code, 1, "{mode}: stdout:\n{out}\nstderr:\n{err}");
        assert!(out.contains(want), "{mode}: missing {want:?} in:\n{out}");
        let marker = job.dir.path().join("ran");
        let (code, rout, rerr) = job.run(&format!("touch {}", marker.display()), &env);
        assert_ne!(code, 0, "{mode}: the job ran:\n{rout}\n{rerr}");
        assert!(
            !marker.exists(),
            "{mode}: the job ran without its credential"
        );
        for t in port.issued() {
            assert_absent(&[&out, &err, &rout, &rerr], &t, "a Port token");
        }
        assert_absent(
            &[&out, &err, &rout, &rerr],
            CLIENT_SECRET,
            "the client secret",
        );
        assert_absent(
            &[&out, &err, &rout, &rerr],
            "X-Injected",
            "the injected header",
        );
        if mode != "html401" {
            assert!(
                !out.contains("having a moment"),
                "{mode}: the body was quoted: {out}"
            );
        }
    }
}

#[test]
fn the_same_token_back_on_refresh_is_never_served_past_its_end() {
    // Port answers a refresh with its one active token, here with the full
    // lifetime again: lanyard must still count from the first answer.
    let port = PortPeer::start(&["--ttl", "6", "--stale-expires"]);
    let job = PortJob::new(Issuer::start(), &port, &env_config());
    let second = port.dir.path().join("second-token");
    // Upserts until Port has issued its second token (bounded at ~30 s),
    // then one that must succeed with it.
    let script = format!(
        r#"i=0; while [ ! -e "{s}" ] && [ $i -lt 300 ]; do
             curl -sS -o /dev/null -X POST "$PORT_API/v1/blueprints/microservice/entities?upsert=true" \
               -H 'Content-Type: application/json' -d '{{"identifier":"checkout"}}' || true
             i=$((i+1)); sleep 0.1
           done
           {UPSERT}"#,
        s = second.display()
    );
    let (code, out, err) = job.run(
        &script,
        &[
            ("PORT_CLIENT_SECRET", CLIENT_SECRET),
            ("PORT_API", &port.url),
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let issued = port.issued();
    assert_eq!(issued.len(), 2, "{issued:?}");
    // Port never saw an expired (or any unknown) token from lanyard.
    let refused: Vec<_> = port
        .requests()
        .into_iter()
        .filter(|r| r.get("refused").is_some())
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    let ents = port.entities();
    assert_eq!(ents.last().expect("entity")["token"], issued[1]);
    assert!(ents.iter().any(|e| e["token"] == issued[0]));
    // Refreshes of a token that comes back unchanged are bounded, not a loop.
    let n = port.token_requests().len();
    assert!((2..=15).contains(&n), "{n} token requests");
    let audit = job.audit_text();
    for t in &issued {
        assert_absent(&[&out, &err, &audit], t, "a Port token");
    }
    println!("token requests: {n}, upserts: {}", ents.len());
}
