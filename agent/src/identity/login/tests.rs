//! Parser-level hostile checks of ID-token verification, against a key made
//! here (the flows themselves run against oidc-provider in tests/login.rs),
//! and the refresh-token file's permission rules.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet};
use openidconnect::IssuerUrl;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::store::{StoreError, Stored, TokenFile};
use super::*;
use crate::config::{LoginConfig, LoginFlow};
use crate::env::MapEnv;

const ISS: &str = "https://idp.test";
const CLIENT: &str = "lanyard-cli";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct Key {
    pair: EcdsaKeyPair,
    kid: &'static str,
}

impl Key {
    fn new(kid: &'static str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
        Key {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("key"),
            kid,
        }
    }

    fn jwk(&self) -> CoreJsonWebKey {
        let p = self.pair.public_key().as_ref();
        serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&p[1..33]), "y": b64(&p[33..65]),
        }))
        .expect("jwk")
    }

    fn sign(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn token(&self, claims: Value) -> String {
        self.sign(
            json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn claims(patch: Value) -> Value {
    let mut c = json!({
        "iss": ISS, "aud": CLIENT, "sub": "alice", "email": "alice@acme.test",
        "iat": now(), "exp": now() + 300, "nonce": "n-123",
    });
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn check(key_in_jwks: &Key, token: &str, nonce: NonceRule<'_>) -> Result<LoginIdentity, String> {
    let v = verifier(
        CLIENT,
        &IssuerUrl::new(ISS.into()).expect("issuer"),
        CoreJsonWebKeySet::new(vec![key_in_jwks.jwk()]),
    );
    verify_id_token(&v, ISS, token, nonce).map_err(|e| e.to_string())
}

#[test]
fn a_good_id_token_is_accepted_with_its_identity() {
    let k = Key::new("k1");
    let id = check(
        &k,
        &k.token(claims(json!({}))),
        NonceRule::Required("n-123"),
    )
    .expect("ok");
    assert_eq!(id.subject, "alice");
    assert_eq!(id.email.as_deref(), Some("alice@acme.test"));
    assert_eq!(id.who(), "alice@acme.test (sub alice)");
    assert!(!id.needs_refresh(SystemTime::now()));
    // Device flow and refresh: an absent nonce is fine.
    check(
        &k,
        &k.token(claims(json!({"nonce": null}))),
        NonceRule::IfPresent(Some("n-123")),
    )
    .expect("no nonce");
}

#[test]
fn hostile_id_tokens_are_refused_with_a_clear_reason() {
    let k = Key::new("k1");
    let other = Key::new("k1");
    let cases: Vec<(&str, String, NonceRule<'_>, &str)> = vec![
        (
            "wrong aud",
            k.token(claims(json!({"aud": "someone-else"}))),
            NonceRule::Required("n-123"),
            "audiences",
        ),
        (
            "wrong nonce",
            k.token(claims(json!({"nonce": "n-evil"}))),
            NonceRule::Required("n-123"),
            "nonce mismatch",
        ),
        (
            "wrong nonce on refresh",
            k.token(claims(json!({"nonce": "n-evil"}))),
            NonceRule::IfPresent(Some("n-123")),
            "nonce mismatch",
        ),
        (
            "missing nonce in the code flow",
            k.token(claims(json!({"nonce": null}))),
            NonceRule::Required("n-123"),
            "missing nonce",
        ),
        (
            "expired",
            k.token(claims(json!({"iat": now() - 600, "exp": now() - 300}))),
            NonceRule::Required("n-123"),
            "expired",
        ),
        (
            "wrong issuer",
            k.token(claims(json!({"iss": "https://evil.test"}))),
            NonceRule::Required("n-123"),
            "issuer",
        ),
        (
            "signed by a key the IdP does not publish",
            other.token(claims(json!({}))),
            NonceRule::Required("n-123"),
            "signature",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(claims(json!({})).to_string().as_bytes())
            ),
            NonceRule::Required("n-123"),
            "",
        ),
        (
            "HS256 keyed by the public client id",
            k.sign(json!({"alg": "HS256", "kid": "k1"}), claims(json!({}))),
            NonceRule::Required("n-123"),
            "",
        ),
        (
            "not a JWT",
            "abc".into(),
            NonceRule::Required("n-123"),
            "not a signed jwt",
        ),
    ];
    for (what, token, rule, want) in cases {
        match check(&k, &token, rule) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                println!("{what}: {e}");
                assert!(
                    e.contains("ID token from https://idp.test was refused"),
                    "{what}: {e}"
                );
                assert!(
                    e.to_lowercase().contains(want),
                    "{what}: expected {want:?} in {e}"
                );
                // The message never carries the token.
                assert!(
                    !e.contains(&token[..20.min(token.len())]) || token.len() < 20,
                    "{what}: {e}"
                );
            }
        }
    }
}

#[test]
fn refresh_happens_in_the_last_third_of_the_lifetime() {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let id = LoginIdentity {
        id_token: crate::secret::IdentityJwt::new("x"),
        subject: "a".into(),
        email: None,
        issuer: ISS.into(),
        issued: t0,
        expires: t0 + Duration::from_secs(6),
    };
    assert!(!id.needs_refresh(t0 + Duration::from_secs(3)));
    assert!(id.needs_refresh(t0 + Duration::from_secs(5)));
    assert!(id.needs_refresh(t0 + Duration::from_secs(7)));
    // Long tokens: at most a minute of margin.
    let long = LoginIdentity {
        expires: t0 + Duration::from_secs(3600),
        ..id
    };
    assert!(!long.needs_refresh(t0 + Duration::from_secs(3500)));
    assert!(long.needs_refresh(t0 + Duration::from_secs(3541)));
}

fn login_cfg() -> LoginConfig {
    LoginConfig {
        issuer: url::Url::parse("https://idp.test/").expect("url"),
        client_id: CLIENT.into(),
        scopes: vec![],
        flow: LoginFlow::Device,
    }
}

fn stored(rt: &str) -> Stored {
    Stored {
        issuer: ISS.into(),
        client_id: CLIENT.into(),
        refresh_token: Secret::new(rt),
        subject: "alice".into(),
        email: Some("alice@acme.test".into()),
        nonce: Some("n-123".into()),
        saved_at: 1,
    }
}

fn file_in(dir: &std::path::Path) -> TokenFile {
    let env = MapEnv::new([("XDG_CONFIG_HOME", dir.to_str().expect("utf8"))]);
    TokenFile::for_login(&login_cfg(), &env).expect("file")
}

#[test]
fn the_refresh_token_file_is_private_and_written_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = file_in(tmp.path());
    assert!(matches!(f.read(), Err(StoreError::NotLoggedIn { .. })));
    let e = f.read().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("run `lanyard login`"), "{e}");
    f.write(&stored("rt-canary-0123456789")).expect("write");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&f.path), 0o600);
    assert_eq!(mode(f.path.parent().expect("dir")), 0o700);
    assert!(f.path.starts_with(tmp.path().join("lanyard")));
    assert_eq!(
        f.read().expect("read").refresh_token.expose(),
        "rt-canary-0123456789"
    );
    // Replaced atomically: no temporary file is left behind.
    f.write(&stored("rt-canary-rotated-987654")).expect("write");
    let names: Vec<String> = std::fs::read_dir(f.path.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(
        f.read().expect("read").refresh_token.expose(),
        "rt-canary-rotated-987654"
    );
    f.remove().expect("remove");
    f.remove().expect("idempotent");
    assert!(matches!(f.read(), Err(StoreError::NotLoggedIn { .. })));
}

