//! `[[route]]` entries: what the user wrote, checked and built into
//! [`Route`]s (the model, the URL's canonical form and the matcher live in
//! `crate::route`).

use http::{HeaderName, Method};

use super::raw::{Diag, Table};
use crate::route::{parse_route_url, AwsSigning, HostPattern, IdentityKinds, Route, Template};

const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Headers a route may not inject into: framing, routing and proxy control.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "keep-alive",
    "expect",
    "cookie",
];

/// The keys `[[route]]` accepts (also the rows `docs/config.md` must have).
pub(crate) const ROUTE_KEYS: &[&str] = &[
    "url",
    "credential",
    "methods",
    "read_only",
    "header",
    "format",
    "username",
    "name",
    "websocket",
    "identities",
    "aws_service",
    "aws_region",
    "tyk_api",
];

/// `creds`: every credential's name; `aws_creds`: those holding AWS keys
/// (their routes sign with SigV4).
pub(super) fn route(
    d: &mut Diag<'_>,
    mut t: Table<'_>,
    creds: &[String],
    aws_creds: &[String],
) -> Option<(Route, Option<String>)> {
    let url_v = t.string(d, "url");
    let cred = t.string(d, "credential");
    let methods = t.strings(d, "methods");
    let read_only = t.bool(d, "read_only");
    let header = t.string(d, "header");
    let format = t.string(d, "format");
    let username = t.string(d, "username");
    let name = t.string(d, "name");
    let websocket = t.bool(d, "websocket").map(|b| b.v).unwrap_or(false);
    let identities = t.strings(d, "identities");
    let aws_service = t.string(d, "aws_service");
    let aws_region = t.string(d, "aws_region");
    let tyk_api = t.string(d, "tyk_api");
    t.finish(d, ROUTE_KEYS);
    if let Some(v) = &tyk_api {
        if v.v.trim().is_empty() {
            d.err(
                &v.span,
                &t.key("tyk_api"),
                "expected the path of the Tyk API definition (JSON) this route reaches",
            );
        }
    }
    let signs = cred.as_ref().is_some_and(|c| aws_creds.contains(&c.v));
    if signs {
        for (key, v) in [
            ("header", &header),
            ("format", &format),
            ("username", &username),
        ] {
            if let Some(v) = v {
                d.err(&v.span, &t.key(key), format!("credential {:?} holds AWS keys, so this route signs each request with SigV4 and sends no header; remove `{key}`", cred.as_ref().map(|c| c.v.as_str()).unwrap_or_default()));
            }
        }
    } else {
        for (key, v) in [("aws_service", &aws_service), ("aws_region", &aws_region)] {
            if let Some(v) = v {
                d.err(&v.span, &t.key(key), format!("`{key}` is for routes whose credential is an aws-web-identity one (they sign with SigV4)"));
            }
        }
    }
    let identities = match identities {
        None => Some(IdentityKinds::default()),
        Some(list) => {
            let mut k = IdentityKinds {
                ci: false,
                developer: false,
            };
            let mut ok = true;
            for s in &list.v {
                match s.as_str() {
                    "ci" => k.ci = true,
                    "developer" => k.developer = true,
                    other => {
                        ok = false;
                        d.err(
                            &list.span,
                            &t.key("identities"),
                            format!(
                                "unknown identity kind {other:?}; expected some of: {}",
                                IdentityKinds::NAMES.join(", ")
                            ),
                        );
                    }
                }
            }
            if ok && list.v.is_empty() {
                ok = false;
                d.err(&list.span, &t.key("identities"), "an empty `identities` list would refuse every request; omit it to allow CI and developer identities");
            }
            ok.then_some(k)
        }
    };

    let target = match &url_v {
        None => {
            d.err(
                &t.span,
                &t.key("url"),
                "every [[route]] needs `url`, e.g. \"https://api.example.com/v1/\"",
            );
            None
        }
        Some(u) => match parse_route_url(&u.v) {
            Ok(x) => Some(x),
            Err(msg) => {
                d.err(&u.span, &t.key("url"), msg);
                None
            }
        },
    };
    let credential = match &cred {
        None => {
            d.err(
                &t.span,
                &t.key("credential"),
                "every [[route]] needs `credential`, the name of a [[credential]]",
            );
            None
        }
        Some(c) => match creds.iter().find(|x| **x == c.v) {
            Some(_) => Some(c.v.clone()),
            None => {
                let known: Vec<&str> = creds.iter().map(|c| c.as_str()).collect();
                d.err(
                    &c.span,
                    &t.key("credential"),
                    format!(
                        "no credential named {:?}; defined: {}",
                        c.v,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        },
    };
    let methods = match (methods, read_only) {
        (Some(m), Some(r)) if r.v => {
            d.err(
                &m.span,
                &t.key("methods"),
                "give either `methods` or `read_only = true`, not both",
            );
            None
        }
        (_, Some(r)) if r.v => Some(Some(vec![Method::GET, Method::HEAD, Method::OPTIONS])),
        (Some(m), _) => {
            let mut out = Vec::new();
            let mut ok = true;
            for s in &m.v {
                if ALLOWED_METHODS.contains(&s.as_str()) {
                    out.push(Method::from_bytes(s.as_bytes()).unwrap_or(Method::GET));
                } else {
                    ok = false;
                    d.err(&m.span, &t.key("methods"), format!("unknown or unsupported method {s:?}; expected some of: {} (upper case)", ALLOWED_METHODS.join(", ")));
                }
            }
            if m.v.is_empty() {
                ok = false;
                d.err(&m.span, &t.key("methods"), "an empty `methods` list would refuse every request; omit it to allow every method");
            }
            ok.then_some(Some(out))
        }
        _ => Some(None),
    };
    let header_name = match &header {
        None => Some(http::header::AUTHORIZATION),
        Some(h) => match HeaderName::from_bytes(h.v.as_bytes()) {
            Ok(n) if !RESERVED_HEADERS.contains(&n.as_str()) => Some(n),
            Ok(n) => {
                d.err(
                    &h.span,
                    &t.key("header"),
                    format!("`{n}` controls framing or proxying and cannot carry a credential"),
                );
                None
            }
            Err(_) => {
                d.err(
                    &h.span,
                    &t.key("header"),
                    format!("expected an HTTP header name, got {:?}", h.v),
                );
                None
            }
        },
    };
    let template = match (&format, &username) {
        (Some(f), _) if f.v == "basic" => Some(Template::Basic {
            username: username
                .as_ref()
                .map(|u| u.v.clone())
                .unwrap_or_else(|| "x-access-token".into()),
        }),
        (_, Some(u)) => {
            d.err(
                &u.span,
                &t.key("username"),
                "`username` goes with format = \"basic\"",
            );
            None
        }
        (None, None) => Some(Template::Format {
            before: "Bearer ".into(),
            after: String::new(),
        }),
        (Some(f), None) => {
            if f.v.matches("{token}").count() != 1 || f.v.chars().any(|c| c.is_control()) {
                d.err(&f.span, &t.key("format"), format!("expected a template with exactly one {{token}} and no control characters (e.g. \"Bearer {{token}}\"), or \"basic\"; got {:?}", f.v));
                None
            } else {
                let (before, after) = f.v.split_once("{token}").unwrap_or(("", ""));
                Some(Template::Format {
                    before: before.into(),
                    after: after.into(),
                })
            }
        }
    };
    let name = match name {
        Some(n)
            if !n.v.is_empty()
                && n.v.len() <= 64
                && n.v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(Some(n.v))
        }
        Some(n) => {
            d.err(
                &n.span,
                &t.key("name"),
                format!(
                    "expected a route name of letters, digits, - and _, got {:?}",
                    n.v
                ),
            );
            None
        }
        None => Some(None),
    };
    let (scheme, host, port, path_prefix) = target?;
    let aws = signs.then(|| AwsSigning {
        service: aws_service.map(|v| v.v),
        region: aws_region.map(|v| v.v),
    });
    if let (Some(a), Some(u)) = (&aws, &url_v) {
        if let Err(msg) = check_aws_scope(a, &host) {
            d.err(&u.span, &t.key("url"), msg);
            return None;
        }
    }
    let route = Route {
        name: name?,
        scheme,
        host,
        port,
        path_prefix,
        methods: methods?,
        credential: credential?,
        header: header_name?,
        template: template?,
        websocket,
        identities: identities?,
        aws,
    };
    Some((route, tyk_api.map(|v| v.v)))
}

/// An AWS route's service and region: named, or derivable from its host.
fn check_aws_scope(a: &AwsSigning, host: &HostPattern) -> Result<(), String> {
    for v in [&a.service, &a.region].into_iter().flatten() {
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "aws_service and aws_region are lower-case names like \"s3\" and \"eu-west-1\"; got {v:?}"
            ));
        }
    }
    // The service can come from the client's own signature scope; the
    // region of a host that is not AWS's must be named.
    if a.region.is_some() {
        return Ok(());
    }
    let probe = match host {
        HostPattern::Exact(h) => h.clone(),
        // Each request's host is looked at on its own; only the suffix is
        // known here.
        HostPattern::Suffix(s) => format!("x.{s}"),
    };
    match crate::proxy::sigv4::scope::derive(&probe) {
        Some(_) => Ok(()),
        None => Err(format!(
            "lanyard cannot tell the AWS service and region from host {host} (it reads <service>.<region>.amazonaws.com); set aws_region (and aws_service, else the client's own signature names the service) on this route"
        )),
    }
}

