//! SigV4 for AWS routes. The client's own signature (made with the
//! job's placeholder keys) is thrown away, with everything that goes with
//! it, and the request is signed afresh with the route's current keys by
//! the `aws-sigv4` crate (the SDKs' own signer; nothing here computes a
//! signature by hand). What cannot be re-signed is refused before
//! anything is sent: a presigned URL (its signature is in the URL the job
//! made), and `aws-chunked` / `STREAMING-*` uploads (each chunk is signed
//! with the client's keys).
//!
//! Bodies are hashed up to [`MAX_SIGNED_BODY`]; a longer S3 body over TLS
//! goes as `UNSIGNED-PAYLOAD` (S3 accepts it over TLS), any other longer
//! body is refused.

pub mod placeholder;
pub mod scope;
#[cfg(test)]
mod vectors;

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign as aws_sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::refusal::Refusal;
use crate::exchange::aws::AwsKeys;

/// Why: the body must be whole to be hashed before the head goes out;
/// API calls (STS, Secrets Manager, JSON and query protocols) are far
/// smaller. Documented in the README (*Limits*).
pub const MAX_SIGNED_BODY: u64 = 8 * 1024 * 1024;

/// Query parameters of a presigned URL.
const PRESIGNED: &[&str] = &[
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-signedheaders",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
];

/// The client's signing headers; lanyard's signature replaces them.
const CLIENT_SIGNING: &[&str] = &[
    "authorization",
    "x-amz-security-token",
    "x-amz-date",
    "x-amz-content-sha256",
];

/// What a request is signed for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub service: String,
    pub region: String,
    /// `scheme://host[:port]/path?query`, exactly as it goes upstream.
    pub url: String,
    /// The `Host` the pool sends.
    pub host: String,
}

impl Scope {
    pub fn s3(&self) -> bool {
        self.service == "s3"
    }
}

/// The body, as the signature covers it.
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    /// `UNSIGNED-PAYLOAD` (S3 over TLS only).
    Unsigned,
}

/// Refuse what cannot be re-signed, then remove the client's signature.
pub fn prepare(headers: &mut HeaderMap, query: Option<&str>) -> Result<(), Refusal> {
    let presigned = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let k = kv.split_once('=').map_or(kv, |(k, _)| k);
            PRESIGNED.iter().any(|p| k.eq_ignore_ascii_case(p))
        })
    });
    if presigned {
        return Err(Refusal::client(
            StatusCode::BAD_REQUEST,
            "a presigned URL: presigned URLs made in the job are signed with lanyard's placeholder keys and cannot work; call the API through lanyard without presigning (it signs each request), or presign outside the job",
        ));
    }
    let chunked = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .to_ascii_lowercase()
            .contains("aws-chunked")
    });
    let streaming = headers
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
    if chunked || streaming {
        return Err(Refusal::client(
            StatusCode::BAD_REQUEST,
            "an aws-chunked (STREAMING-*) upload: each chunk is signed with the client's keys, which lanyard cannot re-sign; turn it off: AWS_REQUEST_CHECKSUM_CALCULATION=when_required (lanyard exports it; the aws CLI, boto3 and the JavaScript SDK read it), or boto3 Config(request_checksum_calculation='when_required', s3={'payload_signing_enabled': True})",
        ));
    }
    for k in CLIENT_SIGNING {
        headers.remove(*k);
    }
    Ok(())
}