#[test]
fn a_group_or_world_readable_token_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = file_in(tmp.path());
    f.write(&stored("rt-canary-0123456789")).expect("write");
    std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = f.read().err().expect("refused");
    assert!(matches!(e, StoreError::TooOpen { mode: 0o644, .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("mode 0644") && text.contains("lanyard logout"),
        "{text}"
    );
    assert!(!text.contains("rt-canary"), "{text}");
    // logout still removes it (that is the fix).
    assert!(f.read_for_removal().expect("read").is_some());
}

#[test]
fn a_symlinked_or_foreign_token_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = file_in(tmp.path());
    f.check_dir().expect("dir");
    let target = tmp.path().join("elsewhere.json");
    std::fs::write(&target, "{}").expect("write");
    std::os::unix::fs::symlink(&target, &f.path).expect("symlink");
    assert!(matches!(f.read(), Err(StoreError::NotAFile { .. })));
    std::fs::remove_file(&f.path).expect("rm");
    // A file for another issuer or client is not used.
    let mut s = stored("rt-canary-0123456789");
    s.issuer = "https://evil.test".into();
    f.write(&s).expect("write");
    let e = f.read().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("not a lanyard login file") && e.contains("https://evil.test"),
        "{e}"
    );
    assert!(!e.contains("rt-canary"), "{e}");
}

