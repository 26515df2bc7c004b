//! Where a request goes: the one strict, canonical parse of a destination
//! (a CONNECT authority, a Host header, the authority of an absolute-form
//! URI or of a route URL), and host patterns. The canonical host is the
//! single value used for matching, for TLS SNI and for dialling, so the three
//! can never disagree. Anything ambiguous is refused, never guessed.

use super::Scheme;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    /// Lowercase, IDNA ASCII, no trailing dot; IPv6 in brackets.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("bad host: {0}")]
    Host(String),
    #[error("bad port: {0}")]
    Port(String),
    #[error("ambiguous path: {0}")]
    Path(String),
}

/// Parse `host[:port]` (a CONNECT authority, a Host header, the authority
/// of an absolute-form URI).
pub fn parse_authority(scheme: Scheme, authority: &str) -> Result<Destination, TargetError> {
    if authority.is_empty() {
        return Err(TargetError::Host("empty".into()));
    }
    if authority.chars().any(|c| {
        c.is_control()
            || c.is_whitespace()
            || c == '@'
            || c == '\\'
            || c == '/'
            || c == '?'
            || c == '#'
    }) {
        return Err(TargetError::Host(format!(
            "{authority:?} has characters a host cannot have (userinfo, path or whitespace)"
        )));
    }
    let (host_part, port_part) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| TargetError::Host(format!("{authority:?}: unclosed IPv6 bracket")))?;
        let inside = &rest[..end];
        if inside.contains('%') {
            return Err(TargetError::Host(format!(
                "{authority:?}: zone ids are not allowed"
            )));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(TargetError::Host(format!(
                    "{authority:?}: junk after the IPv6 address"
                )))
            }
        };
        (&authority[..end + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port_part {
        None => scheme.default_port(),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(TargetError::Port(format!("{p:?} is not 1-65535"))),
            }
        }
        Some(p) => return Err(TargetError::Port(format!("{p:?} is not a port number"))),
    };
    let host = canonical_host(host_part)?;
    Ok(Destination { scheme, host, port })
}

/// The canonical spelling of a host (no port): lowercase, IDNA ASCII, no
/// trailing dot, IPv6 in brackets. Requests and route URLs both go through
/// here, so a route's host and a request's host can never be spelt apart.
fn canonical_host(host_part: &str) -> Result<String, TargetError> {
    let trimmed = checked_labels(host_part)?;
    if let Some(fast) = plain_ascii_host(trimmed) {
        return Ok(fast);
    }
    slow_canonical_host(host_part, trimmed)
}

/// For the `authority` fuzz target: the fast path's spelling of a host
/// (no port), when it gives one, beside the full path's answer; the two
/// must be equal.
#[doc(hidden)]
pub fn fast_and_slow_answers(host_part: &str) -> Option<(String, Result<String, TargetError>)> {
    let trimmed = checked_labels(host_part).ok()?;
    let fast = plain_ascii_host(trimmed)?;
    Some((fast, slow_canonical_host(host_part, trimmed)))
}

/// No percent-encoding, no empty label; the host without its trailing dot.
fn checked_labels(host_part: &str) -> Result<&str, TargetError> {
    if host_part.contains('%') {
        return Err(TargetError::Host(format!(
            "{host_part:?}: percent-encoding is not allowed in a host"
        )));
    }
    let trimmed = host_part.strip_suffix('.').unwrap_or(host_part);
    if trimmed.is_empty()
        || trimmed.ends_with('.')
        || trimmed.starts_with('.')
        || trimmed.contains("..")
    {
        return Err(TargetError::Host(format!("{host_part:?}: empty label")));
    }
    Ok(trimmed)
}

