//! The loopback listener. One port serves three things: forward-proxy
//! requests (absolute-form HTTP, `CONNECT` for HTTPS), and reverse routes
//! (`/r/<secret>/<name>/…`) for tools that ignore proxy variables. Only
//! this job may use it: the proxy secret, a same-user check of the
//! connecting socket, and the browser checks (Host, Origin, Sec-Fetch-Site).
//!
//! Every request ends in `dispatch`: routed hosts get the strict path
//! check, the route decision and injection; other hosts are passed through
//! untouched or refused by `egress = "deny"`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{gated_service, http1_server, Activity, GateHandle};
use super::forward::{self, empty, refusal, strip_hop_by_hop, Body, Pending, Upstream};
use super::framing::Refusal;
use super::inject;
use super::tls::JobCa;
use crate::audit::{self, Audit, Record};
use crate::config::Egress;
use crate::route::{
    check_path, parse_authority, Decision, Destination, HostPattern, Route, RouteTable, Scheme,
    SessionIdentity,
};
use crate::secret::{ProxySecret, Secret};
use crate::store::Store;

/// Limits, documented in the README (*Limits*).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Request line plus headers; the gate answers 431 past it.
pub use super::framing::MAX_HEAD;
/// Why: a 401 replay needs the body again; only small ones are kept.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// Why: in-flight requests get this long to finish at teardown.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Why: a TLS client that connects and stalls must not hold a slot.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why: a sidecar shares the runner with the job. Each worker is one
/// thread with its own event loop and upstream pool (like nginx's worker
/// processes), so a request never hops threads; two keep up with a
/// loopback client on two cores (bench/RESULTS.md).
pub const DEFAULT_WORKER_THREADS: usize = 2;
/// Why: a typo like `LANYARD_WORKER_THREADS=1000` must not start a thousand threads.
pub const MAX_WORKER_THREADS: usize = 64;

/// `LANYARD_WORKER_THREADS`: how many proxy worker threads.
pub fn worker_threads(env: &dyn crate::env::Env) -> Result<usize, String> {
    match env.non_empty("LANYARD_WORKER_THREADS") {
        None => Ok(DEFAULT_WORKER_THREADS),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(n),
            _ => Err(format!(
                "LANYARD_WORKER_THREADS={v:?}: expected a whole number from 1 to {MAX_WORKER_THREADS}"
            )),
        },
    }
}

thread_local! {
    /// Which worker this thread is, to pick its own upstream pool.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Headers sent to routed upstreams when `[audit] trace_headers` is on.
pub const TRACE_COMMIT: &str = "x-lanyard-commit";
pub const TRACE_PIPELINE: &str = "x-lanyard-pipeline";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the proxy listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot make the proxy secret: {0}")]
    Random(String),
    #[error("{0}")]
    Tls(#[from] super::tls::TlsError),
    #[error("upstream TLS: {0}")]
    Http(#[from] crate::http::HttpError),
    #[error("cannot start a proxy worker thread: {0}")]
    Runtime(std::io::Error),
}

/// What the proxy needs, built by the caller.
pub struct ProxyOptions {
    pub listen: SocketAddr,
    pub routes: Vec<Route>,
    pub egress: Egress,
    pub max_connections: usize,
    /// Worker threads (`LANYARD_WORKER_THREADS`).
    pub workers: usize,
    pub extra_ca: Option<std::path::PathBuf>,
    pub ca_lifetime: Duration,
    /// Extra headers for routed upstreams (trace ids).
    pub trace: Vec<(HeaderName, HeaderValue)>,
    /// Check the connecting socket's owner (Linux). Tests turn it off
    /// only to show what it guards.
    pub same_user: bool,
    /// Who the session acts as; routes limited to another identity kind
    /// are refused with 403.
    pub identity: SessionIdentity,
    /// How long an upstream may take (`[proxy] upstream_*`).
    pub limits: super::deadline::Limits,
}

struct Shared {
    routes: RouteTable,
    named: HashMap<String, Route>,
    store: Arc<Store>,
    secret: ProxySecret,
    ca: JobCa,
    audit: Arc<Audit>,
    /// One pool per worker thread: a pooled connection's task lives on the
    /// thread that uses it.
    upstreams: Vec<Upstream>,
    pools: Vec<Arc<super::pool::Pool>>,
    egress: Egress,
    local: SocketAddr,
    /// `local`'s address as text, for audit records.
    local_ip: String,
    trace: Vec<(HeaderName, HeaderValue)>,
    /// The job's uid; `None` when the check is off.
    uid: Option<u32>,
    limits: super::deadline::Limits,
}

/// A running listener.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Proxy {
    /// Why: worker threads live until cancelled; a proxy dropped without
    /// `shutdown` (a failed start) must not leave them accepting.
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).finish()
    }
}

