//! The first exchange, as `run` and `start` meet it: a token service that is
//! briefly unavailable (503, 429 with Retry-After, no listener at all) is
//! retried with bounded backoff; a refusal (4xx) fails at once, after
//! exactly one request.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn job_with_token_url(token_url: &str) -> (Issuer, tempfile::TempDir, String, String) {
    let issuer = Issuer::start();
    let token = issuer.mint("github", "https://sts.test", 600, serde_json::json!({}));
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n\n\
         [[credential]]\nname = \"api\"\nexchange = \"token-exchange\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"lanyard-public\"\n\n\
         [[route]]\nurl = \"https://api.test/\"\ncredential = \"api\"\n\n\
         [audit]\nfile = \"{audit}\"\n",
        audit = dir.path().join("audit.jsonl").display(),
    );
    let config = write_config(dir.path(), &text).display().to_string();
    (issuer, dir, config, token)
}

fn run_true(config: &str, token: &str) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let (code, out, err) = lanyard(
        &["run", "--config", config, "--", "true"],
        &[("LANYARD_TEST_TOKEN", token)],
    );
    (code, out, err, t.elapsed())
}

#[test]
fn a_503_then_a_429_then_200_starts_after_honouring_retry_after() {
    let peer = Hostile::start(
        "sequence",
        &["--statuses", "503,429,200", "--retry-after", "1"],
    );
    let url = format!("http://127.0.0.1:{}/token", peer.port);
    let (_issuer, _dir, config, token) = job_with_token_url(&url);
    let (code, out, err, took) = run_true(&config, &token);
    assert_eq!(code, 0, "run should start after two retries:\n{out}{err}");
    assert_eq!(
        peer.requests().len(),
        3,
        "503, 429, then 200: {:?}",
        peer.events()
    );
    // Retry-After: 1 twice: at least two seconds between the first request and the third.
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After was not honoured: {took:?}"
    );
    assert!(
        !err.contains("sequence-issued-token"),
        "the credential leaked:\n{err}"
    );
}

#[test]
fn a_400_fails_at_once_after_exactly_one_request() {
    let peer = Hostile::start("sequence", &["--statuses", "400,200"]);
    let url = format!("http://127.0.0.1:{}/token", peer.port);
    let (_issuer, _dir, config, token) = job_with_token_url(&url);
    let (code, out, err, _) = run_true(&config, &token);
    assert_eq!(code, 125, "a refusal stops run before CMD:\n{out}{err}");
    assert!(
        err.contains("refused (400)") && err.contains("subject token refused"),
        "{err}"
    );
    assert_eq!(
        peer.requests().len(),
        1,
        "a 4xx is not retried: {:?}",
        peer.events()
    );
}

#[test]
fn a_service_that_keeps_answering_503_is_given_up_on_with_the_attempts_named() {
    let peer = Hostile::start("sequence", &["--statuses", "503", "--retry-after", "0"]);
    let url = format!("http://127.0.0.1:{}/token", peer.port);
    let (_issuer, _dir, config, token) = job_with_token_url(&url);
    let (code, out, err, took) = run_true(&config, &token);
    assert_eq!(code, 125, "{out}{err}");
    let n = peer.requests().len();
    assert_eq!(
        n,
        4,
        "bounded: the first attempt and three retries: {:?}",
        peer.events()
    );
    assert!(
        err.contains("failed 4 times") && err.contains("refused (503)"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the backoff is bounded: {took:?}"
    );
}

#[test]
fn no_listener_is_retried_then_reported() {
    // A port nothing listens on: connection refused, every attempt.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/token");
    let (_issuer, _dir, config, token) = job_with_token_url(&url);
    let (code, out, err, _) = run_true(&config, &token);
    assert_eq!(code, 125, "{out}{err}");
    assert!(
        err.contains("failed 4 times") && err.contains("could not reach"),
        "{err}"
    );
}
