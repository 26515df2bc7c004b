//! The grammar's hostile and edge cases, one rule at a time.

use super::*;

fn head(s: &str) -> Result<Head, Bad> {
    request_head(s.as_bytes())
}

#[test]
fn strict_heads_pass_and_say_how_the_body_is_framed() {
    let h = head("GET /x HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\n").expect("ok");
    assert_eq!(h.body, BodyKind::None);
    let h = head("\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").expect("ok");
    assert_eq!(h.body, BodyKind::Length(12));
    let h = head("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").expect("ok");
    assert_eq!(h.body, BodyKind::Chunked);
    let h = head("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").expect("ok");
    assert!(h.may_tunnel);
    let h = head("GET / HTTP/1.0\r\n\r\n").expect("1.0 without Host");
    assert!(!h.may_tunnel);
    let h = request_head(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\n\r\n")
        .expect("obs-text");
    assert_eq!(h.body, BodyKind::None);
}

#[test]
fn every_lenient_form_is_refused_with_its_rule() {
    let cases: &[(&[u8], u16, &str)] = &[
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400, "token"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "folding"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "0x00"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400, "0x7f"),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "0x01"),
        (b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400, "0xff"),
        (b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request-line"),
        (b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n", 400, "version"),
        (b"GET /a<b> HTTP/1.1\r\nHost: a\r\n\r\n", 400, "not a valid URI"),
        (b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "not a valid URI"),
        (b"CONNECT a:b:c HTTP/1.1\r\nHost: a\r\n\r\n", 400, "not a valid URI"),
        (b"GET /x HTTP/1.1\r\n\r\n", 400, "without a Host"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "more than one Host"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400, "more than one"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400, "digits"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 400, "digits"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "digits"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "conflicting"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "does not end in chunked"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "only the chunked"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "only the chunked"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, "does not end in chunked"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400, "list of codings"),
        (b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 400, "CONNECT request with a body"),
    ];
    for (raw, status, rule) in cases {
        let e = request_head(raw).expect_err(&String::from_utf8_lossy(raw));
        assert_eq!(
            e.status,
            *status,
            "{:?}: {e:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(
            e.rule.contains(rule),
            "{:?}: {e:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X: y\r\n".repeat(MAX_HEADERS)
    );
    assert_eq!(head(&many).expect_err("431").status, 431);
}

#[test]
fn bare_line_ends_are_found_as_soon_as_they_arrive() {
    assert_eq!(
        bare_cr_or_lf(b"GET / HTTP/1.1\r\nHost: a\n", 0).map(|b| b.0),
        Some(23)
    );
    assert!(bare_cr_or_lf(b"\n", 0).is_some());
    assert!(bare_cr_or_lf(b"a\rb", 0).is_some());
    assert!(
        bare_cr_or_lf(b"GET / HTTP/1.1\r", 0).is_none(),
        "CR at the end may be followed by LF"
    );
    assert!(bare_cr_or_lf(b"a\r\nb\r\n", 0).is_none());
    assert!(
        bare_cr_or_lf(b"\r\n", 1).is_none(),
        "the CR before `from` counts"
    );
}

#[test]
fn chunk_lines_are_sizes_with_strict_extensions() {
    assert_eq!(chunk_line(b"5"), Ok(5));
    assert_eq!(chunk_line(b"fFfF"), Ok(0xffff));
    assert_eq!(chunk_line(b"ffffffffffffffff"), Ok(u64::MAX));
    assert_eq!(chunk_line(b"5;a"), Ok(5));
    assert_eq!(chunk_line(b"5 ; a = b ;c=\"x \\\" y\""), Ok(5));
    for bad_line in [
        &b""[..],
        b";a",
        b"x",
        b"00000000000000005",
        b"5;",
        b"5;=x",
        b"5;a=",
        b"5;a=\"x",
        b"5;a=\"x\x01\"",
        b"5;a=\"x\\\x01\"",
        b"5 ",
        b"5;a ",
        b"5x",
        b"-5",
        b"0x5",
    ] {
        assert!(
            chunk_line(bad_line).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad_line)
        );
    }
}

#[test]
fn field_lines_trim_ows_and_keep_obs_text() {
    assert_eq!(field_line(b"X:  a b \t"), Ok((&b"X"[..], &b"a b"[..])));
    assert_eq!(field_line(b"X:"), Ok((&b"X"[..], &b""[..])));
    assert!(field_line(b" X: a").is_err());
    assert!(field_line(b"X a").is_err());
    assert!(field_line(b":a").is_err());
}

#[test]
fn request_line_parts_read_what_they_can() {
    assert_eq!(
        request_line_parts(b"\r\nGET /a\x01 HTTP/1.1\r\n"),
        (&b"GET"[..], &b"/a\x01"[..])
    );
    assert_eq!(request_line_parts(b"GARBAGE"), (&b"GARBAGE"[..], &b""[..]));
}

/// The origin-form shortcut only takes targets `http::Uri` accepts, and it
/// does take the ones clients send (else it would save nothing).
#[test]
fn plain_origin_form_takes_only_what_http_uri_accepts() {
    let mut taken = 0;
    for b in 0..=255u8 {
        for (pre, post) in [
            (&b"/a"[..], &b"c"[..]),
            (b"/a?x=", b"&y"),
            (b"/", b""),
            (b"", b"/"),
        ] {
            let t = [pre, &[b][..], post].concat();
            if plain_origin_form(&t) {
                taken += 1;
                assert!(http::Uri::try_from(&t[..]).is_ok(), "{t:?}");
            }
        }
    }
    // 87 bytes are in both the path and the query set of `http`, in the
    // three templates that start with `/`, plus `/` itself as byte 0.
    assert_eq!(taken, 87 * 3 + 1, "the shortcut took {taken}");
    for t in [
        "/",
        "/r/AbC-_x/api/v1/items?page=2&q=a%20b",
        "/v2/library/alpine/manifests/latest",
        "/repo.git/info/refs?service=git-upload-pack",
    ] {
        assert!(plain_origin_form(t.as_bytes()), "{t}");
    }
    for t in ["*", "http://h/", "/a#f", "/a\"b", "/a b", "/é", "/a<b"] {
        assert!(!plain_origin_form(t.as_bytes()), "{t}");
    }
}

/// The token table is RFC 9110's tchar, byte for byte.
#[test]
fn tchar_table_is_rfc_9110s_tchar() {
    for b in 0..=255u8 {
        let rfc = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_tchar(b), rfc, "byte 0x{b:02x}");
    }
}

/// The field-byte test is RFC 9110's HTAB / SP / VCHAR / obs-text.
#[test]
fn field_bytes_are_htab_sp_vchar_and_obs_text() {
    for b in 0..=255u8 {
        let rfc = b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
        assert_eq!(is_field_byte(b), rfc, "byte 0x{b:02x}");
    }
}

/// Lines are split exactly as `split` on LF would split them.
#[test]
fn split_lf_is_split_on_lf() {
    for s in [
        "",
        "\n",
        "a",
        "a\n",
        "\na",
        "a\nb\n\nc",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let ours: Vec<&[u8]> = split_lf(s.as_bytes()).collect();
        let std: Vec<&[u8]> = s.as_bytes().split(|&b| b == b'\n').collect();
        assert_eq!(ours, std, "{s:?}");
    }
}
