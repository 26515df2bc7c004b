use super::*;

/// Feed `input` in pieces of the given sizes (cycled); returns what hyper
/// would see, the refusal, and whether a body error is pending.
fn run(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<Refusal>, bool) {
    let (mut gate, verdicts) = Gate::new();
    let mut seen = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < input.len() {
        let n = sizes[k % sizes.len()].max(1).min(input.len() - at);
        k += 1;
        let piece = &input[at..at + n];
        at += n;
        match gate.feed(piece) {
            Released::Prefix(p) => seen.extend_from_slice(&piece[..p]),
            Released::Copied(v) => seen.extend_from_slice(&v),
        }
    }
    let refusal = verdicts.lock().refusal.clone();
    (seen, refusal, gate.state == State::Failed)
}

fn whole(input: &[u8]) -> (Vec<u8>, Option<Refusal>, bool) {
    run(input, &[usize::MAX])
}

/// The verdict and the bytes released must not depend on how the input
/// was split into reads.
fn same_for_every_split(input: &[u8]) {
    let expect = whole(input);
    for sizes in [&[1][..], &[2], &[3], &[7], &[1, 5, 2], &[13, 1]] {
        assert_eq!(
            run(input, sizes),
            expect,
            "split {sizes:?} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn good_streams_pass_unchanged_and_in_place() {
    let good: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"y\"\r\nhello\r\n0\r\nT: v\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for g in good {
        let (seen, refusal, failed) = whole(g);
        assert_eq!(seen, *g);
        assert_eq!((refusal, failed), (None, false));
        same_for_every_split(g);
        let (mut gate, _) = Gate::new();
        assert_eq!(
            gate.feed(g),
            Released::Prefix(g.len()),
            "no copy when whole"
        );
    }
}

#[test]
fn a_refused_head_becomes_the_sentinel_after_what_came_before() {
    let input = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET /bad\x01 HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n";
    let (seen, refusal, _) = whole(input);
    let mut expect = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    expect.extend_from_slice(SENTINEL);
    assert_eq!(seen, expect);
    let r = refusal.expect("refused");
    assert_eq!((r.index, r.status), (1, 400));
    assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/bad\u{1}"));
    same_for_every_split(input);
}

#[test]
fn bare_line_ends_are_refused_without_waiting_for_the_end_of_the_head() {
    // No CRLF CRLF ever comes: the refusal must not wait for one.
    let (seen, refusal, _) = whole(b"GET / HTTP/1.1\nHost: h\n\n");
    assert_eq!(seen, SENTINEL);
    assert!(refusal.expect("refused").rule.contains("bare LF"));
    same_for_every_split(b"GET / HTTP/1.1\nHost: h\n\n");
    let (_, refusal, _) = run(b"GET / HTTP/1.1\r\nHost: h\rX: y", &[1]);
    assert!(refusal.expect("refused").rule.contains("bare CR"));
}

#[test]
fn body_framing_errors_release_only_the_valid_prefix() {
    let head = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (body, valid) in [
        (&b"5\nhello\r\n0\r\n\r\n"[..], &b""[..]),
        (b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello"),
        (b"000000000000000000005\r\nhello\r\n0\r\n\r\n", b""),
        (
            b"5;a=\"x\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"",
        ),
        (b"5\r\nhello\r\n0\r\nT: a\n\r\n", b"5\r\nhello\r\n0\r\n"),
        (b"5\r\nhelloXY", b"5\r\nhello"),
    ] {
        let mut input = head.clone();
        input.extend_from_slice(body);
        let (seen, refusal, failed) = whole(&input);
        let mut expect = head.clone();
        expect.extend_from_slice(valid);
        assert_eq!(seen, expect, "{:?}", String::from_utf8_lossy(body));
        assert!(failed, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(refusal.expect("refused").index, 0);
        same_for_every_split(&input);
    }
}

#[test]
fn oversized_heads_and_lines_are_refused_with_their_limits() {
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
    let (_, refusal, _) = run(&big, &[4096]);
    assert_eq!(refusal.expect("431").status, 431);
    let mut line = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a=".to_vec();
    line.extend(std::iter::repeat_n(b'b', grammar::MAX_CHUNK_LINE));
    let (_, refusal, failed) = run(&line, &[100]);
    assert!(failed && refusal.expect("refused").rule.contains("chunk-size line"));
}

#[test]
fn after_a_connect_nothing_is_read_until_the_verdict() {
    let connect = b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n";
    let mut input = connect.to_vec();
    input.extend_from_slice(b"\x16\x03\x01 not http\r\n\r\n");
    let (mut gate, verdicts) = Gate::new();
    assert_eq!(gate.feed(&input), Released::Prefix(connect.len()));
    let waker = std::task::Waker::noop();
    assert!(gate.before_read(waker).is_none(), "waits for the verdict");
    // Refused (407): the next bytes are read as a request again.
    verdicts.settle_tunnel(0, false);
    assert!(matches!(gate.before_read(waker), Some(Ok(()))));
    let stash = gate.take_stash().expect("stash");
    assert!(matches!(gate.feed(&stash), Released::Copied(v) if v == SENTINEL));
    // Accepted: the tunnel's bytes pass untouched.
    let (mut gate, verdicts) = Gate::new();
    gate.feed(&input);
    verdicts.settle_tunnel(0, true);
    assert!(matches!(gate.before_read(waker), Some(Ok(()))));
    let stash = gate.take_stash().expect("stash");
    assert_eq!(gate.feed(&stash), Released::Prefix(stash.len()));
    assert!(gate.is_open());
}

#[test]
fn a_body_error_is_returned_once_then_nothing_more_is_read() {
    let (mut gate, _) = Gate::new();
    gate.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let waker = std::task::Waker::noop();
    let err = gate.before_read(waker).expect("error").expect_err("error");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(gate.before_read(waker).is_none());
}

#[test]
fn an_upgrade_request_with_a_body_waits_for_the_verdict_after_its_body() {
    let head = b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n";
    let mut input = head.to_vec();
    input.extend_from_slice(b"abc\x81\x05frame");
    let (mut gate, verdicts) = Gate::new();
    assert_eq!(gate.feed(&input), Released::Prefix(head.len() + 3));
    let waker = std::task::Waker::noop();
    assert!(gate.before_read(waker).is_none());
    verdicts.settle_tunnel(0, true);
    assert!(matches!(gate.before_read(waker), Some(Ok(()))));
    let stash = gate.take_stash().expect("the frame waited");
    assert_eq!(stash, b"\x81\x05frame");
}

#[test]
fn line_ends_are_found_where_they_end() {
    assert_eq!(find(b"a\r\n\r\nb", b"\r\n\r\n"), Some(5));
    assert_eq!(find(b"\r\n\r\n", b"\r\n\r\n"), Some(4));
    assert_eq!(find(b"\n\r\n\r\n", b"\r\n\r\n"), Some(5));
    assert_eq!(find(b"a\r\n\n\r\n", b"\r\n\r\n"), None);
    assert_eq!(find(b"\r\n", b"\r\n"), Some(2));
    assert_eq!(find(b"\n", b"\r\n"), None);
    assert_eq!(find(b"ab\nc\r\n", b"\r\n"), Some(6));
    assert_eq!(find(b"", b"\r\n"), None);
}

/// Found by the request_stream fuzz target: a chunk-size line over the
/// limit with a bare CR past the limit was refused as "bare CR" when it
/// arrived whole and as "too long" when it arrived in pieces.
#[test]
fn a_long_line_is_refused_for_the_same_reason_however_it_is_split() {
    let mut input =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a=".to_vec();
    input.extend(std::iter::repeat_n(b'b', grammar::MAX_CHUNK_LINE + 10));
    input.extend_from_slice(b"\rx\r\n");
    same_for_every_split(&input);
    let (_, refusal, _) = whole(&input);
    assert!(refusal.expect("refused").rule.contains("longer than"));
    let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', MAX_HEAD));
    head.extend_from_slice(b"\n\r\n");
    same_for_every_split(&head);
    assert_eq!(whole(&head).1.expect("431").status, 431);
}
