//! Azure: the `entra` exchange (federated client assertion) and Key Vault
//! secrets, with the real binary against `peers/entra.py`, a strict
//! Entra ID token endpoint and Key Vault that verifies the assertion's
//! signature against the CI issuer's JWKS.

mod common;

use common::azure::{AzureJob, Entra, CLIENT_ID, GITHUB_SUB, TENANT};
use common::*;

fn config(extra: &str) -> String {
    format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"kv-token\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\n\
         client_id = \"{CLIENT_ID}\"\nscope = \"https://vault.azure.net/.default\"\nauthority = \"{{ENTRA}}\"\n\n\
         {extra}\n[audit]\nfile = \"{{AUDIT}}\"\n"
    )
}

const DB_PASSWORD: &str = "kv-secret-canary-5e1f0a";

#[test]
fn entra_refusals_are_explained_in_aadsts_words_without_the_token() {
    // The federated credential trusts another branch: AADSTS70021.
    let issuer = Issuer::start();
    let entra = Entra::start(
        &issuer.url,
        &["--subject", "repo:acme/app:environment:prod"],
    );
    let job = AzureJob::new(issuer, &entra, &config(""));
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("AADSTS70021"), "{out}");
    assert!(
        out.contains("likely cause: no federated identity credential matched the token"),
        "{out}"
    );
    // What was sent, so the federated credential can be fixed to match.
    for want in [
        format!("issuer {:?}", job.issuer.url),
        format!("subject {GITHUB_SUB:?}"),
        "audience [\"api://AzureADTokenExchange\"]".to_owned(),
        format!("app {CLIENT_ID} (tenant {TENANT})"),
        "GitHub: the subject is \"repo:acme/app:ref:refs/heads/<branch>\"".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(entra.issued().is_empty(), "a token was issued");
    assert_absent(
        &[&out, &err],
        &job.issuer.bearer,
        "the GitHub request token",
    );

    // An app that is not in the tenant: AADSTS700016.
    let issuer = Issuer::start();
    let entra = Entra::start(&issuer.url, &[]);
    let text = config("").replace(CLIENT_ID, "00000000-0000-0000-0000-00000000beef");
    let job = AzureJob::new(issuer, &entra, &text);
    let (code, out, _) = job.doctor();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("AADSTS700016"), "{out}");
    assert!(
        out.contains("likely cause: no application 00000000-0000-0000-0000-00000000beef in tenant"),
        "{out}"
    );

    // A secret that the vault does not have: Key Vault's own words, and
    // the Entra token that was sent for it is never shown.
    let issuer = Issuer::start();
    let entra = Entra::start(&issuer.url, &[]);
    let kv =
        "[[credential]]\nname = \"db\"\nfrom = \"kv-token\"\nsecret = \"{ENTRA}/secrets/nope\"\n";
    let job = AzureJob::new(issuer, &entra, &config(kv));
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("SecretNotFound: A secret with (name/id) nope was not found"),
        "{out}"
    );
    assert!(out.contains("likely cause: no secret at"), "{out}");
    let issued = entra.issued();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_absent(&[&out, &err], &issued[0], "the Entra access token");
}

#[test]
fn garbage_answers_from_entra_or_key_vault_fail_closed_without_quoting_them() {
    let issuer = Issuer::start();
    let entra = Entra::start(&issuer.url, &["--garbage", "token"]);
    let job = AzureJob::new(issuer, &entra, &config(""));
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("answered HTTP 200 with a body that is not JSON"),
        "{out}"
    );
    let issued = entra.issued();
    assert_eq!(issued.len(), 1);
    assert_absent(&[&out, &err], &issued[0], "the Entra access token");
    assert!(
        !out.contains("having a moment"),
        "the body was quoted: {out}"
    );

    // A secret bundle whose value is not a string: no value, nothing quoted.
    let issuer = Issuer::start();
    let entra = Entra::start(
        &issuer.url,
        &[
            "--garbage",
            "secret",
            "--secret",
            &format!("db={DB_PASSWORD}"),
        ],
    );
    let kv =
        "[[credential]]\nname = \"db\"\nfrom = \"kv-token\"\nsecret = \"{ENTRA}/secrets/db\"\n";
    let job = AzureJob::new(issuer, &entra, &config(kv));
    let (code, out, err) = job.doctor();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no value (a secret bundle's `value` string)"),
        "{out}"
    );
    assert_absent(&[&out, &err], DB_PASSWORD, "the Key Vault secret");
}

