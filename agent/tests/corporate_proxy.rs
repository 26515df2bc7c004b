//! Behind a corporate proxy: a job whose environment names a real forward
//! proxy (Debian's tinyproxy, tests/common/tinyproxy.rs) that is the only
//! way to the token service and the upstream. Their host names resolve only
//! inside the proxy's own mount namespace, and everything runs in a private
//! network namespace (tests/common/netns.rs), so a direct dial cannot reach
//! them. The token service and the upstream are `peers/entra.py` (Entra's
//! token endpoint and a strict Key Vault), over TLS from a test CA.

mod common;

use common::azure::{AzureJob, Entra, CLIENT_ID, GITHUB_SUB, TENANT};
use common::netns::with_private_hosts;
use common::tinyproxy::Tinyproxy;
use common::*;

const VAULT: &str = "vault.corp.test";
const LOGIN: &str = "login.corp.test";
const OTHER: &str = "other.corp.test";
/// Resolvable by lanyard (and listed in NO_PROXY), not by the proxy.
const DIRECT: &str = "login.direct.test";
const DB_PASSWORD: &str = "kv-proxy-canary-4be2a0";
const PROXY_USER: &str = "corpuser";
const PROXY_PASS: &str = "corp-proxy-pass-canary-77c1";

struct Outcome {
    code: i32,
    out: String,
    err: String,
    env: String,
    audit: String,
    proxy_requests: Vec<String>,
    proxy_log: String,
    issued: Vec<String>,
    vault_hosts: Vec<String>,
    entra_port: u16,
    proxy_port: u16,
}

/// One `lanyard run` of a curl client, the job's environment naming the
/// proxy as `proxy_url(port)`, the token endpoint at `login_host`.
fn scenario(
    login_host: &'static str,
    job_env: fn(u16) -> Vec<(String, String)>,
    auth: Option<(&'static str, &'static str)>,
    deny: &'static [&'static str],
) -> Outcome {
    let certs_dir = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) =
        common::netns::ca_and_leaf(certs_dir.path(), &[VAULT, LOGIN, OTHER, DIRECT]);
    let proxy = Tinyproxy::start(&[VAULT, LOGIN, OTHER], auth, deny);
    let issuer = Issuer::start();
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let entra = Entra::start(
        &issuer.url,
        &[
            "--subject",
            GITHUB_SUB,
            "--secret",
            &format!("db-password={DB_PASSWORD}"),
            "--tls-cert",
            &c,
            "--tls-key",
            &k,
            "--vault-port",
            "443",
            "--vault-cert",
            &c,
            "--vault-key",
            &k,
        ],
    );
    let entra_port: u16 = entra
        .url
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    let text = format!(
        "[identity]\nsource = \"auto\"\n\n\
         [[credential]]\nname = \"kv\"\nexchange = \"entra\"\ntenant = \"{TENANT}\"\n\
         client_id = \"{CLIENT_ID}\"\nscope = \"https://vault.azure.net/.default\"\n\
         authority = \"https://{login_host}:{entra_port}\"\n\n\
         [[route]]\nurl = \"https://{VAULT}/\"\ncredential = \"kv\"\n\n\
         [upstream]\nextra_ca = \"{}\"\n\n[audit]\nfile = \"{{AUDIT}}\"\n",
        ca.display()
    );
    let job = AzureJob::new(issuer, &entra, &text);
    let env_file = job.dir.path().join("child.env");
    let script = format!(
        "env > {env} && curl -sS https://{VAULT}/secrets/db-password?api-version=7.4 && echo \
         && echo tunnel=$(curl -sS -o /dev/null -w '%{{http_code}}' https://{OTHER}:{entra_port}/nothing)",
        env = env_file.display()
    );
    let extra = job_env(proxy.port);
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (code, out, err) = job.run(&script, &extra);
    Outcome {
        code,
        out,
        err,
        env: std::fs::read_to_string(&env_file).unwrap_or_default(),
        audit: job.audit_text(),
        proxy_requests: proxy.requests(),
        proxy_log: proxy.log(),
        issued: entra.issued(),
        vault_hosts: entra
            .requests()
            .iter()
            .filter_map(|r| r["host"].as_str().map(str::to_owned))
            .collect(),
        entra_port,
        proxy_port: proxy.port,
    }
}

fn proxy_url(port: u16) -> String {
    format!("http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{port}")
}

fn in_namespace(what: &str, f: impl FnOnce() -> Outcome + Send + 'static) -> Option<Outcome> {
    match with_private_hosts(&[DIRECT], f) {
        Ok(o) => Some(o),
        Err(why) => {
            eprintln!("SKIPPED {what}: {why}");
            None
        }
    }
}

fn no_password_anywhere(o: &Outcome) {
    assert_absent(
        &[&o.out, &o.err, &o.audit, &o.env],
        PROXY_PASS,
        "the corporate proxy's password",
    );
}