#[test]
fn the_file_name_depends_on_issuer_and_client() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = file_in(tmp.path());
    let mut other = login_cfg();
    other.client_id = "other".into();
    let env = MapEnv::new([("XDG_CONFIG_HOME", tmp.path().to_str().expect("utf8"))]);
    let b = TokenFile::for_login(&other, &env).expect("file");
    assert_ne!(a.path, b.path);
    // Without XDG_CONFIG_HOME: ~/.config/lanyard.
    let env = MapEnv::new([("HOME", "/home/alice")]);
    let c = TokenFile::for_login(&login_cfg(), &env).expect("file");
    assert!(
        c.path
            .to_string_lossy()
            .starts_with("/home/alice/.config/lanyard/login-"),
        "{}",
        c.path.display()
    );
}

#[test]
fn a_token_file_owned_by_another_user_is_refused() {
    // Only root can give a file away; elsewhere the open itself fails.
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let f = file_in(tmp.path());
    f.write(&stored("rt-canary-0123456789")).expect("write");
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&f.path, Some(nobody), None).expect("chown");
    let e = f.read().err().expect("refused");
    assert!(
        matches!(e, StoreError::NotOwner { owner: 65534, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("owned by uid 65534, not by you"),
        "{e}"
    );
    // logout does not touch another user's file either.
    assert!(matches!(
        f.read_for_removal(),
        Err(StoreError::NotOwner { .. })
    ));
}

#[test]
fn a_token_file_that_cannot_be_written_keeps_its_io_cause() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The config folder would be under a regular file.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "").expect("write");
    let f = file_in(&blocker);
    let e = f
        .write(&stored("rt-canary-0123456789"))
        .expect_err("not a dir");
    assert!(matches!(e, StoreError::Io { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: Not a directory (os error 20)",
            blocker.join("lanyard").display()
        )
    );
    let cause = std::error::Error::source(&e).expect("source");
    assert_eq!(
        cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotADirectory)
    );
    assert!(!crate::http::error_chain(&e).contains("rt-canary"), "{e}");
}

#[tokio::test]
async fn a_failed_discovery_keeps_its_cause() {
    let http = crate::http::HttpClient::new(
        None,
        &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
    )
    .expect("client");
    let cfg = LoginConfig {
        issuer: url::Url::parse("http://10.0.0.1/").expect("url"),
        ..login_cfg()
    };
    let e = Idp::discover(&http, &cfg).await.expect_err("plain http");
    assert!(matches!(e, LoginError::Discovery { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "OpenID discovery at http://10.0.0.1 failed: Request failed: refusing plain http to \
         http://10.0.0.1/.well-known/openid-configuration: credentials go over https unless \
         the host is a loopback address"
    );
    let cause = std::error::Error::source(&e).expect("source");
    assert!(cause.downcast_ref::<DiscoveryProblem>().is_some());
}

#[test]
fn login_errors_from_local_causes_keep_them() {
    let listen = LoginError::Listen(std::io::Error::from(std::io::ErrorKind::AddrInUse));
    assert_eq!(
        listen.to_string(),
        "browser sign-in: cannot listen on 127.0.0.1: address in use"
    );
    let url = LoginError::RevocationUrl(url::ParseError::EmptyHost);
    assert_eq!(
        url.to_string(),
        "the IdP refused the revocation: bad revocation_endpoint in discovery: empty host"
    );
    for e in [listen, url] {
        assert!(std::error::Error::source(&e).is_some(), "{e}");
    }
}

#[test]
fn a_token_file_with_a_mistyped_token_is_corrupt_without_quoting_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = file_in(tmp.path());
    f.write(&stored("rt-canary-0123456789")).expect("write");
    let text = std::fs::read_to_string(&f.path).expect("read");
    // The token where a number belongs: serde's own message would quote it.
    let swapped = text.replace("\"saved_at\": 1", "\"saved_at\": \"rt-canary-0123456789\"");
    assert_ne!(swapped, text);
    std::fs::write(&f.path, swapped).expect("write");
    let e = f.read().err().expect("corrupt");
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let shown = crate::http::error_chain(&e);
    assert!(shown.contains("bad JSON at line"), "{shown}");
    assert!(!shown.contains("rt-canary"), "{shown}");
}
