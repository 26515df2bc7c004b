//! The gate: strict HTTP/1.1 request framing (RFC 9112), enforced on the
//! bytes a client sends before hyper sees any of them. One code path for
//! the plain listener and for every intercepted TLS tunnel.
//!
//! hyper's parser is lenient (bare LF line ends, loose chunk extensions),
//! and what it refuses it refuses without our audit record. So the gate
//! holds each request head, and each chunk-size and trailer line, until it
//! is complete and valid, and only then releases it to hyper. Body bytes
//! of a known length pass straight through. Because hyper only ever sees a
//! strictly valid prefix of the stream, it cannot read anything the
//! upstream might read differently.
//!
//! A refused head is replaced by a fixed sentinel request, so that hyper
//! answers in order (after any earlier pipelined request) and the handler
//! turns it into the refusal, with its audit record; nothing after it is
//! read. A framing error inside a chunked body ends the body with an I/O
//! error; the handler has not sent anything upstream yet if the body fit
//! in its pre-buffer (see `phase::forward`), and answers 400.
//!
//! After a head that may switch protocols (CONNECT, `Upgrade`), the gate
//! reads nothing until the handler says whether the switch happened
//! (`Verdicts::settle_tunnel`): a tunnel is passed through untouched, a
//! refusal (407, 403) goes back to reading requests.

pub mod grammar;
mod verdicts;

use std::sync::Arc;
use std::task::Waker;

use grammar::{bad, Bad, BodyKind};
pub use verdicts::{Refusal, Verdicts};

/// Request line plus headers. Larger heads are refused with 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// What hyper gets instead of a refused head: a request only the handler
/// answers (it checks the request's index, never these bytes).
pub const SENTINEL: &[u8] = b"GET / HTTP/1.1\r\nhost: lanyard.invalid\r\nconnection: close\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkLine,
    ChunkData(u64),
    /// The CRLF after chunk data: `true` once the CR was seen.
    ChunkEnd(bool),
    Trailer,
    AwaitTunnel,
    /// A tunnel: bytes pass untouched.
    Open,
    /// A body framing error is waiting to be returned.
    Failed,
    Dead,
}

/// What hyper may see of one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// The first `n` bytes of the input, unchanged (the common case: no copy).
    Prefix(usize),
    /// These bytes instead.
    Copied(Vec<u8>),
}

/// Builds `Released` without copying while the output is a prefix of the
/// input.
struct Out<'a> {
    input: &'a [u8],
    prefix: usize,
    copy: Option<Vec<u8>>,
}

