use serde_json::json;

use super::*;

fn claims(v: serde_json::Value) -> UnverifiedClaims {
    match v {
        serde_json::Value::Object(m) => UnverifiedClaims(m),
        _ => unreachable!(),
    }
}

#[test]
fn the_default_session_name_comes_from_the_ci_claims_within_sts_limits() {
    let gh = claims(
        json!({"repository": "acme/app", "run_id": "4242", "sub": "repo:acme/app:ref:refs/heads/main"}),
    );
    assert_eq!(session_name(&gh), "lanyard-acme.app-4242");
    let gl = claims(json!({"project_path": "group/sub group/app", "job_id": "99"}));
    assert_eq!(session_name(&gl), "lanyard-group.sub-group.app-99");
    let plain = claims(json!({}));
    assert_eq!(session_name(&plain), "lanyard");
    let long =
        claims(json!({"repository": "o/".to_owned() + &"x".repeat(200), "run_id": "1".repeat(40)}));
    let n = session_name(&long);
    assert_eq!(n.len(), 64, "{n}");
    for n in [session_name(&gh), session_name(&gl), n] {
        assert!(crate::config::is_session_name(&n), "{n}");
    }
}
