//! Redaction for text an upstream wrote after it was sent a credential
//! (`doctor --probe`): the upstream may echo the credential back whole, in
//! pieces, or encoded. Any run of [`RUN`] or more characters that is also
//! a run of the credential, of the header value that carried it, or of
//! their hex, base64 or base64url encodings (at every byte alignment) is
//! masked; then [`crate::secret::redact`] masks token-shaped words.

use std::collections::HashSet;

use base64::Engine;
use zeroize::Zeroizing;

/// The shortest run that is masked. Why 12: long enough that ordinary words
/// in an error message do not collide with a credential by chance, short
/// enough that a credential echoed in two halves, or cut, is still caught.
pub const RUN: usize = 12;

/// `text` with every echo of `secrets` masked. Secrets shorter than
/// [`RUN`] are masked only where they appear whole.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<Zeroizing<String>> = Vec::new();
    for s in secrets.iter().filter(|s| s.len() >= RUN) {
        forms.push(Zeroizing::new((*s).to_owned()));
        forms.push(Zeroizing::new(hex(s.as_bytes())));
        for offset in 0..3.min(s.len()) {
            let tail = &s.as_bytes()[offset..];
            forms.push(Zeroizing::new(
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(tail),
            ));
            forms.push(Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tail),
            ));
        }
    }
    let runs: HashSet<&[u8]> = forms
        .iter()
        .flat_map(|f| f.as_bytes().windows(RUN))
        .collect();
    let bytes = text.as_bytes();
    let mut masked = vec![false; bytes.len()];
    if !runs.is_empty() {
        for (i, w) in bytes.windows(RUN).enumerate() {
            if runs.contains(w) {
                masked[i..i + RUN].iter_mut().for_each(|m| *m = true);
            }
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if masked[i] {
            out.extend_from_slice(crate::secret::PLACEHOLDER.as_bytes());
            while i < bytes.len() && masked[i] {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let short: Vec<crate::secret::Secret> = secrets
        .iter()
        .filter(|s| s.len() < RUN)
        .map(|s| crate::secret::Secret::new(*s))
        .collect();
    let short: Vec<&crate::secret::Secret> = short.iter().collect();
    crate::secret::redact(&String::from_utf8_lossy(&out), &short)
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "opaque-credential-7f3a9c21d0e4b5a6";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn whole_split_and_encoded_echoes_are_masked() {
        let header = format!("Bearer {TOKEN}");
        let (a, b) = TOKEN.split_at(TOKEN.len() / 2);
        for (what, text) in [
            ("whole", format!("got {header}")),
            ("split", format!("{{\"a\":\"{a}\",\"b\":\"{b}\"}}")),
            ("cut", format!("token {}…", &TOKEN[..14])),
            ("hex", hex(TOKEN.as_bytes())),
            ("b64 header", b64(&header)),
            ("b64 shifted", b64(&format!("x{TOKEN}"))),
            ("b64 shifted twice", b64(&format!("xy{TOKEN}"))),
            (
                "b64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("u:{TOKEN}")),
            ),
        ] {
            let r = redact(&text, &[TOKEN, &header]);
            assert!(r.contains("[redacted]"), "{what}: {r}");
            for w in text.as_bytes().windows(16) {
                let w = std::str::from_utf8(w).unwrap_or("");
                assert!(w.is_empty() || !r.contains(w), "{what}: {w} in {r}");
            }
        }
    }

    #[test]
    fn ordinary_text_and_short_secrets() {
        let msg = "Access to this resource has been disallowed";
        assert_eq!(redact(msg, &[TOKEN]), msg);
        assert_eq!(
            redact("key abc12345 bad", &["abc12345"]),
            "key [redacted] bad"
        );
        // Non-ASCII text around a masked run survives.
        assert_eq!(redact(&format!("é{TOKEN}é"), &[TOKEN]), "é[redacted]é");
    }
}
