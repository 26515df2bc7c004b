//! A GCE metadata server, served on the listener when the config has a
//! `gcp-workload-identity` credential, so that google-auth's default
//! credentials (and every Google Cloud client built on them) work
//! unmodified. The libraries find it through `GCE_METADATA_HOST` and
//! `GCE_METADATA_IP` (`host:port`), which lanyard sets to the listener.
//!
//! The protocol, as google-auth speaks it: a ping `GET /` and then `GET
//! /computeMetadata/v1/<path>`, every request with `Metadata-Flavor:
//! Google`, every answer carrying it too. Served: `project/project-id`,
//! `universe/universe-domain`, `instance/service-accounts/` and, per
//! account (`default` is the first credential; each account also by its
//! email), `?recursive=true`, `email`, `scopes`, `aliases` and `token`.
//! Anything else is 404, as on GCE for a path that does not exist.
//!
//! The token handed out is a **placeholder**, random per job and per
//! credential: the proxy replaces it with the real token on the routes of
//! that credential (in `Authorization`); anywhere else it is refused and
//! audited ([`Endpoint::misused`]). `expires_in` is the real token's
//! remaining lifetime, so the library asks again when lanyard has a fresh
//! one. The `scopes` parameter does not change the token: it has the
//! credential's `scope`.
//!
//! Only the job's clients are answered: loopback, the job's user, no
//! browser (no Origin, a Host naming the listener), GET, `Metadata-Flavor:
//! Google` and no `X-Forwarded-For` (GCE's own rule against proxied
//! requests). Every fetch is audited.

use std::time::Instant;

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

/// The metadata API's root on the listener.
pub const ROOT: &str = "/computeMetadata/v1/";
const WHAT: &str = "GCE metadata";
const FLAVOR: &str = "metadata-flavor";

/// One gcp-workload-identity credential as the server serves it.
pub struct Account {
    pub credential: String,
    /// The service account's email; the credential's name for a federated
    /// token without one.
    pub email: String,
    pub scopes: Vec<String>,
    pub placeholder: Secret,
}

/// The server as the proxy serves it.
pub struct Endpoint {
    /// The first is `default`.
    pub accounts: Vec<Account>,
    pub project_id: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gce_metadata::Endpoint([redacted])")
    }
}

impl Endpoint {
    /// From each gcp-workload-identity credential, in config order.
    pub fn new(
        gcp: Vec<(String, crate::config::GcpWorkloadIdentity)>,
    ) -> Result<Endpoint, getrandom::Error> {
        let project_id = gcp.iter().find_map(|(_, g)| g.project_id.clone());
        let mut accounts = Vec::with_capacity(gcp.len());
        for (credential, g) in gcp {
            let placeholder = Secret::new(format!(
                "lanyard-placeholder-gcp-{}",
                Secret::random(32)?.expose()
            ));
            accounts.push(Account {
                email: g.service_account.unwrap_or_else(|| credential.clone()),
                credential,
                scopes: g.scope,
                placeholder,
            });
        }
        Ok(Endpoint {
            accounts,
            project_id,
        })
    }

    /// Does the request carry a placeholder where it may not?
    pub fn misused(&self, headers: &HeaderMap, query: Option<&str>, route: Option<&Route>) -> bool {
        self.accounts.iter().any(|a| {
            local_endpoint::placeholder_misused(
                a.placeholder.expose().as_bytes(),
                &a.credential,
                headers,
                query,
                route,
            )
        })
    }

    fn account(&self, name: &str) -> Option<&Account> {
        if name == "default" {
            return self.accounts.first();
        }
        self.accounts.iter().find(|a| a.email == name)
    }
}

/// The rule for a placeholder sent where it is not replaced. The
/// placeholder itself is never quoted.
pub const PLACEHOLDER_ELSEWHERE: &str = "the request carries a placeholder Google token from lanyard's metadata server, which only the routes of that token's gcp-workload-identity credential accept (in Authorization); this request is not one";