/// Route names must stay distinct after `LANYARD_URL_` mangling.
pub(super) fn check_names(d: &mut Diag<'_>, routes: &[Route]) {
    let mut seen = std::collections::HashSet::new();
    for r in routes {
        if let Some(env) = r.env_name() {
            if !seen.insert(env.clone()) {
                // No span survives to here; point at the top of the file.
                d.err(
                    &(0..0),
                    "route.name",
                    format!("two routes map to the same {env}"),
                );
            }
        }
    }
}

/// Two routes with the same canonical scheme, host, port and path prefix:
/// the matcher takes the first on a tie, so the second would never be
/// used. `written[i]`: route i's table name and where its `url` is.
pub(super) fn check_duplicates(
    d: &mut Diag<'_>,
    routes: &[Route],
    written: &[(String, std::ops::Range<usize>)],
) {
    for (j, r) in routes.iter().enumerate() {
        let same = |q: &Route| {
            q.scheme == r.scheme
                && q.host == r.host
                && q.port == r.port
                && q.path_prefix == r.path_prefix
        };
        let Some(i) = routes[..j].iter().position(same) else {
            continue;
        };
        let ((first, first_at), (second, at)) = (&written[i], &written[j]);
        let (line, col) = d.line_col(first_at.start);
        let file = d.file().display().to_string();
        d.err(
            at,
            &format!("{second}.url"),
            format!(
                "the same route as {first} at {file}:{line}:{col} (same scheme, host, port and path: {}); the first in the file always wins, so this one would never be used. Merge them into one [[route]] or give one a longer path",
                r.display_url()
            ),
        );
    }
}
