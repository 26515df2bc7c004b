//! One request's context, carried through the phases: where it arrived,
//! the canonical destination once resolved, the path and query to send
//! upstream, and its audit record. The record is a drop guard
//! ([`Pending`]): it is written exactly once, when the answer's body ends,
//! when the client goes away, or when the handler is dropped mid-request.

use std::time::SystemTime;

use http::Method;

use super::forward::Pending;
use super::server::Shared;
use crate::audit::{self, Record};
use crate::route::{Destination, Scheme};

pub struct Ctx {
    /// The request arrived inside an intercepted TLS tunnel to `dest`.
    pub tunnel: bool,
    /// The canonical destination (set by `resolve`; for a tunnel, the
    /// CONNECT's).
    pub dest: Destination,
    /// The path and query to send upstream (set by `resolve`).
    pub pq: String,
    /// The audit record, written once when dropped.
    pub log: Pending,
    /// The client's address, for requests on the listener itself (not
    /// inside a tunnel).
    pub peer: Option<std::net::SocketAddr>,
}

impl Ctx {
    pub fn new(shared: &Shared, method: &Method, tunnel: Option<Destination>) -> Ctx {
        let rec = record(method, "", "", 0, "");
        Ctx {
            tunnel: tunnel.is_some(),
            dest: tunnel.unwrap_or(Destination {
                scheme: Scheme::Http,
                host: String::new(),
                port: 0,
            }),
            pq: String::new(),
            log: Pending::new(shared.audit.clone(), rec),
            peer: None,
        }
    }

    /// The request's path without its query.
    pub fn path(&self) -> &str {
        path_of(&self.pq)
    }

    /// Where the audit record says the request went.
    pub fn locate(&mut self, scheme: &str, host: &str, port: u16, path: &str) {
        let r = &mut self.log.rec;
        r.scheme = scheme.to_owned();
        r.host = host.to_owned();
        r.port = port;
        r.path = path.to_owned();
    }

    /// The listener itself (a reverse URL, or a request refused before it
    /// named a destination). The reverse route's secret is masked.
    pub fn locate_listener(&mut self, shared: &Shared, uri_path: &str) {
        let path = loggable_path(uri_path);
        self.locate("http", &shared.local_ip, shared.local.port(), &path);
    }

    /// The canonical destination and the path upstream.
    pub fn locate_dest(&mut self) {
        let r = &mut self.log.rec;
        r.scheme = self.dest.scheme.as_str().to_owned();
        r.host = self.dest.host.clone();
        r.port = self.dest.port;
        r.path = path_of(&self.pq).to_owned();
    }
}

fn path_of(pq: &str) -> &str {
    pq.split_once('?').map_or(pq, |(p, _)| p)
}

pub fn record(method: &Method, scheme: &str, host: &str, port: u16, path: &str) -> Record {
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

/// A path fit for the audit log: no query, and a reverse route's secret
/// segment masked.
pub fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/r/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => format!("/r/[secret]/{tail}"),
            None => "/r/[secret]".into(),
        },
        None => path.to_owned(),
    }
}

/// The path of a request-target for the audit log: origin-form or the
/// path of an absolute-form URL, without the query, at most 2 KiB.
pub fn audit_path(target: &str) -> String {
    let t = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let t = t.split(['?', '#']).next().unwrap_or_default();
    truncate(t, 2048)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
