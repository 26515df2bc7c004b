"""A hostile plain-HTTP upstream on raw sockets, for agent/tests/hostile_upstream.rs.

  python hostile.py --dir DIR --mode MODE [--count N] [--interval S] [--status C]
                    [--statuses S1,S2,... --retry-after SECONDS]

Binds 127.0.0.1:0 and prints one JSON ready line: {"port": P}. Every
connection and every request head it reads is appended as one JSON line to
DIR/events.jsonl:
  {"event": "connect", "conn": C}
  {"event": "request", "conn": C, "method", "path", "auth": <Authorization or null>}
so a test can tell how many upstream connections carried its requests.

Modes:
  clte      answers every request with BOTH Content-Length and
            Transfer-Encoding: chunked, and keeps the connection open for more
  hang      reads the request, then never answers (holds the socket open)
  drip      sends a head with Content-Length: 1000, then one body byte every
            --interval seconds
  echo      answers --status (default 403) with Tyk's {"error": "Key not
            authorized"} plus the request's Authorization echoed back in
            many shapes: whole, split in two halves, base64 and base64url of
            the header and of the bare token at every alignment, hex; a path
            ending in one shape's name (e.g. /x/b64url-token-1) echoes only
            that one; /x/in-error puts it in the error message itself
            ("Key not authorized: bad token <Authorization>"). What it sent is logged as {"event": "echo", "body"}
  huge      answers 200 with a body of --count MiB (default 64), sent as
            fast as the client reads it
  burst401  a request carrying the first Authorization value it ever saw gets
            401, but only once --count such requests have arrived (or 15 s
            passed), so they are all in flight at once; any other value gets 200
  sequence  a token endpoint (for agent/tests/first_exchange.rs): request n gets
            the n-th status of --statuses (the last repeats); 200 is an RFC 8693
            answer, 429/503 carry Retry-After: --retry-after when given, any
            other status an OAuth error body
"""

import base64
import json
import os
import socket
import sys
import threading
import time

LOCK = threading.Lock()
EVENTS = None
CONN_IDS = iter(range(1, 1 << 30))
FIRST_AUTH = []
HELD = threading.Condition(LOCK)
HELD_COUNT = [0]
STATUSES = []
SEQ = [0]
RETRY_AFTER = ""


def log(**event):
    with LOCK:
        with open(EVENTS, "a") as f:
            f.write(json.dumps(event) + "\n")


def read_head(sock, buf):
    """Returns (head bytes, rest) or (None, buf) when the peer closed."""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None, buf
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def parse(head):
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, path, headers


def answer(status, body, extra=""):
    reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}.get(status, "X")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n{body}"
    ).encode()


def echoes(auth):
    """The Authorization value echoed back the ways a careless upstream might."""
    auth = auth or ""
    token = auth.split(" ", 1)[1] if " " in auth else auth
    half = len(token) // 2
    out = {"error": "Key not authorized", "whole": auth,
           "first": token[:half], "second": token[half:],
           "hex": token.encode().hex()}
    for i, pre in enumerate(["", "x", "xy"]):
        for name, raw in (("header", auth), ("token", token)):
            data = (pre + raw).encode()
            out[f"b64-{name}-{i}"] = base64.b64encode(data).decode()
            out[f"b64url-{name}-{i}"] = base64.urlsafe_b64encode(data).decode().rstrip("=")
    return out


def serve(sock, mode, count, interval, status):
    conn = next(CONN_IDS)
    log(event="connect", conn=conn)
    buf = b""
    try:
        while True:
            head, buf = read_head(sock, buf)
            if head is None:
                return
            method, path, headers = parse(head)
            length = int(headers.get("content-length") or 0)
            while len(buf) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            auth = headers.get("authorization")
            log(event="request", conn=conn, method=method, path=path, auth=auth)
            if mode == "clte":
                body = b'{"ok":true}'
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n".encode()
                    + b"transfer-encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n0\r\n\r\n"
                )
            elif mode == "hang":
                while sock.recv(65536):
                    pass
                return
            elif mode == "drip":
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n")
                for _ in range(1000):
                    time.sleep(interval)
                    sock.sendall(b"x")
            elif mode == "echo":
                shapes = echoes(auth)
                last = path.rstrip("/").rsplit("/", 1)[-1]
                if last == "in-error":
                    shapes = {"error": "Key not authorized: bad token " + (auth or "")}
                elif last in shapes:
                    shapes = {"error": shapes["error"], last: shapes[last]}
                log(event="echo", conn=conn, body=shapes)
                sock.sendall(answer(status, json.dumps(shapes)))
            elif mode == "huge":
                size = count << 20
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             + f"content-length: {size}\r\n\r\n".encode())
                block = b"x" * 65536
                for _ in range(size // len(block)):
                    sock.sendall(block)
            elif mode == "burst401":
                with HELD:
                    if not FIRST_AUTH:
                        FIRST_AUTH.append(auth)
                    stale = auth == FIRST_AUTH[0]
                    if stale:
                        HELD_COUNT[0] += 1
                        HELD.notify_all()
                        HELD.wait_for(lambda: HELD_COUNT[0] >= count, timeout=15)
                if stale:
                    sock.sendall(answer(401, '{"error":"stale credential"}'))
                else:
                    sock.sendall(answer(200, '{"ok":true}'))
            elif mode == "sequence":
                # A token endpoint answering the statuses of --statuses in
                # turn (the last one repeats), with Retry-After on 429/503.
                with HELD:
                    status = STATUSES[min(SEQ[0], len(STATUSES) - 1)]
                    SEQ[0] += 1
                if status == 200:
                    body = json.dumps({"access_token": "sequence-issued-token-5e1f0c", "token_type": "Bearer",
                                       "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                                       "expires_in": 600})
                    sock.sendall(answer(200, body))
                elif status in (429, 503):
                    extra = f"retry-after: {RETRY_AFTER}\r\n" if RETRY_AFTER else ""
                    sock.sendall(answer(status, '{"error":"temporarily_unavailable"}', extra))
                else:
                    sock.sendall(answer(status, '{"error":"invalid_grant","error_description":"subject token refused"}'))
            else:
                raise SystemExit(f"unknown mode {mode}")
    except OSError:
        return
    finally:
        sock.close()


def main():
    global EVENTS
    args = sys.argv[1:]

    def opt(name, default=None):
        return args[args.index(name) + 1] if name in args else default

    EVENTS = os.path.join(opt("--dir"), "events.jsonl")
    open(EVENTS, "w").close()
    mode = opt("--mode")
    count = int(opt("--count", "1"))
    global RETRY_AFTER
    STATUSES.extend(int(x) for x in opt("--statuses", "200").split(","))
    RETRY_AFTER = opt("--retry-after", "")
    interval = float(opt("--interval", "1"))
    status = int(opt("--status", "403"))
    if mode == "huge" and "--count" not in args:
        count = 64
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    print(json.dumps({"port": srv.getsockname()[1]}), flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve, args=(sock, mode, count, interval, status), daemon=True).start()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