#[test]
fn an_entra_token_and_a_key_vault_secret_reach_routes_and_never_the_job() {
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
    let up = Upstream::start(false);
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::copy(up.ca.as_ref().expect("ca"), &ca).expect("ca");
    let routes = format!(
        "[[credential]]\nname = \"db\"\nfrom = \"kv-token\"\nsecret = \"{{ENTRA}}/secrets/db-password\"\n\n\
         [[credential]]\nname = \"arm\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\n\
         scope = \"https://management.azure.com/.default\"\nauthority = \"{{ENTRA}}\"\n\n\
         [[route]]\nurl = \"https://127.0.0.1:{p}/arm/\"\ncredential = \"arm\"\n\n\
         [[route]]\nurl = \"https://127.0.0.1:{p}/db/\"\ncredential = \"db\"\nheader = \"X-Db-Password\"\nformat = \"{{token}}\"\n\n\
         [upstream]\nextra_ca = \"{ca}\"\n",
        p = up.port,
        ca = ca.display()
    );
    let job = AzureJob::new(issuer, &entra, &config(&routes));
    let up_port = up.port.to_string();
    let (code, out, err) = job.run(
        r#"curl -sS -o /dev/null "https://127.0.0.1:$UP/arm/subscriptions" && \
           curl -sS -o /dev/null "https://127.0.0.1:$UP/db/connect" && env"#,
        &[("UP", &up_port)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");

    // The token endpoint got exactly Entra's client-credentials form, with
    // a GitHub token minted afresh for each exchange for
    // api://AzureADTokenExchange.
    let reqs = entra.token_requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let mut scopes: Vec<&str> = reqs.iter().filter_map(|r| r["scope"].as_str()).collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            "https://management.azure.com/.default",
            "https://vault.azure.net/.default"
        ]
    );
    assert_ne!(
        reqs[0]["assertion_claims"]["jti"], reqs[1]["assertion_claims"]["jti"],
        "one CI token was reused for two exchanges"
    );
    assert!(job.issuer.gha_requests() >= 2);
    let r = reqs
        .iter()
        .find(|r| r["scope"] == "https://vault.azure.net/.default")
        .expect("vault exchange");
    assert_eq!(r["path_tenant"], TENANT);
    assert_eq!(r["grant_type"], "client_credentials");
    assert_eq!(r["client_id"], CLIENT_ID);
    assert_eq!(
        r["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(r["assertion_claims"]["aud"], "api://AzureADTokenExchange");
    assert_eq!(r["assertion_claims"]["sub"], GITHUB_SUB);
    assert!(
        r.get("audience").is_none() && r.get("client_secret").is_none(),
        "{r}"
    );

    // Key Vault was read with that token and api-version 7.4.
    let reads: Vec<_> = entra
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "GET")
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["path"], "/secrets/db-password");
    assert_eq!(reads[0]["query"], "api-version=7.4");
    assert_eq!(reads[0]["authorization_scheme"], "Bearer");

    let issued = entra.issued_for("https://management.azure.com");
    assert_eq!(issued.len(), 1);
    let recs = up.records();
    let arm = recs
        .iter()
        .find(|r| r["path"] == "/arm/subscriptions")
        .expect("arm");
    assert_eq!(
        header_values(arm, "authorization"),
        [format!("Bearer {}", issued[0])]
    );
    let db = recs
        .iter()
        .find(|r| r["path"] == "/db/connect")
        .expect("db");
    assert_eq!(header_values(db, "x-db-password"), [DB_PASSWORD]);

    let audit = job.audit_text();
    assert!(audit.contains("\"decision\":\"injected\""), "{audit}");
    assert!(out.contains("HTTPS_PROXY="), "env ran: {out}");
    for t in entra.issued() {
        assert_absent(&[&out, &err, &audit], &t, "an Entra token");
    }
    assert_absent(&[&out, &err, &audit], DB_PASSWORD, "the Key Vault secret");
}

