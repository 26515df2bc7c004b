//! What the listener's own endpoints (the AWS container-credentials, the
//! Azure managed-identity and the GCE metadata endpoints) share: how a request is known to
//! be for one of them, the screening every fetch passes before its
//! endpoint looks at it (loopback only, no browser), and where the
//! placeholder tokens they hand out may go.
//!
//! The connection's owner was already checked by `admit::connection`.

use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::context::Ctx;
use super::refusal::Refusal;
use super::server::Shared;
use crate::route::{parse_authority, Scheme};

/// Is this request for the endpoint under `prefix`? Origin-form with a
/// Host naming the listener, or absolute-form naming the listener (a
/// client that sends it through `HTTP_PROXY`), outside any tunnel.
pub fn addressed(shared: &Shared, ctx: &Ctx, req: &Request<Incoming>, prefix: &str) -> bool {
    if ctx.tunnel {
        return false;
    }
    let uri = req.uri();
    if !uri.path().starts_with(prefix.trim_end_matches('/')) {
        return false;
    }
    let named = match uri.authority() {
        Some(a) if uri.scheme_str() == Some("http") => Some(a.as_str().to_owned()),
        Some(_) => None,
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };
    named
        .and_then(|n| parse_authority(Scheme::Http, &n).ok())
        .is_some_and(|d| super::phase::resolve::names_listener(shared, &d))
}

/// Refuse a client that is not on loopback or that is a browser page;
/// `what` names the endpoint in the rule.
pub fn screen(ctx: &Ctx, req: &Request<Incoming>, what: &str) -> Result<(), Refusal> {
    match ctx.peer {
        Some(p) if p.ip().is_loopback() => {}
        Some(p) => {
            let rule = format!(
                "the {what} endpoint answers loopback clients only; this one is not from loopback ({})",
                p.ip()
            );
            return Err(Refusal::client(StatusCode::FORBIDDEN, rule));
        }
        None => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "cannot tell where the client is, so refusing",
            ))
        }
    }
    if let Some(h) = browser_header(req.headers()) {
        let rule = format!("a browser request ({h}) to the {what} endpoint");
        return Err(Refusal::client(StatusCode::FORBIDDEN, rule).closing());
    }
    Ok(())
}

/// Is `placeholder` where it may not be? It is allowed only in
/// `Authorization` on a route whose credential is `credential` and whose
/// header is `Authorization` (the credential replaces it); in any other
/// header, the query, or on any other request it is misused.
pub fn placeholder_misused(
    placeholder: &[u8],
    credential: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    route: Option<&crate::route::Route>,
) -> bool {
    let has = |hay: &[u8]| hay.windows(placeholder.len()).any(|w| w == placeholder);
    let replaced_here = route.is_some_and(|rt| {
        rt.aws.is_none() && rt.credential == credential && rt.header == header::AUTHORIZATION
    });
    headers
        .iter()
        .filter(|(k, _)| !(replaced_here && *k == header::AUTHORIZATION))
        .any(|(_, v)| has(v.as_bytes()))
        || query.is_some_and(|q| has(q.as_bytes()))
}

/// A header only a browser sends: any `Origin`, any `Sec-Fetch-*`.
fn browser_header(h: &HeaderMap) -> Option<String> {
    h.keys()
        .find(|k| *k == header::ORIGIN || k.as_str().starts_with("sec-fetch-"))
        .map(|k| k.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn browser_headers_are_any_origin_or_sec_fetch() {
        let mut h = HeaderMap::new();
        assert_eq!(browser_header(&h), None);
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert_eq!(browser_header(&h), None);
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert_eq!(browser_header(&h).as_deref(), Some("sec-fetch-mode"));
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(browser_header(&h).as_deref(), Some("origin"));
    }
}
