//! Secret newtypes. Every credential value, identity token and proxy secret in
//! lanyard lives in [`Secret`]: `Debug` and `Display` print a placeholder, the
//! bytes are zeroized on drop (via `secrecy`), and the only way to the value is
//! the explicitly named [`Secret::expose`].
//!
//! Why two jobs in one type: zeroize-on-drop (secrecy) does not stop a derived
//! `Debug` from printing the value, and a redacted `Debug` does not wipe memory.
//! The regression test `debug_and_display_never_show_the_value` guards both.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// What `Debug`/`Display` print instead of a secret.
pub const PLACEHOLDER: &str = "[redacted]";

/// A secret string. Cheap to clone (shared, reference counted).
#[derive(Clone)]
pub struct Secret(Arc<SecretString>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::new(SecretString::from(value.into())))
    }

    /// The value, for the one place that must send it (a header, a form field).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// A stable, non-reversible fingerprint for logs and audit records:
    /// `sha256:` and the first 12 hex digits of the SHA-256 of the value.
    /// Credentials are high-entropy tokens, so 48 bits reveal nothing useful
    /// while still letting a gateway operator correlate a call with a token.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.expose().as_bytes());
        let mut out = String::with_capacity(19);
        out.push_str("sha256:");
        for b in &digest.as_ref()[..6] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Constant-time equality, for comparing a presented secret (the proxy
    /// secret) with the expected one.
    pub fn ct_eq(&self, presented: &[u8]) -> bool {
        ct_eq(self.expose().as_bytes(), presented)
    }

    /// A new random secret: `bytes` random bytes, hex encoded.
    pub fn random(bytes: usize) -> Result<Self, getrandom::Error> {
        let mut buf = vec![0u8; bytes];
        getrandom::fill(&mut buf)?;
        let mut s = String::with_capacity(bytes * 2);
        for b in &buf {
            s.push_str(&format!("{b:02x}"));
        }
        zeroize::Zeroize::zeroize(&mut buf[..]);
        Ok(Secret::new(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({PLACEHOLDER})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PLACEHOLDER)
    }
}

/// Constant-time equality of two byte strings (`subtle`). Length is not
/// secret (our secrets and nonces have a fixed length), the content is: the
/// time taken does not depend on where the first difference is.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

impl<'de> serde::Deserialize<'de> for Secret {
    /// A JSON string straight into a `Secret`: the value is never held in a
    /// `serde_json::Value` or a plain `String` that outlives the parse.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Secret::new(v)
    }
}

/// One role of a secret as its own type, so that a value cannot be handed to
/// the wrong sink: the compiler refuses an [`IdentityJwt`] where a
/// [`Credential`] is wanted. Debug and Display redact like [`Secret`].
macro_rules! typed_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Secret);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                $name(Secret::new(value))
            }

            /// The value, for the one place that must send it.
            pub fn expose(&self) -> &str {
                self.0.expose()
            }

            /// As the untyped [`Secret`], for [`redact`] lists and form fields.
            pub fn as_secret(&self) -> &Secret {
                &self.0
            }

            pub fn fingerprint(&self) -> String {
                self.0.fingerprint()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({PLACEHOLDER})", stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PLACEHOLDER)
            }
        }

        impl From<String> for $name {
            fn from(v: String) -> Self {
                $name::new(v)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Secret::deserialize(d).map($name)
            }
        }
    };
}

typed_secret!(
    /// The job's OIDC identity token (a JWT from the CI platform, a token
    /// file or a developer login). It goes to token services only: it is
    /// the subject of an exchange, never a header on a routed request
    /// (passthrough turns it into a [`Credential`] by an explicit call).
    IdentityJwt
);

typed_secret!(
    /// A credential value as issued by a token service: what routes attach
    /// (`proxy::inject` takes only this type) and what teardown revokes.
    Credential
);

typed_secret!(
    /// The per-job proxy secret: the password in the proxy URL and the
    /// `<secret>` of reverse routes. Compared, never forwarded.
    ProxySecret
);

impl Credential {
    /// Passthrough: the identity token itself is the credential. The one
    /// place an identity token becomes something a route may attach, so
    /// that it happens only where a `passthrough` credential is configured.
    pub fn passthrough(id: &IdentityJwt) -> Self {
        Credential(id.0.clone())
    }
}

impl ProxySecret {
    /// A new random proxy secret: `bytes` random bytes, hex encoded.
    pub fn random(bytes: usize) -> Result<Self, getrandom::Error> {
        Secret::random(bytes).map(ProxySecret)
    }

    /// Constant-time comparison with what a client presented.
    pub fn ct_eq(&self, presented: &[u8]) -> bool {
        self.0.ct_eq(presented)
    }
}

/// Replace every occurrence of the given secrets, and anything shaped like a
/// JWT or a Vault token, in text that came from outside (an STS error body, a
/// server message) before it is shown to anyone.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        let v = s.expose();
        // Why: very short values would redact innocent text and prove nothing.
        if v.len() >= 8 {
            out = out.replace(v, PLACEHOLDER);
        }
    }
    redact_token_shapes(&out)
}