/// The canonical spelling of the hosts routes actually use, without IDNA
/// or formatting: a dotted-quad IPv4 literal already in canonical form, or
/// a name made only of ASCII letters, digits and `-` whose labels IDNA
/// leaves alone (none starts with `xn--`) and whose last label cannot be
/// read as a number. Everything else (`None`) takes the full path, so this
/// never accepts what [`slow_canonical_host`] refuses, and spells alike
/// what both accept (`fast_and_slow_paths_agree` holds it to that).
/// `host` has no trailing dot and no empty label (checked by the caller).
fn plain_ascii_host(host: &str) -> Option<String> {
    let b = host.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
    {
        return None;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    // Why: WHATWG reads a host whose last label is a number (`1`, `0x7f`)
    // as IPv4; only the canonical dotted quad is taken here.
    if last.bytes().all(|c| c.is_ascii_digit())
        || last.len() >= 2 && last.as_bytes()[..2].eq_ignore_ascii_case(b"0x")
    {
        return canonical_dotted_quad(host).then(|| host.to_owned());
    }
    if host
        .split('.')
        .any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
    {
        return None; // punycode: IDNA decodes and validates it
    }
    Some(host.to_ascii_lowercase())
}

/// Four decimal parts 0-255 without leading zeros: the spelling
/// `Ipv4Addr`'s `Display` produces.
fn canonical_dotted_quad(host: &str) -> bool {
    let mut parts = 0;
    for p in host.split('.') {
        parts += 1;
        let ok = !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|c| c.is_ascii_digit())
            && (p.len() == 1 || !p.starts_with('0'))
            && p.parse::<u16>().is_ok_and(|n| n <= 255);
        if !ok || parts > 4 {
            return false;
        }
    }
    parts == 4
}

