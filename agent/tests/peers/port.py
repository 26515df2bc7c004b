"""A strict Port API (getport.io) peer, for agent/tests/port.rs.

  python port.py --dir DIR --client-id ID --client-secret SECRET
                 [--ttl S] [--stale-expires] [--echo-secret]
                 [--garbage notjson|okfalse|notoken|badtoken|basic|noexpiry|huge|html401]

There is no Port server that can run here; this peer enforces Port's
documented contract (docs.getport.io API reference) so that lanyard cannot
get away with less:

POST /v1/auth/access_token ("Create an access token"):
  - Content-Type application/json (else 415, Port's error shape);
  - the body a JSON object with exactly the string fields clientId and
    clientSecret (else 422 bad_request, "The json provided does not match
    the route's schema");
  - a wrong client id or secret: 401 {"ok":false,"error":"unauthorized",
    "message":"..."}; with --echo-secret the message quotes the secret it
    was sent (a hostile server: lanyard must redact it);
  - success: {"ok":true,"accessToken","expiresIn","tokenType":"Bearer"}.
    "For each set of API credentials, there can only be one active token at
    a time": while the token is valid the same one comes back, with the
    seconds it has left (--stale-expires: with the full --ttl again).

POST /v1/blueprints/<id>/entities?upsert=true ("Create an entity"):
  - Authorization: Bearer <a token this peer issued, unexpired> (else 401);
  - Content-Type application/json, a JSON object whose identifier is a
    string matching ^[A-Za-z0-9@_.:\\/=-]+$, title a string if given,
    properties an object if given, and no keys but identifier, title, icon,
    team, properties, relations (else 422 bad_request);
  - upsert=true in the query (else 409 entity_exists, as for an entity that
    is there);
  - answers 201 {"ok":true,"entity":{...}}.

--garbage answers the token request with something that is not the
contract, after checking it: notjson (HTML), okfalse ({"ok":false} with no
error), notoken (ok without accessToken), badtoken (an accessToken with a
CR LF in it), basic (tokenType Basic), noexpiry (no expiresIn), huge (a 2 MiB
JSON body), html401 (a 401 HTML page).

Binds 127.0.0.1:0 and prints one JSON ready line: {"port": P, "url": U}.
Every request is appended to DIR/requests.jsonl (never the secret: whether
it matched), every token issued to DIR/issued.jsonl (new ones only), every
entity upserted to DIR/entities.jsonl with the token it came with.
"""

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt

LOCK = threading.Lock()
ARGS = None
KEY = secrets.token_bytes(32)
ACTIVE = {}  # token -> exp (float)
CURRENT = {}  # "token": (token, exp)
IDENTIFIER = re.compile(r"^[A-Za-z0-9@_.:\\/=-]+$")
ENTITY_KEYS = {"identifier", "title", "icon", "team", "properties", "relations"}


def append(name, obj):
    with LOCK:
        with open(os.path.join(ARGS.dir, name), "a") as f:
            f.write(json.dumps(obj) + "\n")


