//! A tap on the bytes a client sends, for the one framing conflict hyper
//! hides: a request with both `Content-Length` and `Transfer-Encoding`.
//! hyper follows RFC 9112 (chunked wins, the length is dropped, the
//! connection closes after), so nothing can desync, but the contract is to
//! refuse such a request outright. The tap parses each request head with
//! httparse before hyper sees it and raises a per-connection flag.
//!
//! It follows requests with a `Content-Length` body (or none). After a
//! chunked body it stops: finding the next head would mean decoding the
//! chunks, and hyper's own rule still keeps that connection safe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::server::MAX_HEAD;

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(u64),
    Off,
}

#[derive(Debug)]
pub struct FramingTap {
    state: State,
    pub conflict: Arc<AtomicBool>,
}

impl Default for FramingTap {
    fn default() -> Self {
        FramingTap {
            state: State::Head(Vec::new()),
            conflict: Arc::default(),
        }
    }
}

impl FramingTap {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                // Why: a whole head in one read is the common case; it is
                // inspected in place, without copying it into `buf`.
                State::Head(buf) if buf.is_empty() && find_end(data).is_some() => {
                    let end = find_end(data).unwrap_or(data.len());
                    self.state = inspect(&data[..end], &self.conflict);
                    data = &data[end..];
                }
                State::Head(buf) => {
                    let before = buf.len();
                    buf.extend_from_slice(data);
                    let Some(end) = find_end(buf) else {
                        if buf.len() > MAX_HEAD {
                            // hyper refuses this head itself (431).
                            self.state = State::Off;
                        }
                        return;
                    };
                    let used = end - before;
                    let next = inspect(&buf[..end], &self.conflict);
                    self.state = next;
                    data = &data[used..];
                }
            }
        }
    }
}

fn inspect(head: &[u8], conflict: &AtomicBool) -> State {
    {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            // hyper refuses what httparse cannot parse.
            return State::Off;
        }
        let mut cl: Option<u64> = None;
        let mut te = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                cl = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .or(Some(0));
            }
        }
        if te && cl.is_some() {
            conflict.store(true, Ordering::Relaxed);
        }
        match (te, cl) {
            (true, _) => State::Off,
            (false, Some(0)) | (false, None) => State::Head(Vec::new()),
            (false, Some(n)) => State::Body(n),
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(chunks: &[&[u8]]) -> bool {
        let mut t = FramingTap::default();
        for c in chunks {
            t.feed(c);
        }
        t.conflict.load(Ordering::Relaxed)
    }

    #[test]
    fn both_orders_and_split_reads_are_caught() {
        assert!(conflict(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]));
        assert!(conflict(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        ]));
        assert!(conflict(&[
            b"POST / HTTP/1.1\r\nTransfer-Enc",
            b"oding: chunked\r\nContent-Length: 4\r",
            b"\n\r\n"
        ]));
    }

    #[test]
    fn a_conflict_in_a_later_pipelined_request_is_caught() {
        assert!(conflict(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]));
    }

    #[test]
    fn honest_requests_are_not_flagged() {
        assert!(!conflict(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]));
        // A body that looks like a conflicting head is body, not a head.
        assert!(!conflict(&[b"POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"]));
    }
}
