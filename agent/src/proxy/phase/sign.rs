//! Between `attach` and `forward`, for an AWS route only: read the body
//! (to hash it), choose the service and region, and sign the request with
//! the route's current keys (`sigv4`). Nothing has been sent yet, so a
//! refusal here leaves the upstream untouched: a body over the bound that
//! may not go unsigned, a host whose service cannot be told, keys that
//! will not unpack.

use std::time::SystemTime;

use http::StatusCode;
use hyper::body::Body as _;

use super::attach::{OutBody, Outgoing};
use crate::audit;
use crate::exchange::aws::AwsKeys;
use crate::proxy::body::{prebuffer, Buffered};
use crate::proxy::context::Ctx;
use crate::proxy::refusal::Refusal;
use crate::proxy::sigv4::{self, scope, Payload, Scope, MAX_SIGNED_BODY};
use crate::route::Scheme;
use crate::store::Current;

pub async fn sign(ctx: &mut Ctx, out: &mut Outgoing<'_>) -> Result<(), Refusal> {
    let Some(aws) = out.route.and_then(|r| r.aws.as_ref()) else {
        return Ok(());
    };
    let headers = &mut out.parts.headers;
    let client = sigv4::client_scope(headers);
    sigv4::prepare(headers, out.uri.query())?;
    let d = &ctx.dest;
    let derived = scope::derive(&d.host);
    let pick = |route: &Option<String>, i: usize| {
        route
            .clone()
            .or_else(|| {
                derived
                    .as_ref()
                    .map(|x| if i == 0 { x.0.clone() } else { x.1.clone() })
            })
            .or_else(|| {
                client
                    .as_ref()
                    .map(|x| if i == 0 { x.0.clone() } else { x.1.clone() })
            })
    };
    let (Some(service), Some(region)) = (pick(&aws.service, 0), pick(&aws.region, 1)) else {
        return Err(Refusal::policy(format!(
            "lanyard cannot tell the AWS service and region from host {} or the client's signature; set aws_service and aws_region on the route",
            d.host
        )));
    };
    let host = d.scheme.authority(&d.host, d.port);
    let pq = out.uri.path_and_query().map_or("/", |p| p.as_str());
    let scope = Scope {
        service,
        region,
        url: format!("{}://{host}{pq}", d.scheme),
        host,
    };
    // Why: S3 accepts UNSIGNED-PAYLOAD over TLS, so a large S3 body is
    // streamed rather than held; any other body must be hashed whole.
    let may_go_unsigned = scope.s3() && d.scheme == Scheme::Https;
    let too_big = || {
        Refusal::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "an AWS request body over {} MiB: lanyard hashes the body to sign it and holds at most that much (S3 over https goes unsigned instead; use multipart uploads for larger objects elsewhere)",
                MAX_SIGNED_BODY / (1024 * 1024)
            ),
        )
    };
    let fresh = match std::mem::replace(
        &mut out.body,
        OutBody::Read(Buffered::Whole(Default::default())),
    ) {
        OutBody::Fresh(b) => b,
        read @ OutBody::Read(_) => {
            out.body = read;
            return Err(Refusal::malformed("the request body was read twice"));
        }
    };
    let exact = fresh.size_hint().exact();
    let (read, stream) = if exact.is_some_and(|n| n > MAX_SIGNED_BODY) {
        if !may_go_unsigned {
            return Err(too_big());
        }
        (None, Some(fresh))
    } else {
        match prebuffer(fresh, MAX_SIGNED_BODY).await {
            Ok(b) => (Some(b), None),
            Err(e) => {
                return Err(Refusal::client(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                ))
            }
        }
    };
    let cred = out.cred.clone().ok_or_else(|| {
        Refusal::credential(
            StatusCode::SERVICE_UNAVAILABLE,
            "no AWS keys for this route",
        )
    })?;
    let payload = match &read {
        Some(Buffered::Whole(bytes)) => Payload::Bytes(bytes),
        Some(Buffered::Partial(_)) if !may_go_unsigned => return Err(too_big()),
        _ => Payload::Unsigned,
    };
    resign(
        &mut out.parts.headers,
        &out.parts.method,
        &scope,
        &cred,
        payload,
    )?;
    out.body = match (read, stream) {
        (Some(b), _) => OutBody::Read(b),
        (None, Some(b)) => OutBody::Fresh(b),
        (None, None) => return Err(Refusal::malformed("the request body was lost")),
    };
    out.signing = Some(scope);
    ctx.log.rec.decision = audit::Decision::Signed;
    Ok(())
}

/// Sign (or, for the replay after a refresh, sign again) with `cred`'s
/// keys. The error never quotes a key.
pub fn resign(
    headers: &mut http::HeaderMap,
    method: &http::Method,
    scope: &Scope,
    cred: &Current,
    payload: Payload<'_>,
) -> Result<(), Refusal> {
    let keys = AwsKeys::from_credential(&cred.value).ok_or_else(|| {
        Refusal::credential(
            StatusCode::BAD_GATEWAY,
            "the route's credential holds no AWS keys",
        )
    })?;
    sigv4::sign(headers, method, scope, &keys, payload, SystemTime::now())
        .map_err(|e| Refusal::credential(StatusCode::BAD_GATEWAY, format!("SigV4 signing: {e}")))
}