class Refuse(Exception):
    def __init__(self, status, error, message):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def json_body(headers, raw):
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Refuse(415, "unsupported_media_type", f"Content-Type must be application/json, got {ctype!r}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except Exception:  # noqa: BLE001 - the peer refuses anything it cannot read
        raise Refuse(400, "bad_request", "The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refuse(422, "bad_request", "The json provided does not match the route's schema")
    return body


def issue():
    """Port's one active token per credentials: the same while it is valid."""
    now = time.time()
    with LOCK:
        cur = CURRENT.get("token")
        if cur and cur[1] > now:
            token, exp = cur
            left = ARGS.ttl if ARGS.stale_expires else int(exp - now)
            return token, left, False
        exp = now + ARGS.ttl
        token = jwt.encode({"iss": "port-peer", "sub": ARGS.client_id, "iat": int(now), "exp": int(exp),
                            "jti": secrets.token_hex(8)}, KEY, algorithm="HS256")
        CURRENT["token"] = (token, exp)
        ACTIVE[token] = exp
        return token, ARGS.ttl, True


def access_token(headers, raw):
    body = json_body(headers, raw)
    keys = sorted(body)
    cid, sec = body.get("clientId"), body.get("clientSecret")
    append("requests.jsonl", {"path": "/v1/auth/access_token", "keys": keys, "clientId": cid,
                              "secret_matches": sec == ARGS.client_secret,
                              "content_type": headers.get("Content-Type")})
    if keys != ["clientId", "clientSecret"] or not isinstance(cid, str) or not isinstance(sec, str):
        raise Refuse(422, "bad_request", "The json provided does not match the route's schema")
    if cid != ARGS.client_id or sec != ARGS.client_secret:
        msg = "Invalid client credentials"
        if ARGS.echo_secret:
            msg += f" (clientId {cid!r}, clientSecret {sec!r})"
        raise Refuse(401, "unauthorized", msg)
    token, left, new = issue()
    if new:
        append("issued.jsonl", {"access_token": token, "ttl": ARGS.ttl})
        if sum(1 for _ in open(os.path.join(ARGS.dir, "issued.jsonl"))) >= 2:
            open(os.path.join(ARGS.dir, "second-token"), "w").close()
    return {"ok": True, "accessToken": token, "expiresIn": left, "tokenType": "Bearer"}


def upsert(blueprint, query, headers, raw):
    auth = headers.get("Authorization") or ""
    scheme, _, token = auth.partition(" ")
    record = {"path": f"/v1/blueprints/{blueprint}/entities", "query": query, "authorization_scheme": scheme}
    exp = ACTIVE.get(token) if scheme == "Bearer" else None
    if exp is None or exp <= time.time():
        record["refused"] = "token"
        append("requests.jsonl", record)
        raise Refuse(401, "unauthorized", "Unauthorized: the access token is missing, invalid or expired")
    body = json_body(headers, raw)
    append("requests.jsonl", record)
    ident = body.get("identifier")
    if not isinstance(ident, str) or not IDENTIFIER.match(ident):
        raise Refuse(422, "bad_request", "The json provided does not match the route's schema: identifier")
    if "title" in body and not isinstance(body["title"], str):
        raise Refuse(422, "bad_request", "The json provided does not match the route's schema: title")
    if "properties" in body and not isinstance(body["properties"], dict):
        raise Refuse(422, "bad_request", "The json provided does not match the route's schema: properties")
    extra = set(body) - ENTITY_KEYS
    if extra:
        raise Refuse(422, "bad_request", f"The json provided does not match the route's schema: {sorted(extra)}")
    if parse_qs(query).get("upsert") != ["true"]:
        raise Refuse(409, "entity_exists", f"Entity with identifier \"{ident}\" already exists")
    entity = {"identifier": ident, "title": body.get("title"), "blueprint": blueprint,
              "properties": body.get("properties", {}), "relations": body.get("relations", {})}
    append("entities.jsonl", dict(entity, token=token))
    return entity


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("port: " + fmt % args + "\n")

    def raw_send(self, status, ctype, data):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send(self, status, body):
        self.raw_send(status, "application/json; charset=utf-8", json.dumps(body).encode())

    def garbage(self, answer):
        g = ARGS.garbage
        if g == "notjson":
            return self.raw_send(200, "text/html", b"<html>Port is having a moment</html>")
        if g == "okfalse":
            return self.send(200, {"ok": False})
        if g == "notoken":
            return self.send(200, {"ok": True, "expiresIn": 10800, "tokenType": "Bearer"})
        if g == "badtoken":
            return self.send(200, dict(answer, accessToken=answer["accessToken"] + "\r\nX-Injected: 1"))
        if g == "huge":
            pad = "A" * (2 * 1024 * 1024)
            return self.send(200, dict(answer, padding=pad))
        if g == "basic":
            return self.send(200, dict(answer, tokenType="Basic"))
        if g == "noexpiry":
            return self.send(200, {k: v for k, v in answer.items() if k != "expiresIn"})
        if g == "html401":
            return self.raw_send(401, "text/html", b"<html><h1>401</h1>Port is having a moment</html>")
        return self.send(200, answer)

    def do_POST(self):  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        parts = url.path.strip("/").split("/")
        try:
            if url.path == "/v1/auth/access_token":
                return self.garbage(access_token(self.headers, raw))
            if len(parts) == 4 and parts[:2] == ["v1", "blueprints"] and parts[3] == "entities":
                return self.send(201, {"ok": True, "entity": upsert(parts[2], url.query, self.headers, raw)})
            raise Refuse(404, "not_found", f"Route POST {url.path} not found")
        except Refuse as e:
            sys.stderr.write(f"port: refused {e.status} {e.error}\n")
            self.send(e.status, {"ok": False, "error": e.error, "message": e.message})


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--ttl", type=int, default=10800)
    ap.add_argument("--stale-expires", action="store_true")
    ap.add_argument("--echo-secret", action="store_true")
    ap.add_argument("--garbage", choices=["notjson", "okfalse", "notoken", "badtoken", "basic", "noexpiry", "huge", "html401"])
    ARGS = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    print(json.dumps({"port": port, "url": f"http://127.0.0.1:{port}"}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
