//! The Azure managed-identity endpoint (App Service's protocol,
//! `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), on whenever the config has an
//! entra credential: the real `azure-identity` credentials get placeholder
//! tokens, and a request on the credential's route with one reaches
//! `peers/entra.py`'s Key Vault with the real token; a placeholder anywhere
//! else is refused and audited, strangers at the endpoint are refused, and
//! the real token never shows.

mod common;

use std::collections::HashMap;

use common::azure::{azure_venv, AzureJob, Entra, CLIENT_ID, GITHUB_SUB, TENANT};
use common::*;
use serde_json::Value;

const DB_PASSWORD: &str = "mi-secret-canary-4b7c21";

/// Two entra credentials (Key Vault, ARM), each with a plain-http route on
/// the peer: `/secrets/` for Key Vault, `/arm/` for ARM.
fn config(port: u16) -> String {
    let cred = |name: &str, scope: &str| {
        format!(
            "[[credential]]\nname = \"{name}\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\n\
             client_id = \"{CLIENT_ID}\"\nscope = \"{scope}\"\nauthority = \"{{ENTRA}}\"\n\n"
        )
    };
    format!(
        "[identity]\nsource = \"auto\"\n\n{}{}\
         [[route]]\nurl = \"http://127.0.0.1:{port}/secrets/\"\ncredential = \"kv-token\"\n\n\
         [[route]]\nurl = \"http://127.0.0.1:{port}/arm/\"\ncredential = \"arm\"\n\n\
         [audit]\nfile = \"{{AUDIT}}\"\n",
        cred("kv-token", "https://vault.azure.net/.default"),
        cred("arm", "https://management.azure.com/.default"),
    )
}

/// The peer, the job, and the peer's port (the routes' upstream).
fn entra() -> (Entra, AzureJob, String) {
    let issuer = Issuer::start();
    let entra = Entra::start(
        &issuer.url,
        &[
            "--subject",
            GITHUB_SUB,
            "--secret",
            &format!("db-password={DB_PASSWORD}"),
        ],
    );
    let port: u16 = entra
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("entra port");
    let job = AzureJob::new(issuer, &entra, &config(port));
    (entra, job, port.to_string())
}

fn audit_lines(job: &AzureJob) -> Vec<Value> {
    job.audit_text()
        .lines()
        .map(json_of)
        .filter(|l| l.get("decision").is_some())
        .collect()
}

/// The peer's GETs (Key Vault reads and anything else that reached it).
fn gets(entra: &Entra) -> Vec<Value> {
    entra
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "GET")
        .collect()
}

