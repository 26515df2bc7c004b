"""A strict Google STS, IAM Credentials and Cloud Storage JSON API, for agent/tests/google.rs.

  python google.py --dir DIR --issuer CI_ISSUER_URL --provider PROVIDER
                   [--service-account EMAIL] [--subject SUB] [--deny]
                   [--ttl S] [--garbage sts|iam] [--object BUCKET/NAME=VALUE ...]

There is no real Google here; this peer enforces the documented contract so
that lanyard cannot get away with less:

POST /v1/token (sts.googleapis.com, RFC 8693):
  - no Authorization header (STS's documentation: sending one can fail);
  - Content-Type application/x-www-form-urlencoded (or application/json), each
    field once;
  - grant_type urn:ietf:params:oauth:grant-type:token-exchange,
    requested_token_type urn:ietf:params:oauth:token-type:access_token,
    subject_token_type urn:ietf:params:oauth:token-type:jwt (or id_token);
  - audience //iam.googleapis.com/<provider> (else invalid_target);
  - scope: space-separated https scopes, including cloud-platform;
  - subject_token: an RS256 JWT whose signature verifies against the CI
    issuer's JWKS (from its OpenID discovery), unexpired, iss = the issuer,
    aud containing https://iam.googleapis.com/<provider> (the provider's
    default allowed audience), sub = --subject when given (else: "The given
    credential is rejected by the attribute condition.").
  Success: {"access_token","issued_token_type","token_type":"Bearer","expires_in"}.
  Errors are STS's: {"error","error_description"}.

POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken (IAM Credentials):
  - Authorization: Bearer <a federated token this peer issued, unexpired>
    (else 401 UNAUTHENTICATED);
  - Content-Type application/json; {"scope": [..non-empty..], "lifetime": "<n>s"
    (<= 3600s), "delegates": ["projects/-/serviceAccounts/<email>", ...]};
  - <email> = --service-account and no --deny (else 403 PERMISSION_DENIED,
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).").
  Success: {"accessToken","expireTime"} (RFC 3339, Z). Errors are Google's:
  {"error":{"code","message","status"}}.

GET /storage/v1/b/<bucket>, GET /storage/v1/b/<bucket>/o/<name>[?alt=media]
(storage.googleapis.com's JSON API): the bearer must be a token this peer
issued (the service account's with --service-account, else the federated
one), unexpired; else 401 {"error":{"code":401,"message":"Invalid Credentials","status":"UNAUTHENTICATED"}}.

--garbage sts|iam answers 200 with a body that is not the contract's.

--storage-port P --storage-cert PEM --storage-key PEM serves the same API on a
second, TLS-only listener at 127.0.0.1:P, for tests that put
storage.googleapis.com on loopback port 443 for the unmodified storage client.
With --storage-backend URL, that listener is a token-checking front: every
request (any method, any path) must carry a token this peer issued, as above;
then it is forwarded, Authorization removed, to URL (fake-gcs-server, which
accepts any bearer), and its answer relayed.

Binds 127.0.0.1:0 and prints one JSON ready line: {"port": P, "url": U}.
Every request is appended to DIR/requests.jsonl (tokens replaced by what they
are: their claims, "issued-federated", "issued-sa", "placeholder", "unknown");
every token issued to DIR/issued.jsonl, so tests can check it never shows.
"""

import argparse
import base64
import datetime
import http.client
import ssl
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import requests

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
LOCK = threading.Lock()
ARGS = None
JWKS = {}
# token -> (kind, expiry epoch)
TOKENS = {}


def append(name, obj):
    with LOCK:
        with open(os.path.join(ARGS.dir, name), "a") as f:
            f.write(json.dumps(obj) + "\n")


def claims_of(token):
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except Exception:  # noqa: BLE001 - a test peer reports what it got
        return {"unparsable": True}


def jwks_client():
    with LOCK:
        if "client" not in JWKS:
            meta = requests.get(ARGS.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).json()
            JWKS["client"] = jwt.PyJWKClient(meta["jwks_uri"])
        return JWKS["client"]


def kind_of(token):
    with LOCK:
        k = TOKENS.get(token)
    if k:
        return k[0] if k[1] > time.time() else k[0] + "-expired"
    if token.startswith("lanyard-placeholder"):
        return "placeholder"
    return "unknown"


class Refuse(Exception):
    def __init__(self, status, body):
        super().__init__(json.dumps(body))
        self.status, self.body = status, body


def sts_error(error, description, status=400):
    return Refuse(status, {"error": error, "error_description": description})


def google_error(code, status, message):
    return Refuse(code, {"error": {"code": code, "message": message, "status": status}})


def issue(kind, ttl):
    token = ("ya29.fed-" if kind == "issued-federated" else "ya29.sa-") + secrets.token_urlsafe(32)
    with LOCK:
        TOKENS[token] = (kind, time.time() + ttl)
    append("issued.jsonl", {"token": token, "kind": kind})
    return token


