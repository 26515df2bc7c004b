//! `[identity]`, `[login]`, route `identities`, `[proxy]` limits,
//! `[rotation]`, and the accepted values error messages list.

use std::path::Path;
use std::time::Duration;

use super::{errors, parse, CONTRACT};
use crate::config::{Config, LoginFlow, UpstreamLimits};
use crate::route::IdentityKinds;

#[test]
fn rotation_settings_are_bounded() {
    let errs = errors("[rotation]\nfraction = 0.99\njitter = 0.5\nretry_min = \"0s\"\n");
    assert_eq!(errs.len(), 3, "{errs:?}");
    let c = parse(
        "[rotation]\nfraction = 0.5\njitter = 0\nretry_min = \"200ms\"\nretry_max = \"2s\"\n[[credential]]\nname = \"gw\"\nexchange = \"passthrough\"\n",
    )
    .expect("ok");
    assert_eq!(c.rotation.retry_min, Duration::from_millis(200));
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

/// The keyword enums (serde's spellings) write the accepted values into
/// these messages; the text is the same as when each was a hand-written
/// list.
#[test]
fn messages_list_the_accepted_keywords_as_before() {
    let cred = "[[credential]]\nname = \"gw\"\n";
    let cases = [
        (
            "[identity]\nsource = \"githib\"\n".to_owned(),
            "identity.source: unknown identity source \"githib\"; expected one of: auto, github, gitlab, bitbucket, circleci, buildkite, file, env, login",
        ),
        (
            "[login]\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nflow = \"web\"\n".to_owned(),
            "login.flow: expected \"device\" or \"pkce\", got \"web\"",
        ),
        (
            format!("{cred}exchange = \"oauth\"\n"),
            "credential[0].exchange: unknown exchange \"oauth\"; expected one of: token-exchange, jwt-bearer, jwt-authorization-grant, vault, passthrough, aws-web-identity, entra, port, gcp-workload-identity",
        ),
        (
            cred.to_owned(),
            "credential[0].exchange: every [[credential]] needs `exchange` (one of: token-exchange, jwt-bearer, jwt-authorization-grant, vault, passthrough, aws-web-identity, entra, port, gcp-workload-identity) or `from` (a vault, aws-web-identity or entra credential, with `secret`)",
        ),
        (
            format!("{cred}exchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nsubject_token_type = \"saml\"\n"),
            "credential[0].subject_token_type: expected \"jwt\", \"id_token\" or \"access_token\", got \"saml\"",
        ),
        (
            format!("{cred}exchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nclient_auth = \"jwt\"\n"),
            "credential[0].client_auth: expected \"basic\", \"post\" or \"none\", got \"jwt\"",
        ),
        (
            format!("{cred}exchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nclient_auth = \"post\"\n"),
            "credential[0].client_auth: client_auth = \"post\" needs both `client_id` and `client_secret_env`",
        ),
        (
            format!("{cred}exchange = \"passthrough\"\n[[credential]]\nname = \"kv\"\nfrom = \"gw\"\nsecret = \"secret/data/x#y\"\n"),
            "credential[1].from: `from` must name a vault, aws-web-identity or entra credential; \"gw\" is passthrough",
        ),
        (
            "[proxy]\negress = \"maybe\"\n".to_owned(),
            "proxy.egress: expected \"allow\" or \"deny\", got \"maybe\"",
        ),
    ];
    for (src, want) in cases {
        let all: Vec<String> = errors(&src).iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter().any(|e| e.ends_with(want)),
            "want {want:?} in {all:?}"
        );
    }
}

