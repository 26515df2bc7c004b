//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz), shared with the
//! corpus replay in `tests/fuzz_corpus.rs`, so stable `cargo test` checks
//! every saved input against the same invariants libFuzzer does.
//!
//! Each function takes arbitrary bytes, must never panic on them, and
//! panics (an `assert!`) only when an invariant of the code under test is
//! broken. Not part of lanyard's interface.

use std::path::Path;

use http::{HeaderName, Method};

use crate::config::{Config, ConfigErrors, HostPattern, IdentityKinds, RouteConfig, Template};
use crate::proxy::framing::FramingTap;
use crate::proxy::routes::{check_path, parse_authority, Decision, RouteTable, SessionIdentity};

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
    let scheme = if sel & 1 == 0 { "https" } else { "http" };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
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
        let default = if scheme == "https" { 443 } else { 80 };
        if d.port == default {
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
    let scheme = if first == "http" { "http" } else { "https" };
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
        let Ok((scheme, host, port, path_prefix)) = crate::config::route::parse_route_url(url)
        else {
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
        routes.push(RouteConfig {
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
    let covers_host = |r: &RouteConfig| {
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
    let under = |r: &RouteConfig| {
        path.starts_with(r.path_prefix.as_str()) || format!("{path}/") == r.path_prefix
    };
    let on_host: Vec<&RouteConfig> = routes.iter().filter(|r| covers_host(r)).collect();
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
/// column inside it (1-based).
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

/// The request-stream framing tap. Byte 0 and 1 choose split points; the
/// rest is the byte stream a client sends.
///
/// Invariants: no panic, and the verdict (the CL+TE conflict flag) is the
/// same whether the stream arrives whole, split at the chosen points, or
/// one byte at a time.
pub fn request_stream(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (a, b) = (data[0] as usize, data[1] as usize);
    let stream = &data[2..];
    let verdict = |chunks: &[&[u8]]| {
        let mut tap = FramingTap::default();
        for c in chunks {
            tap.feed(c);
        }
        tap.conflict.load(std::sync::atomic::Ordering::Relaxed)
    };
    let whole = verdict(&[stream]);
    let (x, y) = {
        let n = stream.len();
        let (x, y) = (a.min(n), b.min(n));
        (x.min(y), x.max(y))
    };
    let split = verdict(&[&stream[..x], &stream[x..y], &stream[y..]]);
    assert_eq!(whole, split, "split at {x},{y} changes the verdict");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, verdict(&bytes), "byte-at-a-time changes the verdict");
}