#[test]
fn status_and_doctor_show_the_app_the_assertion_sent_and_the_token_expiry() {
    let issuer = Issuer::start();
    let entra = Entra::start(&issuer.url, &["--subject", GITHUB_SUB, "--ttl", "1800"]);
    let port = entra.url.rsplit(':').next().expect("port").to_owned();
    let route = format!(
        "[[route]]\nurl = \"http://127.0.0.1:{port}/secrets/\"\ncredential = \"kv-token\"\n"
    );
    let job = AzureJob::new(issuer, &entra, &config(&route));
    let authority = entra.url.trim_end_matches('/').to_owned();
    let want = [
        format!(
            "    app {CLIENT_ID} in tenant {TENANT} at {authority}, scope https://vault.azure.net/.default\n"
        ),
        format!(
            "    federated assertion sent: issuer {}, subject {GITHUB_SUB}, audience api://AzureADTokenExchange\n",
            job.issuer.url
        ),
        "    managed-identity endpoint: a placeholder for resource https://vault.azure.net (the real token only on its routes)\n".to_owned(),
        format!("    routes using it: http://127.0.0.1:{port}/secrets/\n"),
    ];

    let (code, out, err) = job.doctor();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for w in &want {
        assert!(out.contains(w.as_str()), "missing {w:?} in:\n{out}");
    }
    assert!(out.contains("    token expires at 20"), "{out}");

    let (code, out, err) = job.start();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let st = job.status_json();
    let c = &st["credentials"][0];
    let a = &c["azure"];
    assert_eq!(a["tenant"], TENANT, "{st}");
    assert_eq!(a["client_id"], CLIENT_ID, "{st}");
    assert_eq!(a["scope"], "https://vault.azure.net/.default", "{st}");
    assert_eq!(a["authority"], authority.as_str(), "{st}");
    assert_eq!(
        a["assertion_audience"], "api://AzureADTokenExchange",
        "{st}"
    );
    assert_eq!(a["federated_issuer"], job.issuer.url.as_str(), "{st}");
    assert_eq!(a["federated_subject"], GITHUB_SUB, "{st}");
    assert_eq!(
        a["managed_identity_resource"], "https://vault.azure.net",
        "{st}"
    );
    assert_eq!(
        a["routes"],
        serde_json::json!([format!("http://127.0.0.1:{port}/secrets/")]),
        "{st}"
    );
    // --ttl 1800: the token's end, about half an hour away, as RFC 3339.
    let at = a["expires_at"].as_str().expect("expires_at");
    assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    let left = c["expires_in_s"].as_u64().expect("expires_in_s");
    assert!((1700..=1800).contains(&left), "{st}");
    let (code, text, err) = job.lanyard(&["status"], &[]);
    assert_eq!(code, 0, "{err}");
    for w in &want {
        assert!(text.contains(w.as_str()), "missing {w:?} in:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "    token expires at {at} (Entra cannot revoke it)\n"
        )),
        "{text}"
    );
    let (code, stop, stop_err) = job.lanyard(&["stop"], &[]);
    assert_eq!(code, 0, "{stop}\n{stop_err}");
    let status = st.to_string();
    let issued = entra.issued();
    assert_eq!(issued.len(), 2, "doctor's and start's: {issued:?}");
    for t in &issued {
        assert_absent(
            &[&out, &err, &status, &text, &stop, &stop_err],
            t,
            "an Entra token",
        );
    }
}