/// The path segment that names a reverse route: the env name's suffix,
/// lowercase (`LANYARD_URL_MY_API` → `my_api`).
fn reverse_key(r: &Route) -> Option<String> {
    r.env_name()
        .map(|n| n.trim_start_matches("LANYARD_URL_").to_ascii_lowercase())
}

impl Proxy {
    pub async fn start(
        opts: ProxyOptions,
        store: Arc<Store>,
        audit: Arc<Audit>,
    ) -> Result<Proxy, ProxyError> {
        if !opts.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(opts.listen));
        }
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: opts.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: opts.listen,
            source,
        })?;
        let secret = ProxySecret::random(24).map_err(|e| ProxyError::Random(e.to_string()))?;
        let ca = JobCa::new(&opts.routes, opts.ca_lifetime)?;
        let tls = crate::http::tls_config(opts.extra_ca.as_deref())?;
        let workers = opts.workers.clamp(1, MAX_WORKER_THREADS);
        let named = opts
            .routes
            .iter()
            .filter_map(|r| reverse_key(r).map(|k| (k, r.clone())))
            .collect();
        let shared = Arc::new(Shared {
            routes: RouteTable::for_identity(opts.routes, opts.identity),
            named,
            store,
            secret,
            ca,
            audit,
            upstreams: (0..workers).map(|_| Upstream::new(tls.clone())).collect(),
            pools: (0..workers)
                .map(|_| super::pool::Pool::new(tls.clone()))
                .collect(),
            egress: opts.egress,
            local,
            local_ip: local.ip().to_string(),
            trace: opts.trace,
            uid: opts.same_user.then(|| nix::unistd::getuid().as_raw()),
            limits: opts.limits,
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
        let listener = listener.into_std().map_err(|source| ProxyError::Bind {
            addr: local,
            source,
        })?;
        for id in 0..workers {
            let l = listener.try_clone().map_err(|source| ProxyError::Bind {
                addr: local,
                source,
            })?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ProxyError::Runtime)?;
            let (shared, limit, cancel, tracker) = (
                shared.clone(),
                limit.clone(),
                cancel.clone(),
                tracker.clone(),
            );
            std::thread::Builder::new()
                .name(format!("lanyard-proxy-{id}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(id));
                    rt.block_on(async move {
                        match TcpListener::from_std(l) {
                            Ok(l) => accept_loop(l, shared, limit, cancel, tracker.clone()).await,
                            Err(e) => tracing::error!("proxy worker {id}: {e}"),
                        }
                        // Why: this thread's runtime drives its connections;
                        // it may end only when every connection has.
                        tracker.wait().await;
                    });
                })
                .map_err(ProxyError::Runtime)?;
        }
        Ok(Proxy {
            addr: local,
            shared,
            cancel,
            tracker,
        })
    }

    /// `http://lanyard:<secret>@127.0.0.1:PORT`
    pub fn url(&self) -> Secret {
        Secret::new(format!(
            "http://lanyard:{}@{}",
            self.shared.secret.expose(),
            self.addr
        ))
    }

    pub fn secret(&self) -> &ProxySecret {
        &self.shared.secret
    }

    /// `LANYARD_URL_<NAME>` → the local base URL of each named route.
    pub fn reverse_urls(&self) -> Vec<(String, Secret)> {
        self.shared
            .named
            .iter()
            .filter(|(_, r)| matches!(r.host, HostPattern::Exact(_)))
            .filter_map(|(k, r)| {
                let env = r.env_name()?;
                let url = format!("http://{}/r/{}/{k}", self.addr, self.shared.secret.expose());
                Some((env, Secret::new(url)))
            })
            .collect()
    }

    pub fn ca_pem(&self) -> &str {
        self.shared.ca.pem()
    }

    pub fn ca(&self) -> &JobCa {
        &self.shared.ca
    }

    /// Stop accepting, let in-flight requests finish (with a grace
    /// period), then return.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "proxy: connections still open after {}s; closing them",
                DRAIN_GRACE.as_secs()
            );
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        // Why: waiting for a permit before accepting makes the cap real:
        // excess clients queue in the kernel's backlog, not in memory.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = cancel.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("proxy: accept failed: {e}");
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        let t2 = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            connection(stream, peer, shared, cancel, t2).await;
        });
    }
}

