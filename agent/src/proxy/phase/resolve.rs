//! Phase 2, `resolve`: one canonical destination, whatever form the
//! request took: absolute-form (forward proxy), origin-form under
//! `/r/<secret>/<name>/` (reverse route), `CONNECT host:port`, or a
//! request inside an intercepted tunnel (which must agree with its
//! CONNECT). Sets `ctx.dest` and `ctx.pq`. The self-loop check (a request
//! the sidecar would send to its own listener) happens here, once per
//! destination: [`self_loop`].

use std::net::{IpAddr, SocketAddr};

use http::header;
use http::{Method, Request, StatusCode, Uri};
use hyper::body::Incoming;

use super::admit::Admitted;
use crate::audit;
use crate::proxy::context::Ctx;
use crate::proxy::refusal::Refusal;
use crate::proxy::server::Shared;
use crate::route::HostPattern;
use crate::route::{parse_authority, Destination, Scheme};

pub async fn resolve(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
    admitted: Admitted<'_>,
) -> Result<(), Refusal> {
    if ctx.tunnel {
        return in_tunnel(ctx, req);
    }
    if req.method() == Method::CONNECT {
        ctx.dest = connect_authority(ctx, req)?;
        if let Err(r) = admitted.proxy_secret(shared) {
            ctx.locate_dest();
            return Err(r);
        }
        return self_loop(shared, ctx, true).await;
    }
    if req.uri().authority().is_some() {
        return forward(shared, ctx, req, admitted).await;
    }
    // Origin-form: only reverse routes, and only with our own Host.
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| parse_authority(Scheme::Http, h).ok())
        .is_some_and(|d| names_listener(shared, &d));
    if !host_ok {
        ctx.locate_listener(shared, req.uri().path());
        return Err(Refusal::malformed(
            "the Host header does not name this listener (a browser page cannot use lanyard)",
        ));
    }
    reverse(shared, ctx, req).await
}

/// Absolute-form: `GET http://host:port/path`.
async fn forward(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
    admitted: Admitted<'_>,
) -> Result<(), Refusal> {
    let uri = req.uri();
    let (dest, pq) = match absolute_target(uri) {
        Ok(t) => t,
        Err(r) => {
            ctx.locate_listener(shared, uri.path());
            return Err(r);
        }
    };
    let scheme = dest.scheme;
    if names_listener(shared, &dest) {
        // A client that sends even LANYARD_URL_* calls through its
        // HTTP_PROXY: serve the reverse route.
        return reverse(shared, ctx, req).await;
    }
    let here = |ctx: &mut Ctx| ctx.locate(scheme.as_str(), &dest.host, dest.port, uri.path());
    if let Err(r) = admitted.proxy_secret(shared) {
        here(ctx);
        return Err(r);
    }
    if let Some(h) = req.headers().get(header::HOST) {
        // Why: the authority is canonicalised once per request; a Host
        // header spelt exactly like it canonicalises to the same
        // destination, so only a different spelling is parsed again.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let agrees = h.as_bytes() == authority.as_bytes()
            || h.to_str()
                .ok()
                .and_then(|h| parse_authority(scheme, h).ok())
                .is_some_and(|hd| hd == dest);
        if !agrees {
            here(ctx);
            return Err(Refusal::malformed(
                "the Host header does not match the request URL",
            ));
        }
    }
    ctx.pq = pq;
    ctx.dest = dest;
    self_loop(shared, ctx, false).await
}

/// An absolute-form request target (`http://host:port/path?query`): its
/// canonical destination and its path and query, as sent. Pure (no
/// listener, no network): the proxy's forward mode and `doctor --url`
/// read a URL with this one function.
pub fn absolute_target(uri: &Uri) -> Result<(Destination, String), Refusal> {
    let Some(scheme) = uri.scheme_str().and_then(Scheme::parse) else {
        return Err(Refusal::malformed(
            "only http and https URLs can be proxied",
        ));
    };
    let authority = uri.authority().map_or("", |a| a.as_str());
    let dest = parse_authority(scheme, authority).map_err(|e| Refusal::malformed(e.to_string()))?;
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    Ok((dest, pq))
}

