//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz), shared with the
//! corpus replay in `tests/fuzz_corpus.rs`, so stable `cargo test` checks
//! every saved input against the same invariants libFuzzer does.
//!
//! Each function takes arbitrary bytes, must never panic on them, and
//! panics (an `assert!`) only when an invariant of the code under test is
//! broken. Not part of lanyard's interface.

use std::path::Path;

use http::{HeaderName, Method};

use crate::config::{Config, ConfigErrors};
use crate::proxy::framing::grammar::{self, BodyKind};
use crate::proxy::framing::{Gate, Refusal, Released, Verdicts, SENTINEL};
use crate::route::{
    check_path, fast_and_slow_answers, parse_authority, parse_route_url, Decision, HostPattern,
    IdentityKinds, Route, RouteTable, Scheme, SessionIdentity, Template,
};

/// `parse_authority` and `check_path`. Byte 0 picks the scheme; the rest is
/// the authority (and, read again, the path).
///
/// Invariants: an accepted authority is canonical (lowercase ASCII host,
/// no trailing dot, no userinfo) and its canonical spelling parses back to
/// the same destination; an accepted path starts with `/` and has no dot
/// or empty segments and no encoded slash, dot or backslash.
pub fn authority(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let scheme = if sel & 1 == 0 {
        Scheme::Https
    } else {
        Scheme::Http
    };
    // The gate's shortcut for origin-form targets only takes what the
    // `http` crate's URI parser (hyper's) accepts.
    if grammar::plain_origin_form(rest) {
        assert!(
            http::Uri::try_from(rest).is_ok(),
            "{rest:?}: the gate's shortcut takes a target http::Uri refuses"
        );
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // The ASCII fast path never answers differently from the full
    // canonicalisation (IDNA, WHATWG IPv4), for the whole text and for it
    // without a port.
    let hosts = [Some(text), text.rsplit_once(':').map(|(h, _)| h)];
    for host in hosts.into_iter().flatten() {
        if let Some((fast, slow)) = fast_and_slow_answers(host) {
            assert_eq!(
                Ok(&fast),
                slow.as_ref(),
                "{host:?}: fast and slow paths disagree"
            );
        }
    }
    if let Ok(d) = parse_authority(scheme, text) {
        assert_eq!(d.scheme, scheme);
        assert!(d.port > 0, "{text:?}: port 0 accepted");
        assert!(!d.host.is_empty(), "{text:?}: empty host accepted");
        assert!(
            d.host.is_ascii() && d.host == d.host.to_ascii_lowercase(),
            "{text:?}: host {:?} is not lowercase ASCII",
            d.host
        );
        assert!(!d.host.ends_with('.'), "{text:?}: trailing dot kept");
        assert!(
            !d.host.contains(['@', '/', '\\', '?', '#', '%', ' ']),
            "{text:?}: host {:?} has a delimiter",
            d.host
        );
        let canonical = format!("{}:{}", d.host, d.port);
        let again = parse_authority(scheme, &canonical)
            .unwrap_or_else(|e| panic!("{text:?} → {canonical:?} does not re-parse: {e}"));
        assert_eq!(again, d, "{text:?} → {canonical:?} re-parses differently");
        // Without the port the default one is implied.
        if d.port == scheme.default_port() {
            assert_eq!(parse_authority(scheme, &d.host).as_ref(), Ok(&d));
        }
    }
    if check_path(text).is_ok() {
        assert!(text.starts_with('/'), "{text:?} accepted without a /");
        let lower = text.to_ascii_lowercase();
        for enc in ["%2f", "%5c", "%2e", "%00", "%25"] {
            assert!(!lower.contains(enc), "{text:?} accepted with {enc}");
        }
        assert!(
            !text.contains('\\') && !text.contains("//") && !text.contains('#'),
            "{text:?}"
        );
        let segs: Vec<&str> = text[1..].split('/').collect();
        assert!(
            !segs.iter().any(|s| *s == "." || *s == ".."),
            "{text:?}: dot segment accepted"
        );
    }
}

/// Route URLs that every `route_match` run starts with (plus those in the input).
const FIXED_ROUTES: &[&str] = &[
    "GET https://api.example.com/v1/",
    "* https://api.example.com/v1/admin/",
    "POST,PUT https://*.corp.example/",
    "* http://127.0.0.1:8080/",
];

/// The route matcher. The input is text, one item a line:
/// `[dev|ci] SCHEME AUTHORITY`, `PATH`, `METHOD`, then route lines
/// `METHODS|* URL` added to [`FIXED_ROUTES`].
///
/// Invariants: a match means the scheme and port are equal, the host
/// pattern really covers the host (checked here independently of
/// `HostPattern::matches`), the path is under the prefix, the method is
/// allowed, the identity kind is allowed, and no other route on that host
/// has a longer prefix covering the path. `NoRoute` means no route covers
/// the host; `Refused` means one does.
pub fn route_match(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(target), Some(path), Some(method)) = (lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    let mut words = target.split(' ');
    let mut first = words.next().unwrap_or_default();
    let developer = match first {
        "dev" | "ci" => {
            let dev = first == "dev";
            first = words.next().unwrap_or_default();
            Some(dev)
        }
        _ => None,
    };
    let scheme = if first == "http" {
        Scheme::Http
    } else {
        Scheme::Https
    };
    let Some(authority) = words.next() else {
        return;
    };
    let Ok(dest) = parse_authority(scheme, authority) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut routes = Vec::new();
    for (i, line) in FIXED_ROUTES
        .iter()
        .copied()
        .chain(lines)
        .take(16)
        .enumerate()
    {
        let (methods, url) = line.split_once(' ').unwrap_or(("*", line));
        let Ok((scheme, host, port, path_prefix)) = parse_route_url(url) else {
            continue;
        };
        let methods = if methods == "*" {
            None
        } else {
            let ms: Result<Vec<Method>, _> = methods
                .split(',')
                .map(|m| Method::from_bytes(m.as_bytes()))
                .collect();
            match ms {
                Ok(ms) => Some(ms),
                Err(_) => continue,
            }
        };
        routes.push(Route {
            name: None,
            scheme,
            host,
            port,
            path_prefix,
            methods,
            credential: format!("c{i}"),
            header: HeaderName::from_static("authorization"),
            template: Template::Format {
                before: "Bearer ".into(),
                after: String::new(),
            },
            websocket: false,
            // Every third route is CI-only, to exercise the identity rule.
            identities: IdentityKinds {
                ci: true,
                developer: i % 3 != 2,
            },
            aws: None,
        });
    }
    let table = match developer {
        Some(developer) => RouteTable::for_identity(
            routes.clone(),
            SessionIdentity {
                developer,
                who: "fuzz".into(),
            },
        ),
        None => RouteTable::new(routes.clone()),
    };
    let covers_host = |r: &Route| {
        r.scheme == dest.scheme
            && r.port == dest.port
            && match &r.host {
                HostPattern::Exact(h) => *h == dest.host,
                HostPattern::Suffix(s) => dest
                    .host
                    .strip_suffix(s.as_str())
                    .and_then(|label| label.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.ends_with('.')),
            }
    };
    let under =
        |r: &Route| path.starts_with(r.path_prefix.as_str()) || format!("{path}/") == r.path_prefix;
    let on_host: Vec<&Route> = routes.iter().filter(|r| covers_host(r)).collect();
    assert_eq!(
        table.has_host(&dest),
        !on_host.is_empty(),
        "has_host disagrees for {dest:?}"
    );
    match table.decide(&dest, path, &method) {
        Decision::NoRoute => assert!(
            on_host.is_empty(),
            "NoRoute for {dest:?} though {:?} covers it",
            on_host.first().map(|r| r.display_url())
        ),
        Decision::Refused { rule } => {
            assert!(!on_host.is_empty(), "Refused for an unrouted {dest:?}");
            assert!(!rule.is_empty());
        }
        Decision::Route(r) => {
            assert!(covers_host(r), "{dest:?} matched {}", r.display_url());
            assert!(under(r), "{path:?} matched prefix {:?}", r.path_prefix);
            if let Some(ms) = &r.methods {
                assert!(ms.contains(&method), "{method} matched {:?}", ms);
            }
            if let Some(dev) = developer {
                assert!(r.identities.allows(dev), "identity rule skipped");
            }
            for other in &on_host {
                assert!(
                    !(under(other) && other.path_prefix.len() > r.path_prefix.len()),
                    "{path:?}: {} won over the longer {}",
                    r.path_prefix,
                    other.path_prefix
                );
            }
            // A routed path must itself be one the proxy accepts or the
            // proxy refuses it before matching; the matcher needs no more.
        }
    }
}

/// The config parser: any text. Invariants: no panic; an invalid file
/// reports at least one problem, each naming this file and a line and
/// column inside it (1-based); every route of a valid one has a host the
/// proxy's canonical parse accepts and leaves unchanged.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(path, text) {
        Ok(cfg) => {
            for r in &cfg.routes {
                assert!(
                    cfg.credential(&r.credential).is_some(),
                    "route to unknown credential {:?}",
                    r.credential
                );
                assert!(r.path_prefix.starts_with('/') && r.path_prefix.ends_with('/'));
                // A route the proxy could never match is a config error.
                let host = match &r.host {
                    HostPattern::Exact(h) => h.clone(),
                    HostPattern::Suffix(s) => format!("x.{s}"),
                };
                let d = parse_authority(r.scheme, &format!("{host}:{}", r.port))
                    .unwrap_or_else(|e| panic!("route {} can never match: {e}", r.display_url()));
                assert_eq!(d.host, host, "route {} is not canonical", r.display_url());
            }
        }
        Err(ConfigErrors::Invalid(errs)) => {
            assert!(!errs.is_empty(), "an invalid config with no problem listed");
            let lines = text.split('\n').count();
            for e in &errs {
                assert_eq!(e.file, path);
                assert!(
                    e.line >= 1 && e.line <= lines && e.column >= 1,
                    "{e} is outside the {lines}-line input"
                );
                assert!(!e.message.is_empty(), "{e}: empty message");
            }
            let _ = ConfigErrors::Invalid(errs).to_string();
        }
        Err(other) => panic!("parse from a string gave {other}"),
    }
}