/// Raw refusal before any HTTP: another user's socket.
async fn refuse_raw(mut stream: TcpStream, shared: &Shared, peer: SocketAddr, reason: String) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({ "error": "lanyard refused this connection", "rule": reason })
        .to_string();
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(resp.as_bytes())).await;
    let mut rec = record(&Method::GET, "tcp", &peer.ip().to_string(), peer.port(), "");
    rec.method = "-".into();
    rec.status = 403;
    rec.decision = audit::Decision::Denied;
    rec.reason = Some(reason);
    shared.audit.record(&rec);
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    if let Some(uid) = shared.uid {
        match super::peer::peer_uid(shared.local, peer) {
            Ok(u) if u == uid => {}
            Ok(u) => {
                let reason = format!(
                    "connection from uid {u}; only the job's user (uid {uid}) may use this proxy"
                );
                return refuse_raw(stream, &shared, peer, reason).await;
            }
            Err(e) => {
                let reason = format!("cannot tell who is connecting, so refusing: {e}");
                return refuse_raw(stream, &shared, peer, reason).await;
            }
        }
    }
    let _ = stream.set_nodelay(true);
    let (io, activity) = Activity::new(stream);
    let (io, verdicts) = io.gated();
    let refuse = {
        let shared = shared.clone();
        move |refusal, req: &Request<Incoming>| gate_refusal(&shared, None, refusal, req)
    };
    let svc = gated_service(
        verdicts,
        move |req| outer(shared.clone(), tracker.clone(), req),
        refuse,
    );
    let conn = http1_server()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("proxy: connection from {peer}: {e}");
            }
        }
        _ = activity.idle(IDLE_TIMEOUT) => {
            tracing::debug!("proxy: connection from {peer} idle for {}s; closed", IDLE_TIMEOUT.as_secs());
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_GRACE, conn.as_mut()).await;
        }
    }
}

fn record(method: &Method, scheme: &str, host: &str, port: u16, path: &str) -> Record {
    Record {
        ts: audit::timestamp(SystemTime::now()),
        route: None,
        method: method.as_str().to_owned(),
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0,
        decision: audit::Decision::Denied,
        credential: None,
        fingerprint: None,
        reason: None,
    }
}

/// A refusal, audited.
fn deny(
    shared: &Shared,
    mut rec: Record,
    status: StatusCode,
    rule: &str,
    close: bool,
) -> Response<Body> {
    rec.decision = forward::decision_for(status);
    rec.reason = Some(rule.to_owned());
    let resp = refusal(status, rule, close);
    Pending::new(shared.audit.clone(), rec).finish(status, resp)
}

/// A path fit for the audit log: no query, and a reverse route's secret
/// segment masked.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/r/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => format!("/r/[secret]/{tail}"),
            None => "/r/[secret]".into(),
        },
        None => path.to_owned(),
    }
}

fn is_self(shared: &Shared, addr: SocketAddr) -> bool {
    addr.port() == shared.local.port()
        && (addr.ip() == shared.local.ip() || addr.ip().is_loopback() || addr.ip().is_unspecified())
}

/// Does this destination name the listener itself?
fn dest_is_self(shared: &Shared, d: &Destination) -> bool {
    if d.port != shared.local.port() {
        return false;
    }
    let h = d.host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| is_self(shared, SocketAddr::new(ip, d.port)))
}

