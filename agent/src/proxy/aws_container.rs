//! The AWS container-credentials endpoint, a local endpoint on the
//! listener (like the reverse routes), for tools that cannot use a proxy.
//! Opt-in per credential (`container_endpoint = true`): the job then sees
//! the role session's short-lived keys.
//!
//! The protocol, as botocore's `ContainerProvider` speaks it: the client
//! GETs `AWS_CONTAINER_CREDENTIALS_FULL_URI` (http is allowed only to a
//! loopback address, `localhost` or the ECS/EKS link-local hosts) with
//! `Authorization: <the contents of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE>`
//! and reads `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`;
//! it fetches again before `Expiration`.
//!
//! Only the job's clients get keys: the connection's owner was checked by
//! `admit::connection`, and here the client must be on loopback, send no
//! browser header (`Origin`, `Sec-Fetch-*`), use GET and present the
//! per-job token (compared in constant time; it is not the proxy secret).
//! Every fetch is audited (`served` with the credential's name and
//! fingerprint, or `denied` with the rule); the keys never are.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::context::Ctx;
use super::forward::{full, Body};
use super::refusal::Refusal;
use super::server::Shared;
use crate::audit::Decision;
use crate::exchange::aws::AwsKeys;
use crate::identity::format_time;
use crate::route::{parse_authority, Scheme};
use crate::secret::Secret;

/// The endpoint's path; the credential's name follows.
pub const PREFIX: &str = "/aws/container-credentials/";

/// The endpoint as the proxy serves it.
pub struct Endpoint {
    /// The per-job token the client presents in `Authorization`.
    pub token: Secret,
    /// The one credential served (config allows one).
    pub credential: String,
}

/// Is this request for the endpoint? Origin-form with a Host naming the
/// listener, or absolute-form naming the listener (a client that sends it
/// through `HTTP_PROXY`), under [`PREFIX`], outside any tunnel.
pub fn is_for(shared: &Shared, ctx: &Ctx, req: &Request<Incoming>) -> bool {
    if ctx.tunnel || shared.container.is_none() {
        return false;
    }
    let uri = req.uri();
    if !uri.path().starts_with(PREFIX.trim_end_matches('/')) {
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

/// Serve one fetch, or refuse it.
pub fn serve(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let Some(ep) = &shared.container else {
        return Err(Refusal::client(StatusCode::NOT_FOUND, "no such endpoint"));
    };
    ctx.locate_listener(shared, req.uri().path());
    match ctx.peer {
        Some(p) if p.ip().is_loopback() => {}
        Some(p) => {
            let rule = format!("the container-credentials endpoint answers loopback clients only; this one is not from loopback ({})", p.ip());
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
        let rule = format!("a browser request ({h}) to the container-credentials endpoint");
        return Err(Refusal::client(StatusCode::FORBIDDEN, rule).closing());
    }
    let name = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
    if name != ep.credential {
        return Err(Refusal::client(
            StatusCode::NOT_FOUND,
            format!(
                "the container-credentials endpoint is {PREFIX}{}",
                ep.credential
            ),
        ));
    }
    ctx.log.rec.credential = Some(ep.credential.clone());
    if req.method() != Method::GET {
        return Err(Refusal::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "the container-credentials endpoint takes only GET",
        ));
    }
    match req.headers().get(header::AUTHORIZATION) {
        None => return Err(Refusal::client(
            StatusCode::UNAUTHORIZED,
            "no Authorization header: send the contents of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        )),
        Some(v) if ep.token.ct_eq(v.as_bytes()) => {}
        Some(_) => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "wrong container-credentials token",
            ))
        }
    }
    let cur = shared
        .store
        .get(&ep.credential)
        .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let Some(keys) = AwsKeys::from_credential(&cur.value) else {
        return Err(Refusal::credential(
            StatusCode::BAD_GATEWAY,
            "the credential holds no AWS keys",
        ));
    };
    ctx.log.rec.fingerprint = Some(cur.fingerprint.clone());
    ctx.log.rec.decision = Decision::Served;
    let body = zeroize::Zeroizing::new(
        serde_json::json!({
            "AccessKeyId": keys.access_key_id.expose(),
            "SecretAccessKey": keys.secret_access_key.expose(),
            "Token": keys.session_token.expose(),
            "Expiration": format_time(keys.expiration),
        })
        .to_string(),
    );
    let mut resp = Response::new(full(body.as_bytes().to_vec()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
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
