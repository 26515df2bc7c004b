//! The Azure managed-identity endpoint, App Service's protocol, served on
//! the listener when the config has an `entra` credential, so that
//! `azure-identity`'s `ManagedIdentityCredential` (and so
//! `DefaultAzureCredential`) works unmodified.
//!
//! The protocol, as MSAL speaks it for `azure-identity`: the client GETs
//! `IDENTITY_ENDPOINT?api-version=2019-08-01&resource=<scope without
//! /.default>` with `X-IDENTITY-HEADER: <IDENTITY_HEADER>` (and
//! `Metadata: true`), and reads `access_token` and `expires_on` (epoch
//! seconds); it never decodes the token.
//!
//! The token handed out is a **placeholder**, random per job and per
//! resource: the proxy replaces it with the real token on a route whose
//! credential is that resource's (the route's header must be
//! `Authorization`, which the credential then replaces). Anywhere else it
//! is refused: [`Endpoint::misused`]. `expires_on` is the real token's, so
//! the SDK asks again when lanyard has a fresh one.
//!
//! Only the job's clients are answered: loopback, the job's user, no
//! browser, GET, and the per-job `X-IDENTITY-HEADER` value (compared in
//! constant time; not the proxy secret). Every fetch is audited.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::context::Ctx;
use super::forward::{full, Body};
use super::local_endpoint;
use super::refusal::Refusal;
use super::server::Shared;
use crate::audit::Decision;
use crate::route::Route;
use crate::secret::Secret;

/// The endpoint's path on the listener.
pub const PATH: &str = "/azure/managed-identity";
/// The only protocol version answered (the one MSAL sends).
const API_VERSION: &str = "2019-08-01";
const WHAT: &str = "managed-identity";

/// One entra credential as the endpoint serves it.
pub struct Resource {
    /// The scope without `/.default`, as the SDK sends it.
    pub resource: String,
    pub credential: String,
    pub client_id: String,
    pub placeholder: Secret,
}

/// The endpoint as the proxy serves it.
pub struct Endpoint {
    /// The per-job `X-IDENTITY-HEADER` value.
    pub header: Secret,
    pub resources: Vec<Resource>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("azure_mi::Endpoint([redacted])")
    }
}

impl Endpoint {
    /// From `(credential, scope, client_id)` of each entra credential.
    pub fn new(entra: Vec<(String, String, String)>) -> Result<Endpoint, getrandom::Error> {
        let mut resources = Vec::with_capacity(entra.len());
        for (credential, scope, client_id) in entra {
            let resource = scope.trim_end_matches("/.default").to_owned();
            let placeholder = Secret::new(format!(
                "lanyard-placeholder-azure-{}",
                Secret::random(32)?.expose()
            ));
            resources.push(Resource {
                resource,
                credential,
                client_id,
                placeholder,
            });
        }
        Ok(Endpoint {
            header: Secret::random(32)?,
            resources,
        })
    }

    /// Does the request carry a placeholder where it may not? A
    /// placeholder is allowed only in `Authorization` on a route whose
    /// credential is its own and whose header is `Authorization` (the
    /// credential replaces it); in any other header, the query, or on any
    /// other request it is refused.
    pub fn misused(&self, headers: &HeaderMap, query: Option<&str>, route: Option<&Route>) -> bool {
        self.resources.iter().any(|r| {
            local_endpoint::placeholder_misused(
                r.placeholder.expose().as_bytes(),
                &r.credential,
                headers,
                query,
                route,
            )
        })
    }

    /// Is this Key Vault's SDK eliciting the vault's challenge? Its first
    /// request to a vault goes without `Authorization` and, for a request
    /// with a body (`set_secret`), without the body (`Content-Length: 0`);
    /// with the real token attached, the vault would answer that body-less
    /// write with 400 and the SDK gives up. Such a request (PUT, POST or
    /// PATCH, no `Authorization`, `Content-Length: 0`) on a route whose
    /// credential is this job's Key Vault entra credential goes upstream
    /// without a credential: the vault's 401 challenge reaches the SDK,
    /// which fetches a placeholder here and sends the request again, whole,
    /// with it. Reads and any request with a body or a token are untouched.
    pub fn challenge_probe(&self, method: &Method, headers: &HeaderMap, route: &Route) -> bool {
        let is_vault = self.resources.iter().any(|r| {
            r.credential == route.credential
                && url::Url::parse(&r.resource)
                    .ok()
                    .and_then(|u| u.host_str().map(|h| h.starts_with("vault.")))
                    .unwrap_or(false)
        });
        is_vault
            && route.aws.is_none()
            && route.header == header::AUTHORIZATION
            && matches!(*method, Method::PUT | Method::POST | Method::PATCH)
            && !headers.contains_key(header::AUTHORIZATION)
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0")
    }

