"""A hostile HTTP/1.1 client, run inside `lanyard run` (it reads the
environment lanyard exports). It sends hand-made request bytes, each case on
a new connection, and prints one JSON line per case:
{"case", "statuses": [int...], "closed": bool, "body": str}.

Modes:
  tunnel   CONNECT to the routed upstream ($UP), TLS with lanyard's CA,
           then the raw bytes inside the intercepted tunnel;
  reverse  the raw bytes straight to the listener, on the reverse route
           ($LANYARD_URL_API), as a tool that ignores proxy variables.

Each case's path carries a marker `case-<name>`, so the test can look for it
at the upstream and in the audit file.
"""

import base64
import json
import os
import re
import socket
import ssl
import sys
import time


def cases(p, h):
    """p: the path prefix that reaches the route; h: the Host value."""
    c = {}

    def add(name, raw):
        """raw: bytes or text sent in one write, or a tuple of parts sent in
        separate writes with a wait between them."""
        parts = raw if isinstance(raw, tuple) else (raw,)
        c[name] = tuple(p if isinstance(p, bytes) else p.encode() for p in parts)

    chunked = f"Host: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
    # Framing inside the body (item 1): nothing may reach the upstream.
    add("ext-unterminated-quote",
        f"POST {p}/case-equote HTTP/1.1\r\n{chunked}5;a=\"x\r\nhello\r\n0\r\n\r\n"
        f"GET {p}/case-equote-smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n")
    add("lf-after-size", f"POST {p}/case-lfsize HTTP/1.1\r\n{chunked}5\nhello\r\n0\r\n\r\n")
    add("lf-after-data", f"POST {p}/case-lfdata HTTP/1.1\r\n{chunked}5\r\nhello\n0\r\n\r\n")
    add("size-21-digits",
        f"POST {p}/case-size21 HTTP/1.1\r\n{chunked}000000000000000000005\r\nhello\r\n0\r\n\r\n")
    add("ext-no-name", f"POST {p}/case-extnoname HTTP/1.1\r\n{chunked}5;=x\r\nhello\r\n0\r\n\r\n")
    add("ext-too-long",
        f"POST {p}/case-extlong HTTP/1.1\r\n{chunked}5;a={'b' * 5000}\r\nhello\r\n0\r\n\r\n")
    add("cr-in-size-line", f"POST {p}/case-crsize HTTP/1.1\r\n{chunked}5\r\rhello\r\n0\r\n\r\n")
    add("trailer-bare-lf",
        f"POST {p}/case-trailerlf HTTP/1.1\r\n{chunked}5\r\nhello\r\n0\r\nX-T: a\n\r\n")
    # A valid head and first chunk, then (in a second write) a bad chunk
    # line: lanyard must not have sent the head upstream while the rest of
    # the body was unread (the client waits between the writes; see WAIT).
    add("bad-chunk-after-a-pause",
        (f"POST {p}/case-pausechunk HTTP/1.1\r\n{chunked}5\r\nhello\r\n",
         "5\nworld\r\n0\r\n\r\n"))
    # Framing of the head (items 1 and 7).
    add("header-bare-lf", f"GET {p}/case-hdrlf HTTP/1.1\r\nHost: {h}\nX-A: b\r\n\r\n")
    add("request-line-bare-lf", f"GET {p}/case-rllf HTTP/1.1\nHost: {h}\r\n\r\n")
    add("bare-cr-in-value", f"GET {p}/case-barecr HTTP/1.1\r\nHost: {h}\r\nX-A: a\rb\r\n\r\n")
    add("ctl-in-path", f"GET {p}/case-ctl\x01\x1b[31m HTTP/1.1\r\nHost: {h}\r\n\r\n")
    add("nul-in-value", f"GET {p}/case-nul HTTP/1.1\r\nHost: {h}\r\nX-A: a\x00b\r\n\r\n")
    add("non-utf8-path", f"GET {p}/case-nonutf8".encode() + b"\xff\xfe\x80 HTTP/1.1\r\nHost: "
        + h.encode() + b"\r\n\r\n")
    add("long-header", f"GET {p}/case-long HTTP/1.1\r\nHost: {h}\r\nX-Long: {'a' * 20000}\r\n\r\n")
    add("many-headers", f"GET {p}/case-many HTTP/1.1\r\nHost: {h}\r\n"
        + "".join(f"X-H{i}: v\r\n" for i in range(150)) + "\r\n")
    add("cl-te", f"POST {p}/case-clte HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("two-cl", f"POST {p}/case-twocl HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\n"
        "Content-Length: 5\r\n\r\nabcde")
    add("cl-plus-sign", f"POST {p}/case-clplus HTTP/1.1\r\nHost: {h}\r\nContent-Length: +4\r\n\r\nabcd")
    add("te-gzip", f"POST {p}/case-tegzip HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    add("two-hosts", f"GET {p}/case-twohosts HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n")
    add("space-before-colon", f"GET {p}/case-spcolon HTTP/1.1\r\nHost: {h}\r\nX-A : b\r\n\r\n")
    add("obs-fold", f"GET {p}/case-obsfold HTTP/1.1\r\nHost: {h}\r\nX-A: a\r\n b\r\n\r\n")
    # Bytes hyper's own URI parser refuses: they must be refused, and
    # audited, by lanyard first.
    add("lt-in-path", f"GET {p}/case-ltpath<x> HTTP/1.1\r\nHost: {h}\r\n\r\n")
    add("bad-absolute-uri", f"GET http://[::1{p}/case-badabs HTTP/1.1\r\nHost: {h}\r\n\r\n")
    add("http-0.9-ish", f"GET {p}/case-version HTTP/1.2\r\nHost: {h}\r\n\r\n")
    # HTTP/2 with prior knowledge (the client preface, then a SETTINGS
    # frame): lanyard speaks only HTTP/1.1 to clients.
    add("h2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    # A good request, then a bad one on the same connection: the first is
    # answered, the second refused and the connection closed.
    add("pipelined-then-bad",
        f"GET {p}/case-pipegood HTTP/1.1\r\nHost: {h}\r\n\r\n"
        f"GET {p}/case-pipebad HTTP/1.1\r\nHost: {h}\nX: y\r\n\r\n")
    # Controls: strict, well-formed input still works.
    add("good-chunked",
        f"POST {p}/case-goodchunk HTTP/1.1\r\n{chunked}"
        "5;name=val;q=\"a \\\" b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    add("good-pipelined",
        f"GET {p}/case-goodpipe1 HTTP/1.1\r\nHost: {h}\r\n\r\n"
        f"POST {p}/case-goodpipe2 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    return c


def wait_for_upstream(marker, budget=2.0):
    """Between the writes of a split case: give lanyard the chance to
    misbehave. Returns as soon as the upstream's record file ($UP_RECORDS)
    shows a request for the case (it got the head early: the test fails on
    that), or after `budget` seconds without one (the expected outcome)."""
    path = os.environ["UP_RECORDS"]
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if any(marker in line for line in f):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)


def read_all(s, timeout):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return data, True


def statuses(data):
    # A pipelined answer follows the previous body directly (no CRLF).
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def main():
    mode = sys.argv[1]
    only = set(sys.argv[2:])
    proxy = os.environ["LANYARD_PROXY"]
    secret = proxy.split("@")[0].rsplit(":", 1)[1]
    lhost, lport = proxy.rsplit("@", 1)[1].split(":")
    up = os.environ["UP"]
    if mode == "tunnel":
        prefix, host = "/v1", f"127.0.0.1:{up}"
    else:
        base = os.environ["LANYARD_URL_API"]
        hostport, path = base[len("http://"):].split("/", 1)
        prefix, host = "/" + path, hostport
    for name, raw in cases(prefix, host).items():
        if only and name not in only:
            continue
        s = socket.create_connection((lhost, int(lport)))
        if mode == "tunnel":
            auth = base64.b64encode(f"lanyard:{secret}".encode()).decode()
            s.sendall(f"CONNECT 127.0.0.1:{up} HTTP/1.1\r\nHost: 127.0.0.1:{up}\r\n"
                      f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                got = s.recv(1)
                if not got:
                    break
                head += got
            assert head.startswith(b"HTTP/1.1 200"), head
            ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        for i, part in enumerate(raw):
            if i:
                wait_for_upstream(re.search(rb"case-[a-z0-9]+", raw[0]).group().decode())
            s.sendall(part)
        data, closed = read_all(s, 10)
        body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
        print(json.dumps({
            "case": name,
            "statuses": statuses(data),
            "closed": closed,
            "body": body.decode("utf-8", "replace")[:2000],
        }), flush=True)
        s.close()


main()
