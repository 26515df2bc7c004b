//! The outbound HTTP client used by identity sources and exchanges (not the
//! proxy's data path). rustls with the system roots plus an optional extra CA;
//! plain `http://` only to loopback hosts; a total timeout and a response size
//! cap on every call. Errors name the endpoint (scheme, host, port and path; no
//! query, no userinfo) and never a header or body that was sent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

use crate::outbound::connect::Connector;
use crate::outbound::UpstreamProxy;
use crate::secret::Secret;

/// Why: token-service answers are small JSON; a larger body is a misbehaving
/// or hostile server and must not make us allocate without bound.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Total time for one call (connect, TLS, request, response body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("refusing plain http to {0}: credentials go over https unless the host is a loopback address")]
    Insecure(String),
    #[error("unsupported url scheme in {0}: expected https (or http to a loopback host)")]
    Scheme(String),
    /// `cause` shown with its own sources (hyper's top-level message alone
    /// says only "client error (Connect)").
    #[error("could not reach {endpoint}: {}", error_chain(.cause.as_ref()))]
    Transport {
        endpoint: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The answer broke off while its body was read.
    #[error("could not reach {endpoint}: {cause}")]
    Body {
        endpoint: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{endpoint} did not answer within {}s", .limit.as_secs())]
    Timeout { endpoint: String, limit: Duration },
    #[error("{endpoint} sent a response larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
    /// A request we would not send, in our own words.
    #[error("invalid request to {endpoint}: {reason}")]
    Request { endpoint: String, reason: String },
    /// A request that could not be built: its URL or its parts.
    #[error("invalid request to {endpoint}: {cause}")]
    Build {
        endpoint: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("could not load TLS roots: {}: {cause}", path.display())]
    RootsFile {
        path: std::path::PathBuf,
        #[source]
        cause: RootsProblem,
    },
    #[error("could not load TLS roots: {0}")]
    Roots(#[source] rustls::Error),
}

/// Why an extra CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsProblem {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("{0}")]
    Add(#[from] rustls::Error),
    #[error("no PEM certificates found")]
    Empty,
}

/// A response: status and the (size-capped) body. Token answers carry
/// secrets, so the body is zeroized when the response is dropped.
/// A `Retry-After` value (RFC 9110 10.2.3): delay-seconds or an HTTP date.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: zeroize::Zeroizing<Vec<u8>>,
    /// openidconnect checks it on JSON answers.
    pub content_type: Option<HeaderValue>,
    /// `Retry-After` (seconds or an HTTP date), as a delay from now.
    pub retry_after: Option<Duration>,
    /// The body as received, wiped with the response where possible.
    _received: crate::wipe::Chunks,
}

impl Response {
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A header to send. Values marked secret are flagged sensitive so hyper never
/// indexes them (HPACK) and they never reach our error paths.
pub enum Header<'a> {
    Plain(HeaderName, &'a str),
    /// Zeroized when the call is done.
    Secret(HeaderName, zeroize::Zeroizing<String>),
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<Connector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// Scheme, host, port and path of a URL: what errors may show.
pub fn endpoint(url: &Url) -> String {
    let mut e = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(p) = url.port() {
        e.push_str(&format!(":{p}"));
    }
    e.push_str(url.path());
    e
}

/// True for `localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The transport rule shared by config validation and every call.
pub fn check_transport(url: &Url) -> Result<(), HttpError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(HttpError::Insecure(endpoint(url))),
        _ => Err(HttpError::Scheme(endpoint(url))),
    }
}

/// The system's trust anchors, read once per process: the certificates
/// (for the job's CA bundle) and the parsed root store.
/// Why: reading the bundle and /etc/ssl/certs took a few ms, and a start
/// needed it three times (cold start, bench/RESULTS.md).
pub fn native_roots() -> &'static (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::RootCertStore,
) {
    static ROOTS: std::sync::OnceLock<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::RootCertStore,
    )> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let certs = rustls_native_certs::load_native_certs().certs;
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            // Why: one unparsable system certificate must not disable all of TLS.
            let _ = roots.add(cert.clone());
        }
        (certs, roots)
    })
}