/// `(service, region)` from the client's own signature
/// (`AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request`):
/// the SDK knows which service it calls. Used when neither the route nor
/// the host names them; the keys sign whatever the scope, so the client
/// gains nothing by naming another.
pub fn client_scope(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = v
        .strip_prefix("AWS4-HMAC-SHA256")?
        .split("Credential=")
        .nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let parts: Vec<&str> = cred.split('/').collect();
    let [_, _, region, service, "aws4_request"] = parts[..] else {
        return None;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (ok(service) && ok(region)).then(|| (service.to_owned(), region.to_owned()))
}

/// Headers that are not signed: framing the pool rewrites, and those the
/// SDKs leave out too.
const UNSIGNED: &[&str] = &["content-length", "expect", "user-agent", "x-amzn-trace-id"];

/// Sign the request in place: `Authorization`, `X-Amz-Date`,
/// `X-Amz-Security-Token` and, for S3, `X-Amz-Content-Sha256` are set.
/// The error names the problem, never a key.
pub fn sign(
    headers: &mut HeaderMap,
    method: &http::Method,
    scope: &Scope,
    keys: &AwsKeys,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), String> {
    let identity: Identity = Credentials::new(
        keys.access_key_id.expose(),
        keys.secret_access_key.expose(),
        Some(keys.session_token.expose().to_owned()).filter(|t| !t.is_empty()),
        Some(keys.expiration),
        "lanyard",
    )
    .into();
    let mut settings = SigningSettings::default();
    if scope.s3() {
        // S3's own rules: the path as sent (no double encoding, no dot
        // segment removal) and the payload hash in a header.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let mut signed: Vec<(&str, &str)> = vec![("host", scope.host.as_str())];
    for (k, v) in headers.iter() {
        if UNSIGNED.contains(&k.as_str()) {
            continue;
        }
        match v.to_str() {
            Ok(v) => signed.push((k.as_str(), v)),
            // S3 refuses an x-amz-* header that is not signed.
            Err(_) if k.as_str().starts_with("x-amz-") => {
                return Err(format!("header {k} is not text and cannot be signed"))
            }
            Err(_) => {}
        }
    }
    let body = match payload {
        Payload::Bytes(b) => SignableBody::Bytes(b),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let req = SignableRequest::new(method.as_str(), &scope.url, signed.into_iter(), body)
        .map_err(|e| e.to_string())?;
    let (instructions, _) = aws_sign(req, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (out, _) = instructions.into_parts();
    for h in out {
        let name = HeaderName::from_static(h.name());
        let mut v = HeaderValue::from_str(h.value())
            .map_err(|_| "a signature header that is not text".to_owned())?;
        v.set_sensitive(h.sensitive() || name == header::AUTHORIZATION);
        headers.insert(name, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().expect("value"));
        }
        m
    }

    #[test]
    fn the_client_signature_goes_and_what_cannot_be_re_signed_is_refused() {
        let mut m = h(&[
            ("authorization", "AWS4-HMAC-SHA256 Credential=ASIAX/20260101/eu-west-2/s3/aws4_request, SignedHeaders=host, Signature=00"),
            ("x-amz-security-token", "tok"),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-meta-a", "kept"),
        ]);
        assert_eq!(client_scope(&m), Some(("s3".into(), "eu-west-2".into())));
        prepare(&mut m, Some("list-type=2")).expect("prepared");
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m["x-amz-meta-a"], "kept");

        for q in [
            "X-Amz-Signature=ab&x=1",
            "a=1&x-amz-credential=A%2F",
            "X-Amz-Expires",
        ] {
            let r = prepare(&mut HeaderMap::new(), Some(q)).expect_err(q);
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.rule.contains("presigned URLs made in the job are signed with lanyard's placeholder keys and cannot work"), "{}", r.rule);
        }
        for m in [
            h(&[("content-encoding", "gzip, aws-chunked")]),
            h(&[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]),
            h(&[("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")]),
        ] {
            let r = prepare(&mut m.clone(), None).expect_err("streaming");
            assert!(
                r.rule
                    .contains("AWS_REQUEST_CHECKSUM_CALCULATION=when_required"),
                "{}",
                r.rule
            );
        }
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=A/d/us-east-1/S3!/aws4_request",
            "AWS4-HMAC-SHA256 Credential=A/d/us-east-1/s3",
        ] {
            assert_eq!(client_scope(&h(&[("authorization", bad)])), None, "{bad}");
        }
    }
}
