//! The `[proxy]` table: the listener, egress, the connection cap, and how
//! long an upstream may take (`upstream_*`, enforced by
//! `proxy::deadline`).

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{Diag, Table};
use super::values::one_of;
use super::{duration, Egress, DEFAULT_MAX_CONNECTIONS};

/// Why: the proxy closes a client connection on which no byte moved for
/// this long; a head timeout at or past it could never answer.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub egress: Egress,
    pub max_connections: usize,
    pub limits: UpstreamLimits,
}

/// How long an upstream may take, counted from when the request's last
/// byte was handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// `upstream_header_timeout`: until the response head (else 504).
    pub header: Duration,
    /// `upstream_response_timeout`: until the response's last byte.
    pub total: Duration,
    /// `upstream_min_rate`: bytes per second while waiting on the body; 0 is off.
    pub min_rate: u64,
    /// `upstream_rate_window`: the waiting time each rate check covers.
    pub window: Duration,
}

impl UpstreamLimits {
    /// Why 60 s: under the 90 s client idle timeout, so a silent upstream
    /// gets a 504 rather than a closed connection.
    pub const DEFAULT_HEADER: Duration = Duration::from_secs(60);
    /// Why 30 min: a backstop that still lets a multi-gigabyte download finish.
    pub const DEFAULT_TOTAL: Duration = Duration::from_secs(30 * 60);
    /// Why 1 KiB/s: far below any real link, far above a drip of a few
    /// bytes a minute.
    pub const DEFAULT_MIN_RATE: u64 = 1024;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            header: Self::DEFAULT_HEADER,
            total: Self::DEFAULT_TOTAL,
            min_rate: Self::DEFAULT_MIN_RATE,
            window: Self::DEFAULT_WINDOW,
        }
    }
}

/// The keys `[proxy]` accepts (also the rows `docs/config.md` must have).
pub(crate) const PROXY_KEYS: &[&str] = &[
    "listen",
    "egress",
    "max_connections",
    "upstream_header_timeout",
    "upstream_response_timeout",
    "upstream_min_rate",
    "upstream_rate_window",
];

pub(super) fn proxy(d: &mut Diag<'_>, t: Option<Table<'_>>) -> Option<ProxyConfig> {
    let mut out = ProxyConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        egress: Egress::Allow,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        limits: UpstreamLimits::default(),
    };
    let Some(mut t) = t else { return Some(out) };
    if let Some(l) = t.string(d, "listen") {
        match l.v.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => out.listen = a,
            Ok(_) => d.err(
                &l.span,
                &t.key("listen"),
                format!(
                    "the listener binds loopback only (127.0.0.1 or [::1]), got {:?}",
                    l.v
                ),
            ),
            Err(_) => d.err(
                &l.span,
                &t.key("listen"),
                format!("expected an address such as \"127.0.0.1:0\", got {:?}", l.v),
            ),
        }
    }
    if let Some(e) = t.string(d, "egress") {
        if let Some(egress) = one_of::<Egress>(d, &t.key("egress"), &e) {
            out.egress = egress;
        }
    }
    if let Some(m) = t.integer(d, "max_connections") {
        if (1..=65536).contains(&m.v) {
            out.max_connections = m.v as usize;
        } else {
            d.err(
                &m.span,
                &t.key("max_connections"),
                format!("expected 1 to 65536, got {}", m.v),
            );
        }
    }
    limits(d, &mut t, &mut out.limits);
    t.finish(d, PROXY_KEYS);
    Some(out)
}

fn limits(d: &mut Diag<'_>, t: &mut Table<'_>, out: &mut UpstreamLimits) {
    let mut dur = |d: &mut Diag<'_>, key: &str| {
        let v = t.string(d, key)?;
        duration(d, &t.key(key), &v).map(|x| (x, v.span))
    };
    let header = dur(d, "upstream_header_timeout");
    let total = dur(d, "upstream_response_timeout");
    let window = dur(d, "upstream_rate_window");
    if let Some((w, _)) = window {
        out.window = w;
    }
    if let Some((x, _)) = total {
        out.total = x;
    }
    if let Some((h, span)) = header {
        let key = t.key("upstream_header_timeout");
        if h >= CLIENT_IDLE_TIMEOUT {
            d.err(
                &span,
                &key,
                format!(
                    "must be under the client idle timeout ({}s), or a silent upstream's \
                     client is closed before it gets its 504",
                    CLIENT_IDLE_TIMEOUT.as_secs()
                ),
            );
        } else if h > out.total {
            d.err(
                &span,
                &key,
                "must not be longer than upstream_response_timeout, which bounds the whole response",
            );
        } else {
            out.header = h;
        }
    }
    if let Some(r) = t.integer(d, "upstream_min_rate") {
        if r.v >= 0 {
            out.min_rate = r.v as u64;
        } else {
            d.err(
                &r.span,
                &t.key("upstream_min_rate"),
                format!(
                    "expected bytes per second, 0 or more (0 turns the check off), got {}",
                    r.v
                ),
            );
        }
    }
}