/// Why: the sidecar never connects to its own listener (a request loop).
/// Names are resolved only when the port is ours.
async fn guard_self(shared: &Shared, d: &Destination) -> Result<(), String> {
    if d.port != shared.local.port() {
        return Ok(());
    }
    let host = d.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = tokio::net::lookup_host((host, d.port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for a in addrs {
        if is_self(shared, a) {
            return Err(format!(
                "{}:{} is lanyard's own listener; refusing a request loop",
                d.host, d.port
            ));
        }
    }
    Ok(())
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

/// The proxy secret from `Proxy-Authorization: Basic`, compared in
/// constant time. The user name is not checked (clients send `lanyard`).
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

fn challenge(shared: &Shared, rec: Record, rule: &str) -> Response<Body> {
    let mut resp = deny(
        shared,
        rec,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        rule,
        false,
    );
    resp.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"lanyard\""),
    );
    resp
}

/// The answer to a request the gate refused: its status, its rule, one
/// audit record with the method and path as far as they could be read
/// (escaped), and the connection closes. `tunnel` is the intercepted
/// destination, `None` on the plain listener.
fn gate_refusal(
    shared: &Shared,
    tunnel: Option<&Destination>,
    r: Refusal,
    req: &Request<Incoming>,
) -> Response<Body> {
    // A head refusal carries what was read of the head; the request hyper
    // saw is the sentinel. A body refusal belongs to the real request.
    let (method, target) = if r.method.is_empty() {
        (req.method().as_str().to_owned(), req.uri().to_string())
    } else {
        (r.method, r.target)
    };
    let path = loggable_path(&audit::escape_controls(&audit_path(&target)));
    let mut rec = match tunnel {
        Some(d) => record(&Method::GET, "https", &d.host, d.port, &path),
        None => record(
            &Method::GET,
            "http",
            &shared.local_ip,
            shared.local.port(),
            &path,
        ),
    };
    rec.method = audit::escape_controls(&truncate(&method, 32));
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    deny(
        shared,
        rec,
        status,
        &format!("request framing: {}", r.rule),
        true,
    )
}

/// The path of a request-target for the audit log: origin-form or the
/// path of an absolute-form URL, without the query, at most 2 KiB.
fn audit_path(target: &str) -> String {
    let t = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let t = t.split(['?', '#']).next().unwrap_or_default();
    truncate(t, 2048)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A request on the listener itself.
async fn outer(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    req: Request<Incoming>,
) -> Response<Body> {
    let base = |req: &Request<Incoming>| {
        record(
            req.method(),
            "http",
            &shared.local_ip,
            shared.local.port(),
            &loggable_path(req.uri().path()),
        )
    };
    if let Some(rule) = browser_check(&shared, req.headers()) {
        return deny(&shared, base(&req), StatusCode::FORBIDDEN, &rule, true);
    }
    if req.method() == Method::CONNECT {
        return connect(shared, tracker, req).await;
    }
    if let Some(auth) = req.uri().authority() {
        let scheme = match req.uri().scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return deny(
                    &shared,
                    base(&req),
                    StatusCode::BAD_REQUEST,
                    "only http and https URLs can be proxied",
                    true,
                )
            }
        };
        let dest = match parse_authority(scheme, auth.as_str()) {
            Ok(d) => d,
            Err(e) => {
                return deny(
                    &shared,
                    base(&req),
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                    true,
                )
            }
        };
        if dest_is_self(&shared, &dest) {
            // A client that sends even LANYARD_URL_* calls through its
            // HTTP_PROXY: serve the reverse route.
            return reverse(shared, req).await;
        }
        if let Err(rule) = proxy_auth(&shared, req.headers()) {
            let rec = record(
                req.method(),
                scheme.as_str(),
                &dest.host,
                dest.port,
                req.uri().path(),
            );
            return challenge(&shared, rec, rule);
        }
        if let Some(h) = req.headers().get(header::HOST) {
            let agrees = h
                .to_str()
                .ok()
                .and_then(|h| parse_authority(scheme, h).ok())
                .is_some_and(|hd| hd == dest);
            if !agrees {
                let rec = record(
                    req.method(),
                    scheme.as_str(),
                    &dest.host,
                    dest.port,
                    req.uri().path(),
                );
                return deny(
                    &shared,
                    rec,
                    StatusCode::BAD_REQUEST,
                    "the Host header does not match the request URL",
                    true,
                );
            }
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        return dispatch(shared, req, dest, pq).await;
    }
    // Origin-form: only reverse routes, and only with our own Host.
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| parse_authority(Scheme::Http, h).ok())
        .is_some_and(|d| dest_is_self(&shared, &d));
    if !host_ok {
        return deny(
            &shared,
            base(&req),
            StatusCode::BAD_REQUEST,
            "the Host header does not name this listener (a browser page cannot use lanyard)",
            true,
        );
    }
    reverse(shared, req).await
}

