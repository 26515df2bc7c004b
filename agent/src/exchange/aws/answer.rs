//! STS's XML answers, read with quick-xml's serde support into types whose
//! key material is [`Secret`] from the moment it is parsed: the access key
//! id, the secret access key and the session token never sit in a `String`
//! that could be printed.

use std::fmt;
use std::time::SystemTime;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::secret::{Credential, Secret};

/// An XML text node straight into a [`Secret`].
pub(super) struct SecretText(pub Secret);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(Secret::new(v)))
            }
            // Moved, not copied: the parser's own buffer becomes the secret.
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(Secret::new(v)))
            }
        }
        d.deserialize_string(V)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Response {
    pub assume_role_with_web_identity_result: WebIdentityResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WebIdentityResult {
    pub credentials: Credentials,
    pub assumed_role_user: Option<AssumedRoleUser>,
    pub subject_from_web_identity_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Credentials {
    pub access_key_id: SecretText,
    pub secret_access_key: SecretText,
    pub session_token: SecretText,
    pub expiration: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AssumedRoleUser {
    pub arn: String,
}

/// `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`
/// (STS), or with `<Errors>` around the `<Error>` (moto's IAM checks).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    error: Option<ErrorBody>,
    errors: Option<Errors>,
    request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Errors {
    error: ErrorBody,
}

/// An AWS XML error answer: its code and `message (request id …)`.
pub(super) fn xml_error(text: &str) -> Option<(String, String)> {
    let er: ErrorResponse = quick_xml::de::from_str(text).ok()?;
    let body = er.error.or(er.errors.map(|e| e.error))?;
    let mut detail = body.message.unwrap_or_default().trim().to_owned();
    if let Some(r) = er.request_id {
        detail.push_str(&format!(" (request id {})", r.trim()));
    }
    Some((body.code, detail))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    message: Option<String>,
}

/// A role session's keys, as one value. The store and the proxy hold a
/// credential as one [`Credential`]; [`AwsKeys::to_credential`] packs the three
/// parts and the expiry into it, [`AwsKeys::from_credential`] unpacks them for
/// the signer. The packing is internal: no route attaches it as a header
/// (config refuses routes that name an AWS credential).
pub struct AwsKeys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKeys")
            .field("expiration", &crate::identity::format_time(self.expiration))
            .finish_non_exhaustive()
    }
}

/// Marks a packed value, so that no other credential is read as keys.
const PACKED: &str = "aws-sts-keys:1";

impl AwsKeys {
    pub fn to_credential(&self) -> Credential {
        let secs = self
            .expiration
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Credential::new(format!(
            "{PACKED}\n{}\n{}\n{}\n{secs}",
            self.access_key_id.expose(),
            self.secret_access_key.expose(),
            self.session_token.expose()
        ))
    }

    pub fn from_credential(s: &Credential) -> Option<AwsKeys> {
        let mut it = s.expose().split('\n');
        if it.next()? != PACKED {
            return None;
        }
        let (id, key, token, exp) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let secs: u64 = exp.parse().ok()?;
        Some(AwsKeys {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(key),
            session_token: Secret::new(token),
            expiration: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        })
    }
}

/// RFC 3339, as STS writes `Expiration` (`2019-11-09T13:34:41Z`; moto adds
/// microseconds).
pub(super) fn parse_expiration(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The parts of an answer that parse, for a message that names what was
/// wrong without quoting the body (it may hold half a key).
pub(super) fn describe_parse_error(e: &quick_xml::DeError) -> String {
    match e {
        quick_xml::DeError::Custom(m) if m.starts_with("missing field") => {
            format!("an XML answer without the expected element ({m})")
        }
        quick_xml::DeError::UnexpectedEof
        | quick_xml::DeError::InvalidXml(quick_xml::Error::IllFormed(
            quick_xml::errors::IllFormedError::MissingEndTag(_),
        )) => "XML that ends early (truncated)".into(),
        quick_xml::DeError::InvalidXml(_) => "a body that is not well-formed XML".into(),
        _ => "a body that is not the AssumeRoleWithWebIdentityResponse XML".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>repo:acme/app:ref:refs/heads/main</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/ci/s1</Arn><AssumedRoleId>AROA:s1</AssumedRoleId></AssumedRoleUser><Credentials><SessionToken>FQoGZXIvYXdzEBYaDJgE8ODS0docWTldIyTL+/=</SessionToken><SecretAccessKey>jkzNAteHbmrccfwgTkOQmSk1aR48V3pVJDEnpE1C</SecretAccessKey><Expiration>2026-12-03T19:06:21.140702Z</Expiration><AccessKeyId>ASIARZPUZDIKKV5CMY47</AccessKeyId></Credentials><Provider>token.actions.githubusercontent.com</Provider></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn an_answer_parses_into_secrets_and_its_debug_shows_none() {
        let r: Response = quick_xml::de::from_str(OK).expect("parse");
        let c = &r.assume_role_with_web_identity_result.credentials;
        assert_eq!(c.access_key_id.0.expose(), "ASIARZPUZDIKKV5CMY47");
        assert_eq!(
            c.session_token.0.expose(),
            "FQoGZXIvYXdzEBYaDJgE8ODS0docWTldIyTL+/="
        );
        let dbg = format!("{r:?}");
        for secret in ["ASIARZPU", "jkzNAteH", "FQoGZXIv"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        let exp = parse_expiration(&c.expiration).expect("rfc3339");
        assert_eq!(
            crate::identity::format_time(exp),
            "2026-12-03T19:06:21Z",
            "fractions are dropped when shown"
        );
    }

    #[test]
    fn error_answers_of_both_shapes_give_code_and_message() {
        let sts = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#;
        assert_eq!(
            xml_error(sts),
            Some((
                "AccessDenied".into(),
                "Not authorized to perform sts:AssumeRoleWithWebIdentity (request id r-1)".into()
            ))
        );
        let moto = r#"<?xml version="1.0" encoding="utf-8"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>not authorized</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        assert_eq!(
            xml_error(moto),
            Some(("AccessDenied".into(), "not authorized".into()))
        );
        assert_eq!(xml_error("<html>502</html>"), None);
        assert_eq!(xml_error("{}"), None);
    }

    #[test]
    fn keys_pack_and_unpack_and_only_packed_values_unpack() {
        let k = AwsKeys {
            access_key_id: Secret::new("ASIAEXAMPLE"),
            secret_access_key: Secret::new("s3cr3t/+="),
            session_token: Secret::new("tok=="),
            expiration: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        };
        let back = AwsKeys::from_credential(&k.to_credential()).expect("unpack");
        assert_eq!(back.secret_access_key.expose(), "s3cr3t/+=");
        assert_eq!(back.expiration, k.expiration);
        assert!(!format!("{back:?}").contains("ASIA"));
        assert!(AwsKeys::from_credential(&Credential::new("eyJhbGciOi.x.y")).is_none());
    }

    #[test]
    fn broken_answers_are_named_without_their_content() {
        let cut = &OK[..OK.find("jkzNAteH").expect("key") + 10];
        for body in [cut, "<html>oops ASIAKEY</html>", "not xml at all", ""] {
            let e = quick_xml::de::from_str::<Response>(body).expect_err(body);
            let m = describe_parse_error(&e);
            assert!(!m.contains("jkzN") && !m.contains("ASIA"), "{m}");
            if body == cut {
                assert_eq!(m, "XML that ends early (truncated)");
            }
        }
    }
}
