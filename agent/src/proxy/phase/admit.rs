//! Phase 1, `admit`: may this client use the listener at all? The
//! connecting socket must belong to the job's user (before any HTTP), a
//! request on the listener must not come from a browser page, and a
//! request for anything but the listener itself must carry the proxy
//! secret (a reverse URL carries its own, checked by `resolve`).

use std::net::SocketAddr;

use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::audit;
use crate::proxy::context::Ctx;
use crate::proxy::refusal::Refusal;
use crate::proxy::server::Shared;

/// Only the job's user may connect (Linux; off when `shared.uid` is `None`).
pub fn connection(shared: &Shared, peer: SocketAddr) -> Result<(), Refusal> {
    let Some(uid) = shared.uid else {
        return Ok(());
    };
    let rule = match crate::proxy::peer::peer_uid(shared.local, peer) {
        Ok(u) if u == uid => return Ok(()),
        Ok(u) => {
            format!("connection from uid {u}; only the job's user (uid {uid}) may use this proxy")
        }
        Err(e) => format!("cannot tell who is connecting, so refusing: {e}"),
    };
    Err(Refusal::client(StatusCode::FORBIDDEN, rule))
}

/// A request admitted past the browser checks; the proxy secret is
/// checked when `resolve` knows the request is not for the listener.
pub struct Admitted<'r> {
    headers: &'r HeaderMap,
}

/// A request on the plain listener. Requests inside an intercepted tunnel
/// were admitted with their CONNECT.
pub fn request<'r>(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &'r Request<Incoming>,
) -> Result<Admitted<'r>, Refusal> {
    if !ctx.tunnel {
        if let Some(rule) = browser_check(shared, req.headers()) {
            ctx.locate_listener(shared, req.uri().path());
            return Err(Refusal::client(StatusCode::FORBIDDEN, rule).closing());
        }
    }
    Ok(Admitted {
        headers: req.headers(),
    })
}

impl Admitted<'_> {
    /// The proxy secret from `Proxy-Authorization: Basic`, compared in
    /// constant time; 407 with a challenge without it. The user name is
    /// not checked (clients send `lanyard`).
    pub fn proxy_secret(&self, shared: &Shared) -> Result<(), Refusal> {
        proxy_auth(shared, self.headers)
            .map_err(|rule| Refusal::client(StatusCode::PROXY_AUTHENTICATION_REQUIRED, rule))
    }
}

/// Refuse what a browser would send across sites: a foreign Origin, or
/// Sec-Fetch-Site other than same-origin/none. CLI clients send neither.
fn browser_check(shared: &Shared, h: &HeaderMap) -> Option<String> {
    if let Some(o) = h.get(header::ORIGIN) {
        let own = format!("http://{}", shared.local);
        if o.as_bytes() != own.as_bytes() {
            return Some(format!(
                "cross-site request: Origin {:?} is not this listener",
                audit::escape_controls(&String::from_utf8_lossy(o.as_bytes()))
            ));
        }
    }
    if let Some(s) = h.get("sec-fetch-site") {
        if !matches!(s.as_bytes(), b"same-origin" | b"none") {
            return Some(format!(
                "cross-site request: Sec-Fetch-Site {:?}",
                audit::escape_controls(&String::from_utf8_lossy(s.as_bytes()))
            ));
        }
    }
    None
}

fn proxy_auth(shared: &Shared, h: &HeaderMap) -> Result<(), &'static str> {
    use base64::Engine;
    let v = h
        .get(header::PROXY_AUTHORIZATION)
        .ok_or("proxy secret missing: use the proxy URL from HTTPS_PROXY, which carries it")?;
    let v = v.as_bytes();
    let b64 = v
        .strip_prefix(b"Basic ")
        .or_else(|| v.strip_prefix(b"basic "))
        .ok_or("Proxy-Authorization is not Basic")?;
    // Why: what every client sends (the user name `lanyard` of the proxy
    // URL) is compared without decoding; any other spelling is decoded.
    if shared.proxy_basic.ct_eq(b64) {
        return Ok(());
    }
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "Proxy-Authorization is not valid base64")?,
    );
    let pass = raw
        .iter()
        .position(|&b| b == b':')
        .map(|i| &raw[i + 1..])
        .ok_or("Proxy-Authorization has no password")?;
    if shared.secret.ct_eq(pass) {
        Ok(())
    } else {
        Err("wrong proxy secret")
    }
}