#[test]
fn placeholders_elsewhere_and_endpoint_strangers_are_refused_and_audited() {
    let (entra, job, port) = entra();
    let (root, other_ip) = (is_root(), non_loopback_ip());
    let out_dir = job.dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let o = out_dir.display();
    let mut script = format!(
        r#"set -u
E="$IDENTITY_ENDPOINT"; H="$IDENTITY_HEADER"; Q='api-version=2019-08-01&resource=https://vault.azure.net'
c() {{ name=$1; shift; echo "$name $(curl -s -o {o}/$name -w '%{{http_code}}' --noproxy '*' "$@")"; }}
env > {o}/env
c no-header "$E?$Q"
c wrong-header -H "X-IDENTITY-HEADER: 0$H" "$E?$Q"
c origin -H "X-IDENTITY-HEADER: $H" -H 'Origin: https://evil.example' "$E?$Q"
c sec-fetch -H "X-IDENTITY-HEADER: $H" -H 'Sec-Fetch-Mode: cors' "$E?$Q"
c post -X POST -H "X-IDENTITY-HEADER: $H" "$E?$Q"
c host -H "X-IDENTITY-HEADER: $H" -H "Host: evil.example" "$E?$Q"
c unknown -H "X-IDENTITY-HEADER: $H" "$E?api-version=2019-08-01&resource=https://storage.azure.com"
c ok -H "X-IDENTITY-HEADER: $H" -H 'Metadata: true' "$E?$Q"
P="$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' {o}/ok)"
B="http://127.0.0.1:$PORT"
p() {{ name=$1; shift; echo "$name $(curl -s -o {o}/$name -w '%{{http_code}}' "$@")"; }}
p routed -H "Authorization: Bearer $P" "$B/secrets/db-password?api-version=7.4"
p other-route -H "Authorization: Bearer $P" "$B/arm/subscriptions"
p passthrough -H "Authorization: Bearer $P" "http://localhost:$PORT/elsewhere"
p other-header -H "X-Token: $P" "http://localhost:$PORT/elsewhere"
p in-query "$B/secrets/db-password?api-version=7.4&t=$P"
"#
    );
    if root {
        script.push_str("echo \"other-user $(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -H \"X-IDENTITY-HEADER: $H\" \"$E?$Q\")\"\n");
    } else {
        eprintln!("SKIPPED other-user case: needs root to run a client as another user (setpriv)");
    }
    match &other_ip {
        Some(ip) => script.push_str(&format!(
            "echo \"non-loopback $(curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' --interface {ip} -H \"X-IDENTITY-HEADER: $H\" \"$E?$Q\")\"\n"
        )),
        None => eprintln!("SKIPPED non-loopback case: this machine has no non-loopback IPv4 address"),
    }
    let (code, out, err) = job.run(&script, &[("PORT", &port)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let got: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    let mut want = vec![
        ("no-header", "401"),
        ("wrong-header", "403"),
        ("origin", "403"),
        ("sec-fetch", "403"),
        ("post", "405"),
        ("host", "400"),
        ("unknown", "400"),
        ("ok", "200"),
        ("routed", "200"),
        ("other-route", "403"),
        ("passthrough", "403"),
        ("other-header", "403"),
        ("in-query", "403"),
    ];
    if root {
        want.push(("other-user", "403"));
    }
    if other_ip.is_some() {
        want.push(("non-loopback", "403"));
    }
    for (case, status) in &want {
        assert_eq!(got.get(case), Some(status), "{case}:\n{out}\n{err}");
    }
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap_or_default();
    let unknown = read("unknown");
    assert!(
        unknown.contains("https://vault.azure.net, https://management.azure.com"),
        "the 400 names the configured resources: {unknown}"
    );
    let ok = json_of(&read("ok"));
    let placeholder = ok["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert!(
        placeholder.starts_with("lanyard-placeholder-azure-"),
        "{ok}"
    );
    assert_eq!(json_of(&read("routed"))["value"], DB_PASSWORD);

    // The peer saw one read, with the real token; the refused requests
    // never left lanyard.
    let reads = gets(&entra);
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["path"], "/secrets/db-password");

    // Every fetch audited: served once, each refusal with its rule; each
    // misplaced placeholder denied with the placeholder rule.
    let lines = audit_lines(&job);
    let on_endpoint: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"] == "/azure/managed-identity")
        .collect();
    let served: Vec<&&Value> = on_endpoint
        .iter()
        .filter(|l| l["decision"] == "served")
        .collect();
    assert_eq!(served.len(), 1, "{lines:#?}");
    assert_eq!(served[0]["credential"], "kv-token");
    for rule in [
        "no X-IDENTITY-HEADER header",
        "wrong X-IDENTITY-HEADER value",
        "cross-site request: Origin",
        "a browser request (sec-fetch-mode)",
        "only GET",
        "no entra credential has resource",
    ] {
        assert!(
            on_endpoint.iter().any(|l| l["decision"] == "denied"
                && l["reason"].as_str().is_some_and(|r| r.contains(rule))),
            "no denied line with {rule:?}:\n{lines:#?}"
        );
    }
    let misplaced = lines
        .iter()
        .filter(|l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("placeholder Azure token"))
        })
        .count();
    assert_eq!(misplaced, 4, "{lines:#?}");
    if other_ip.is_some() {
        assert!(
            lines.iter().any(|l| l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not from loopback"))),
            "{lines:#?}"
        );
    }

    let env = read("env");
    assert!(
        env.contains("IDENTITY_ENDPOINT=http://127.0.0.1:")
            && env.contains("/azure/managed-identity\n"),
        "{env}"
    );
    let header = env
        .lines()
        .find_map(|l| l.strip_prefix("IDENTITY_HEADER="))
        .expect("IDENTITY_HEADER")
        .to_owned();
    let audit = job.audit_text();
    assert_absent(&[&out, &err, &audit], &header, "the identity header");
    let issued = entra.issued();
    assert_eq!(issued.len(), 2, "one token per entra credential");
    for t in &issued {
        assert_absent(&[&out, &err, &audit, &env], t, "an Entra token");
    }
}

#[test]
fn azure_identity_credentials_get_placeholders_that_the_route_turns_into_the_real_token() {
    let (entra, job, port) = entra();
    let py = azure_venv();
    let script = job.dir.path().join("client.py");
    std::fs::write(
        &script,
        r#"import json, os, time, requests
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
mi = ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
arm = ManagedIdentityCredential().get_token("https://management.azure.com/.default")
dac = DefaultAzureCredential().get_token("https://vault.azure.net/.default")
base = "http://127.0.0.1:" + os.environ["PORT"]
r = requests.get(base + "/secrets/db-password", params={"api-version": "7.4"},
                 headers={"Authorization": "Bearer " + mi.token})
print(json.dumps({"mi": mi.token, "arm": arm.token, "dac": dac.token,
                  "left": mi.expires_on - int(time.time()),
                  "status": r.status_code, "value": r.json().get("value")}))
"#,
    )
    .expect("script");
    let (code, out, err) = job.run(
        &format!("{} {} && env", py.display(), script.display()),
        &[("PORT", &port)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let res = json_of(out.lines().next().expect("client output"));
    let mi = res["mi"].as_str().expect("mi");
    assert!(mi.starts_with("lanyard-placeholder-azure-"), "{res}");
    assert_eq!(
        res["dac"], mi,
        "DefaultAzureCredential went to the endpoint"
    );
    assert_ne!(res["arm"], mi, "one placeholder per resource");
    // entra.py issues for --ttl 3599 by default: the real token's expiry.
    let left = res["left"].as_i64().expect("left");
    assert!((3300..=3600).contains(&left), "{res}");
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(res["value"], DB_PASSWORD);

    let reads = gets(&entra);
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["authorization_scheme"], "Bearer");
    let lines = audit_lines(&job);
    let served = lines.iter().filter(|l| l["decision"] == "served").count();
    assert_eq!(served, 3, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l["decision"] == "injected" && l["credential"] == "kv-token"),
        "{lines:#?}"
    );
    let audit = job.audit_text();
    for t in entra.issued() {
        assert_absent(&[&out, &err, &audit], &t, "an Entra token");
    }
}