/// rustls client config: system roots plus an optional extra PEM bundle.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, HttpError> {
    let mut roots = native_roots().1.clone();
    if let Some(path) = extra_ca {
        add_pem_roots(&mut roots, path).map_err(|cause| HttpError::RootsFile {
            path: path.to_owned(),
            cause,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Roots)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// Every certificate of a PEM bundle (other sections are skipped).
fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), RootsProblem> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(path)?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
        n += 1;
    }
    if n == 0 {
        return Err(RootsProblem::Empty);
    }
    Ok(())
}

impl HttpClient {
    /// Dialling through `proxy` (the corporate proxy, when the environment
    /// names one): https calls go in a CONNECT tunnel, plain http goes only
    /// to loopback hosts, which are always dialled directly.
    pub fn new(extra_ca: Option<&Path>, proxy: &Arc<UpstreamProxy>) -> Result<Self, HttpError> {
        let tls = tls_config(extra_ca)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Connector::new(proxy.clone()));
        let client = Client::builder(TokioExecutor::new())
            // Why no idle connections: a pooled connection keeps its read
            // buffer (the last token answer, raw) and its write buffer (the
            // last request head, with its bearer) alive in memory, where
            // lanyard cannot wipe them. Token calls are rare (start, then
            // each rotation), so a new connection per call costs little.
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(HttpClient { client })
    }

    pub async fn get(&self, url: &Url, headers: &[Header<'_>]) -> Result<Response, HttpError> {
        self.send(Method::GET, url, headers, None).await
    }

    /// A GET whose answer may be at most `max_bytes` long and must be
    /// complete within `timeout` (both tighter than the defaults): for
    /// `doctor --probe`, which needs only the start of a refusal.
    pub async fn get_bounded(
        &self,
        url: &Url,
        headers: &[Header<'_>],
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let limits = Limits {
            max_bytes: max_bytes.min(MAX_RESPONSE_BYTES),
            timeout: timeout.min(REQUEST_TIMEOUT),
        };
        self.send_limited(Method::GET, url, headers, None, limits)
            .await
    }

    /// POST `application/x-www-form-urlencoded`. Secret form values are
    /// encoded into a buffer that is zeroized after sending.
    pub async fn post_form(
        &self,
        url: &Url,
        headers: &[Header<'_>],
        form: &[(&str, FormValue<'_>)],
    ) -> Result<Response, HttpError> {
        let body = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                ser.append_pair(k, v.as_str());
            }
            zeroize::Zeroizing::new(ser.finish())
        };
        self.send(
            Method::POST,
            url,
            headers,
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
        .await
    }

    pub async fn post_json(
        &self,
        url: &Url,
        headers: &[Header<'_>],
        json: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        self.send(
            Method::POST,
            url,
            headers,
            json.map(|j| ("application/json", j)),
        )
        .await
    }

    /// One request as the `openidconnect` crate builds it (its own
    /// `http::Request<Vec<u8>>`), through this client: the same transport
    /// rule, timeout and size cap. Every header value is marked sensitive
    /// (they carry client ids and, for some IdPs, Basic credentials); the
    /// request body (codes, refresh tokens) is zeroized after sending.
    pub async fn request_raw(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        let (parts, body) = req.into_parts();
        let body = zeroize::Zeroizing::new(body);
        let url = Url::parse(&parts.uri.to_string()).map_err(|e| HttpError::Build {
            endpoint: parts.uri.path().to_owned(),
            cause: Box::new(e),
        })?;
        let ep = endpoint(&url);
        let mut headers = Vec::new();
        let mut ctype = None;
        for (name, value) in &parts.headers {
            let v = value.to_str().map_err(|_| HttpError::Request {
                endpoint: ep.clone(),
                reason: format!("header {name} is not visible ASCII"),
            })?;
            if name == CONTENT_TYPE {
                ctype = Some(v.to_owned());
            } else if name != ACCEPT {
                headers.push(Header::Secret(
                    name.clone(),
                    zeroize::Zeroizing::new(v.to_owned()),
                ));
            }
        }
        let payload = (!body.is_empty() || parts.method == Method::POST).then(|| {
            (
                ctype
                    .as_deref()
                    .unwrap_or("application/x-www-form-urlencoded"),
                body.as_slice(),
            )
        });
        let mut resp = self.send(parts.method, &url, &headers, payload).await?;
        // Moved, not copied: openidconnect takes the body from here.
        let mut out = http::Response::new(std::mem::take(&mut *resp.body));
        *out.status_mut() = resp.status;
        if let Some(ct) = resp.content_type {
            out.headers_mut().insert(CONTENT_TYPE, ct);
        }
        Ok(out)
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[Header<'_>],
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, HttpError> {
        let limits = Limits {
            max_bytes: MAX_RESPONSE_BYTES,
            timeout: REQUEST_TIMEOUT,
        };
        self.send_limited(method, url, headers, body, limits).await
    }

    async fn send_limited(
        &self,
        method: Method,
        url: &Url,
        headers: &[Header<'_>],
        body: Option<(&str, &[u8])>,
        limits: Limits,
    ) -> Result<Response, HttpError> {
        check_transport(url)?;
        let ep = endpoint(url);
        let mut req = Request::builder().method(method).uri(url.as_str());
        req = req.header(ACCEPT, "application/json");
        req = req.header(
            http::header::USER_AGENT,
            concat!("lanyard/", env!("CARGO_PKG_VERSION")),
        );
        for h in headers {
            match h {
                Header::Plain(name, value) => req = req.header(name, *value),
                Header::Secret(name, value) => {
                    let mut v =
                        HeaderValue::from_str(value.as_str()).map_err(|_| HttpError::Request {
                            endpoint: ep.clone(),
                            reason: format!(
                                "header {name} has characters not allowed in HTTP headers"
                            ),
                        })?;
                    v.set_sensitive(true);
                    req = req.header(name, v);
                }
            }
        }
        let payload = match body {
            Some((ctype, bytes)) => {
                req = req.header(CONTENT_TYPE, ctype);
                Full::new(Bytes::copy_from_slice(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(payload).map_err(|e| HttpError::Build {
            endpoint: ep.clone(),
            cause: Box::new(e),
        })?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Transport {
                    endpoint: ep.clone(),
                    cause: Box::new(e),
                })?;
            let status = resp.status();
            let content_type = resp.headers().get(CONTENT_TYPE).cloned();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            let mut incoming = Limited::new(resp.into_body(), limits.max_bytes);
            let mut body = zeroize::Zeroizing::new(Vec::new());
            let mut received = crate::wipe::Chunks::default();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        HttpError::TooLarge {
                            endpoint: ep.clone(),
                            limit: limits.max_bytes,
                        }
                    } else {
                        HttpError::Body {
                            endpoint: ep.clone(),
                            cause: e,
                        }
                    }
                })?;
                if let Ok(chunk) = frame.into_data() {
                    crate::wipe::append(&mut body, &chunk);
                    received.push(chunk);
                }
            }
            Ok(Response {
                status,
                body,
                content_type,
                retry_after,
                _received: received,
            })
        };
        match tokio::time::timeout(limits.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                endpoint: ep,
                limit: limits.timeout,
            }),
        }
    }
}

/// How much of an answer a call reads, and for how long.
#[derive(Clone, Copy)]
struct Limits {
    max_bytes: usize,
    timeout: Duration,
}

/// A form value: plain text, or a secret.
pub enum FormValue<'a> {
    Plain(&'a str),
    Secret(&'a Secret),
}

impl FormValue<'_> {
    fn as_str(&self) -> &str {
        match self {
            FormValue::Plain(s) => s,
            FormValue::Secret(s) => s.expose(),
        }
    }
}

/// `a: b: c` from an error and its sources (hyper's top-level message alone
/// says only "client error (Connect)").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
