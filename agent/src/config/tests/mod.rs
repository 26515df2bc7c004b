//! The file as a whole (positions, every problem in one run), credentials
//! and routes. `sections`: identity and login, proxy limits, rotation, and
//! the keyword lists in messages.

use std::path::Path;

use super::*;
use crate::route::{HostPattern, Template};

mod aws;
mod azure;
mod docs;
mod duplicates;
mod google;
mod port;
mod sections;

pub(super) fn parse(src: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("lanyard.toml"), src)
}

pub(super) fn errors(src: &str) -> Vec<ConfigError> {
    match parse(src) {
        Err(ConfigErrors::Invalid(v)) => v,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected errors for:\n{src}"),
    }
}

pub(super) const CONTRACT: &str = r#"
[identity]
source = "auto"
audience = "https://sts.example.com"

[[credential]]
name = "gateway"
exchange = "token-exchange"
token_url = "https://sts.example.com/oauth2/token"
audience = "https://api.example.com"
scope = "deploy"

[[credential]]
name = "vault"
exchange = "vault"
address = "https://vault.example.com"
mount = "jwt"
role = "ci-deploy"

[[credential]]
name = "stripe"
from = "vault"
secret = "secret/data/ci/stripe#api_key"

[[route]]
url = "https://api.example.com/v1/"
credential = "gateway"
methods = ["GET", "HEAD"]
header = "Authorization"
format = "Bearer {token}"

[[route]]
name = "stripe"
url = "https://*.stripe.com/v1"
credential = "stripe"

[proxy]
listen = "127.0.0.1:0"
egress = "allow"

[audit]
file = "lanyard-audit.jsonl"
"#;

#[test]
fn the_design_contract_example_parses() {
    let c = parse(CONTRACT).expect("contract config");
    assert_eq!(c.identity.source, None, "source = \"auto\"");
    assert_eq!(c.credentials.len(), 3);
    assert!(
        matches!(&c.credentials[2].kind, CredentialKind::VaultKv { from, path, field, .. } if from == "vault" && path == "secret/data/ci/stripe" && field == "api_key")
    );
    let r = &c.routes[0];
    assert_eq!(
        (r.scheme.as_str(), r.port, r.path_prefix.as_str()),
        ("https", 443, "/v1/")
    );
    assert_eq!(r.methods.as_deref(), Some(&[Method::GET, Method::HEAD][..]));
    assert_eq!(c.routes[1].host, HostPattern::Suffix("stripe.com".into()));
    assert_eq!(c.routes[1].path_prefix, "/v1/");
    assert_eq!(
        c.routes[1].env_name().as_deref(),
        Some("LANYARD_URL_STRIPE")
    );
    assert_eq!(c.proxy.egress, Egress::Allow);
}

use http::Method;

#[test]
fn every_problem_is_reported_in_one_run_with_positions() {
    let src = r#"[identity]
source = "githib"
audiance = "x"

[[credential]]
name = "gw"
exchange = "token-exchange"
token_url = "http://sts.example.com/token"
lifetime = "ten minutes"
role = "nope"

[[route]]
url = "https://api.example.com/a/../b/"
credential = "missing"

[proxy]
listen = "0.0.0.0:8080"
colour = "blue"
"#;
    let errs = errors(src);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = text.join("\n");
    let expect = [
        (
            "lanyard.toml:2:10: identity.source",
            "unknown identity source \"githib\"",
        ),
        (
            "lanyard.toml:3:1: identity.audiance",
            "unknown key `audiance` in [identity]; expected one of: source, audience",
        ),
        (
            "lanyard.toml:8:13: credential[0].token_url",
            "plain http only for loopback",
        ),
        (
            "lanyard.toml:9:12: credential[0].lifetime",
            "expected a duration",
        ),
        (
            "lanyard.toml:10:8: credential[0].role",
            "does not apply to a credential with exchange = \"token-exchange\"",
        ),
        ("lanyard.toml:13:7: route[0].url", "dot segments"),
        (
            "lanyard.toml:14:14: route[0].credential",
            "no credential named \"missing\"; defined: gw",
        ),
        ("lanyard.toml:17:10: proxy.listen", "binds loopback only"),
        ("lanyard.toml:18:1: proxy.colour", "unknown key `colour`"),
    ];
    for (pos, msg) in expect {
        assert!(
            text.iter().any(|t| t.starts_with(pos) && t.contains(msg)),
            "missing {pos} … {msg} in:\n{all}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{all}");
}

#[test]
fn wrong_types_name_what_was_expected() {
    let errs = errors("[identity]\naudience = 5\n[proxy]\negress = true\n[[credential]]\nname = \"x\"\nexchange = \"vault\"\naddress = \"https://v\"\nrole = [\"a\"]\n");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter()
            .any(|e| e.contains("identity.audience: expected a string, found an integer")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("proxy.egress: expected a string, found a boolean")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("credential[0].role: expected a string, found an array")),
        "{all:?}"
    );
}

