//! The AWS container-credentials endpoint, a local endpoint on the
//! listener (like the reverse routes), for tools that cannot use a proxy.
//! Opt-in per credential (`container_endpoint = true`): the job then sees
//! the role session's short-lived keys.
//!
//! The protocol, as botocore's `ContainerProvider` speaks it: the client
//! GETs `AWS_CONTAINER_CREDENTIALS_FULL_URI` (http is allowed only to a
//! loopback address, `localhost` or the ECS/EKS link-local hosts) with
//! `Authorization: <the contents of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE>`
//! and reads `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`;
//! it fetches again before `Expiration`.
//!
//! Only the job's clients get keys: the connection's owner was checked by
//! `admit::connection`, and here the client must be on loopback, send no
//! browser header (`Origin`, `Sec-Fetch-*`), use GET and present the
//! per-job token (compared in constant time; it is not the proxy secret).
//! Every fetch is audited (`served` with the credential's name and
//! fingerprint, or `denied` with the rule); the keys never are.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::context::Ctx;
use super::forward::{full, Body};
use super::local_endpoint;
use super::refusal::Refusal;
use super::server::Shared;
use crate::audit::Decision;
use crate::exchange::aws::AwsKeys;
use crate::identity::format_time;
use crate::secret::Secret;

/// The endpoint's path; the credential's name follows.
pub const PREFIX: &str = "/aws/container-credentials/";

/// The endpoint as the proxy serves it.
pub struct Endpoint {
    /// The per-job token the client presents in `Authorization`.
    pub token: Secret,
    /// The one credential served (config allows one).
    pub credential: String,
}

/// Is this request for the endpoint? See [`local_endpoint::addressed`].
pub fn is_for(shared: &Shared, ctx: &Ctx, req: &Request<Incoming>) -> bool {
    shared.container.is_some() && local_endpoint::addressed(shared, ctx, req, PREFIX)
}

/// Serve one fetch, or refuse it.
pub fn serve(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let Some(ep) = &shared.container else {
        return Err(Refusal::client(StatusCode::NOT_FOUND, "no such endpoint"));
    };
    ctx.locate_listener(shared, req.uri().path());
    local_endpoint::screen(ctx, req, "container-credentials")?;
    let name = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
    if name != ep.credential {
        return Err(Refusal::client(
            StatusCode::NOT_FOUND,
            format!(
                "the container-credentials endpoint is {PREFIX}{}",
                ep.credential
            ),
        ));
    }
    ctx.log.rec.credential = Some(ep.credential.clone());
    if req.method() != Method::GET {
        return Err(Refusal::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "the container-credentials endpoint takes only GET",
        ));
    }
    match req.headers().get(header::AUTHORIZATION) {
        None => return Err(Refusal::client(
            StatusCode::UNAUTHORIZED,
            "no Authorization header: send the contents of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        )),
        Some(v) if ep.token.ct_eq(v.as_bytes()) => {}
        Some(_) => {
            return Err(Refusal::client(
                StatusCode::FORBIDDEN,
                "wrong container-credentials token",
            ))
        }
    }
    let cur = shared
        .store
        .get(&ep.credential)
        .map_err(|e| Refusal::credential(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let Some(keys) = AwsKeys::from_credential(&cur.value) else {
        return Err(Refusal::credential(
            StatusCode::BAD_GATEWAY,
            "the credential holds no AWS keys",
        ));
    };
    ctx.log.rec.fingerprint = Some(cur.fingerprint.clone());
    ctx.log.rec.decision = Decision::Served;
    let body = zeroize::Zeroizing::new(
        serde_json::json!({
            "AccessKeyId": keys.access_key_id.expose(),
            "SecretAccessKey": keys.secret_access_key.expose(),
            "Token": keys.session_token.expose(),
            "Expiration": format_time(keys.expiration),
        })
        .to_string(),
    );
    let mut resp = Response::new(full(body.as_bytes().to_vec()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
