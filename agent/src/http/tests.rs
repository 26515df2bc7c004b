//! The transport rule, TLS roots and endpoints; errors keep their cause.

use super::*;

#[test]
fn plain_http_only_to_loopback() {
    for ok in [
        "https://sts.example.com/t",
        "http://127.0.0.1:8200/",
        "http://[::1]:1/",
        "http://localhost:9/",
    ] {
        assert!(
            check_transport(&Url::parse(ok).expect("url")).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "http://sts.example.com/t",
        "http://10.0.0.1/",
        "ftp://127.0.0.1/",
        "http://127.0.0.1.nip.io/",
    ] {
        assert!(
            check_transport(&Url::parse(bad).expect("url")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn extra_ca_errors_keep_their_cause() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let e = tls_config(Some(&empty)).expect_err("no certs");
    assert_eq!(
        e.to_string(),
        format!(
            "could not load TLS roots: {}: no PEM certificates found",
            empty.display()
        )
    );
    let missing = dir.path().join("missing.pem");
    let e = tls_config(Some(&missing)).expect_err("missing");
    let cause = std::error::Error::source(&e).expect("source");
    let io = std::error::Error::source(cause).expect("io");
    assert_eq!(
        io.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound)
    );
    // A real certificate is read (the per-job CA's own PEM).
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).expect("cert");
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.cert.pem()).expect("write");
    assert!(tls_config(Some(&good)).is_ok());
}

#[test]
fn endpoint_drops_query_and_userinfo() {
    let u = Url::parse("https://user:pw@sts.example.com:8443/oauth/token?secret=1").expect("url");
    assert_eq!(endpoint(&u), "https://sts.example.com:8443/oauth/token");
}

#[tokio::test]
async fn a_request_that_cannot_be_built_keeps_its_cause_and_no_secret() {
    let http = HttpClient::new(
        None,
        &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
    )
    .expect("client");
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("/token")
        .header("authorization", "Bearer canary-secret-0123456789")
        .body(b"refresh_token=canary-secret-0123456789".to_vec())
        .expect("request");
    let e = http.request_raw(req).await.expect_err("relative url");
    assert_eq!(
        e.to_string(),
        "invalid request to /token: relative URL without a base"
    );
    let cause = std::error::Error::source(&e).expect("source");
    assert_eq!(
        cause.downcast_ref::<url::ParseError>(),
        Some(&url::ParseError::RelativeUrlWithoutBase)
    );
    assert!(!error_chain(&e).contains("canary"), "{e}");
}
