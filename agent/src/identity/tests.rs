use super::*;
use crate::env::MapEnv;

fn cfg() -> IdentityConfig {
    IdentityConfig {
        source: None,
        audience: Some("https://sts.test".into()),
        variable: None,
        path: None,
        buildkite_agent: "buildkite-agent".into(),
        scrub_request_env: true,
        login: None,
    }
}

#[test]
fn auto_detects_each_platform_from_its_documented_variables() {
    let cases: [(MapEnv, Platform); 5] = [
        (
            MapEnv::new([
                ("GITHUB_ACTIONS", "true"),
                (
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                    "http://127.0.0.1:1/x?api-version=2.0",
                ),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "b"),
            ]),
            Platform::Github,
        ),
        (
            MapEnv::new([("GITLAB_CI", "true"), ("LANYARD_ID_TOKEN", "t")]),
            Platform::Gitlab,
        ),
        (
            MapEnv::new([
                ("BITBUCKET_BUILD_NUMBER", "7"),
                ("BITBUCKET_STEP_OIDC_TOKEN", "t"),
            ]),
            Platform::Bitbucket,
        ),
        (
            MapEnv::new([("CIRCLECI", "true"), ("CIRCLE_OIDC_TOKEN_V2", "t")]),
            Platform::Circleci,
        ),
        (MapEnv::new([("BUILDKITE", "true")]), Platform::Buildkite),
    ];
    for (env, want) in cases {
        let s = IdentitySource::from_config(&cfg(), &env).expect("detect");
        assert_eq!(s.platform, want);
    }
    assert!(matches!(
        IdentitySource::from_config(&cfg(), &MapEnv::default()),
        Err(IdentityError::NotDetected)
    ));
}

#[test]
fn auto_picks_the_developer_login_only_when_no_ci_platform_is_detected() {
    let mut c = cfg();
    c.login = Some(crate::config::LoginConfig {
        issuer: Url::parse("https://login.acme.test").expect("url"),
        client_id: "lanyard-cli".into(),
        scopes: Vec::new(),
        flow: crate::config::LoginFlow::Device,
    });
    let home = tempfile::tempdir().expect("tmp");
    let laptop = MapEnv::new([("HOME", home.path().to_str().expect("utf8"))]);
    // Chosen, and without a stored login it says what to do.
    let e = IdentitySource::from_config(&c, &laptop)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not logged in to https://login.acme.test") && e.contains("lanyard login"),
        "{e}"
    );
    // In CI the platform wins: a [login] table never replaces the job's identity.
    let ci = MapEnv::new([("BUILDKITE", "true")]);
    assert_eq!(
        IdentitySource::from_config(&c, &ci).expect("ci").platform,
        Platform::Buildkite
    );
    assert!(!Platform::Buildkite.is_developer() && Platform::Login.is_developer());
}

#[test]
fn github_without_id_token_permission_says_how_to_fix_it() {
    let env = MapEnv::new([("GITHUB_ACTIONS", "true")]);
    let e = IdentitySource::from_config(&cfg(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set") && e.contains("id-token: write"),
        "{e}"
    );
}

#[test]
fn gitlab_names_the_id_tokens_variable() {
    let env = MapEnv::new([("GITLAB_CI", "true")]);
    let e = IdentitySource::from_config(&cfg(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LANYARD_ID_TOKEN is not set") && e.contains("id_tokens"),
        "{e}"
    );
}

#[test]
fn consumed_variables_cover_the_identity_inputs() {
    let env = MapEnv::new([
        ("GITHUB_ACTIONS", "true"),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", "http://127.0.0.1:1/"),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "b"),
    ]);
    let s = IdentitySource::from_config(&cfg(), &env).expect("github");
    assert_eq!(s.consumed_variables(), GITHUB_REQUEST_VARS);
    let mut c = cfg();
    c.scrub_request_env = false;
    assert!(IdentitySource::from_config(&c, &env)
        .expect("github")
        .consumed_variables()
        .is_empty());
}

#[test]
fn formats_the_ends_of_time_without_panicking() {
    assert_eq!(
        format_time(std::time::UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(
        format_time(std::time::UNIX_EPOCH + Duration::from_secs(1 << 40)),
        "9999-12-31T23:59:59Z"
    );
    // A leap day, and the format the audit log and doctor parse.
    assert_eq!(
        format_time(std::time::UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
}

#[test]
fn formats_rfc3339() {
    assert_eq!(
        format_time(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        "2023-11-14T22:13:20Z"
    );
}

#[tokio::test]
async fn token_errors_keep_their_cause_and_never_show_the_token() {
    let canary = "canary-not-a-jwt-0123456789";
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("token");
    std::fs::write(&file, canary).expect("write");
    let mut c = cfg();
    c.source = Some(Platform::File);
    c.path = Some(file.clone());
    let http = HttpClient::new(
        None,
        &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
    )
    .expect("http");
    let source = IdentitySource::from_config(&c, &MapEnv::new([])).expect("file source");
    let e = source.token(&http, None).await.expect_err("not a JWT");
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    assert!(shown.contains("is not a JWT"), "{shown}");
    assert!(
        !shown.contains(canary) && !debug.contains(canary),
        "{debug}"
    );
    let cause = std::error::Error::source(&e).expect("source");
    assert!(matches!(
        cause.downcast_ref::<InvalidToken>(),
        Some(InvalidToken::Claims(ClaimsError::Shape))
    ));

    std::fs::remove_file(&file).expect("rm");
    let e = source.token(&http, None).await.expect_err("missing");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read token file {}: ", file.display())),
        "{e}"
    );
    let cause = std::error::Error::source(&e).expect("source");
    let io = std::error::Error::source(cause).expect("io source");
    assert_eq!(
        io.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound)
    );
}
