//! The proxy as the session starts it: options, the shared state every
//! worker reads, the worker threads (each runs `listener::serve`), and
//! teardown. The request path itself is in `phase` (see `proxy`'s docs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::Upstream;
use super::tls::JobCa;
use crate::audit::Audit;
use crate::config::Egress;
use crate::route::{HostPattern, Route, RouteTable, SessionIdentity};
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
    pub(crate) static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
    /// The credential served on the AWS container-credentials endpoint
    /// (`container_endpoint = true`); `None`: no endpoint.
    pub container_credential: Option<String>,
    /// `(credential, scope, client_id)` of each entra credential: the
    /// managed-identity endpoint serves them; empty: no endpoint.
    pub entra: Vec<(String, String, String)>,
    /// Each gcp-workload-identity credential: the GCE metadata server
    /// serves them; empty: no server.
    pub gcp: Vec<(String, crate::config::GcpWorkloadIdentity)>,
    /// The corporate proxy upstream connections go through, if any.
    pub upstream_proxy: Arc<crate::outbound::UpstreamProxy>,
}

/// What every worker and every request reads.
pub(crate) struct Shared {
    pub routes: RouteTable,
    /// Reverse routes by their path segment.
    pub named: HashMap<String, Route>,
    pub store: Arc<Store>,
    pub secret: ProxySecret,
    /// base64 of `lanyard:<secret>`: what clients send in
    /// `Proxy-Authorization: Basic`, compared as is before decoding.
    pub proxy_basic: crate::secret::Secret,
    pub ca: JobCa,
    pub audit: Arc<Audit>,
    /// One pool per worker thread: a pooled connection's task lives on the
    /// thread that uses it.
    pub upstreams: Vec<Upstream>,
    pub pools: Vec<Arc<super::pool::Pool>>,
    /// Blind tunnels' dialler (direct, or through the corporate proxy).
    pub dial: crate::outbound::connect::Connector,
    pub egress: Egress,
    pub local: SocketAddr,
    /// `local`'s address as text, for audit records.
    pub local_ip: String,
    pub trace: Vec<(HeaderName, HeaderValue)>,
    /// The job's uid; `None` when the check is off.
    pub uid: Option<u32>,
    pub limits: super::deadline::Limits,
    /// The AWS container-credentials endpoint, when a credential has it.
    pub container: Option<super::aws_container::Endpoint>,
    /// The job's placeholder AWS keys, when a route signs with SigV4.
    pub aws: Option<super::sigv4::placeholder::Placeholders>,
    /// The Azure managed-identity endpoint and its placeholder tokens,
    /// when the config has an entra credential.
    pub azure: Option<super::azure_mi::Endpoint>,
    /// The GCE metadata server and its placeholder tokens, when the config
    /// has a gcp-workload-identity credential.
    pub gce: Option<super::gce_metadata::Endpoint>,
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
        // Its own token, not the proxy secret: the token file is readable
        // by the job's tools, the proxy URL by every process of the job.
        let container = match opts.container_credential {
            Some(credential) => Some(super::aws_container::Endpoint {
                token: Secret::random(32).map_err(|e| ProxyError::Random(e.to_string()))?,
                credential,
            }),
            None => None,
        };
        let aws = opts
            .routes
            .iter()
            .any(|r| r.aws.is_some())
            .then(super::sigv4::placeholder::Placeholders::random)
            .transpose()
            .map_err(|e| ProxyError::Random(e.to_string()))?;
        let azure = (!opts.entra.is_empty())
            .then(|| super::azure_mi::Endpoint::new(opts.entra))
            .transpose()
            .map_err(|e| ProxyError::Random(e.to_string()))?;
        let gce = (!opts.gcp.is_empty())
            .then(|| super::gce_metadata::Endpoint::new(opts.gcp))
            .transpose()
            .map_err(|e| ProxyError::Random(e.to_string()))?;
        let tls = crate::http::tls_config(opts.extra_ca.as_deref())?;
        let dial = crate::outbound::connect::Connector::new(opts.upstream_proxy);
        let workers = opts.workers.clamp(1, MAX_WORKER_THREADS);
        let named = opts
            .routes
            .iter()
            .filter_map(|r| reverse_key(r).map(|k| (k, r.clone())))
            .collect();
        let proxy_basic = {
            use base64::Engine;
            let user_pass = zeroize::Zeroizing::new(format!("lanyard:{}", secret.expose()));
            crate::secret::Secret::new(
                base64::engine::general_purpose::STANDARD.encode(&*user_pass),
            )
        };
        let shared = Arc::new(Shared {
            routes: RouteTable::for_identity(opts.routes, opts.identity),
            named,
            store,
            secret,
            proxy_basic,
            ca,
            audit,
            upstreams: (0..workers)
                .map(|_| Upstream::new(tls.clone(), dial.clone()))
                .collect(),
            pools: (0..workers)
                .map(|_| super::pool::Pool::new(tls.clone(), dial.clone()))
                .collect(),
            dial,
            egress: opts.egress,
            local,
            local_ip: local.ip().to_string(),
            trace: opts.trace,
            uid: opts.same_user.then(|| nix::unistd::getuid().as_raw()),
            limits: opts.limits,
            container,
            aws,
            azure,
            gce,
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
                            Ok(l) => {
                                super::listener::serve(l, cancel, shared, limit, tracker.clone())
                                    .await
                            }
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

    /// The placeholder AWS keys for the job's SDKs (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), when a route signs.
    pub fn aws_placeholder_env(&self) -> Vec<(String, Secret)> {
        self.shared
            .aws
            .as_ref()
            .map(|p| p.env())
            .unwrap_or_default()
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

    /// The AWS container-credentials endpoint's URL and token, when on.
    pub fn container_endpoint(&self) -> Option<(String, &Secret)> {
        self.shared.container.as_ref().map(|c| {
            let url = format!(
                "http://{}{}{}",
                self.addr,
                super::aws_container::PREFIX,
                c.credential
            );
            (url, &c.token)
        })
    }

    /// The managed-identity endpoint's URL and `X-IDENTITY-HEADER` value
    /// (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), when on.
    pub fn azure_mi_env(&self) -> Vec<(String, Secret)> {
        self.shared
            .azure
            .as_ref()
            .map(|a| {
                let url = format!("http://{}{}", self.addr, super::azure_mi::PATH);
                vec![
                    ("IDENTITY_ENDPOINT".to_owned(), Secret::new(url)),
                    ("IDENTITY_HEADER".to_owned(), a.header.clone()),
                ]
            })
            .unwrap_or_default()
    }

    /// `GCE_METADATA_HOST` and `GCE_METADATA_IP` (the listener's
    /// `host:port`), when the metadata server is on.
    pub fn gce_metadata_env(&self) -> Vec<(String, Secret)> {
        if self.shared.gce.is_none() {
            return Vec::new();
        }
        let hp = self.addr.to_string();
        vec![
            ("GCE_METADATA_HOST".to_owned(), Secret::new(hp.clone())),
            ("GCE_METADATA_IP".to_owned(), Secret::new(hp)),
        ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::context::loggable_path;

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
