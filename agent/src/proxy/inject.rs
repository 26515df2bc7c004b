//! Header injection: remove every client-supplied copy of the route's
//! header (any letter case, and the `_` spelling that some servers fold into
//! `-`), remove proxy and internal headers, then set exactly one value.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::route::Route;
use crate::secret::Credential;

/// Headers never forwarded upstream.
const STRIPPED: &[&str] = &[
    "proxy-authorization",
    "proxy-connection",
    "proxy-authenticate",
];
/// Our own header namespace; never forwarded from a client.
const INTERNAL_PREFIX: &str = "x-lanyard-";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("the credential for this route has characters not allowed in an HTTP header")]
    BadValue,
}

/// Normalised name for comparing spellings: lowercase, `_` as `-`.
fn fold(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Remove proxy, internal and (when `target` is given) every spelling of
/// the target header.
pub fn strip(headers: &mut HeaderMap, target: Option<&HeaderName>) {
    let target = target.map(|t| fold(t.as_str()));
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let f = fold(k.as_str());
            STRIPPED.contains(&f.as_str())
                || f.starts_with(INTERNAL_PREFIX)
                || target.as_deref() == Some(f.as_str())
        })
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(&k);
    }
}

/// Replace, never merge: afterwards the request carries exactly one value
/// of the route's header, the rendered credential, marked sensitive.
///
/// Why `&Credential` and not `&str`: the job's identity token (an
/// `IdentityJwt`) and the proxy secret are secrets of other types, so
/// attaching either to an upstream request does not compile. Only
/// `Credential::passthrough` turns an identity token into a credential.
pub fn inject(
    headers: &mut HeaderMap,
    route: &Route,
    credential: &Credential,
) -> Result<(), InjectError> {
    strip(headers, Some(&route.header));
    // The header value's memory is the rendered string itself, wiped when
    // the last clone of the value (hyper's, after the request) is dropped.
    let rendered = crate::wipe::bytes(route.template.render(credential.expose()).into_bytes());
    let mut v = HeaderValue::from_maybe_shared(rendered).map_err(|_| InjectError::BadValue)?;
    v.set_sensitive(true);
    headers.insert(route.header.clone(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{HostPattern, Scheme, Template};

    fn route(header: &str, template: Template) -> Route {
        Route {
            name: None,
            scheme: Scheme::Https,
            host: HostPattern::Exact("api.example.com".into()),
            port: 443,
            path_prefix: "/".into(),
            methods: None,
            credential: "gw".into(),
            header: HeaderName::from_bytes(header.as_bytes()).expect("name"),
            template,
            websocket: false,
            identities: Default::default(),
            aws: None,
        }
    }

    fn cred(v: &str) -> Credential {
        Credential::new(v)
    }

    fn bearer() -> Template {
        Template::Format {
            before: "Bearer ".into(),
            after: String::new(),
        }
    }

    #[test]
    fn every_client_copy_is_replaced_by_exactly_one() {
        let mut h = HeaderMap::new();
        h.append("authorization", HeaderValue::from_static("Bearer client-1"));
        h.append("Authorization", HeaderValue::from_static("Bearer client-2"));
        h.append(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        h.append(
            "proxy-authorization",
            HeaderValue::from_static("Basic bGFueWFyZDpzZWNyZXQ="),
        );
        h.append("x-lanyard-internal", HeaderValue::from_static("1"));
        h.append("accept", HeaderValue::from_static("*/*"));
        inject(&mut h, &route("authorization", bearer()), &cred("tok")).expect("inject");
        let all: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0], "Bearer tok");
        assert!(all[0].is_sensitive());
        assert!(h.get("proxy-authorization").is_none() && h.get("x-lanyard-internal").is_none());
        assert_eq!(h.get("accept").map(|v| v.as_bytes()), Some(&b"*/*"[..]));
    }

    #[test]
    fn underscore_spellings_of_a_custom_header_are_removed() {
        let mut h = HeaderMap::new();
        h.append("x_api_key", HeaderValue::from_static("client"));
        h.append("X-Api-Key", HeaderValue::from_static("client2"));
        h.append("x-api_key", HeaderValue::from_static("client3"));
        inject(
            &mut h,
            &route(
                "x-api-key",
                Template::Format {
                    before: String::new(),
                    after: String::new(),
                },
            ),
            &cred("k"),
        )
        .expect("inject");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-api-key").map(|v| v.as_bytes()), Some(&b"k"[..]));
    }

    #[test]
    fn a_credential_with_a_newline_is_refused_not_smuggled() {
        let mut h = HeaderMap::new();
        assert_eq!(
            inject(
                &mut h,
                &route("authorization", bearer()),
                &cred("tok\r\nx-evil: 1")
            ),
            Err(InjectError::BadValue)
        );
        assert!(h.is_empty());
    }

    #[test]
    fn basic_for_git() {
        let mut h = HeaderMap::new();
        inject(
            &mut h,
            &route(
                "authorization",
                Template::Basic {
                    username: "x-access-token".into(),
                },
            ),
            &cred("t"),
        )
        .expect("inject");
        assert_eq!(
            h.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Basic eC1hY2Nlc3MtdG9rZW46dA=="[..])
        );
    }
}
