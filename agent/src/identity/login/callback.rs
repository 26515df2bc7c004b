//! The loopback redirect listener for the PKCE flow.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::LoginError;
use crate::accept::{self, Backoff};
use crate::secret::Secret;

type Outcome = Result<Secret, LoginError>;

/// Serve `/callback` until a request with our `state` arrives. Requests
/// with another state are answered 400 and ignored (they are not from
/// this sign-in); an IdP error with our state ends the wait.
pub async fn wait(listener: tokio::net::TcpListener, state: &str) -> Outcome {
    let (tx, mut rx) = mpsc::channel::<Outcome>(1);
    let cancel = CancellationToken::new();
    let stopped = || Err(LoginError::Browser("the callback listener stopped".into()));
    let outcome = tokio::select! {
        () = serve(listener, state.to_owned(), tx, cancel.clone()) => stopped(),
        r = rx.recv() => r.unwrap_or_else(stopped),
    };
    cancel.cancel();
    outcome
}

/// The accept loop: each connection on its own task, accept errors waited
/// out (see `accept`), until `cancel`.
async fn serve(
    listener: tokio::net::TcpListener,
    state: String,
    tx: mpsc::Sender<Outcome>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    while let Some(stream) = accept::next(&listener, &mut backoff, &cancel).await {
        let (tx, state) = (tx.clone(), state.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (tx, state) = (tx.clone(), state.clone());
                async move { Ok::<_, Infallible>(answer(req, &state, &tx).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lanyard</title></head><body><p>{text}</p></body></html>"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn answer(
    req: Request<Incoming>,
    state: &str,
    tx: &mpsc::Sender<Outcome>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/callback" {
        return page(StatusCode::NOT_FOUND, "Not found.");
    }
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "code" => code = Some(Secret::new(v.into_owned())),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    let ours = got_state
        .as_deref()
        .is_some_and(|s| super::ct_eq(s.as_bytes(), state.as_bytes()));
    if !ours {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in answer is not for the lanyard login that is waiting (state mismatch). It was ignored.",
        );
    }
    if let Some(e) = error {
        let detail = super::server_words(&e, description.as_ref());
        let _ = tx
            .send(Err(LoginError::Refused {
                step: "authorization",
                detail,
            }))
            .await;
        return page(
            StatusCode::OK,
            "Sign-in failed; see the terminal for the reason.",
        );
    }
    match code {
        Some(c) => {
            let _ = tx.send(Ok(c)).await;
            page(
                StatusCode::OK,
                "Signed in to lanyard. You can close this tab and return to the terminal.",
            )
        }
        None => page(StatusCode::BAD_REQUEST, "The answer has no code."),
    }
}