/// Is this request for the server? The ping (`/`) or the metadata API.
pub fn is_for(shared: &Shared, ctx: &Ctx, req: &Request<Incoming>) -> bool {
    let p = req.uri().path();
    shared.gce.is_some()
        && (p == "/" || p.starts_with("/computeMetadata/"))
        && local_endpoint::addressed(shared, ctx, req, "/")
}

/// What a fetch is answered with: content type and body.
enum Answer {
    Text(String),
    Json(serde_json::Value),
}

/// Serve one fetch, or refuse it.
pub fn serve(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let Some(ep) = &shared.gce else {
        return Err(Refusal::client(StatusCode::NOT_FOUND, "no such endpoint"));
    };
    ctx.locate_listener(shared, req.uri().path());
    local_endpoint::screen(ctx, req, WHAT)?;
    if req.method() != Method::GET {
        return Err(Refusal::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "the metadata server takes only GET",
        ));
    }
    let h = req.headers();
    match h.get(FLAVOR) {
        Some(v) if v.as_bytes() == b"Google" => {}
        Some(_) => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "Metadata-Flavor must be Google",
            ))
        }
        None => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "no Metadata-Flavor: Google header (the metadata server requires it)",
            ))
        }
    }
    if h.contains_key("x-forwarded-for") {
        return Err(Refusal::client(
            StatusCode::FORBIDDEN,
            "a request with X-Forwarded-For (the metadata server answers no proxied request)",
        ));
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    let answer = if path == "/" {
        Answer::Text("computeMetadata/\n".into())
    } else {
        let rest = path.strip_prefix(ROOT).ok_or_else(not_found)?;
        answer(shared, ep, ctx, rest, query)?
    };
    let (ctype, body) = match answer {
        Answer::Text(t) => ("application/text", t),
        Answer::Json(v) => ("application/json", v.to_string()),
    };
    ctx.log.rec.decision = Decision::Served;
    let mut resp = Response::new(full(body.into_bytes()));
    let h = resp.headers_mut();
    h.insert(FLAVOR, HeaderValue::from_static("Google"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn not_found() -> Refusal {
    Refusal::client(
        StatusCode::NOT_FOUND,
        "no such metadata path on lanyard's metadata server (it serves project/project-id, universe/universe-domain and instance/service-accounts/)",
    )
}

fn recursive(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "recursive" && v == "true")
}

fn answer(
    shared: &Shared,
    ep: &Endpoint,
    ctx: &mut Ctx,
    rest: &str,
    query: &str,
) -> Result<Answer, Refusal> {
    match rest {
        "project/project-id" => ep
            .project_id
            .clone()
            .map(Answer::Text)
            .ok_or_else(|| Refusal::client(StatusCode::NOT_FOUND, "no project ID: set `project_id` on the gcp-workload-identity credential (or a service_account of <name>@<project>.iam.gserviceaccount.com)")),
        "universe/universe-domain" => Ok(Answer::Text("googleapis.com".into())),
        "instance/service-accounts" | "instance/service-accounts/" => {
            let mut s = String::from("default/\n");
            for a in &ep.accounts {
                s.push_str(&format!("{}/\n", a.email));
            }
            Ok(Answer::Text(s))
        }
        _ => {
            let r = rest
                .strip_prefix("instance/service-accounts/")
                .ok_or_else(not_found)?;
            let (name, leaf) = r.split_once('/').unwrap_or((r, ""));
            let a = ep.account(name).ok_or_else(|| {
                let names: Vec<&str> = ep.accounts.iter().map(|a| a.email.as_str()).collect();
                Refusal::client(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no service account {name:?} on this job's metadata server (default, {})",
                        names.join(", ")
                    ),
                )
            })?;
            account(shared, ctx, a, leaf, query)
        }
    }
}

fn account(
    shared: &Shared,
    ctx: &mut Ctx,
    a: &Account,
    leaf: &str,
    query: &str,
) -> Result<Answer, Refusal> {
    ctx.log.rec.credential = Some(a.credential.clone());
    Ok(match leaf {
        "" if recursive(query) => Answer::Json(serde_json::json!({
            "aliases": ["default"],
            "email": a.email,
            "scopes": a.scopes,
        })),
        "" => Answer::Text("aliases\nemail\nscopes\ntoken\n".into()),
        "email" => Answer::Text(a.email.clone()),
        "aliases" => Answer::Text("default".into()),
        "scopes" => Answer::Text(a.scopes.join("\n") + "\n"),
        "token" => {
            // The real token must exist (and be fresh) for the placeholder
            // to be worth anything; its remaining lifetime is the
            // placeholder's.
            let cur = shared
                .store
                .get(&a.credential)
                .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            ctx.log.rec.fingerprint = Some(cur.fingerprint.clone());
            Answer::Json(serde_json::json!({
                "access_token": a.placeholder.expose(),
                "expires_in": expires_in(cur.expires_at.map(tokio::time::Instant::into_std)),
                "token_type": "Bearer",
            }))
        }
        "identity" => {
            return Err(Refusal::client(
                StatusCode::NOT_FOUND,
                "lanyard's metadata server hands out access tokens only, not ID tokens",
            ))
        }
        _ => return Err(not_found()),
    })
}

/// Seconds left until `at` (5 minutes when the token has no expiry), at
/// least 1.
fn expires_in(at: Option<Instant>) -> u64 {
    at.map_or(300, |t| {
        t.saturating_duration_since(Instant::now()).as_secs()
    })
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GcpWorkloadIdentity;

    fn g(sa: Option<&str>) -> GcpWorkloadIdentity {
        GcpWorkloadIdentity {
            provider: "projects/1/locations/global/workloadIdentityPools/pool/providers/prov"
                .into(),
            audience: "a".into(),
            token_url: url::Url::parse("https://sts.googleapis.com/v1/token").expect("url"),
            scope: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            service_account: sa.map(str::to_owned),
            delegates: Vec::new(),
            lifetime: std::time::Duration::from_secs(3600),
            iamcredentials_url: url::Url::parse("https://iamcredentials.googleapis.com")
                .expect("url"),
            project_id: sa.map(|_| "my-proj".to_owned()),
        }
    }

    #[test]
    fn accounts_are_found_by_default_or_email_and_placeholders_are_per_job() {
        let mk = || {
            Endpoint::new(vec![
                ("gcs".into(), g(Some("ci@my-proj.iam.gserviceaccount.com"))),
                ("fed".into(), g(None)),
            ])
            .expect("random")
        };
        let (a, b) = (mk(), mk());
        assert_eq!(
            a.account("default").map(|x| x.credential.as_str()),
            Some("gcs")
        );
        assert_eq!(
            a.account("ci@my-proj.iam.gserviceaccount.com")
                .map(|x| x.credential.as_str()),
            Some("gcs")
        );
        assert_eq!(a.account("fed").map(|x| x.credential.as_str()), Some("fed"));
        assert!(a.account("other@x.iam.gserviceaccount.com").is_none());
        assert_eq!(a.project_id.as_deref(), Some("my-proj"));
        let p = a.accounts[0].placeholder.expose();
        assert!(p.starts_with("lanyard-placeholder-gcp-"));
        assert_ne!(p, b.accounts[0].placeholder.expose());
        assert_ne!(p, a.accounts[1].placeholder.expose());
        assert!(!format!("{a:?}").contains(p));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {p}").parse().expect("v"),
        );
        assert!(a.misused(&h, None, None), "passed through");
        assert!(!b.misused(&h, None, None), "another job's placeholder");
        assert!(recursive("recursive=true") && !recursive("recursive=false"));
        assert_eq!(expires_in(None), 300);
    }
}
