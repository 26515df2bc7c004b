//! Value checks shared by the sections: names, URLs (the transport rule)
//! and durations.

use std::time::Duration;

use url::Url;

use super::raw::{At, Diag, Table};

pub(super) fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A URL that obeys the transport rule: https, or http to a loopback host.
pub(super) fn url(d: &mut Diag<'_>, key: &str, v: &At<String>) -> Option<Url> {
    let u = match Url::parse(&v.v) {
        Ok(u) => u,
        Err(e) => {
            d.err(
                &v.span,
                key,
                format!("expected an absolute URL, got {:?} ({e})", v.v),
            );
            return None;
        }
    };
    if !u.username().is_empty() || u.password().is_some() {
        d.err(
            &v.span,
            key,
            "a URL here must not carry userinfo (user:password@); credentials never go in config",
        );
        return None;
    }
    if let Err(e) = crate::http::check_transport(&u) {
        d.err(
            &v.span,
            key,
            format!("expected an https:// URL (plain http only for loopback hosts): {e}"),
        );
        return None;
    }
    Some(u)
}

pub(super) fn duration(d: &mut Diag<'_>, key: &str, v: &At<String>) -> Option<Duration> {
    match humantime::parse_duration(&v.v) {
        Ok(dur) if !dur.is_zero() => Some(dur),
        Ok(_) => {
            d.err(&v.span, key, "expected a duration greater than zero");
            None
        }
        Err(e) => {
            d.err(
                &v.span,
                key,
                format!(
                    "expected a duration such as \"30s\", \"5m\" or \"1h 30m\", got {:?} ({e})",
                    v.v
                ),
            );
            None
        }
    }
}

/// A keyword (see `keyword`), or a message listing the accepted ones.
pub(super) fn one_of<T: serde::de::DeserializeOwned>(
    d: &mut Diag<'_>,
    key: &str,
    v: &At<String>,
) -> Option<T> {
    let parsed = super::keyword::parse::<T>(&v.v);
    if parsed.is_none() {
        d.err(
            &v.span,
            key,
            format!(
                "expected {}, got {:?}",
                super::keyword::quoted_or::<T>(),
                v.v
            ),
        );
    }
    parsed
}

/// A required string key that `valid` must accept: its value, or one
/// error (`expected`, then the value given, for a wrong one; `missing` when
/// the key is absent) and `None`.
pub(super) fn required(
    d: &mut Diag<'_>,
    t: &Table<'_>,
    key: &str,
    v: Option<&At<String>>,
    valid: impl Fn(&str) -> bool,
    expected: &str,
    missing: &str,
) -> Option<String> {
    match v {
        Some(v) if valid(&v.v) => Some(v.v.clone()),
        Some(v) => {
            d.err(&v.span, &t.key(key), format!("{expected}, got {:?}", v.v));
            None
        }
        None => {
            d.err(&t.span, &t.key(key), missing);
            None
        }
    }
}