/// `/r/<secret>/<name>/rest` → the named route's URL + `rest`.
async fn reverse(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let rec = || {
        record(
            req.method(),
            "http",
            &shared.local_ip,
            shared.local.port(),
            &loggable_path(&path),
        )
    };
    let Some(rest) = path.strip_prefix("/r/") else {
        return deny(
            &shared,
            rec(),
            StatusCode::NOT_FOUND,
            "not a lanyard URL: reverse routes are /r/<secret>/<name>/ (see LANYARD_URL_*)",
            false,
        );
    };
    let (presented, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if !shared.secret.ct_eq(presented.as_bytes()) {
        return deny(
            &shared,
            rec(),
            StatusCode::FORBIDDEN,
            "the reverse URL's secret does not match this job",
            false,
        );
    }
    // `LANYARD_URL_API` has no trailing slash, so `$LANYARD_URL_API/x`
    // and `$LANYARD_URL_API` both land under the route's prefix.
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(route) = shared.named.get(name) else {
        return deny(
            &shared,
            rec(),
            StatusCode::NOT_FOUND,
            &format!("no route named {:?}", audit::escape_controls(name)),
            false,
        );
    };
    let HostPattern::Exact(host) = &route.host else {
        return deny(
            &shared,
            rec(),
            StatusCode::BAD_REQUEST,
            "a wildcard route has no single host for a reverse URL",
            false,
        );
    };
    let dest = Destination {
        scheme: route.scheme,
        host: host.clone(),
        port: route.port,
    };
    let mut pq = format!("{}{tail}", route.path_prefix);
    if let Some(q) = req.uri().query() {
        pq.push('?');
        pq.push_str(q);
    }
    dispatch(shared, req, dest, pq).await
}

async fn connect(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    req: Request<Incoming>,
) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let dest = match parse_authority(Scheme::Https, &authority) {
        Ok(d) => d,
        Err(e) => {
            let rec = record(req.method(), "https", "", 0, "");
            return deny(
                &shared,
                rec,
                StatusCode::BAD_REQUEST,
                &format!("CONNECT {}", e),
                true,
            );
        }
    };
    let rec = record(req.method(), "https", &dest.host, dest.port, "");
    if let Err(rule) = proxy_auth(&shared, req.headers()) {
        return challenge(&shared, rec, rule);
    }
    if dest_is_self(&shared, &dest) {
        return deny(
            &shared,
            rec,
            StatusCode::FORBIDDEN,
            "CONNECT to lanyard's own listener",
            false,
        );
    }
    if shared.routes.has_host(&dest) {
        let on = hyper::upgrade::on(req);
        let s = shared.clone();
        let t = tracker.clone();
        tracker.spawn(async move {
            match on.await {
                Ok(up) => intercept(s, t, up, dest).await,
                Err(e) => tracing::debug!("proxy: CONNECT upgrade failed: {e}"),
            }
        });
        return Response::new(empty());
    }
    if shared.egress == Egress::Deny {
        let rule = format!(
            "egress = \"deny\": {}:{} has no route",
            dest.host, dest.port
        );
        return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
    }
    if let Err(rule) = guard_self(&shared, &dest).await {
        return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
    }
    let host = dest
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let upstream = match TcpStream::connect((host.as_str(), dest.port)).await {
        Ok(s) => s,
        Err(e) => {
            let rule = format!("cannot connect to {}:{}: {e}", dest.host, dest.port);
            return deny(&shared, rec, StatusCode::BAD_GATEWAY, &rule, false);
        }
    };
    let on = hyper::upgrade::on(req);
    let audit = shared.audit.clone();
    tracker.spawn(async move {
        let started = std::time::Instant::now();
        let mut rec = rec;
        rec.decision = audit::Decision::Tunnelled;
        rec.status = 200;
        if let Ok(up) = on.await {
            let (client, activity) = Activity::new(TokioIo::new(up));
            let mut client = client;
            let mut upstream = upstream;
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Ok((a, b)) = r {
                        rec.bytes_in = a;
                        rec.bytes_out = b;
                    }
                }
                _ = activity.idle(IDLE_TIMEOUT) => {
                    rec.reason = Some(format!("tunnel idle for {}s; closed", IDLE_TIMEOUT.as_secs()));
                }
            }
        }
        rec.duration_ms = started.elapsed().as_millis() as u64;
        audit.record(&rec);
    });
    Response::new(empty())
}

