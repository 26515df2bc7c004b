//! The one check of a path: a request's (without its query) and a route's
//! path prefix. Refuses the forms an upstream may read differently from us.

use std::fmt;

use super::TargetError;

/// Percent-encodings an upstream may decode into a slash, a backslash, a
/// dot or a NUL, and `%25`, through which a second decoding makes any of
/// them. Lowercase; matched case-insensitively.
const REFUSED_ENCODINGS: [&str; 5] = ["%2f", "%5c", "%2e", "%00", "%25"];

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    NotAbsolute,
    Characters,
    Encoded(&'static str),
    DotOrEmptySegment,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::NotAbsolute => f.write_str("a path that does not start with /"),
            PathProblem::Characters => {
                f.write_str("control characters, spaces, backslashes or raw non-ASCII bytes")
            }
            PathProblem::Encoded(enc) => write!(f, "encoded {enc}"),
            PathProblem::DotOrEmptySegment => f.write_str("dot segments or empty segments"),
        }
    }
}

/// The first problem with a path, if any: not starting with `/`; control
/// characters, spaces, backslashes, `#` or raw non-ASCII bytes; an encoded
/// slash, backslash, dot, NUL or percent sign; dot segments or empty
/// segments (a trailing `/` is not one).
pub fn path_problem(path: &str) -> Option<PathProblem> {
    if !path.starts_with('/') {
        return Some(PathProblem::NotAbsolute);
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'\\' || b == b'#' || b == b' ' || b >= 0x80)
    {
        return Some(PathProblem::Characters);
    }
    let lower = path.to_ascii_lowercase();
    if let Some(enc) = REFUSED_ENCODINGS.into_iter().find(|e| lower.contains(e)) {
        return Some(PathProblem::Encoded(enc));
    }
    if path.len() > 1
        && path[1..].split('/').enumerate().any(|(i, seg)| {
            seg == "." || seg == ".." || (seg.is_empty() && i + 1 < path[1..].split('/').count())
        })
    {
        return Some(PathProblem::DotOrEmptySegment);
    }
    None
}

/// Check a request path (no query), as [`path_problem`].
pub fn check_path(path: &str) -> Result<(), TargetError> {
    match path_problem(path) {
        None => Ok(()),
        Some(PathProblem::NotAbsolute) => {
            Err(TargetError::Path(format!("{path:?} does not start with /")))
        }
        Some(p) => Err(TargetError::Path(p.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::parse_route_url;

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/%2e%2e/admin",
            "/v1%2fadmin",
            "/v1/%5cadmin",
            "/v1\\admin",
            "/v1//admin",
            "v1/",
            "/v1/%00",
            "/v1/%252e%252e/",
            "/v1/\u{0}",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} should be refused");
        }
        for ok in ["/", "/v1/", "/v1/charges", "/v1/a%20b", "/v1/x.y"] {
            assert!(check_path(ok).is_ok(), "{ok:?} should pass");
        }
    }

    /// There used to be two validators: the proxy's refused %2f %5c %2e %00
    /// %25, the route URL's only %2f %5c %2e, so a route prefix could hold
    /// `%00` or `%25` no request path can. Now one list serves both; each
    /// encoding either list refused is refused by both, in either case.
    #[test]
    fn every_encoding_either_old_validator_refused_is_refused_by_both() {
        let proxy_list = ["%2f", "%5c", "%2e", "%00", "%25"];
        let route_list = ["%2f", "%5c", "%2e"];
        for enc in proxy_list.into_iter().chain(route_list) {
            for enc in [enc.to_owned(), enc.to_ascii_uppercase()] {
                let path = format!("/v1/a{enc}b/");
                assert!(check_path(&path).is_err(), "request path {path:?}");
                let url = format!("https://api.example.com{path}");
                let err = parse_route_url(&url).expect_err(&url);
                assert!(
                    err.contains("the path prefix must not contain encoded"),
                    "{url}: {err}"
                );
            }
        }
    }

    #[test]
    fn route_prefixes_and_request_paths_refuse_the_same_characters() {
        for bad in ["/v1/\u{e9}/", "/v1/a#b/"] {
            assert_eq!(path_problem(bad), Some(PathProblem::Characters), "{bad:?}");
        }
        let err = parse_route_url("https://api.example.com/v1/\u{e9}/").expect_err("non-ASCII");
        assert!(err.contains("raw non-ASCII bytes"), "{err}");
    }
}
