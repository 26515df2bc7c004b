//! The AWS SigV4 test suite, as the `aws-sigv4` crate ships it (its
//! `aws-signing-test-suite/v4/<name>/` folders: `request.txt`,
//! `context.json`, `header-signed-request.txt`), signed through
//! [`super::sign`], the call the proxy makes. The expected `Authorization`
//! values are copied from those folders.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};

use super::{sign, Payload, Scope};
use crate::exchange::aws::AwsKeys;
use crate::secret::Secret;

const PREFIX: &str =
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ";

/// (suite folder, method, path and query, session token, SignedHeaders and Signature)
const VECTORS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "get-vanilla",
        "GET",
        "/",
        "",
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-vanilla-with-session-token",
        "GET",
        "/",
        "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
    ),
    (
        "post-vanilla",
        "POST",
        "/",
        "",
        "SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    (
        "get-vanilla-query-order-key-case",
        "GET",
        "/?Param2=value2&Param1=value1",
        "",
        "SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    (
        "get-slash-dot-slash-normalized",
        "GET",
        "/./",
        "",
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
];

#[test]
fn the_signer_reproduces_the_aws_sigv4_test_suite() {
    // 2015-08-30T12:36:00Z, the suite's timestamp.
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    for (name, method, pq, token, want) in VECTORS {
        let keys = AwsKeys {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Secret::new(*token),
            expiration: time + Duration::from_secs(3600),
        };
        let scope = Scope {
            service: "service".into(),
            region: "us-east-1".into(),
            url: format!("https://example.amazonaws.com{pq}"),
            host: "example.amazonaws.com".into(),
        };
        let mut headers = HeaderMap::new();
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        sign(
            &mut headers,
            &method,
            &scope,
            &keys,
            Payload::Bytes(b""),
            time,
        )
        .expect(name);
        assert_eq!(
            headers["authorization"],
            format!("{PREFIX}{want}").as_str(),
            "{name}"
        );
        assert_eq!(headers["x-amz-date"], "20150830T123600Z", "{name}");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(
            headers
                .get("x-amz-security-token")
                .map(|v| v.to_str().unwrap_or_default()),
            (!token.is_empty()).then_some(*token),
            "{name}"
        );
    }
}
