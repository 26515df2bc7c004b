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
        let expected = self.expose().as_bytes();
        // Why: length is not secret (our secrets have a fixed length), the
        // content is; fold every byte so timing does not depend on where the
        // first difference is.
        if expected.len() != presented.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
    fn random_secrets_differ() {
        let a = Secret::random(32).expect("random");
        let b = Secret::random(32).expect("random");
        assert_eq!(a.expose().len(), 64);
        assert!(!a.ct_eq(b.expose().as_bytes()));
    }
}