/// Masks JWT-shaped runs (`eyJ…`.`…`.`…`) and Vault/OpenBao service tokens
/// (`hvs.`/`s.`/`b.` prefixes followed by a long base62 run).
fn redact_token_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is_tok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
    while i < bytes.len() {
        if is_tok(bytes[i]) && (i == 0 || !is_tok(bytes[i - 1])) {
            let start = i;
            let mut end = i;
            while end < bytes.len() && is_tok(bytes[end]) {
                end += 1;
            }
            let word = &text[start..end];
            if looks_like_token(word) {
                out.push_str(PLACEHOLDER);
            } else {
                out.push_str(word);
            }
            i = end;
        } else {
            // Advance by one UTF-8 character.
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
    }
    out
}

fn looks_like_token(word: &str) -> bool {
    let word = word.trim_end_matches('.');
    if word.starts_with("eyJ") && word.matches('.').count() >= 2 && word.len() >= 20 {
        return true;
    }
    for prefix in ["hvs.", "hvb.", "hvr.", "s.", "b.", "r."] {
        if let Some(rest) = word.strip_prefix(prefix) {
            if rest.len() >= 20
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("canary-value-123456");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret([redacted]))");
    }

    #[test]
    fn fingerprint_is_stable_and_not_the_value() {
        let s = Secret::new("canary-value-123456");
        let f = s.fingerprint();
        assert!(f.starts_with("sha256:") && f.len() == 19, "{f}");
        assert_eq!(f, Secret::new("canary-value-123456").fingerprint());
        assert_ne!(f, Secret::new("canary-value-123457").fingerprint());
        assert!(!f.contains("canary"));
    }

    #[test]
    fn ct_eq_compares_whole_values() {
        let s = Secret::new("abcdef");
        assert!(s.ct_eq(b"abcdef"));
        assert!(!s.ct_eq(b"abcdeg"));
        assert!(!s.ct_eq(b"abcde"));
        assert!(!s.ct_eq(b""));
    }

    #[test]
    fn redact_masks_known_secrets_and_token_shapes() {
        let s = Secret::new("my-client-secret-xyz");
        let body = r#"{"error":"invalid_grant","error_description":"token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl is bad; secret my-client-secret-xyz; vault hvs.CAESIJabcdefghijklmnopqrstuvwxyz"}"#;
        let r = redact(body, &[&s]);
        assert!(!r.contains("eyJhbGci"), "{r}");
        assert!(!r.contains("my-client-secret-xyz"), "{r}");
        assert!(!r.contains("hvs.CAES"), "{r}");
        assert!(r.contains("invalid_grant"));
        // Ordinary words with dots survive.
        assert_eq!(
            redact("role \"ci\" not found. see docs.example.com", &[]),
            "role \"ci\" not found. see docs.example.com"
        );
    }

    #[test]
    fn typed_secrets_never_show_the_value() {
        let canary = "canary-typed-secret-value-42";
        let shown = [
            format!("{:?}", IdentityJwt::new(canary)),
            format!("{}", IdentityJwt::new(canary)),
            format!("{:?}", Credential::new(canary)),
            format!("{}", Credential::new(canary)),
            format!("{:?}", ProxySecret::new(canary)),
            format!("{}", ProxySecret::new(canary)),
            format!("{:?}", Credential::passthrough(&IdentityJwt::new(canary))),
            format!("{:?}", Some(Credential::new(canary))),
        ];
        for s in &shown {
            assert!(!s.contains(canary) && s.contains(PLACEHOLDER), "{s}");
        }
        assert_eq!(shown[0], "IdentityJwt([redacted])");
        assert_eq!(shown[2], "Credential([redacted])");
        assert_eq!(shown[4], "ProxySecret([redacted])");
    }

    #[test]
    fn secrets_deserialize_from_json_strings_only() {
        #[derive(serde::Deserialize, Debug)]
        struct Answer {
            token: Credential,
            other: Option<Secret>,
        }
        let a: Answer =
            serde_json::from_slice(br#"{"token":"canary-tok\u0041","other":"x"}"#).expect("json");
        assert_eq!(a.token.expose(), "canary-tokA");
        assert_eq!(a.other.as_ref().map(Secret::expose), Some("x"));
        assert!(!format!("{a:?}").contains("canary"), "{a:?}");
        // A number is not a token.
        let e = serde_json::from_slice::<Answer>(br#"{"token":12345678}"#)
            .expect_err("number")
            .to_string();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn ct_eq_is_subtle_and_proxy_secrets_compare_whole_values() {
        assert!(ct_eq(b"nonce-1", b"nonce-1"));
        assert!(!ct_eq(b"nonce-1", b"nonce-2") && !ct_eq(b"nonce", b"nonce-1"));
        let p = ProxySecret::random(24).expect("random");
        assert_eq!(p.expose().len(), 48);
        assert!(p.ct_eq(p.expose().as_bytes()));
        assert!(!p.ct_eq(&p.expose().as_bytes()[1..]));
    }

    #[test]
    fn random_secrets_differ() {
        let a = Secret::random(32).expect("random");
        let b = Secret::random(32).expect("random");
        assert_eq!(a.expose().len(), 64);
        assert!(!a.ct_eq(b.expose().as_bytes()));
    }
}
