//! The AWS credentials the job's SDKs see: shaped like a role session's
//! keys, random per job, and worthless anywhere but an AWS route of this
//! lanyard, which throws the client's signature away and signs afresh
//! with the real keys. A request carrying them anywhere else is a job
//! trying to use them elsewhere: [`Placeholders::seen_in`] finds them so
//! the proxy can refuse it.

use http::HeaderMap;

use crate::secret::Secret;

/// Base32's alphabet: access key ids are upper-case letters and digits.
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// `ASIA` (a temporary key's prefix) + `LANYARD` + 9 random: 20 characters,
/// the length of a real access key id.
const KEY_PREFIX: &str = "ASIALANYARD";
const TOKEN_PREFIX: &str = "lanyard-placeholder-";

pub struct Placeholders {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Secret,
}

impl std::fmt::Debug for Placeholders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placeholders([redacted])")
    }
}

impl Placeholders {
    pub fn random() -> Result<Placeholders, getrandom::Error> {
        let mut buf = [0u8; 9];
        getrandom::fill(&mut buf)?;
        let mut id = String::from(KEY_PREFIX);
        id.extend(buf.iter().map(|b| KEY_ALPHABET[(b % 32) as usize] as char));
        let token = Secret::random(32)?;
        Ok(Placeholders {
            access_key_id: Secret::new(id),
            // 40 characters, like a real secret access key.
            secret_access_key: Secret::new(Secret::random(20)?.expose()),
            session_token: Secret::new(format!("{TOKEN_PREFIX}{}", token.expose())),
        })
    }

    /// The variables `run` and `start` export.
    pub fn env(&self) -> Vec<(String, Secret)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_SESSION_TOKEN".into(), self.session_token.clone()),
        ]
    }

    /// Does any header value or the query hold the placeholder key id, the
    /// placeholder secret or session token? (An SDK puts the key id in
    /// `Authorization: AWS4-HMAC-SHA256 Credential=<id>/…` or a presigned
    /// URL's `X-Amz-Credential`, the token in `X-Amz-Security-Token`.)
    pub fn seen_in(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let needles = [
            self.access_key_id.expose().as_bytes(),
            self.session_token.expose().as_bytes(),
            self.secret_access_key.expose().as_bytes(),
        ];
        let has = |hay: &[u8]| {
            needles
                .iter()
                .any(|n| hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)))
        };
        headers.values().any(|v| has(v.as_bytes())) || query.is_some_and(|q| has(q.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_shaped_like_keys_random_per_job_and_found_where_sdks_put_them() {
        let a = Placeholders::random().expect("random");
        let b = Placeholders::random().expect("random");
        let id = a.access_key_id.expose();
        assert_eq!(id.len(), 20, "{id}");
        assert!(id.starts_with("ASIALANYARD"));
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        assert_eq!(a.secret_access_key.expose().len(), 40);
        assert_ne!(id, b.access_key_id.expose());
        assert_ne!(a.session_token.expose(), b.session_token.expose());
        assert!(!format!("{a:?}").contains("ASIA"));

        let mut h = HeaderMap::new();
        assert!(!a.seen_in(&h, Some("a=1")));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={id}/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00"
        );
        h.insert("authorization", auth.parse().expect("value"));
        assert!(a.seen_in(&h, None));
        assert!(
            !b.seen_in(&h, None),
            "another job's placeholder is not this one's"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-security-token",
            a.session_token.expose().parse().expect("value"),
        );
        assert!(a.seen_in(&h, None));
        let q = format!("X-Amz-Credential={id}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request");
        assert!(a.seen_in(&HeaderMap::new(), Some(&q)));
    }
}
