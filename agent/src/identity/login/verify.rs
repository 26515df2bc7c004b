//! Verifying an ID token: signature by the IdP's JWKS, iss, aud (our
//! client id), exp and nonce; asymmetric algorithms only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm};
use openidconnect::{ClientId, IssuerUrl, Nonce};

use super::{ct_eq, LoginError};
use crate::secret::{redact, IdentityJwt};

/// Refresh an ID token when less than this share of its lifetime is left
/// (capped at [`REFRESH_MARGIN_MAX`]), so an exchange never receives one
/// that expires on the way.
const REFRESH_SHARE: u32 = 3;
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(60);
/// Asymmetric algorithms only: an ID token is never accepted with `none`
/// or an HMAC keyed by the (public) client id.
const ALLOWED_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A verified developer identity: the ID token and what it says.
#[derive(Debug, Clone)]
pub struct LoginIdentity {
    pub id_token: IdentityJwt,
    pub subject: String,
    pub email: Option<String>,
    pub issuer: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl LoginIdentity {
    /// `alice@acme.test (sub alice)`, or the sub alone.
    pub fn who(&self) -> String {
        match &self.email {
            Some(e) => format!("{e} (sub {})", self.subject),
            None => self.subject.clone(),
        }
    }

    /// True when the token should be replaced before it is handed out.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let margin = (life / REFRESH_SHARE).min(REFRESH_MARGIN_MAX);
        match self.expires.duration_since(now) {
            Ok(left) => left <= margin,
            Err(_) => true,
        }
    }
}

/// How the nonce of an ID token is checked.
#[derive(Clone, Copy)]
pub enum NonceRule<'a> {
    /// Authorization code flow: the token must carry exactly our nonce.
    Required(&'a str),
    /// Device flow and refresh: the IdP may leave it out (RFC 8628 has no
    /// nonce), but a nonce it does send must be ours.
    IfPresent(Option<&'a str>),
}

/// The verifier lanyard uses for every ID token of this IdP.
pub fn verifier(
    client_id: &str,
    issuer: &IssuerUrl,
    jwks: openidconnect::core::CoreJsonWebKeySet,
) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.to_owned()),
        issuer.clone(),
        jwks,
    )
    .set_allowed_algs(ALLOWED_ALGS.iter().cloned())
}

/// Check signature (JWKS), iss, aud (our client id), exp and nonce.
pub fn verify_id_token(
    verifier: &CoreIdTokenVerifier<'_>,
    issuer: &str,
    raw: &str,
    nonce: NonceRule<'_>,
) -> Result<LoginIdentity, LoginError> {
    let fail = |reason: String| LoginError::IdToken {
        issuer: issuer.to_owned(),
        reason,
    };
    let token: CoreIdToken = raw.parse().map_err(|_| fail("not a signed JWT".into()))?;
    let check = |got: Option<&Nonce>| -> Result<(), String> {
        let same = |want: &str, got: &Nonce| ct_eq(want.as_bytes(), got.secret().as_bytes());
        match (nonce, got) {
            (NonceRule::Required(want), Some(g)) if same(want, g) => Ok(()),
            (NonceRule::Required(_), Some(_)) => {
                Err("nonce mismatch: the token was not issued for this sign-in".into())
            }
            (NonceRule::Required(_), None) => Err("missing nonce claim".into()),
            (NonceRule::IfPresent(Some(want)), Some(g)) if !same(want, g) => {
                Err("nonce mismatch: the token was not issued for this sign-in".into())
            }
            (NonceRule::IfPresent(None), Some(_)) => {
                Err("unexpected nonce: the token was not issued for this sign-in".into())
            }
            _ => Ok(()),
        }
    };
    let claims = token
        .claims(verifier, check)
        .map_err(|e| fail(redact(&e.to_string(), &[])))?;
    let secs = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(LoginIdentity {
        id_token: IdentityJwt::new(raw),
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        issuer: claims.issuer().as_str().to_owned(),
        issued: secs(claims.issue_time().timestamp()),
        expires: secs(claims.expiration().timestamp()),
    })
}