def sts(headers, raw):
    if headers.get("Authorization"):
        raise sts_error("invalid_request", "The request must not carry an Authorization header.")
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        if any(len(v) != 1 for v in form.values()):
            raise sts_error("invalid_request", "A parameter was sent more than once.")
        f = {k: v[0] for k, v in form.items()}
    elif ctype == "application/json":
        j = json.loads(raw or b"{}")
        f = {"grant_type": j.get("grantType"), "audience": j.get("audience"), "scope": j.get("scope"),
             "requested_token_type": j.get("requestedTokenType"), "subject_token": j.get("subjectToken"),
             "subject_token_type": j.get("subjectTokenType")}
    else:
        raise sts_error("invalid_request", f"Invalid Content-Type {ctype!r}.")
    record = {k: v for k, v in f.items() if k != "subject_token"}
    record["endpoint"] = "sts"
    record["content_type"] = ctype
    record["subject_claims"] = claims_of(f.get("subject_token") or "")
    append("requests.jsonl", record)
    if f.get("grant_type") != GRANT:
        raise sts_error("unsupported_grant_type", f"Unsupported grant type: {f.get('grant_type')}.")
    if f.get("requested_token_type") != ACCESS_TOKEN:
        raise sts_error("invalid_request", f"Invalid requested_token_type: {f.get('requested_token_type')}.")
    if f.get("subject_token_type") not in SUBJECT_TYPES:
        raise sts_error("invalid_request", f"Invalid subject_token_type: {f.get('subject_token_type')}.")
    want_aud = "//iam.googleapis.com/" + ARGS.provider
    if f.get("audience") != want_aud:
        raise sts_error("invalid_target", "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.")
    scopes = (f.get("scope") or "").split()
    if not scopes or any(not s.startswith("https://") for s in scopes) or CLOUD_PLATFORM not in scopes:
        raise sts_error("invalid_scope", f"Invalid scope: {f.get('scope')!r}.")
    token = f.get("subject_token") or ""
    try:
        key = jwks_client().get_signing_key_from_jwt(token).key
        claims = jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False, "require": ["exp", "iss", "sub", "aud"]})
    except Exception as e:  # noqa: BLE001 - the peer refuses anything it cannot verify
        raise sts_error("invalid_grant", f"Invalid JWT signature. [{type(e).__name__}] {token}") from None
    if claims["exp"] <= time.time():
        raise sts_error("invalid_grant", "The ID Token has expired.")
    if claims["iss"] != ARGS.issuer:
        raise sts_error("invalid_grant", f"The issuer in ID Token {claims['iss']} does not match the expected ones.")
    auds = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if "https://iam.googleapis.com/" + ARGS.provider not in auds:
        raise sts_error("invalid_grant", f"The audience in ID Token [{claims['aud']}] does not match the expected audience.")
    if ARGS.subject and claims["sub"] != ARGS.subject:
        raise sts_error("invalid_grant", "The given credential is rejected by the attribute condition.")
    return {"access_token": issue("issued-federated", ARGS.ttl), "issued_token_type": ACCESS_TOKEN,
            "token_type": "Bearer", "expires_in": ARGS.ttl}


def bearer(headers):
    auth = headers.get("Authorization") or ""
    return auth[7:] if auth.startswith("Bearer ") else ""


def generate(email, headers, raw):
    tok = bearer(headers)
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    append("requests.jsonl", {"endpoint": "iam", "email": email, "bearer": kind_of(tok), "content_type": ctype, "body": body})
    if kind_of(tok) != "issued-federated":
        raise google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
    if ctype != "application/json" or not isinstance(body, dict):
        raise google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    scope = body.get("scope")
    if not isinstance(scope, list) or not scope or any(not isinstance(s, str) for s in scope):
        raise google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument: scope.")
    lifetime = body.get("lifetime", "3600s")
    if not (isinstance(lifetime, str) and lifetime.endswith("s") and lifetime[:-1].isdigit()) or not 0 < int(lifetime[:-1]) <= 3600:
        raise google_error(400, "INVALID_ARGUMENT", f"The lifetime {lifetime!r} is invalid: at most 3600s.")
    for d in body.get("delegates", []):
        if not (isinstance(d, str) and d.startswith("projects/-/serviceAccounts/")):
            raise google_error(400, "INVALID_ARGUMENT", f"Invalid delegate {d!r}.")
    if ARGS.deny or email != ARGS.service_account:
        raise google_error(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
    ttl = min(int(lifetime[:-1]), ARGS.sa_ttl or 3600)
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
    return {"accessToken": issue("issued-sa", ttl), "expireTime": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}


def storage(path, query, headers):
    tok = bearer(headers)
    want = "issued-sa" if ARGS.service_account else "issued-federated"
    kind = kind_of(tok)
    append("requests.jsonl", {"endpoint": "storage", "path": path, "bearer": kind})
    if kind != want:
        raise google_error(401, "UNAUTHENTICATED", "Invalid Credentials")
    if path.startswith("/download/"):
        path = path[len("/download"):]
    parts = [unquote(p) for p in path.split("/")]
    # ["", "storage", "v1", "b", bucket, ("o", name)]
    if len(parts) == 5:
        return {"kind": "storage#bucket", "name": parts[4], "id": parts[4]}, None
    if len(parts) == 7 and parts[5] == "o":
        value = ARGS.objects.get(f"{parts[4]}/{parts[6]}")
        if value is None:
            raise google_error(404, "NOT_FOUND", "No such object: " + parts[4] + "/" + parts[6])
        if query.get("alt") == ["media"]:
            return None, value.encode()
        return {"kind": "storage#object", "bucket": parts[4], "name": parts[6], "size": str(len(value)), "generation": "1"}, None
    raise google_error(404, "NOT_FOUND", "Not Found")


# Not forwarded by the front (hop-by-hop, recomputed, or the token itself).
NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "transfer-encoding", "content-length", "authorization"}