/// What the strict request gate let through one connection's stream.
#[derive(Debug, PartialEq, Eq)]
struct GateRun {
    /// Every byte hyper would have seen, in order.
    released: Vec<u8>,
    refusal: Option<Refusal>,
    body_error: Option<String>,
    open: bool,
}

struct NoWake;
impl std::task::Wake for NoWake {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// Before a read (and at the end of the stream), as `read_gated` does:
/// return a body error, settle a pending tunnel with the handler's
/// verdict, feed the stash. `false`: the gate reads nothing more.
fn gate_ready(
    gate: &mut Gate,
    verdicts: &Verdicts,
    tunnel: bool,
    released: &mut Vec<u8>,
    body_error: &mut Option<String>,
) -> bool {
    let waker = std::task::Waker::from(std::sync::Arc::new(NoWake));
    let mut settled = false;
    loop {
        match gate.before_read(&waker) {
            Some(Ok(())) => match gate.take_stash() {
                Some(stash) => {
                    let r = gate.feed(&stash);
                    push(released, r, &stash);
                    settled = false;
                }
                None => return true,
            },
            Some(Err(e)) => {
                *body_error = Some(e.to_string());
                return false;
            }
            None if !settled => {
                // The handler answers the request that may switch
                // protocols; only the awaited index has an effect.
                for i in 0..=(released.len() as u64 + 1) {
                    verdicts.settle_tunnel(i, tunnel);
                }
                settled = true;
            }
            None => return false,
        }
    }
}

fn push(released: &mut Vec<u8>, r: Released, input: &[u8]) {
    match r {
        Released::Prefix(n) => released.extend_from_slice(&input[..n]),
        Released::Copied(v) => released.extend_from_slice(&v),
    }
}

/// Drive a [`Gate`] the way `conn::Activity::read_gated` does, with the
/// stream cut into reads of the given sizes (then the rest at once); the
/// handler's verdict on a CONNECT or Upgrade is `tunnel`.
fn run_gate(stream: &[u8], reads: &[usize], tunnel: bool) -> GateRun {
    let (mut gate, verdicts) = Gate::new();
    let mut released = Vec::new();
    let mut body_error = None;
    let mut at = 0;
    let mut sizes = reads.iter().copied();
    let mut alive = true;
    while alive && at < stream.len() {
        let n = sizes.next().unwrap_or(usize::MAX).max(1);
        let piece = &stream[at..at.saturating_add(n).min(stream.len())];
        at += piece.len();
        alive = gate_ready(&mut gate, &verdicts, tunnel, &mut released, &mut body_error);
        if !alive {
            break;
        }
        if gate.is_open() {
            released.extend_from_slice(piece);
        } else {
            let r = gate.feed(piece);
            push(&mut released, r, piece);
        }
    }
    if alive {
        gate_ready(&mut gate, &verdicts, tunnel, &mut released, &mut body_error);
    }
    let refusal = (0..=stream.len() as u64 + 1).find_map(|i| verdicts.refusal_for(i));
    GateRun {
        released,
        refusal,
        body_error,
        open: gate.is_open(),
    }
}

/// The strict request gate (request-head parser and chunked decoder).
/// Byte 0: bit 0 is the handler's tunnel verdict; bytes 1-2 pick read
/// sizes; the rest is what a client sends on one connection.
///
/// Invariants: no panic; the same released bytes, refusal, body error and
/// tunnel state whether the stream arrives whole, in the chosen reads, or
/// one byte at a time; the released bytes are a prefix of the input,
/// followed by the sentinel only when a head was refused; a head the
/// grammar accepts is one httparse (hyper's parser) reads the same way;
/// an accepted chunk-size line's size is its hex digits.
pub fn request_stream(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let tunnel = data[0] & 1 == 1;
    let (a, b) = (data[1] as usize + 1, data[2] as usize % 17 + 1);
    let stream = &data[3..];
    let whole = run_gate(stream, &[], tunnel);
    let split = run_gate(stream, &[a, b, a + b, b], tunnel);
    assert_eq!(whole, split, "reads of {a}, {b}, ... change the outcome");
    if stream.len() <= 2048 {
        let ones = vec![1; stream.len()];
        assert_eq!(whole, run_gate(stream, &ones, tunnel), "byte-at-a-time");
    }
    let r = &whole.released;
    let head_refused = whole
        .refusal
        .as_ref()
        .is_some_and(|_| whole.body_error.is_none());
    let body = match r.strip_suffix(SENTINEL) {
        Some(before) if head_refused && stream.starts_with(before) => before,
        _ => r.as_slice(),
    };
    assert!(
        stream.starts_with(body),
        "released bytes are not a prefix of the input (first {} of {})",
        r.len(),
        stream.len()
    );
    heads_agree_with_httparse(stream);
}

/// The first head and first line of `stream`, read by the gate's grammar
/// and by httparse: an accepted head must parse completely there too, with
/// the same framing; an accepted chunk-size line has the size its digits say.
fn heads_agree_with_httparse(stream: &[u8]) {
    if let Some(end) = stream.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = &stream[..end + 4];
        // The gate refuses a bare CR or LF before it reads the head.
        let strict = grammar::bare_cr_or_lf(head, 0).is_none();
        if let Some(h) = strict.then(|| grammar::request_head(head).ok()).flatten() {
            let mut fields = [httparse::EMPTY_HEADER; grammar::MAX_HEADERS];
            let mut req = httparse::Request::new(&mut fields);
            let parsed = req.parse(head);
            assert!(
                matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len()),
                "the gate accepts a head httparse reads as {parsed:?}"
            );
            let named = |n: &str| {
                req.headers
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(n))
                    .map(|f| f.value)
                    .collect::<Vec<_>>()
            };
            let (cl, te) = (named("content-length"), named("transfer-encoding"));
            match h.body {
                BodyKind::Length(n) => {
                    assert!(te.is_empty(), "a length body with Transfer-Encoding");
                    assert_eq!(cl.len(), 1);
                    let v: Option<u64> = std::str::from_utf8(cl[0])
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                    assert_eq!(
                        v,
                        Some(n),
                        "Content-Length {:?} read as {n}",
                        String::from_utf8_lossy(cl[0])
                    );
                }
                BodyKind::Chunked => {
                    assert!(cl.is_empty(), "a chunked body with Content-Length");
                    assert!(!te.is_empty());
                }
                BodyKind::None => {
                    assert!(te.is_empty(), "no body though Transfer-Encoding is set");
                    let zero = cl.iter().all(|v| {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            == Some(0)
                    });
                    assert!(zero, "no body though Content-Length is not 0");
                }
            }
        }
    }
    if let Some(end) = stream.windows(2).position(|w| w == b"\r\n") {
        let line = &stream[..end];
        if let Ok(n) = grammar::chunk_line(line) {
            let digits: Vec<u8> = line
                .iter()
                .copied()
                .take_while(u8::is_ascii_hexdigit)
                .collect();
            let want = std::str::from_utf8(&digits)
                .ok()
                .and_then(|d| u64::from_str_radix(d, 16).ok());
            assert_eq!(
                want,
                Some(n),
                "chunk line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