/// TLS interception for a routed host: the SNI must agree with the CONNECT
/// authority, and every request inside must agree again.
async fn intercept(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    up: hyper::upgrade::Upgraded,
    dest: Destination,
) {
    let deny_tls = |reason: String| {
        let mut rec = record(&Method::CONNECT, "https", &dest.host, dest.port, "");
        rec.reason = Some(reason);
        shared.audit.record(&rec);
    };
    let (io, activity) = Activity::new(TokioIo::new(up));
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return deny_tls(format!("TLS handshake: {e}")),
        Err(_) => return deny_tls("TLS handshake timed out".into()),
    };
    // Why: a leaf is presented only for the name the client asked for and
    // the CONNECT named. An address has no SNI (RFC 6066; rustls reads an
    // address sent as SNI as none), so only an IP route goes without one.
    let ip_route = dest
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    match start.client_hello().server_name() {
        Some(sni) => {
            let agrees = !sni.contains(':')
                && parse_authority(Scheme::Https, sni).is_ok_and(|d| d.host == dest.host);
            if !agrees {
                return deny_tls(format!(
                    "TLS SNI {:?} does not match the CONNECT host {}",
                    audit::escape_controls(sni),
                    dest.host
                ));
            }
        }
        None if ip_route => {}
        None => {
            return deny_tls(format!(
                "the TLS ClientHello names no server (no SNI, or an address as SNI); \
                 CONNECT {} needs that name as SNI",
                dest.host
            ))
        }
    }
    let cfg = match shared.ca.server_config(&dest.host) {
        Ok(c) => c,
        Err(e) => return deny_tls(e.to_string()),
    };
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, start.into_stream(cfg)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return deny_tls(format!("TLS handshake: {e}")),
        Err(_) => return deny_tls("TLS handshake timed out".into()),
    };
    // Why: only HTTP/1.1 is offered inside a tunnel (tls.rs), so every
    // request there passes the same strict gate as the plain listener.
    let (tls, verdicts) = Activity::new(tls).0.gated();
    let svc = gated_service(
        verdicts,
        {
            let shared = shared.clone();
            let dest = dest.clone();
            move |req| inner(shared.clone(), dest.clone(), req)
        },
        {
            let shared = shared.clone();
            let dest = dest.clone();
            move |refusal, req| gate_refusal(&shared, Some(&dest), refusal, req)
        },
    );
    let _ = tracker;
    let conn = http1_server()
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = activity.idle(IDLE_TIMEOUT) => {}
    }
}

/// A request inside an intercepted tunnel.
async fn inner(shared: Arc<Shared>, dest: Destination, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let rec = || record(req.method(), "https", &dest.host, dest.port, &path);
    if req.method() == Method::CONNECT {
        return deny(
            &shared,
            rec(),
            StatusCode::BAD_REQUEST,
            "CONNECT inside an intercepted tunnel",
            true,
        );
    }
    let mut named = Vec::new();
    if let Some(a) = req.uri().authority() {
        named.push(a.as_str().to_owned());
    }
    if let Some(h) = req.headers().get(header::HOST) {
        named.push(String::from_utf8_lossy(h.as_bytes()).into_owned());
    }
    if named.is_empty() {
        return deny(
            &shared,
            rec(),
            StatusCode::BAD_REQUEST,
            "the request names no host",
            true,
        );
    }
    for n in &named {
        if !parse_authority(Scheme::Https, n).is_ok_and(|d| d == dest) {
            let rule = format!(
                "the request's host {:?} does not match the CONNECT host {}:{}",
                audit::escape_controls(n),
                dest.host,
                dest.port
            );
            return deny(&shared, rec(), StatusCode::BAD_REQUEST, &rule, true);
        }
    }
    if req.uri().scheme_str().is_some_and(|s| s != "https") {
        return deny(
            &shared,
            rec(),
            StatusCode::BAD_REQUEST,
            "an http URL inside a TLS tunnel",
            true,
        );
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    dispatch(shared, req, dest, pq).await
}

/// The one place a request's fate is decided.
async fn dispatch(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    dest: Destination,
    pq: String,
) -> Response<Body> {
    let path = pq
        .split_once('?')
        .map_or(pq.as_str(), |(p, _)| p)
        .to_owned();
    let mut rec = record(
        req.method(),
        dest.scheme.as_str(),
        &dest.host,
        dest.port,
        &path,
    );
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .map(|u| u.as_bytes().to_ascii_lowercase());
    if let Some(u) = &upgrade {
        if u.as_slice() != b"websocket" {
            let rule = format!(
                "protocol upgrade to {:?} is not supported (h2c is refused)",
                String::from_utf8_lossy(u)
            );
            return deny(&shared, rec, StatusCode::BAD_REQUEST, &rule, true);
        }
    }
    if !shared.routes.has_host(&dest) {
        if shared.egress == Egress::Deny {
            let rule = format!(
                "egress = \"deny\": {}:{} has no route",
                dest.host, dest.port
            );
            return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
        }
        if upgrade.is_some() {
            return deny(
                &shared,
                rec,
                StatusCode::FORBIDDEN,
                "WebSocket through the plain-HTTP proxy needs a route with websocket = true",
                false,
            );
        }
        if let Err(rule) = guard_self(&shared, &dest).await {
            return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
        }
        rec.decision = audit::Decision::Tunnelled;
        return pass(shared, req, dest, pq, rec, None).await;
    }
    if let Err(e) = check_path(&path) {
        return deny(&shared, rec, StatusCode::BAD_REQUEST, &e.to_string(), true);
    }
    let route = match shared.routes.decide(&dest, &path, req.method()) {
        Decision::Route(r) => r,
        Decision::Refused { rule } => {
            return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false)
        }
        Decision::NoRoute => return deny(&shared, rec, StatusCode::FORBIDDEN, "no route", false),
    };
    rec.route = Some(route_label(route));
    rec.credential = Some(route.credential.clone());
    if upgrade.is_some() && !route.websocket {
        let rule = format!(
            "WebSocket is not enabled on route {} (websocket = true)",
            route.display_url()
        );
        return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
    }
    if let Err(rule) = guard_self(&shared, &dest).await {
        return deny(&shared, rec, StatusCode::FORBIDDEN, &rule, false);
    }
    rec.decision = audit::Decision::Injected;
    pass(shared.clone(), req, dest, pq, rec, Some(route)).await
}