def read_body(handler):
    if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""


def front(handler, method):
    """The storage port with --storage-backend: check the token, then forward."""
    raw = read_body(handler)
    tok = bearer(handler.headers)
    want = "issued-sa" if ARGS.service_account else "issued-federated"
    kind = kind_of(tok)
    path = urlsplit(handler.path).path
    append("requests.jsonl", {"endpoint": "storage", "method": method, "path": path,
                              "host": handler.headers.get("Host"), "bearer": kind, "backend": True})
    if kind != want:
        raise google_error(401, "UNAUTHENTICATED", "Invalid Credentials")
    backend = urlsplit(ARGS.storage_backend)
    conn = http.client.HTTPConnection(backend.hostname, backend.port, timeout=30)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in NOT_FORWARDED}
    conn.request(method, handler.path, body=raw if (raw or method in ("POST", "PUT", "PATCH")) else None,
                 headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in NOT_FORWARDED:
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if method != "HEAD":
        handler.wfile.write(data)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("google: " + fmt % args + "\n")

    def send(self, status, body, ctype="application/json; charset=UTF-8"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def garbage(self):
        self.send(200, b"<html>Google is having a moment</html>", "text/html")

    def fronted(self, method):
        """True when the storage front answered (the TLS port with --storage-backend)."""
        if not (ARGS.storage_backend and getattr(self.server, "storage", False)):
            return False
        try:
            front(self, method)
        except Refuse as e:
            self.send(e.status, e.body)
        return True

    def do_PUT(self):  # noqa: N802 - http.server's name
        if not self.fronted("PUT"):
            self.send(405, {"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}})

    def do_PATCH(self):  # noqa: N802 - http.server's name
        if not self.fronted("PATCH"):
            self.send(405, {"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}})

    def do_DELETE(self):  # noqa: N802 - http.server's name
        if not self.fronted("DELETE"):
            self.send(405, {"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}})

    def do_HEAD(self):  # noqa: N802 - http.server's name
        if not self.fronted("HEAD"):
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self):  # noqa: N802 - http.server's name
        if self.fronted("POST"):
            return
        url = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            if url.path == "/v1/token":
                answer = sts(self.headers, raw)
                return self.garbage() if ARGS.garbage == "sts" else self.send(200, answer)
            prefix, suffix = "/v1/projects/-/serviceAccounts/", ":generateAccessToken"
            if url.path.startswith(prefix) and url.path.endswith(suffix):
                answer = generate(unquote(url.path[len(prefix):-len(suffix)]), self.headers, raw)
                return self.garbage() if ARGS.garbage == "iam" else self.send(200, answer)
            self.send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
        except Refuse as e:
            sys.stderr.write(f"google: refused {e.status}: {json.dumps(e.body)}\n")
            self.send(e.status, e.body)

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.fronted("GET"):
            return
        url = urlsplit(self.path)
        try:
            if url.path.startswith(("/storage/v1/b/", "/download/storage/v1/b/")):
                body, media = storage(url.path, parse_qs(url.query), self.headers)
                return self.send(200, media, "application/octet-stream") if media is not None else self.send(200, body)
            append("requests.jsonl", {"endpoint": "other", "path": url.path, "bearer": kind_of(bearer(self.headers))})
            self.send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
        except Refuse as e:
            self.send(e.status, e.body)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--provider", required=True)
    p.add_argument("--service-account")
    p.add_argument("--subject")
    p.add_argument("--deny", action="store_true")
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--sa-ttl", type=int, default=0)
    p.add_argument("--garbage", choices=["sts", "iam"])
    p.add_argument("--object", action="append", default=[])
    p.add_argument("--storage-port", type=int)
    p.add_argument("--storage-cert")
    p.add_argument("--storage-key")
    p.add_argument("--storage-backend")
    ARGS = p.parse_args()
    ARGS.objects = dict(o.split("=", 1) for o in ARGS.object)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    ready = {"port": port, "url": f"http://127.0.0.1:{port}"}
    if ARGS.storage_port:
        tls = ThreadingHTTPServer(("127.0.0.1", ARGS.storage_port), Handler)
        tls.storage = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.storage_cert, ARGS.storage_key)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        ready["storage_port"] = tls.server_address[1]
    print(json.dumps(ready), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
