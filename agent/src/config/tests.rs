use std::path::Path;

use super::*;
use crate::route::{HostPattern, IdentityKinds, Template};

fn parse(src: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("lanyard.toml"), src)
}

fn errors(src: &str) -> Vec<ConfigError> {
    match parse(src) {
        Err(ConfigErrors::Invalid(v)) => v,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected errors for:\n{src}"),
    }
}

const CONTRACT: &str = r#"
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
    assert_eq!(c.identity.source, SourceKind::Auto);
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
        all.iter()
            .any(|e| e.contains("`from` must name a vault credential; \"gw\" is passthrough")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("no vault credential named \"nope\"")),
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
fn rotation_settings_are_bounded() {
    let errs = errors("[rotation]\nfraction = 0.99\njitter = 0.5\nretry_min = \"0s\"\n");
    assert_eq!(errs.len(), 3, "{errs:?}");
    let c = parse(
        "[rotation]\nfraction = 0.5\njitter = 0\nretry_min = \"200ms\"\nretry_max = \"2s\"\n",
    )
    .expect("ok");
    assert_eq!(c.rotation.retry_min, Duration::from_millis(200));
}

#[test]
fn an_empty_error_list_prints_without_panicking() {
    assert_eq!(
        ConfigErrors::Invalid(Vec::new()).to_string(),
        "the config has 0 problems:"
    );
}

#[test]
fn login_table_and_route_identities_parse() {
    let c = parse(
        r#"
[identity]
source = "login"
[login]
issuer = "https://login.acme.test"
client_id = "lanyard-cli"
scopes = ["email", "openid"]
flow = "pkce"
[[credential]]
name = "gw"
exchange = "passthrough"
[[route]]
url = "https://api.example.com/v1/"
credential = "gw"
identities = ["ci"]
[[route]]
url = "https://api.example.com/v2/"
credential = "gw"
"#,
    )
    .expect("ok");
    let l = c.identity.login.expect("login");
    assert_eq!(l.client_id, "lanyard-cli");
    assert_eq!(
        l.scopes,
        ["email"],
        "openid is always asked for, not listed twice"
    );
    assert_eq!(l.flow, LoginFlow::Pkce);
    assert!(!c.routes[0].identities.developer && c.routes[0].identities.ci);
    assert_eq!(c.routes[1].identities, IdentityKinds::default());
}

#[test]
fn login_and_identities_mistakes_are_all_reported() {
    let errs = errors(
        r#"
[identity]
source = "login"
[[credential]]
name = "gw"
exchange = "passthrough"
[[route]]
url = "https://api.example.com/v1/"
credential = "gw"
identities = ["robot"]
[[route]]
url = "https://api.example.com/v2/"
credential = "gw"
identities = []
"#,
    );
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        all.iter()
            .any(|e| e.contains("identity.source") && e.contains("needs a [login] table")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("route[0].identities")
                && e.contains("unknown identity kind \"robot\"")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e.contains("route[1].identities") && e.contains("empty")),
        "{all:?}"
    );
    let errs =
        errors("[login]\nissuer = \"http://login.acme.test\"\nflow = \"magic\"\nclient = \"x\"\n");
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for want in [
        "login.issuer: expected an https:// URL",
        "login.flow: expected \"device\" or \"pkce\"",
        "login.client: unknown key `client` in [login]",
        "login.client_id: [login] needs `client_id`",
    ] {
        assert!(all.iter().any(|e| e.contains(want)), "{want}: {all:?}");
    }
}

#[test]
fn a_developer_login_skips_credentials_only_ci_routes_use() {
    let c = parse(
        r#"
[[credential]]
name = "shared"
exchange = "passthrough"
[[credential]]
name = "vault"
exchange = "vault"
address = "https://vault.example.com"
role = "ci"
[[credential]]
name = "stripe"
from = "vault"
secret = "secret/data/ci/stripe#api_key"
[[credential]]
name = "deploy"
exchange = "passthrough"
[[route]]
url = "https://api.example.com/v1/"
credential = "shared"
[[route]]
url = "https://api.stripe.com/v1/"
credential = "stripe"
[[route]]
url = "https://deploy.example.com/"
credential = "deploy"
identities = ["ci"]
"#,
    )
    .expect("ok");
    // stripe is for everyone, so its vault parent is needed too.
    assert_eq!(c.ci_only_credentials(), ["deploy"]);
}

#[test]
fn the_local_dev_example_is_valid_and_keeps_deploys_for_ci() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let c = Config::load(&root.join("examples/local-dev.toml")).expect("valid");
    assert!(c.identity.login.is_some());
    assert_eq!(c.ci_only_credentials(), ["deployer"]);
}

#[test]
fn upstream_limits_have_defaults_and_take_durations_and_a_rate() {
    let c = parse(CONTRACT).expect("contract config");
    assert_eq!(c.proxy.limits, UpstreamLimits::default());
    assert_eq!(c.proxy.limits.header, Duration::from_secs(60));
    assert_eq!(c.proxy.limits.total, Duration::from_secs(1800));
    assert_eq!(c.proxy.limits.min_rate, 1024);
    assert_eq!(c.proxy.limits.window, Duration::from_secs(30));
    let src = CONTRACT.replace(
        "egress = \"allow\"",
        "upstream_header_timeout = \"2s\"\nupstream_response_timeout = \"10m\"\n\
         upstream_min_rate = 0\nupstream_rate_window = \"1m 30s\"",
    );
    let l = parse(&src).expect("limits").proxy.limits;
    assert_eq!(
        l,
        UpstreamLimits {
            header: Duration::from_secs(2),
            total: Duration::from_secs(600),
            min_rate: 0,
            window: Duration::from_secs(90),
        }
    );
}

#[test]
fn bad_upstream_limits_are_named_with_positions() {
    let cases = [
        (
            "upstream_header_timeout = \"90s\"",
            "proxy.upstream_header_timeout: must be under the client idle timeout (90s)",
        ),
        (
            "upstream_header_timeout = \"50s\"\nupstream_response_timeout = \"10s\"",
            "proxy.upstream_header_timeout: must not be longer than upstream_response_timeout",
        ),
        (
            "upstream_response_timeout = \"soon\"",
            "proxy.upstream_response_timeout: expected a duration",
        ),
        (
            "upstream_rate_window = \"0s\"",
            "proxy.upstream_rate_window: expected a duration greater than zero",
        ),
        (
            "upstream_min_rate = -1",
            "proxy.upstream_min_rate: expected bytes per second, 0 or more",
        ),
        (
            "upstream_min_rate = \"1KiB\"",
            "proxy.upstream_min_rate: expected an integer, found a string",
        ),
        (
            "upstream_read_timeout = \"5s\"",
            "unknown key `upstream_read_timeout` in [proxy]; expected one of: listen, egress, \
             max_connections, upstream_header_timeout, upstream_response_timeout, \
             upstream_min_rate, upstream_rate_window",
        ),
    ];
    for (keys, want) in cases {
        let src = CONTRACT.replace("egress = \"allow\"", keys);
        let errs = errors(&src);
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 1, "{keys}: {all:?}");
        // `egress` was on line 39 of CONTRACT; the first replacement key is there.
        assert!(
            all[0].starts_with("lanyard.toml:39:") && all[0].contains(want),
            "{keys}: {all:?}"
        );
    }
}
