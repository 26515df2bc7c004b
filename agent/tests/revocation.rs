//! `lanyard stop` when a revocation fails: the credential stays valid until
//! it expires, so stop says so and exits 3 (README "Exit codes"), and the
//! Action's post step turns that into a warning (tests/action).

mod common;

use common::*;

#[test]
fn stop_exits_3_and_names_the_credential_when_its_revocation_fails() {
    // One peer is both the token endpoint (first request: 200) and the
    // revocation endpoint (every later request: 500).
    let peer = Hostile::start("sequence", &["--statuses", "200,500"]);
    let issuer = Issuer::start();
    let token = issuer.mint("github", "https://sts.test", 600, serde_json::json!({}));
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "[identity]\nsource = \"env\"\nvariable = \"LANYARD_TEST_TOKEN\"\n\n\
         [[credential]]\nname = \"api\"\nexchange = \"token-exchange\"\n\
         token_url = \"http://127.0.0.1:{port}/token\"\nrevocation_url = \"http://127.0.0.1:{port}/revoke\"\n\
         client_id = \"lanyard-public\"\n\n\
         [[route]]\nurl = \"https://api.test/\"\ncredential = \"api\"\n\n\
         [audit]\nfile = \"{audit}\"\n",
        port = peer.port,
        audit = dir.path().join("audit.jsonl").display(),
    );
    let config = write_config(dir.path(), &text).display().to_string();
    let state = dir.path().join("state").display().to_string();
    let env = [
        ("LANYARD_TEST_TOKEN", token.as_str()),
        ("LANYARD_STATE_DIR", state.as_str()),
    ];
    let (code, out, err) = lanyard(
        &[
            "start",
            "--config",
            &config,
            "--export",
            "sh",
            "--watch-pid",
            "0",
        ],
        &env,
    );
    assert_eq!(code, 0, "start: {out}{err}");
    let (code, out, err) = lanyard(&["stop"], &env);
    let revokes: Vec<_> = peer
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/revoke")
        .collect();
    assert_eq!(
        revokes.len(),
        1,
        "stop asked the revocation endpoint: {:?}",
        peer.events()
    );
    assert_eq!(code, 3, "a failed revocation is exit 3:\n{out}{err}");
    assert!(
        out.contains("credential api") && out.contains("revocation FAILED"),
        "{out}"
    );
    assert!(
        err.contains("revocation failed") && err.contains("valid until it expires"),
        "stop says what it means on stderr:\n{err}"
    );
    assert!(
        !std::path::Path::new(&state).exists(),
        "stop still cleaned up"
    );
    assert_absent(
        &[&out, &err],
        "sequence-issued-token-5e1f0c",
        "the credential",
    );
    // Idempotent: a second stop finds nothing and exits 0.
    assert_eq!(lanyard(&["stop"], &env).0, 0);
}

/// No colour codes when stderr is not a terminal (here: a pipe), whatever
/// the log level.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let job = common::job::Job::new("");
    let (code, _out, err) = job.run_env("true", &[("LANYARD_LOG", "info")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("credential obtained"),
        "an info log line: {err}"
    );
    assert!(!err.contains('\u{1b}'), "escape codes on a pipe: {err:?}");
}
