use super::*;

// Regression: doctor said "an earlier route wins" while the proxy's
// matcher picks the longest prefix; doctor must give the proxy's verdict.
#[test]
fn explain_url_gives_the_proxys_verdict() {
    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        "[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n[[credential]]\nname = \"b\"\nexchange = \"passthrough\"\n[[route]]\nurl = \"https://api.example.com/v1/\"\ncredential = \"a\"\n[[route]]\nurl = \"https://api.example.com/v1/admin/\"\ncredential = \"b\"\nmethods = [\"GET\"]\n",
    )
    .expect("config");
    let mut out = String::new();
    explain_url(
        &cfg,
        "https://api.example.com/v1/admin/users",
        "GET",
        None,
        &mut out,
    );
    assert!(
        out.contains("verdict: forwarded with credential b in header authorization (route https://api.example.com/v1/admin/)"),
        "{out}"
    );
    let mut out = String::new();
    explain_url(
        &cfg,
        "https://api.example.com/v1/admin/users",
        "POST",
        None,
        &mut out,
    );
    assert!(
        out.contains("verdict: 403, x-lanyard-rule: method POST is not allowed"),
        "{out}"
    );
    let mut out = String::new();
    explain_url(&cfg, "https://api.example.com/v2/x", "GET", None, &mut out);
    assert!(
        out.contains("verdict: 403, x-lanyard-rule: path /v2/x is outside the routes"),
        "{out}"
    );
}

/// The audience hint names where each platform decides the audience.
#[test]
fn the_audience_hint_is_platform_aware() {
    use crate::config::Platform;
    let claims = UnverifiedClaims::decode(&format!(
        "e30.{}.sig",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"aud":"https://wrong.example"}"#
        )
    ))
    .expect("claims");
    let e = ExchangeError::Refused {
        service: "sts".into(),
        status: 400,
        detail: "invalid audience".into(),
        code: None,
    };
    let base = hints(&e, &["https://sts.example".into()], &claims, false);
    let aud = |p: Platform| -> String {
        base.iter()
            .cloned()
            .map(|h| hints::for_platform(h, p))
            .find(|h| h.starts_with("audience mismatch"))
            .unwrap_or_else(|| panic!("no audience hint in {base:?}"))
    };
    let gitlab = aud(Platform::Gitlab);
    assert!(
        gitlab.contains("id_tokens:") && !gitlab.contains("[identity] audience"),
        "{gitlab}"
    );
    assert!(aud(Platform::Github).contains("`audience` input"));
    assert!(aud(Platform::Buildkite).contains("oidc request-token --audience"));
    assert!(aud(Platform::Circleci).contains("organization ID"));
    assert!(aud(Platform::Env).contains("[identity] audience"));
}
