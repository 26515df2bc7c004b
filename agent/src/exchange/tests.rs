use super::*;

#[test]
fn refusals_show_the_services_own_words_without_tokens() {
    let u = Url::parse("https://sts.example.com/token?x=1").expect("url");
    let s = Secret::new("eyJhbGciOi.subject.tokenvalue-canary");
    let e = refusal(&u, http::StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant","error_description":"bad token eyJhbGciOi.subject.tokenvalue-canary"}"#, &[&s]).to_string();
    assert_eq!(
        e,
        "https://sts.example.com/token refused (400): invalid_grant: bad token [redacted]"
    );
    let e = refusal(
        &u,
        http::StatusCode::BAD_REQUEST,
        br#"{"errors":["claim \"repository\" does not match any associated bound claim values"]}"#,
        &[],
    )
    .to_string();
    assert!(
        e.ends_with("claim \"repository\" does not match any associated bound claim values"),
        "{e}"
    );
    let e = refusal(&u, http::StatusCode::BAD_GATEWAY, b"<html>oops</html>", &[]).to_string();
    assert!(e.ends_with("(502): <html>oops</html>"), "{e}");
}

#[test]
fn seconds_accepts_numbers_and_numeric_strings() {
    assert_eq!(seconds(Some(&serde_json::json!(30))), Some(30));
    assert_eq!(seconds(Some(&serde_json::json!("3600"))), Some(3600));
    assert_eq!(seconds(Some(&serde_json::json!(-1))), None);
    assert_eq!(seconds(None), None);
}

#[test]
fn parent_errors_keep_the_stores_error_as_their_source() {
    #[derive(Debug, thiserror::Error)]
    #[error("credential \"vault\" expired 5 ms ago")]
    struct StoreSaid;
    let e = ExchangeError::Parent {
        name: "kv".into(),
        parent: "vault".into(),
        reason: Box::new(StoreSaid),
    };
    assert_eq!(
        e.to_string(),
        "credential \"kv\" needs \"vault\", which has no valid value: credential \"vault\" expired 5 ms ago"
    );
    let source = std::error::Error::source(&e).expect("source");
    assert!(source.downcast_ref::<StoreSaid>().is_some());
    let e = ExchangeError::Parent {
        name: "kv".into(),
        parent: "vault".into(),
        reason: Box::new(NotObtained),
    };
    assert!(e
        .to_string()
        .ends_with("which has no valid value: not obtained"));
}

#[test]
fn url_errors_keep_the_parse_error_as_their_source() {
    let cause = Url::parse("https://[broken").expect_err("bad url");
    let e = ExchangeError::BadUrl {
        name: String::new(),
        context: "bad vault path \"x\": ".into(),
        cause,
    };
    assert_eq!(
        e.to_string(),
        format!("credential \"\": bad vault path \"x\": {cause}")
    );
    let source = std::error::Error::source(&e).expect("source");
    assert_eq!(source.downcast_ref::<url::ParseError>(), Some(&cause));
}