    fn names(&self) -> String {
        let v: Vec<&str> = self.resources.iter().map(|r| r.resource.as_str()).collect();
        v.join(", ")
    }
}

/// The rule for a placeholder sent where it is not replaced. The
/// placeholder itself is never quoted.
pub const PLACEHOLDER_ELSEWHERE: &str = "the request carries a placeholder Azure token from lanyard's managed-identity endpoint, which only the routes of that token's entra credential accept (in Authorization); this request is not one";

/// Is this request for the endpoint?
pub fn is_for(shared: &Shared, ctx: &Ctx, req: &Request<Incoming>) -> bool {
    shared.azure.is_some() && local_endpoint::addressed(shared, ctx, req, PATH)
}

/// Serve one fetch, or refuse it.
pub fn serve(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let Some(ep) = &shared.azure else {
        return Err(Refusal::client(StatusCode::NOT_FOUND, "no such endpoint"));
    };
    ctx.locate_listener(shared, req.uri().path());
    local_endpoint::screen(ctx, req, WHAT)?;
    if req.uri().path() != PATH {
        let rule = format!("the managed-identity endpoint is {PATH}");
        return Err(Refusal::client(StatusCode::NOT_FOUND, rule));
    }
    if req.method() != Method::GET {
        return Err(Refusal::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "the managed-identity endpoint takes only GET",
        ));
    }
    match req.headers().get("x-identity-header") {
        None => {
            return Err(Refusal::client(
                StatusCode::UNAUTHORIZED,
                "no X-IDENTITY-HEADER header: send the value of IDENTITY_HEADER",
            ))
        }
        Some(v) if ep.header.ct_eq(v.as_bytes()) => {}
        Some(_) => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "wrong X-IDENTITY-HEADER value",
            ))
        }
    }
    let r = pick(ep, req.uri().query().unwrap_or_default())
        .map_err(|rule| Refusal::client(StatusCode::BAD_REQUEST, rule))?;
    ctx.log.rec.credential = Some(r.credential.clone());
    // The real token must exist (and be fresh) for the placeholder to be
    // worth anything; its expiry is the placeholder's.
    let cur = shared
        .store
        .get(&r.credential)
        .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    ctx.log.rec.fingerprint = Some(cur.fingerprint.clone());
    ctx.log.rec.decision = Decision::Served;
    let body = serde_json::json!({
        "access_token": r.placeholder.expose(),
        "expires_on": expires_on(cur.expires_at.map(tokio::time::Instant::into_std)).to_string(),
        "resource": r.resource,
        "token_type": "Bearer",
        "client_id": r.client_id,
    })
    .to_string();
    let mut resp = Response::new(full(body.into_bytes()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The resource the query asks for, or the rule it breaks.
fn pick<'e>(ep: &'e Endpoint, query: &str) -> Result<&'e Resource, String> {
    let (mut version, mut resource, mut client_id) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "api-version" => version = Some(v.into_owned()),
            "resource" => resource = Some(v.into_owned()),
            "client_id" => client_id = Some(v.into_owned()),
            "mi_res_id" | "object_id" | "principal_id" => {
                return Err(format!(
                    "{k}: the managed-identity endpoint selects identities by resource (and client_id) only"
                ))
            }
            _ => {}
        }
    }
    if version.as_deref() != Some(API_VERSION) {
        return Err(format!(
            "the managed-identity endpoint speaks api-version={API_VERSION}, got {version:?}"
        ));
    }
    let Some(want) = resource else {
        return Err(format!(
            "no resource parameter; this job's resources: {}",
            ep.names()
        ));
    };
    let want = want.trim_end_matches('/');
    let mut found = ep
        .resources
        .iter()
        .filter(|r| r.resource.eq_ignore_ascii_case(want))
        .filter(|r| {
            client_id
                .as_deref()
                .is_none_or(|c| c.eq_ignore_ascii_case(&r.client_id))
        });
    match (found.next(), found.next()) {
        (Some(r), None) => Ok(r),
        (Some(a), Some(b)) => Err(format!(
            "resource {want:?} is the scope of more than one entra credential ({}, {}); send client_id to choose",
            a.credential, b.credential
        )),
        (None, _) => Err(format!(
            "no entra credential has resource {want:?}{}; this job's resources: {}",
            client_id
                .map(|c| format!(" with client_id {c:?}"))
                .unwrap_or_default(),
            ep.names()
        )),
    }
}