#[test]
fn behind_a_corporate_proxy_the_exchange_the_route_and_tunnels_go_through_it() {
    eprintln!("proxy: {}", Tinyproxy::version());
    let Some(o) = in_namespace("corporate proxy", || {
        scenario(
            LOGIN,
            |p| {
                vec![
                    ("HTTPS_PROXY".into(), proxy_url(p)),
                    ("NO_PROXY".into(), "build-cache.corp.test,.internal".into()),
                ]
            },
            Some((PROXY_USER, PROXY_PASS)),
            &[],
        )
    }) else {
        return;
    };
    let all = format!(
        "stdout:\n{}\nstderr:\n{}\nproxy:\n{}",
        o.out, o.err, o.proxy_log
    );
    assert_eq!(o.code, 0, "{all}");
    // The vault accepted the token lanyard got through the proxy.
    assert!(o.out.contains(DB_PASSWORD), "{all}");
    assert!(
        o.out.contains("tunnel=404"),
        "the untouched tunnel reached the peer: {all}"
    );
    let reqs = &o.proxy_requests;
    let connect = |h: &str, p: u16| format!("CONNECT {h}:{p} HTTP/1.1");
    assert!(
        reqs.contains(&connect(LOGIN, o.entra_port)),
        "the exchange: {reqs:#?}"
    );
    assert!(reqs.contains(&connect(VAULT, 443)), "the route: {reqs:#?}");
    assert!(
        reqs.contains(&connect(OTHER, o.entra_port)),
        "the tunnel: {reqs:#?}"
    );
    // The peer saw the route's requests at the vault's name, and the
    // tunnelled one at the other name (lanyard did not touch it).
    assert!(
        o.vault_hosts.iter().any(|h| h == VAULT),
        "{:?}",
        o.vault_hosts
    );
    assert!(
        o.vault_hosts
            .iter()
            .all(|h| h == VAULT || h.starts_with(OTHER)),
        "{:?}",
        o.vault_hosts
    );
    // The child's NO_PROXY keeps the job's entries and adds the listener.
    let no_proxy = o
        .env
        .lines()
        .find_map(|l| l.strip_prefix("NO_PROXY="))
        .expect("NO_PROXY in the child");
    assert!(
        no_proxy.starts_with("build-cache.corp.test,.internal,127.0.0.1:"),
        "{no_proxy}"
    );
    // The child's proxy variables are lanyard's, not the corporate proxy's.
    assert!(o.env.contains("HTTPS_PROXY=http://lanyard:"), "{}", o.env);
    assert!(
        !o.env.contains(&format!("127.0.0.1:{}", o.proxy_port)),
        "{}",
        o.env
    );
    no_password_anywhere(&o);
    for t in &o.issued {
        assert_absent(&[&o.out, &o.err, &o.audit, &o.env], t, "an Entra token");
    }
}

#[test]
fn no_proxy_hosts_are_dialled_directly() {
    let Some(o) = in_namespace("NO_PROXY", || {
        scenario(
            DIRECT,
            |p| {
                vec![
                    ("https_proxy".into(), proxy_url(p)),
                    ("no_proxy".into(), ".direct.test, 10.0.0.0/8".to_owned()),
                ]
            },
            Some((PROXY_USER, PROXY_PASS)),
            &[],
        )
    }) else {
        return;
    };
    let all = format!(
        "stdout:\n{}\nstderr:\n{}\nproxy:\n{}",
        o.out, o.err, o.proxy_log
    );
    assert_eq!(o.code, 0, "{all}");
    assert!(o.out.contains(DB_PASSWORD), "{all}");
    // The token endpoint (which the proxy cannot even resolve) was dialled
    // directly; the route still went through the proxy.
    assert!(!o.proxy_log.contains(DIRECT), "{all}");
    assert!(
        o.proxy_requests
            .contains(&format!("CONNECT {VAULT}:443 HTTP/1.1")),
        "{all}"
    );
    no_password_anywhere(&o);
}

#[test]
fn a_proxy_that_wants_other_credentials_stops_the_start_naming_the_proxy() {
    let Some(o) = in_namespace("proxy 407", || {
        scenario(
            LOGIN,
            |p| vec![("HTTPS_PROXY".into(), proxy_url(p))],
            Some((PROXY_USER, "the-right-password-is-another")),
            &[],
        )
    }) else {
        return;
    };
    let all = format!(
        "stdout:\n{}\nstderr:\n{}\nproxy:\n{}",
        o.out, o.err, o.proxy_log
    );
    assert_ne!(o.code, 0, "{all}");
    let named = format!(
        "the proxy http://127.0.0.1:{} (from HTTPS_PROXY) refused CONNECT {LOGIN}:{}: 40",
        o.proxy_port, o.entra_port
    );
    assert!(o.err.contains(&named), "{all}");
    assert!(
        o.err.contains("did not accept the user and password"),
        "{all}"
    );
    assert!(!o.out.contains(DB_PASSWORD), "{all}");
    no_password_anywhere(&o);
}

#[test]
fn a_proxy_that_refuses_a_host_gives_the_client_a_502_naming_it() {
    let Some(o) = in_namespace("proxy 403", || {
        scenario(
            LOGIN,
            |p| vec![("HTTPS_PROXY".into(), proxy_url(p))],
            Some((PROXY_USER, PROXY_PASS)),
            &[VAULT],
        )
    }) else {
        return;
    };
    let all = format!(
        "stdout:\n{}\nstderr:\n{}\naudit:\n{}\nproxy:\n{}",
        o.out, o.err, o.audit, o.proxy_log
    );
    // The exchange went through; the route's host is refused by the proxy,
    // and lanyard's answer and audit record say who refused and why.
    assert!(
        o.proxy_requests
            .contains(&format!("CONNECT {LOGIN}:{} HTTP/1.1", o.entra_port)),
        "{all}"
    );
    let named = format!(
        "the proxy http://127.0.0.1:{} (from HTTPS_PROXY) refused CONNECT {VAULT}:443: 403",
        o.proxy_port
    );
    assert!(o.out.contains(&named) || o.audit.contains(&named), "{all}");
    assert!(!o.out.contains(DB_PASSWORD), "{all}");
    no_password_anywhere(&o);
}