fn route_label(r: &Route) -> String {
    r.name.clone().unwrap_or_else(|| r.display_url())
}

/// Re-originate upstream. With a route: inject its credential, and on a
/// 401 refresh once (shared with concurrent callers) and replay once if
/// the body was small enough to keep.
async fn pass(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    dest: Destination,
    pq: String,
    rec: Record,
    route: Option<&Route>,
) -> Response<Body> {
    let websocket = req.headers().contains_key(header::UPGRADE);
    // The pool names the destination itself (Host, :authority); only the
    // WebSocket client needs the absolute URL.
    let target = if websocket {
        format!("{}://{}:{}{}", dest.scheme, dest.host, dest.port, pq)
    } else {
        pq
    };
    let uri: Uri = match target.parse() {
        Ok(u) => u,
        Err(e) => {
            return deny(
                &shared,
                rec,
                StatusCode::BAD_REQUEST,
                &format!("bad request target: {e}"),
                true,
            )
        }
    };
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let upgrade_headers = websocket.then(|| {
        (
            headers.get(header::UPGRADE).cloned(),
            headers.get("sec-websocket-key").cloned(),
        )
    });
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let mut pending = Pending::new(shared.audit.clone(), rec);
    let mut cred = None;
    if let Some(r) = route {
        match shared.store.get(&r.credential) {
            Ok(c) => {
                if inject::inject(&mut headers, r, &c.value).is_err() {
                    return fail(
                        pending,
                        StatusCode::BAD_GATEWAY,
                        "the credential has characters not allowed in a header",
                    );
                }
                pending.rec.fingerprint = Some(c.fingerprint.clone());
                cred = Some(c);
            }
            Err(e) => return fail(pending, StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
        for (k, v) in &shared.trace {
            headers.insert(k.clone(), v.clone());
        }
    } else {
        inject::strip(&mut headers, None);
    }
    if let Some((Some(up), _)) = &upgrade_headers {
        headers.insert(header::UPGRADE, up.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let build = |headers: HeaderMap, body: Body| {
        let mut r = Request::new(body);
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = uri.clone();
        *r.version_mut() = Version::HTTP_11;
        *r.headers_mut() = headers;
        r
    };
    // Why: a body of unknown length (chunked) is read up to the bound
    // before anything is sent, so a framing error in it (found by the
    // gate) is refused before the head and its credential go upstream; a
    // routed body of known small length is kept whole to replay on 401.
    let exact = body.size_hint().exact();
    let gate = parts.extensions.get::<GateHandle>().cloned();
    let buffer = !websocket
        && (exact.is_none() || (route.is_some() && exact.is_some_and(|n| n <= MAX_REPLAY_BODY)));
    let worker = WORKER.with(|w| w.get());
    let upstream = &shared.upstreams[worker % shared.upstreams.len()];
    let pool = &shared.pools[worker % shared.pools.len()];
    let dest = &dest;
    let go = |r: Request<Body>| async move {
        if websocket {
            upstream
                .h1
                .request(r)
                .await
                .map(|resp| resp.map(|b| b.map_err(Into::into).boxed_unsync()))
                .map_err(|e| upstream_error(dest, &e))
        } else {
            pool.request(dest, r)
                .await
                .map_err(|e| upstream_error(dest, e.as_ref()))
        }
    };
    // Head, total and rate bounds; Err carries the status (502 or 504).
    let cut = pending.cut.clone();
    let (limits, cut, go) = (&shared.limits, &cut, &go);
    let send = |r: Request<Body>| super::deadline::send(limits, cut, r, go);
    let (first, kept) = if buffer {
        match super::body::prebuffer(body, MAX_REPLAY_BODY).await {
            Ok(super::body::Buffered::Whole(bytes)) => {
                pending
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                (
                    build(headers.clone(), forward::full(bytes.clone())),
                    Some((headers, bytes)),
                )
            }
            Ok(super::body::Buffered::Partial(rest)) => (
                build(headers, forward::counted(rest, pending.bytes_in.clone())),
                None,
            ),
            Err(e) => return body_failed(pending, gate.as_ref(), &e.to_string()),
        }
    } else {
        (
            build(headers, forward::counted(body, pending.bytes_in.clone())),
            None,
        )
    };
    let mut resp = match send(first).await {
        Ok(r) => r,
        Err((_, e)) if gate.as_ref().is_some_and(|g| g.refusal().is_some()) => {
            return body_failed(pending, gate.as_ref(), &e)
        }
        Err((status, e)) => return fail(pending, status, &e),
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        if let (Some(r), Some(c), Some((mut headers, bytes))) = (route, &cred, kept) {
            match shared.store.refresh(&r.credential, c.generation).await {
                Ok(fresh) if fresh.generation != c.generation => {
                    if inject::inject(&mut headers, r, &fresh.value).is_ok() {
                        for (k, v) in &shared.trace {
                            headers.insert(k.clone(), v.clone());
                        }
                        pending.rec.fingerprint = Some(fresh.fingerprint.clone());
                        pending.rec.reason = Some(
                            "upstream answered 401; refreshed the credential and replayed once"
                                .into(),
                        );
                        resp = match send(build(headers, forward::full(bytes))).await {
                            Ok(r) => r,
                            Err((status, e)) => return fail(pending, status, &e),
                        };
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    pending.rec.reason = Some(format!("upstream answered 401; refresh failed: {e}"))
                }
            }
        }
    }
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(on_client) = client_upgrade {
            let on_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (on_client.await, on_up.await) {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return pending.finish(status, Response::from_parts(parts, empty()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let _ = upgrade_headers;
    let body = body.map_err(Into::into).boxed_unsync();
    pending.finish(status, Response::from_parts(parts, body))
}

fn upstream_error(dest: &Destination, e: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "upstream {}://{}:{}: {}",
        dest.scheme,
        dest.host,
        dest.port,
        crate::http::error_chain(e)
    )
}

/// The request body could not be read: a framing error the gate found
/// (its status and rule, and the connection closes), or the client went.
fn body_failed(mut pending: Pending, gate: Option<&GateHandle>, err: &str) -> Response<Body> {
    let (status, reason, close) = match gate.and_then(GateHandle::refusal) {
        Some(r) => (
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            format!("request framing: {}", r.rule),
            true,
        ),
        None => (
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {err}"),
            false,
        ),
    };
    pending.rec.decision = forward::decision_for(status);
    pending.rec.reason = Some(reason.clone());
    pending.finish(status, refusal(status, &reason, close))
}

fn fail(mut pending: Pending, status: StatusCode, reason: &str) -> Response<Body> {
    pending.rec.decision = forward::decision_for(status);
    pending.rec.reason = Some(reason.to_owned());
    pending.finish(status, refusal(status, reason, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_default_and_bounds() {
        use crate::env::MapEnv;
        assert_eq!(
            worker_threads(&MapEnv::default()),
            Ok(DEFAULT_WORKER_THREADS)
        );
        let one = MapEnv::new([("LANYARD_WORKER_THREADS", "1")]);
        assert_eq!(worker_threads(&one), Ok(1));
        for bad in ["0", "65", "two", "-1", "1.5"] {
            let env = MapEnv::new([("LANYARD_WORKER_THREADS", bad)]);
            let err = worker_threads(&env).expect_err(bad);
            assert!(
                err.contains("LANYARD_WORKER_THREADS") && err.contains("1 to 64"),
                "{err}"
            );
        }
    }

    #[test]
    fn reverse_paths_never_log_the_secret() {
        assert_eq!(loggable_path("/r/s3cret/api/v1/x"), "/r/[secret]/api/v1/x");
        assert_eq!(loggable_path("/r/s3cret"), "/r/[secret]");
        assert_eq!(loggable_path("/v1/x"), "/v1/x");
    }
}
