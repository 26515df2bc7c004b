//! `[[route]]` entries: what the user wrote, checked and built into
//! [`Route`]s (the model, the URL's canonical form and the matcher live in
//! `crate::route`).

use http::{HeaderName, Method};

use super::raw::{Diag, Table};
use crate::route::{parse_route_url, IdentityKinds, Route, Template};

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

const ROUTE_KEYS: &[&str] = &[
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
];

pub(super) fn route(d: &mut Diag<'_>, mut t: Table<'_>, creds: &[String]) -> Option<Route> {
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
    t.finish(d, ROUTE_KEYS);
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
    Some(Route {
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
    })
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