impl<'a> Out<'a> {
    fn pass(&mut self, from: usize, to: usize) {
        match &mut self.copy {
            None if from == self.prefix => self.prefix = to,
            _ => {
                let input = self.input;
                self.copied().extend_from_slice(&input[from..to])
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.copied().extend_from_slice(bytes);
    }

    fn copied(&mut self) -> &mut Vec<u8> {
        let (input, prefix) = (self.input, self.prefix);
        self.copy.get_or_insert_with(|| input[..prefix].to_vec())
    }

    fn done(self) -> Released {
        match self.copy {
            Some(v) => Released::Copied(v),
            None => Released::Prefix(self.prefix),
        }
    }
}

/// One connection's request stream.
#[derive(Debug)]
pub struct Gate {
    state: State,
    /// A head, chunk-size line or trailer line still incomplete.
    held: Vec<u8>,
    /// Bytes that arrived after a head that may switch protocols, before
    /// the handler's verdict: fed (or passed) once it is known.
    stash: Vec<u8>,
    /// Trailer bytes of the current body so far.
    trailer_bytes: usize,
    /// The current request may switch protocols once its body has ended.
    may_tunnel: bool,
    /// Index of the next request head.
    next: u64,
    verdicts: Arc<Verdicts>,
}

impl Gate {
    pub fn new() -> (Gate, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        (
            Gate {
                state: State::Head,
                held: Vec::new(),
                stash: Vec::new(),
                trailer_bytes: 0,
                may_tunnel: false,
                next: 0,
                verdicts: verdicts.clone(),
            },
            verdicts,
        )
    }

    /// Bytes that arrived while waiting for a tunnel verdict; feed them
    /// before reading more.
    pub fn take_stash(&mut self) -> Option<Vec<u8>> {
        (!self.stash.is_empty()).then(|| std::mem::take(&mut self.stash))
    }

    /// Is the stream a tunnel now (bytes pass untouched)?
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Before reading: `Some(Ok)` to read and `feed`; `Some(Err)` to
    /// return the body error; `None` to read nothing now (waiting for a
    /// tunnel verdict, with `waker` registered, or refused for good).
    pub fn before_read(&mut self, waker: &Waker) -> Option<std::io::Result<()>> {
        match self.state {
            State::AwaitTunnel => {
                let mut s = self.verdicts.lock();
                match s.tunnel.take() {
                    Some(true) => {
                        drop(s);
                        self.state = State::Open;
                        Some(Ok(()))
                    }
                    Some(false) => {
                        drop(s);
                        self.state = State::Head;
                        Some(Ok(()))
                    }
                    None => {
                        s.waker = Some(waker.clone());
                        None
                    }
                }
            }
            State::Failed => {
                self.state = State::Dead;
                let rule = self
                    .verdicts
                    .lock()
                    .refusal
                    .as_ref()
                    .map(|r| r.rule.clone())
                    .unwrap_or_default();
                Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("request framing: {rule}"),
                )))
            }
            State::Dead => None,
            _ => Some(Ok(())),
        }
    }

    /// Bytes read from the client; returns what hyper may see of them.
    pub fn feed(&mut self, input: &[u8]) -> Released {
        let mut out = Out {
            input,
            prefix: 0,
            copy: None,
        };
        let mut i = 0;
        while i < input.len() {
            i = match self.state {
                State::Open => {
                    out.pass(i, input.len());
                    input.len()
                }
                State::AwaitTunnel | State::Failed | State::Dead => {
                    // Nothing after a possible protocol switch or a
                    // refusal is read as HTTP; keep it out of hyper's sight.
                    if self.state == State::AwaitTunnel {
                        self.stash.extend_from_slice(&input[i..]);
                    }
                    input.len()
                }
                State::Length(n) => {
                    let take = (n.min((input.len() - i) as u64)) as usize;
                    out.pass(i, i + take);
                    self.state = match n - take as u64 {
                        0 => self.message_end(),
                        left => State::Length(left),
                    };
                    i + take
                }
                State::ChunkData(n) => {
                    let take = (n.min((input.len() - i) as u64)) as usize;
                    out.pass(i, i + take);
                    self.state = match n - take as u64 {
                        0 => State::ChunkEnd(false),
                        left => State::ChunkData(left),
                    };
                    i + take
                }
                State::ChunkEnd(cr) => match (cr, input[i]) {
                    (false, b'\r') => {
                        out.pass(i, i + 1);
                        self.state = State::ChunkEnd(true);
                        i + 1
                    }
                    (true, b'\n') => {
                        out.pass(i, i + 1);
                        self.state = State::ChunkLine;
                        i + 1
                    }
                    _ => {
                        self.fail_body(bad("chunk data is not followed by CRLF"));
                        input.len()
                    }
                },
                State::Head | State::ChunkLine | State::Trailer => self.line(input, i, &mut out),
            };
        }
        out.done()
    }

    /// Heads, chunk-size lines and trailer lines: held until complete.
    fn line(&mut self, input: &[u8], i: usize, out: &mut Out<'_>) -> usize {
        let head = self.state == State::Head;
        let limit = if head {
            MAX_HEAD
        } else if self.state == State::Trailer {
            MAX_HEAD.saturating_sub(self.trailer_bytes)
        } else {
            grammar::MAX_CHUNK_LINE
        };
        let end_marker: &[u8] = if head { b"\r\n\r\n" } else { b"\r\n" };
        // Why: the common case is a whole line (or head) in one read; it is
        // checked in place, without copying it into `held`.
        let (start_in_held, end) = if self.held.is_empty() {
            let rest = &input[i..];
            match find(rest, end_marker).filter(|&e| e <= limit) {
                Some(e) => {
                    let line = &rest[..e];
                    if let Some((at, rule)) = grammar::bare_cr_or_lf(line, 0) {
                        self.refuse_line(&line[..at], bad(rule), out);
                        return input.len();
                    }
                    self.complete(line, out, Some((i, i + e)));
                    return i + e;
                }
                None => {
                    self.held.extend_from_slice(rest);
                    (0, None)
                }
            }
        } else {
            let before = self.held.len();
            self.held.extend_from_slice(&input[i..]);
            let from = before.saturating_sub(end_marker.len() - 1);
            let end = find(&self.held[from..], end_marker).map(|e| from + e);
            (before.saturating_sub(1), end)
        };
        // Why: only the bytes up to the limit decide, so the verdict (bare
        // CR/LF or too long) does not depend on how the line was split into
        // reads (found by the request_stream fuzz target).
        let checked_to = end.unwrap_or(self.held.len()).min(limit + 1);
        if let Some((at, rule)) = grammar::bare_cr_or_lf(&self.held[..checked_to], start_in_held) {
            let held = std::mem::take(&mut self.held);
            self.refuse_line(&held[..at], bad(rule), out);
            return input.len();
        }
        match end {
            Some(e) if e <= limit => {
                let mut held = std::mem::take(&mut self.held);
                let used_from_input = held.len() - e;
                let line: Vec<u8> = held.drain(..e).collect();
                self.complete(&line, out, None);
                // What followed the line in this read is fed again.
                input.len() - used_from_input
            }
            _ if self.held.len() > limit => {
                let held = std::mem::take(&mut self.held);
                let refusal = if head {
                    Bad {
                        status: 431,
                        rule: format!("the request head is larger than {MAX_HEAD} bytes"),
                    }
                } else if self.state == State::Trailer {
                    Bad {
                        status: 431,
                        rule: format!("the trailer section is larger than {MAX_HEAD} bytes"),
                    }
                } else {
                    bad(format!(
                        "a chunk-size line is longer than {} bytes",
                        grammar::MAX_CHUNK_LINE
                    ))
                };
                // What is audited of it must not depend on how it was split
                // into reads: only the bytes up to the limit.
                self.refuse_line(&held[..=limit], refusal, out);
                input.len()
            }
            _ => input.len(),
        }
    }

    /// A complete head or line (with its CRLF, or CRLF CRLF for a head).
    /// `span` is where it is in the input when it was not held.
    fn complete(&mut self, line: &[u8], out: &mut Out<'_>, span: Option<(usize, usize)>) {
        let release = |out: &mut Out<'_>| match span {
            Some((a, b)) => out.pass(a, b),
            None => out.emit(line),
        };
        match self.state {
            State::Head => {
                if line.iter().all(|&b| b == b'\r' || b == b'\n') {
                    // Empty lines before a request-line (RFC 9112 §2.2).
                    return release(out);
                }
                match grammar::request_head(line) {
                    Ok(h) => {
                        release(out);
                        self.next += 1;
                        self.may_tunnel = h.may_tunnel;
                        self.state = match h.body {
                            BodyKind::None => self.message_end(),
                            BodyKind::Length(n) => State::Length(n),
                            BodyKind::Chunked => State::ChunkLine,
                        };
                    }
                    Err(b) => {
                        self.refuse_head(line, b);
                        out.emit(SENTINEL);
                    }
                }
            }
            State::ChunkLine => {
                let text = &line[..line.len() - 2];
                match grammar::chunk_line(text) {
                    Ok(0) => {
                        release(out);
                        self.trailer_bytes = 0;
                        self.state = State::Trailer;
                    }
                    Ok(n) => {
                        release(out);
                        self.state = State::ChunkData(n);
                    }
                    Err(b) => self.fail_body(b),
                }
            }
            State::Trailer => {
                let text = &line[..line.len() - 2];
                self.trailer_bytes += line.len();
                if text.is_empty() {
                    release(out);
                    self.state = self.message_end();
                } else {
                    match grammar::field_line(text) {
                        Ok(_) => release(out),
                        Err(b) => self.fail_body(b),
                    }
                }
            }
            _ => {}
        }
    }

    /// After a whole request: the next head, or, after a request that may
    /// switch protocols, nothing until the handler's verdict.
    fn message_end(&mut self) -> State {
        if !std::mem::take(&mut self.may_tunnel) {
            return State::Head;
        }
        let mut s = self.verdicts.lock();
        s.awaiting = Some(self.next - 1);
        s.tunnel = None;
        State::AwaitTunnel
    }

    /// A line that could not complete (bare CR/LF, too long).
    fn refuse_line(&mut self, line: &[u8], b: Bad, out: &mut Out<'_>) {
        if self.state == State::Head {
            self.refuse_head(line, b);
            out.emit(SENTINEL);
        } else {
            self.fail_body(b);
        }
    }

    fn refuse_head(&mut self, head: &[u8], b: Bad) {
        let (method, target) = grammar::request_line_parts(head);
        let refusal = Refusal {
            index: self.next,
            status: b.status,
            rule: b.rule,
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        self.next += 1;
        self.verdicts.lock().refusal = Some(refusal);
        self.held.clear();
        self.state = State::Dead;
    }

    /// A framing error inside request `next - 1`'s body.
    fn fail_body(&mut self, b: Bad) {
        let refusal = Refusal {
            index: self.next.saturating_sub(1),
            status: b.status,
            rule: b.rule,
            method: String::new(),
            target: String::new(),
        };
        self.verdicts.lock().refusal = Some(refusal);
        self.held.clear();
        self.state = State::Failed;
    }
}

/// Where `needle` (a line end: `\r\n` or `\r\n\r\n`) ends in `hay`.
/// Why: a scan for LF and a look back, not a slice compare per byte; this
/// runs over every head on the hot path.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let n = needle.len();
    let mut from = n - 1;
    while from < hay.len() {
        let i = from + memchr::memchr(b'\n', &hay[from..])?;
        if i + 1 >= n && &hay[i + 1 - n..=i] == needle {
            return Some(i + 1);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests;