/// `/r/<secret>/<name>/rest` → the named route's URL + `rest`.
async fn reverse(shared: &Shared, ctx: &mut Ctx, req: &Request<Incoming>) -> Result<(), Refusal> {
    let path = req.uri().path();
    let refuse = |ctx: &mut Ctx, status, rule: std::borrow::Cow<'static, str>| {
        ctx.locate_listener(shared, path);
        Err(Refusal::client(status, rule))
    };
    let Some(rest) = path.strip_prefix("/r/") else {
        return refuse(
            ctx,
            StatusCode::NOT_FOUND,
            "not a lanyard URL: reverse routes are /r/<secret>/<name>/ (see LANYARD_URL_*)".into(),
        );
    };
    let (presented, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if !shared.secret.ct_eq(presented.as_bytes()) {
        return refuse(
            ctx,
            StatusCode::FORBIDDEN,
            "the reverse URL's secret does not match this job".into(),
        );
    }
    // `LANYARD_URL_API` has no trailing slash, so `$LANYARD_URL_API/x`
    // and `$LANYARD_URL_API` both land under the route's prefix.
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(route) = shared.named.get(name) else {
        let rule = format!("no route named {:?}", audit::escape_controls(name));
        return refuse(ctx, StatusCode::NOT_FOUND, rule.into());
    };
    let HostPattern::Exact(host) = &route.host else {
        return refuse(
            ctx,
            StatusCode::BAD_REQUEST,
            "a wildcard route has no single host for a reverse URL".into(),
        );
    };
    let mut pq = format!("{}{tail}", route.path_prefix);
    if let Some(q) = req.uri().query() {
        pq.push('?');
        pq.push_str(q);
    }
    ctx.pq = pq;
    ctx.dest = Destination {
        scheme: route.scheme,
        host: host.clone(),
        port: route.port,
    };
    self_loop(shared, ctx, false).await
}

/// `CONNECT host:port`: the destination of a tunnel.
fn connect_authority(ctx: &mut Ctx, req: &Request<Incoming>) -> Result<Destination, Refusal> {
    let authority = req.uri().authority().map_or("", |a| a.as_str());
    parse_authority(Scheme::Https, authority).map_err(|e| {
        ctx.locate("https", "", 0, "");
        Refusal::malformed(format!("CONNECT {e}"))
    })
}

/// A request inside an intercepted tunnel: its URL and Host must name the
/// CONNECT's destination (already in `ctx.dest`), over https.
fn in_tunnel(ctx: &mut Ctx, req: &Request<Incoming>) -> Result<(), Refusal> {
    let refuse = |ctx: &mut Ctx, rule: std::borrow::Cow<'static, str>| {
        let host = ctx.dest.host.clone();
        ctx.locate("https", &host, ctx.dest.port, req.uri().path());
        Err(Refusal::malformed(rule))
    };
    if req.method() == Method::CONNECT {
        return refuse(ctx, "CONNECT inside an intercepted tunnel".into());
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()));
    if authority.is_none() && host.is_none() {
        return refuse(ctx, "the request names no host".into());
    }
    for n in authority.into_iter().chain(host.as_deref()) {
        if !parse_authority(Scheme::Https, n).is_ok_and(|d| d == ctx.dest) {
            let rule = format!(
                "the request's host {:?} does not match the CONNECT host {}:{}",
                audit::escape_controls(n),
                ctx.dest.host,
                ctx.dest.port
            );
            return refuse(ctx, rule.into());
        }
    }
    if req.uri().scheme_str().is_some_and(|s| s != "https") {
        return refuse(ctx, "an http URL inside a TLS tunnel".into());
    }
    ctx.pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    Ok(())
}

/// Is this address one of the listener's?
fn is_self(shared: &Shared, addr: SocketAddr) -> bool {
    addr.port() == shared.local.port()
        && (addr.ip() == shared.local.ip() || addr.ip().is_loopback() || addr.ip().is_unspecified())
}

/// Does this destination name the listener itself, without asking DNS
/// (`localhost`, or one of its addresses, on its port)?
pub(crate) fn names_listener(shared: &Shared, d: &Destination) -> bool {
    if d.port != shared.local.port() {
        return false;
    }
    let h = d.host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<IpAddr>()
            .is_ok_and(|ip| is_self(shared, SocketAddr::new(ip, d.port)))
}

/// Why: the sidecar never connects to its own listener (a request loop).
/// The one check of `ctx.dest`, by name and then, only when the port is
/// ours, through DNS.
async fn self_loop(shared: &Shared, ctx: &mut Ctx, connect: bool) -> Result<(), Refusal> {
    let d = &ctx.dest;
    if d.port != shared.local.port() {
        return Ok(());
    }
    let rule: std::borrow::Cow<'static, str> = if names_listener(shared, d) {
        if connect {
            "CONNECT to lanyard's own listener".into()
        } else {
            loop_rule(d).into()
        }
    } else {
        let host = d.host.trim_start_matches('[').trim_end_matches(']');
        match tokio::net::lookup_host((host, d.port)).await {
            Ok(addrs) => {
                let mut addrs = addrs;
                if !addrs.any(|a| is_self(shared, a)) {
                    return Ok(());
                }
                loop_rule(d).into()
            }
            Err(e) => format!("cannot resolve {host}: {e}").into(),
        }
    };
    ctx.locate_dest();
    Err(Refusal::policy(rule))
}

fn loop_rule(d: &Destination) -> String {
    format!(
        "{}:{} is lanyard's own listener; refusing a request loop",
        d.host, d.port
    )
}
