//! Request bodies before they go upstream. A body whose size is not known
//! up front (chunked) is read into memory up to a bound before anything is
//! sent, so that a framing error the gate finds in it is refused before
//! the head, or its credential, reaches the upstream. A body that ends
//! within the bound is whole and can be replayed after a 401; a longer one
//! is streamed on from where the buffer ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};

/// A request body, read as far as the bound allows.
pub enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// The first bytes and the rest, still to be read.
    Partial(Prefixed),
}

/// Read `body` until it ends or more than `limit` bytes have arrived.
pub async fn prebuffer(mut body: Incoming, limit: u64) -> Result<Buffered, hyper::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers are not forwarded: the pool sends a body it knows whole
        // with a Content-Length.
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > limit {
                return Ok(Buffered::Partial(Prefixed {
                    head: Some(buf.freeze()),
                    rest: body,
                }));
            }
        }
    }
    Ok(Buffered::Whole(buf.freeze()))
}

/// The bytes already read, then the rest of the body.
pub struct Prefixed {
    head: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let n = self.head.as_ref().map_or(0, |b| b.len() as u64);
        let mut h = SizeHint::new();
        if let Some(u) = rest.upper() {
            h.set_upper(u.saturating_add(n));
        }
        h.set_lower(rest.lower().saturating_add(n));
        h
    }
}
