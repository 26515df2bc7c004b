//! `exchange = "port"`: defaults, where the secret comes from, the
//! variables `lanyard run` scrubs, and each bad value named.

use super::*;
use crate::config::{Port, PortClientId, PortSecret};

fn port(keys: &str) -> String {
    format!("[[credential]]\nname = \"port\"\nexchange = \"port\"\n{keys}")
}

#[test]
fn a_port_credential_defaults_to_the_eu_api_and_names_its_secret_variables() {
    let c = parse(&port(
        "client_id = \"abc123\"\nclient_secret_env = \"PORT_CLIENT_SECRET\"\n",
    ))
    .expect("config");
    let CredentialKind::Port(Port {
        api_url,
        token_url,
        client_id,
        client_secret,
    }) = &c.credentials[0].kind
    else {
        panic!("not port: {:?}", c.credentials[0].kind)
    };
    assert_eq!(api_url.as_str(), "https://api.getport.io/");
    assert_eq!(
        token_url.as_str(),
        "https://api.getport.io/v1/auth/access_token"
    );
    assert_eq!(client_id, &PortClientId::Literal("abc123".into()));
    assert_eq!(client_secret, &PortSecret::Env("PORT_CLIENT_SECRET".into()));
    assert_eq!(c.credentials[0].kind.label(), "port");
    assert_eq!(c.credentials[0].kind.parent(), None);
    assert_eq!(
        c.credentials[0].kind.secret_variables(),
        ["PORT_CLIENT_SECRET"]
    );

    // US region, client id from a variable, secret from a KV read.
    let src = "[[credential]]\nname = \"vault\"\nexchange = \"vault\"\naddress = \"https://vault.example.com\"\nrole = \"ci\"\n\
               [[credential]]\nname = \"port-secret\"\nfrom = \"vault\"\nsecret = \"secret/data/ci/port#client_secret\"\n"
        .to_owned()
        + &port("client_id_env = \"PORT_CLIENT_ID\"\nclient_secret_from = \"port-secret\"\napi_url = \"https://api.us.getport.io\"\n");
    let c = parse(&src).expect("config");
    let k = &c.credentials[2].kind;
    assert!(
        matches!(k, CredentialKind::Port(p) if p.token_url.as_str() == "https://api.us.getport.io/v1/auth/access_token")
    );
    assert_eq!(k.parent(), Some("port-secret"));
    assert_eq!(k.secret_variables(), ["PORT_CLIENT_ID"]);

    // An OAuth client secret's variable is scrubbed too.
    let c = parse("[[credential]]\nname = \"gw\"\nexchange = \"token-exchange\"\ntoken_url = \"https://sts.example.com/t\"\nclient_id = \"ci\"\nclient_secret_env = \"STS_SECRET\"\n").expect("config");
    assert_eq!(c.credentials[0].kind.secret_variables(), ["STS_SECRET"]);
}

#[test]
fn each_bad_port_value_is_named() {
    let src = "[[credential]]\nname = \"vault\"\nexchange = \"vault\"\naddress = \"https://vault.example.com\"\nrole = \"ci\"\n"
        .to_owned()
        + &port("client_id = \"has space\"\nclient_secret_env = \"PORT-SECRET\"\napi_url = \"http://api.getport.io/v1\"\nrole = \"x\"\n")
        + "[[credential]]\nname = \"p2\"\nexchange = \"port\"\nclient_id = \"a\"\nclient_id_env = \"B\"\nclient_secret_from = \"vault\"\n"
        + "[[credential]]\nname = \"p3\"\nexchange = \"port\"\nclient_id = \"a\"\nclient_secret_env = \"S\"\nclient_secret_from = \"nope\"\n"
        + "[[credential]]\nname = \"p4\"\nexchange = \"port\"\nclient_id = \"a\"\nclient_secret_from = \"nope\"\napi_url = \"https://api.getport.io/v1\"\n";
    let m: Vec<String> = errors(&src)
        .into_iter()
        .map(|e| format!("{}: {}", e.key, e.message))
        .collect();
    let m = m.join("\n");
    for want in [
        "credential[1].client_id: expected Port's client id",
        "credential[1].client_secret_env: expected the name of an environment variable that holds Port's client secret",
        "credential[1].api_url: expected an https:// URL",
        "credential[1].role: `role` does not apply to a credential with exchange = \"port\"",
        "credential[2].client_id_env: give either `client_id` or `client_id_env`, not both",
        "credential[2].client_secret_from: `client_secret_from` must name a secret read",
        "credential[3].client_secret_from: give either `client_secret_env` or `client_secret_from`, not both",
        "credential[4].client_secret_from: no credential named \"nope\" is defined above this one",
        "credential[4].api_url: expected Port's API base URL",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let missing = errors("[[credential]]\nname = \"port\"\nexchange = \"port\"\n");
    let keys: Vec<&str> = missing.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["credential[0].client_id", "credential[0].client_secret_env"]
    );
    // `client_secret` itself is not a key: a secret never goes in the file.
    let e = errors(&port(
        "client_id = \"a\"\nclient_secret = \"s3cr3t-in-the-file\"\n",
    ));
    assert!(
        e.iter().any(|e| e.key == "credential[0].client_secret"),
        "{e:?}"
    );
}

#[test]
fn the_github_port_example_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let c = Config::load(&root.join("examples/github-port.toml")).expect("valid");
    let labels: Vec<&str> = c.credentials.iter().map(|c| c.kind.label()).collect();
    assert_eq!(labels, ["port"]);
    assert_eq!(
        c.credentials[0].kind.secret_variables(),
        ["PORT_CLIENT_SECRET"]
    );
    assert_eq!(c.routes.len(), 1);
}