/// Both spellings of a subject token type still parse, and each type's
/// RFC 8693 URN is the prefix plus its config spelling.
#[test]
fn subject_token_types_take_the_short_name_or_the_urn() {
    use crate::config::{CredentialKind, SubjectTokenType};
    for (given, want) in [
        ("jwt", SubjectTokenType::Jwt),
        (
            "urn:ietf:params:oauth:token-type:jwt",
            SubjectTokenType::Jwt,
        ),
        ("id_token", SubjectTokenType::IdToken),
        (
            "urn:ietf:params:oauth:token-type:id_token",
            SubjectTokenType::IdToken,
        ),
        ("access_token", SubjectTokenType::AccessToken),
        (
            "urn:ietf:params:oauth:token-type:access_token",
            SubjectTokenType::AccessToken,
        ),
    ] {
        let src = format!(
            "[[credential]]\nname = \"gw\"\nexchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nsubject_token_type = \"{given}\"\n"
        );
        let c = parse(&src).expect(given);
        match &c.credentials[0].kind {
            CredentialKind::TokenExchange {
                subject_token_type, ..
            } => assert_eq!(*subject_token_type, want, "{given}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        SubjectTokenType::IdToken.urn(),
        "urn:ietf:params:oauth:token-type:id_token"
    );
    for bad in ["urn:ietf:params:oauth:token-type:", "JWT", "urn:jwt"] {
        let src = format!(
            "[[credential]]\nname = \"gw\"\nexchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nsubject_token_type = \"{bad}\"\n"
        );
        assert!(parse(&src).is_err(), "{bad}");
    }
}

#[test]
fn the_tyk_examples_are_valid_and_tyk_api_is_read_from_the_config_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    let c = Config::load(&root.join("examples/gitlab-tyk.toml")).expect("valid");
    assert_eq!(
        c.tyk_apis,
        [(0, root.join("examples").join("tyk/ci-api.json"))]
    );
    // The definition it names exists, and doctor reads it: a Classic JWT
    // API with a central jwt_source, keyed by project_path.
    let api = crate::doctor::tyk::TykApi::load(&c.tyk_apis[0].1).expect("doctor reads it");
    assert!(
        api.jwt && api.central && !api.oas && !api.skip_kid,
        "{api:?}"
    );
    assert_eq!(api.identity_claims, ["project_path"]);
    let c = Config::load(&root.join("examples/gitlab-tyk-admin.toml")).expect("valid");
    assert_eq!(c.routes[0].header.as_str(), "x-tyk-authorization");
    assert_eq!(c.routes[0].template.render("s3cret"), "s3cret");
    assert!(c.tyk_apis.is_empty());
    let e = parse("[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n[[route]]\nurl = \"https://gw.example.com/\"\ncredential = \"a\"\ntyk_api = \" \"\n")
        .expect_err("blank tyk_api");
    assert!(
        e.to_string()
            .contains("route[0].tyk_api: expected the path of the Tyk API definition"),
        "{e}"
    );
}

/// Keycloak's knobs: `subject_issuer` on a token exchange, client
/// authentication on a JWT authorization grant, an optional `client_id` on
/// a client assertion; each refused where it means nothing.
#[test]
fn keycloak_knobs_parse_and_are_refused_where_they_do_not_apply() {
    use crate::config::{ClientAuth, CredentialKind};
    let c = parse("[[credential]]\nname = \"kc\"\nexchange = \"token-exchange\"\ntoken_url = \"https://s/t\"\nsubject_issuer = \"ci\"\n").expect("subject_issuer");
    assert!(
        matches!(&c.credentials[0].kind, CredentialKind::TokenExchange { subject_issuer: Some(i), .. } if i == "ci"),
        "{:?}",
        c.credentials[0].kind
    );
    let c = parse("[[credential]]\nname = \"kc\"\nexchange = \"jwt-authorization-grant\"\ntoken_url = \"https://s/t\"\nclient_id = \"app\"\nclient_secret_env = \"KC_SECRET\"\n").expect("grant");
    assert!(
        matches!(&c.credentials[0].kind, CredentialKind::JwtAuthorizationGrant { client: ClientAuth::Basic { client_id, secret_env }, .. } if client_id == "app" && secret_env == "KC_SECRET"),
        "{:?}",
        c.credentials[0].kind
    );
    let c = parse(
        "[[credential]]\nname = \"kc\"\nexchange = \"jwt-bearer\"\ntoken_url = \"https://s/t\"\n",
    )
    .expect("no client_id");
    assert!(
        matches!(
            &c.credentials[0].kind,
            CredentialKind::JwtBearer {
                client_id: None,
                ..
            }
        ),
        "{:?}",
        c.credentials[0].kind
    );
    for (src, want) in [
        (
            "exchange = \"jwt-bearer\"\ntoken_url = \"https://s/t\"\nsubject_issuer = \"ci\"\n",
            "`subject_issuer` does not apply to a credential with exchange = \"jwt-bearer\"",
        ),
        (
            "exchange = \"jwt-authorization-grant\"\ntoken_url = \"https://s/t\"\nsubject_token_type = \"jwt\"\n",
            "`subject_token_type` does not apply to a credential with exchange = \"jwt-authorization-grant\"",
        ),
        (
            "exchange = \"jwt-bearer\"\ntoken_url = \"https://s/t\"\nclient_id = \"\"\n",
            "`client_id` is empty; remove it to let the server find the client from the job's token, or name the application whose federated credential trusts this job",
        ),
    ] {
        let src = format!("[[credential]]\nname = \"kc\"\n{src}");
        let all: Vec<String> = errors(&src).iter().map(|e| e.to_string()).collect();
        assert!(all.iter().any(|e| e.ends_with(want)), "want {want:?} in {all:?}");
    }
}
