//! RFC 9112's strict forms, as pure functions over bytes: the request head
//! (request-line and field lines), the chunk-size line with its
//! extensions, and trailer field lines. No leniency: CRLF only, no
//! obs-fold, no whitespace before a colon, one Host, one Content-Length of
//! digits, `chunked` as the only transfer coding.

/// Why: hyper's own default; a head with more fields is refused by the gate
/// (431, audited) before hyper could refuse it unaudited.
pub const MAX_HEADERS: usize = 100;
/// Why: a chunk-size line is a size and a few extensions; anything longer
/// is an attack on the parser, not a body.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Why: 16 hex digits is every u64; more digits (even leading zeros) is
/// how length-overflow smuggling starts.
pub const MAX_CHUNK_DIGITS: usize = 16;
/// Why: 19 decimal digits always fit a u64.
const MAX_LENGTH_DIGITS: usize = 19;

/// A refused form: the status the client gets and the rule it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub status: u16,
    pub rule: String,
}

pub fn bad(rule: impl Into<String>) -> Bad {
    Bad {
        status: 400,
        rule: rule.into(),
    }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// A head that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub body: BodyKind,
    /// CONNECT, or an `Upgrade` request: what follows may not be HTTP.
    pub may_tunnel: bool,
}

/// RFC 9110 tchar.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// [`is_tchar`] as a table: field names are checked byte by byte on every head.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A field value byte: HTAB, SP, VCHAR or obs-text (RFC 9110 §5.5).
fn is_field_byte(b: u8) -> bool {
    b != 0x7f && (b >= 0x20 || b == b'\t')
}

/// An origin-form target (`/path?query`) made only of bytes the `http`
/// crate's URI parser takes in a path and in a query alike, so it would
/// accept the target (`http` 1.x, `PathAndQuery::from_shared`). Why: the
/// common target skips a second parse and its copy into `Bytes`; anything
/// else (`#`, `"`, `{`, non-ASCII, absolute-form, `*`) is still asked of
/// `http::Uri`. The `request_stream` fuzz target holds the two to agreeing.
pub fn plain_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/') && target.iter().all(|&b| PLAIN_TARGET[b as usize])
}

/// The bytes of [`plain_origin_form`], as a table (one load per byte).
static PLAIN_TARGET: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] =
            matches!(b as u8, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7A | 0x7C | 0x7E);
        b += 1;
    }
    t
};

/// Where a bare CR or LF is in `buf[from..]` (a CR must be followed by LF,
/// a LF preceded by CR). A CR as the very last byte is not yet an error.
/// Returns its position and the rule.
pub fn bare_cr_or_lf(buf: &[u8], from: usize) -> Option<(usize, &'static str)> {
    // Why: a head has a few line ends in a few hundred bytes; memchr finds
    // them without a branch per byte.
    for i in memchr::memchr2_iter(b'\r', b'\n', &buf[from..]).map(|i| i + from) {
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => return Some((i, "a line ends in a bare LF")),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Some((i, "a bare CR that does not end a line"))
            }
            _ => {}
        }
    }
    None
}

/// The request-line's method and target, as far as they can be read, for
/// the audit record of a refused head.
pub fn request_line_parts(head: &[u8]) -> (&[u8], &[u8]) {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let line = &head[start..];
    let end = line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let line = &line[..end];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    (method, target)
}

/// One field line without its CRLF: `name ":" OWS value OWS`.
/// Returns the name and the trimmed value.
pub fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Bad> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(bad(
            "obsolete line folding (a field line starts with whitespace)",
        ));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad("a field line has no colon"))?;
    let name = &line[..colon];
    if name.is_empty() {
        return Err(bad("a field line has an empty name"));
    }
    if !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad(
            "a field name has a byte that is not a token character (whitespace before the colon?)",
        ));
    }
    let value = &line[colon + 1..];
    if let Some(b) = value.iter().find(|&&b| !is_field_byte(b)) {
        return Err(bad(format!("a field value has the control byte 0x{b:02x}")));
    }
    let trim = |v: &'_ [u8]| -> usize {
        v.iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(v.len())
    };
    let start = trim(value);
    let value = &value[start..];
    let end = value.len()
        - value
            .iter()
            .rev()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(value.len());
    Ok((name, &value[..end]))
}

/// `buf.split(|&b| b == b'\n')`, with memchr finding the line ends.
fn split_lf(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut ends = memchr::memchr_iter(b'\n', buf);
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        match ends.next() {
            Some(e) => {
                start = Some(e + 1);
                Some(&buf[from..e])
            }
            None => {
                start = None;
                Some(&buf[from..])
            }
        }
    })
}