/// Epoch seconds at `at` (5 minutes from now when the token has no expiry).
fn expires_on(at: Option<Instant>) -> u64 {
    let left = at.map_or(std::time::Duration::from_secs(300), |t| {
        t.saturating_duration_since(Instant::now())
    });
    (SystemTime::now() + left)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::new(vec![
            (
                "kv".into(),
                "https://vault.azure.net/.default".into(),
                "a".into(),
            ),
            (
                "arm".into(),
                "https://management.azure.com/.default".into(),
                "b".into(),
            ),
        ])
        .expect("random")
    }

    #[test]
    fn resources_are_picked_by_resource_version_and_client_id() {
        let e = ep();
        let q = |s: &str| pick(&e, s).map(|r| r.credential.clone());
        let v = "api-version=2019-08-01";
        assert_eq!(
            q(&format!("{v}&resource=https%3A%2F%2Fvault.azure.net")),
            Ok("kv".into())
        );
        assert_eq!(
            q(&format!("{v}&resource=https://management.azure.com/")),
            Ok("arm".into())
        );
        assert_eq!(
            q(&format!("{v}&resource=https://vault.azure.net&client_id=A")),
            Ok("kv".into())
        );
        let err = q(&format!("{v}&resource=https://storage.azure.com")).expect_err("unknown");
        assert!(
            err.contains("https://vault.azure.net, https://management.azure.com"),
            "{err}"
        );
        assert!(q(&format!("{v}&resource=https://vault.azure.net&client_id=b")).is_err());
        assert!(q("api-version=2017-09-01&resource=https://vault.azure.net").is_err());
        assert!(q(&format!("{v}&resource=https://vault.azure.net&mi_res_id=x")).is_err());
        assert!(q(v).expect_err("none").contains("this job's resources"));
    }

    #[test]
    fn placeholders_are_random_and_refused_except_in_their_routes_authorization() {
        let (a, b) = (ep(), ep());
        let p = a.resources[0].placeholder.expose().to_owned();
        assert!(p.starts_with("lanyard-placeholder-azure-"));
        assert_ne!(p, b.resources[0].placeholder.expose());
        assert_ne!(p, a.resources[1].placeholder.expose());
        assert_ne!(a.header.expose(), b.header.expose());
        assert!(!format!("{a:?}").contains(&p));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {p}").parse().expect("v"),
        );
        let route = |cred: &str, hdr: &'static str| {
            let (scheme, host, port, path_prefix) =
                crate::route::parse_route_url("https://x.vault.azure.net/").expect("url");
            Route {
                name: None,
                scheme,
                host,
                port,
                path_prefix,
                methods: None,
                credential: cred.into(),
                header: http::HeaderName::from_static(hdr),
                template: crate::route::Template::Format {
                    before: "Bearer ".into(),
                    after: String::new(),
                },
                websocket: false,
                identities: crate::route::IdentityKinds::default(),
                aws: None,
            }
        };
        let kv = route("kv", "authorization");
        assert!(!a.misused(&h, None, Some(&kv)));
        assert!(a.misused(&h, None, None), "passed through");
        assert!(
            a.misused(&h, None, Some(&route("arm", "authorization"))),
            "another credential"
        );
        assert!(
            a.misused(&h, None, Some(&route("kv", "x-token"))),
            "not replaced"
        );
        assert!(!b.misused(&h, None, None), "another job's placeholder");
        assert!(a.misused(&HeaderMap::new(), Some(&format!("t={p}")), Some(&kv)));
        let mut h = HeaderMap::new();
        h.insert("x-other", p.parse().expect("v"));
        assert!(a.misused(&h, None, Some(&kv)));

        // Key Vault's body-less challenge probe on its own route, and
        // nothing else, goes without the credential.
        let probe = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().expect("v"));
            }
            h
        };
        let empty = probe(&[("content-length", "0")]);
        assert!(a.challenge_probe(&Method::PUT, &empty, &kv));
        assert!(a.challenge_probe(&Method::POST, &empty, &kv));
        assert!(!a.challenge_probe(&Method::GET, &empty, &kv), "a read");
        assert!(
            !a.challenge_probe(&Method::PUT, &HeaderMap::new(), &kv),
            "no Content-Length (curl -X PUT)"
        );
        assert!(
            !a.challenge_probe(&Method::PUT, &probe(&[("content-length", "12")]), &kv),
            "a body"
        );
        assert!(
            !a.challenge_probe(
                &Method::PUT,
                &probe(&[("content-length", "0"), ("authorization", "Bearer x")]),
                &kv
            ),
            "a token"
        );
        assert!(
            !a.challenge_probe(&Method::PUT, &empty, &route("arm", "authorization")),
            "not Key Vault"
        );
        assert!(
            !a.challenge_probe(&Method::PUT, &empty, &route("kv", "x-token")),
            "another header"
        );
    }
}