/// The full canonicalisation through `url::Host::parse` (IDNA, the WHATWG
/// IPv4 forms, IPv6).
fn slow_canonical_host(host_part: &str, trimmed: &str) -> Result<String, TargetError> {
    Ok(match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(d)) => {
            // Why again after IDNA: the mapping drops some code points
            // (U+034F, U+00AD) and turns U+3002 into `.`, which can make an
            // empty label the checks above could not see.
            if d.is_empty() || d.starts_with('.') || d.ends_with('.') || d.contains("..") {
                return Err(TargetError::Host(format!(
                    "{host_part:?}: empty label after IDNA mapping"
                )));
            }
            d.to_ascii_lowercase()
        }
        Ok(url::Host::Ipv4(ip)) => {
            // Why: `url` accepts 0x7f.1 and 2130706433 as IPv4; refuse any
            // spelling that is not the canonical dotted quad, so a route for
            // one address cannot be reached through a look-alike.
            if ip.to_string() != trimmed {
                return Err(TargetError::Host(format!(
                    "{trimmed:?} is a non-canonical IPv4 spelling of {ip}"
                )));
            }
            ip.to_string()
        }
        Ok(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Err(e) => return Err(TargetError::Host(format!("{trimmed:?}: {e}"))),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: one or more labels before the suffix, never the
    /// suffix itself. Holds `example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
                    // Why: the label before the suffix must be non-empty
                    // (`.example.com` is not a host).
                    && !host.starts_with('.')
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(a: &str) -> Destination {
        parse_authority(Scheme::Https, a).expect(a)
    }

    #[test]
    fn destinations_are_canonical() {
        assert_eq!(
            dest("API.Example.COM."),
            Destination {
                scheme: Scheme::Https,
                host: "api.example.com".into(),
                port: 443
            }
        );
        assert_eq!(dest("api.example.com:8443").port, 8443);
        assert_eq!(dest("bücher.example").host, "xn--bcher-kva.example");
        assert_eq!(dest("[::1]:9").host, "[::1]");
        assert_eq!(dest("127.0.0.1").host, "127.0.0.1");
    }

    #[test]
    fn hostile_authorities_are_refused() {
        for bad in [
            "",
            "user@api.example.com",
            "api.example.com@evil.net",
            "api.example.com:0",
            "api.example.com:99999",
            "api.example.com:",
            "api.example.com:443x",
            "[fe80::1%25eth0]",
            "[::1",
            "api..example.com",
            ".api.example.com",
            "api.example.com..",
            "api.example.com/x",
            "api.example.com\\x",
            "api%2eexample.com",
            "api.example.com\r\nx: y",
            "0x7f.1",
            "2130706433",
            "127.1",
            "api example.com",
        ] {
            assert!(
                parse_authority(Scheme::Https, bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    /// Found by the `authority` fuzz target: IDNA maps some code points to
    /// nothing (U+034F, U+00AD) and the ideographic full stop to `.`, so the
    /// empty-label checks done before the mapping let `!.\u{34f}` become
    /// the host `!.`, whose canonical spelling does not parse back to itself.
    #[test]
    fn idna_mapping_cannot_leave_an_empty_label() {
        for bad in [
            "!.\u{34f}",
            "api.example.com.\u{34f}",
            "api.example.com.\u{ad}:443",
            "api.example.com\u{3002}",
            "api.\u{34f}.example.com",
            "\u{ad}.example.com",
            "api\u{3002}\u{3002}example.com",
        ] {
            assert!(
                parse_authority(Scheme::Https, bad).is_err(),
                "{bad:?} should be refused, got {:?}",
                parse_authority(Scheme::Https, bad)
            );
        }
        // A mapping that leaves every label non-empty is IDNA's business:
        // the canonical host is the mapped one, and it re-parses to itself.
        let d = dest("api.exa\u{34f}mple.com");
        assert_eq!(d.host, "api.example.com");
        assert_eq!(dest(&format!("{}:{}", d.host, d.port)), d);
    }

    /// The fast path for plain ASCII hosts must agree with the full
    /// canonicalisation wherever it answers: on a corpus of tricky
    /// spellings, and on many generated ones over an alphabet of the
    /// characters that matter (letters of both cases, digits, `-`, `.`,
    /// `x`, `%`, `:`, non-ASCII).
    #[test]
    fn fast_and_slow_paths_agree() {
        let mut corpus: Vec<String> = [
            "api.example.com",
            "API.Example.COM",
            "api.example.com.",
            "API.EXAMPLE.COM.",
            "localhost",
            "a",
            "a-b.c-d",
            "-a.b-",
            "a--b.example",
            "ab--cd.example",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.example",
            "xn--.example",
            "xn--zz.example",
            "a.xn--",
            "bücher.example",
            "BÜCHER.example",
            "api.exa\u{34f}mple.com",
            "\u{3002}",
            "example\u{3002}com",
            "127.0.0.1",
            "127.000.000.001",
            "127.0.0.01",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3.4.5",
            "1.2.3",
            "0x7f.1",
            "0X7F.0.0.1",
            "0x7f.0.0.1",
            "127.1",
            "2130706433",
            "017700000001",
            "a.1",
            "a.0x",
            "a.0x1",
            "1a.2b",
            "a.-1",
            "api%2eexample.com",
            "%41",
            "[::1]",
            "[::FFFF:127.0.0.1]",
            "[0:0:0:0:0:0:0:1]",
            "[fe80::1]",
            "::1",
            "a_b.example",
            "a..b",
            ".a",
            "a.",
            "",
            "ſ.example",
            "K.example",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        corpus.push(format!("{}.example", "a".repeat(64)));
        corpus.push(format!("{}.example", "a".repeat(63)));
        corpus.push(vec!["abcdefghij"; 30].join("."));
        // Generated: a fixed xorshift sequence, so a failure reproduces.
        let alphabet: Vec<char> = "aAzZ09x-.%:0.1.éK_".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 12) as usize;
            for i in 0..len {
                let k = (seed >> (i * 5 % 59)) as usize % alphabet.len();
                s.push(alphabet[k]);
            }
            corpus.push(s);
        }
        let mut fast_answers = 0;
        for h in &corpus {
            let slow = checked_labels(h).and_then(|t| slow_canonical_host(h, t));
            assert_eq!(
                canonical_host(h),
                slow,
                "{h:?}: fast and slow paths disagree"
            );
            if let Ok(t) = checked_labels(h) {
                if let Some(fast) = plain_ascii_host(t) {
                    fast_answers += 1;
                    assert_eq!(Ok(fast), slow, "{h:?}");
                }
            }
        }
        // Why: a fast path that never answers would pass the loop above.
        assert!(fast_answers > 1_000, "fast path answered {fast_answers}");
        assert_eq!(plain_ascii_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            plain_ascii_host("API.Example.COM").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(plain_ascii_host("127.1"), None);
        assert_eq!(plain_ascii_host("xn--bcher-kva.example"), None);
    }

    #[test]
    fn wildcards_match_one_or_more_labels_never_the_bare_suffix() {
        let p = HostPattern::Suffix("example.com".into());
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("evilexample.com"));
        assert!(!p.matches("example.com.evil.net"));
        assert!(!p.matches(".example.com"));
    }
}