#[test]
fn toml_syntax_errors_have_positions() {
    let errs = errors("[identity\nsource = \"auto\"\n");
    assert_eq!(errs[0].line, 1, "{errs:?}");
    assert!(errs[0].message.starts_with("invalid TOML"), "{errs:?}");
}

#[test]
fn unknown_top_level_sections_are_errors() {
    let errs = errors("[identiy]\nsource = \"auto\"\n");
    assert!(
        errs[0].to_string().contains(
            "unknown key `identiy` at the top level; expected one of: identity, credential"
        ),
        "{errs:?}"
    );
}

#[test]
fn kv_credentials_must_name_an_earlier_vault_credential() {
    let errs = errors(
        "[[credential]]\nname = \"gw\"\nexchange = \"passthrough\"\n[[credential]]\nname = \"k\"\nfrom = \"gw\"\nsecret = \"secret/data/x#f\"\n[[credential]]\nname = \"k2\"\nfrom = \"nope\"\nsecret = \"secret/x\"\n",
    );
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.contains(
            "`from` must name a vault, aws-web-identity or entra credential; \"gw\" is passthrough"
        )),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("no vault, aws-web-identity or entra credential named \"nope\"")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("expected \"<mount>/data/<path>#<field>\"")),
        "{all:?}"
    );
}

#[test]
fn duplicate_credential_names_are_refused() {
    let errs = errors("[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n");
    assert!(
        errs[0]
            .to_string()
            .contains("credential \"a\" is defined twice"),
        "{errs:?}"
    );
    assert_eq!(errs[0].line, 5);
}

#[test]
fn client_secrets_come_from_the_environment_never_the_file() {
    let errs = errors("[[credential]]\nname = \"a\"\nexchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nclient_secret = \"hunter2\"\n");
    assert!(
        errs[0].to_string().contains("unknown key `client_secret`"),
        "{errs:?}"
    );
    let c = parse("[[credential]]\nname = \"a\"\nexchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nclient_id = \"lanyard\"\nclient_secret_env = \"STS_SECRET\"\n").expect("ok");
    assert!(
        matches!(&c.credentials[0].kind, CredentialKind::TokenExchange { client: ClientAuth::Basic { client_id, secret_env }, .. } if client_id == "lanyard" && secret_env == "STS_SECRET")
    );
    let errs = errors("[[credential]]\nname = \"a\"\nexchange = \"token-exchange\"\ntoken_url = \"https://user:pw@s/t\"\n");
    assert!(
        errs[0].to_string().contains("must not carry userinfo"),
        "{errs:?}"
    );
}

#[test]
fn templates_render_bearer_custom_and_basic() {
    assert_eq!(
        Template::Format {
            before: "Bearer ".into(),
            after: String::new()
        }
        .render("t"),
        "Bearer t"
    );
    assert_eq!(
        Template::Basic {
            username: "x-access-token".into()
        }
        .render("t"),
        "Basic eC1hY2Nlc3MtdG9rZW46dA=="
    );
    let errs = errors("[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n[[route]]\nurl = \"https://a.example/\"\ncredential = \"a\"\nformat = \"Bearer\"\nheader = \"Content-Length\"\n");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter().any(|e| e.contains("exactly one {token}")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("`content-length` controls framing")),
        "{all:?}"
    );
}

#[test]
fn an_empty_error_list_prints_without_panicking() {
    assert_eq!(
        ConfigErrors::Invalid(Vec::new()).to_string(),
        "the config has 0 problems:"
    );
}

#[test]
fn an_unreadable_config_keeps_its_io_cause() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("missing.toml");
    let e = Config::load(&missing).expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot read config {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let cause = std::error::Error::source(&e).expect("source");
    assert_eq!(
        cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound)
    );
}

#[test]
fn a_file_without_credentials_is_an_error_that_says_so() {
    for src in ["", "# todo\n", "[identity]\nsource = \"github\"\n"] {
        let e = errors(src);
        assert_eq!(e.len(), 1, "{src:?}: {e:?}");
        assert!(
            e[0].message.starts_with("no [[credential]]") && e[0].line == 1,
            "{src:?}: {e:?}"
        );
    }
}