/// A complete head: optional leading empty lines, the request-line, field
/// lines, and the final empty line (`head` ends with CRLF CRLF and has no
/// bare CR or LF).
pub fn request_head(head: &[u8]) -> Result<Head, Bad> {
    let mut lines = split_lf(head).map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut request_line = lines.next().unwrap_or_default();
    while request_line.is_empty() {
        request_line = lines
            .next()
            .ok_or_else(|| bad("the request has no request-line"))?;
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "the request-line is not `method SP request-target SP HTTP-version`",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("the method is not a token"));
    }
    if target.is_empty() {
        return Err(bad("the request-target is empty"));
    }
    if let Some(b) = target.iter().find(|&&b| !(0x21..=0x7e).contains(&b)) {
        return Err(bad(format!(
            "the request-target has the byte 0x{b:02x} (only visible ASCII is allowed)"
        )));
    }
    // Why: what hyper's URI parser would refuse (`<`, `>`, a bad
    // authority) must be refused here, where it is audited.
    if !plain_origin_form(target) && http::Uri::try_from(target).is_err() {
        return Err(bad("the request-target is not a valid URI"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(bad("the HTTP version is not HTTP/1.1 or HTTP/1.0")),
    };
    let connect = method == b"CONNECT";
    let mut fields = 0usize;
    let mut hosts = 0usize;
    let mut length: Option<u64> = None;
    let mut codings: Vec<Vec<u8>> = Vec::new();
    let mut te_seen = false;
    let mut upgrade = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        fields += 1;
        if fields > MAX_HEADERS {
            return Err(Bad {
                status: 431,
                rule: format!("more than {MAX_HEADERS} header fields"),
            });
        }
        let (name, value) = field_line(line)?;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            length = Some(content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for c in value.split(|&b| b == b',') {
                codings.push(trim_ows(c).to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    match (http10, hosts) {
        (false, 1) | (true, 0) | (true, 1) => {}
        (false, 0) => return Err(bad("an HTTP/1.1 request without a Host header")),
        _ => return Err(bad("more than one Host header")),
    }
    let body = match (te_seen, length) {
        (true, Some(_)) => {
            return Err(bad(
                "conflicting framing: Content-Length and Transfer-Encoding together (request smuggling)",
            ))
        }
        (true, None) => {
            if http10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            transfer_coding(&codings)?
        }
        (false, Some(0)) | (false, None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };
    if connect && body != BodyKind::None {
        return Err(bad("a CONNECT request with a body"));
    }
    Ok(Head {
        body,
        may_tunnel: connect || upgrade,
    })
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let v = &v[start..];
    let end = v.len()
        - v.iter()
            .rev()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(v.len());
    &v[..end]
}

fn content_length(v: &[u8]) -> Result<u64, Bad> {
    if v.is_empty() || v.len() > MAX_LENGTH_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad("Content-Length is not 1 to 19 decimal digits"));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("Content-Length is out of range"))
}

fn transfer_coding(codings: &[Vec<u8>]) -> Result<BodyKind, Bad> {
    if codings
        .iter()
        .any(|c| c.is_empty() || !c.iter().all(|&b| is_tchar(b)))
    {
        return Err(bad("Transfer-Encoding is not a list of codings"));
    }
    match codings {
        [only] if only == b"chunked" => Ok(BodyKind::Chunked),
        [.., last] if last != b"chunked" => Err(bad(
            "Transfer-Encoding does not end in chunked, so the body has no framing",
        )),
        _ => Err(Bad {
            status: 501,
            rule: "only the chunked transfer coding is supported on requests".into(),
        }),
    }
}

/// A chunk-size line without its CRLF: `1*16HEXDIG *( BWS ";" BWS
/// token [ BWS "=" BWS ( token / quoted-string ) ] )`. Returns the size.
pub fn chunk_line(line: &[u8]) -> Result<u64, Bad> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("a chunk-size line does not start with a hex size"));
    }
    if digits > MAX_CHUNK_DIGITS {
        return Err(bad(format!(
            "a chunk size has more than {MAX_CHUNK_DIGITS} hex digits"
        )));
    }
    let size = std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| bad("a chunk size is out of range"))?;
    let mut i = digits;
    let bws = |i: &mut usize| {
        while line.get(*i).is_some_and(|&b| b == b' ' || b == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> bool {
        let start = *i;
        while line.get(*i).is_some_and(|&b| is_tchar(b)) {
            *i += 1;
        }
        *i > start
    };
    while i < line.len() {
        bws(&mut i);
        if line.get(i) != Some(&b';') {
            return Err(bad("a chunk extension does not start with `;`"));
        }
        i += 1;
        bws(&mut i);
        if !token(&mut i) {
            return Err(bad("a chunk extension has no name"));
        }
        let before = i;
        bws(&mut i);
        if line.get(i) != Some(&b'=') {
            i = before;
            continue;
        }
        i += 1;
        bws(&mut i);
        if line.get(i) == Some(&b'"') {
            i = quoted_string(line, i + 1)?;
        } else if !token(&mut i) {
            return Err(bad(
                "a chunk extension value is neither a token nor a quoted string",
            ));
        }
    }
    Ok(size)
}

/// After the opening quote at `i`: qdtext and quoted-pairs up to the
/// closing quote. Returns the index after it.
fn quoted_string(line: &[u8], mut i: usize) -> Result<usize, Bad> {
    let qd = |b: u8| {
        b == b'\t'
            || b == b' '
            || b == 0x21
            || (0x23..=0x5b).contains(&b)
            || (0x5d..=0x7e).contains(&b)
            || b >= 0x80
    };
    loop {
        match line.get(i) {
            None => return Err(bad("a quoted chunk extension is not terminated")),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match line.get(i + 1) {
                Some(&b) if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 => {
                    i += 2
                }
                _ => return Err(bad("a bad quoted-pair in a chunk extension")),
            },
            Some(&b) if qd(b) => i += 1,
            Some(&b) => {
                return Err(bad(format!(
                    "a quoted chunk extension has the control byte 0x{b:02x}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests;
