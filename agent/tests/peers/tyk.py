"""A strict stand-in for the Tyk gateway (the real one could not be built here:
see README.md in this folder). It reads a tyk.conf (secret, app_path,
policies.policy_path) with file-based Classic API definitions and policies, and
enforces what Tyk documents and its gateway code does:

- /hello: readiness.
- /tyk/apis, /tyk/keys, POST /tyk/keys/<name>: the management API; the gateway `secret` in
  `x-tyk-authorization`, else 403 {"status":"error","message":"Attempted
  administrative access with invalid or missing key!"}.
- listen_path APIs with enable_jwt, following gateway/mw_jwt.go at Tyk v5.14.0
  (ProcessRequest): the token from Authorization (Bearer stripped), RS256 only
  (jwt_signing_method); exp checked.
  * With a jwt_source (base64 of the URL, or the URL itself), as
    processCentralisedJWT: verified against that JWKS by the token's kid; the
    session identity is jwt_identity_base_field (a dotted name also as a nested
    path) when present and non-empty, else sub (getUserIDFromClaim); the kid
    plays no part in it.
  * Without one, as processOneToOneTokenMap: getIdentityFromToken (the kid
    unless jwt_skip_kid, else the claim as above) names a Tyk key (create it
    with POST /tyk/keys/<name>); its jwt_data.secret (PEM) verifies the
    signature, and its access_rights and quota are the session: every token
    with that kid shares it.
  Policy (central only): the claim named by jwt_policy_field_name, else
  jwt_default_policies. Access: the policy's
  access_rights[api_id] (else "Access to this API has been disallowed"),
  then its allowed_urls (else "Access to this resource has been disallowed").
  Error bodies are Tyk's: {"error": "..."}.
- Each session (by identity) has the policy's quota_max; the answers carry
  X-Tyk-Session (the identity, hashed as Tyk does, md5) so a test can see who
  a request became.

Run with target/peers/venv/bin/python tyk.py --conf tyk.conf. Prints one ready
line, {"port": P}.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

ap = argparse.ArgumentParser()
ap.add_argument("--conf", required=True)
args = ap.parse_args()
CONF = json.load(open(args.conf))
SECRET = CONF["secret"]


def load_dir(d):
    out = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            out.append(json.load(open(os.path.join(d, f))))
    return out


APIS = load_dir(CONF["app_path"])
POLICIES = json.load(open(CONF["policies"]["policy_path"]))
SESSIONS = {}  # identity hash -> requests served
KEYS = {}


def claim_value(claims, name):
    """Tyk's getClaimValue: the literal key, then a dotted name as a path."""
    if name in claims:
        return claims[name]
    if "." in name:
        c = claims
        for k in name.split("."):
            if not isinstance(c, dict):
                return None
            c = c.get(k)
        return c
    return None


def claim_identity(a, claims):
    """Tyk v5.14.0's getUserIDFromClaim for Classic APIs: (identity, error)."""
    base = a.get("jwt_identity_base_field") or ""
    if base:
        v = claim_value(claims, base)
        if isinstance(v, str) and v:
            return v, None
        if v == "":
            return None, "found an empty user ID in predefined base claim, claim: " + base
    sub = claims.get("sub")
    if isinstance(sub, str):
        if sub:
            return sub, None
        return None, "found an empty user ID in sub claim"
    return None, "no suitable claims for user ID were found"


def jwks_url(src):
    if src.startswith("http"):
        return src
    return base64.b64decode(src).decode()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        import sys
        sys.stderr.write("tyk: " + (fmt % a) + "\n")

    def send(self, code, body, extra=None):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def admin(self):
        if self.headers.get("x-tyk-authorization") != SECRET:
            self.send(403, {"status": "error", "message": "Attempted administrative access with invalid or missing key!"})
            return
        path = self.path.split("?")[0]
        if path == "/tyk/apis" and self.command == "GET":
            return self.send(200, APIS)
        if path.startswith("/tyk/apis/") and self.command == "GET":
            want = path[len("/tyk/apis/"):]
            for a in APIS:
                if a["api_id"] == want:
                    return self.send(200, a)
            return self.send(404, {"status": "error", "message": "API not found"})
        named = path.startswith("/tyk/keys/") and path != "/tyk/keys/create"
        if (named or path in ("/tyk/keys", "/tyk/keys/create")) and self.command == "POST":
            try:
                session = json.loads(self.body())
            except ValueError:
                return self.send(400, {"status": "error", "message": "Request malformed"})
            key = path[len("/tyk/keys/"):] if named else hashlib.sha256(os.urandom(16)).hexdigest()[:32]
            KEYS[key] = session
            return self.send(200, {"key": key, "status": "ok", "action": "added"})
        if path == "/tyk/keys" and self.command == "GET":
            return self.send(200, {"keys": sorted(KEYS)})
        return self.send(404, {"status": "error", "message": "Not found"})

    def api(self, a, rest):
        auth = self.headers.get("authorization") or ""
        if not auth:
            return self.send(400, {"error": "Authorization field missing"})
        raw = auth[7:] if auth.lower().startswith("bearer ") else auth
        try:
            header = jwt.get_unverified_header(raw)
            unverified = jwt.decode(raw, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self.send(403, {"error": "Key not authorized"})
        if header.get("alg") != {"rsa": "RS256"}.get(a.get("jwt_signing_method"), "RS256"):
            return self.send(403, {"error": "Key not authorized: Unexpected signing method"})
        key_session = None
        if a.get("jwt_source"):
            # Central source: the JWKS key picked by kid.
            try:
                with urllib.request.urlopen(jwks_url(a["jwt_source"]), timeout=5) as r:
                    keys = json.load(r)["keys"]
                jwk = next(k for k in keys if k.get("kid") == header.get("kid"))
                key = jwt.PyJWK(jwk).key
            except (StopIteration, jwt.PyJWTError, OSError, KeyError, ValueError):
                return self.send(403, {"error": "Key not authorized"})
        else:
            # One-to-one: getIdentityFromToken names a Tyk key, whose
            # jwt_data.secret (PEM) verifies the signature.
            kid = header.get("kid")
            if not a.get("jwt_skip_kid") and isinstance(kid, str):
                ident = kid
            else:
                ident, err = claim_identity(a, unverified)
                if err:
                    return self.send(403, {"error": "Key not authorized"})
            key_session = KEYS.get(ident)
            if key_session is None:
                return self.send(403, {"error": "Key not authorized"})
            key = (key_session.get("jwt_data") or {}).get("secret", "")
        try:
            claims = jwt.decode(raw, key, algorithms=["RS256"], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            return self.send(401, {"error": "Key not authorized: token has expired"})
        except (jwt.PyJWTError, ValueError, TypeError):
            return self.send(403, {"error": "Key not authorized"})
        if key_session is not None:
            # The Tyk key's own session: everyone presenting this identity shares it.
            sid = hashlib.md5(ident.encode()).hexdigest()
            return self.serve_session(a, rest, sid, key_session)
        # processCentralisedJWT: the identity claim keys the session.
        ident, err = claim_identity(a, claims)
        if err:
            return self.send(403, {"error": err})
        pol_id = claims.get(a.get("jwt_policy_field_name") or "\0")
        if not pol_id:
            defaults = a.get("jwt_default_policies") or []
            pol_id = defaults[0] if defaults else None
        if not pol_id:
            return self.send(403, {"error": "key not authorized: no matching policy found"})
        pol = POLICIES.get(pol_id)
        if pol is None:
            return self.send(403, {"error": "key not authorized: no matching policy"})
        sid = hashlib.md5(ident.encode()).hexdigest()
        return self.serve_session(a, rest, sid, pol)

    def serve_session(self, a, rest, sid, pol):
        """Access rights, allowed_urls and quota of a policy or a key."""
        rights = (pol.get("access_rights") or {}).get(a["api_id"])
        if rights is None:
            return self.send(403, {"error": "Access to this API has been disallowed"})
        allowed = rights.get("allowed_urls") or []
        if allowed and not any(
            re.match(u["url"], rest) and self.command in u.get("methods", []) for u in allowed
        ):
            return self.send(403, {"error": "Access to this resource has been disallowed"})
        SESSIONS[sid] = SESSIONS.get(sid, 0) + 1
        quota = pol.get("quota_max", -1)
        if quota >= 0 and SESSIONS[sid] > quota:
            return self.send(403, {"error": "Quota exceeded"})
        return self.send(200, {"api": a["api_id"], "path": rest, "ok": True}, {"x-tyk-session": sid})

    def route(self):
        path = self.path.split("?")[0]
        if path == "/hello":
            return self.send(200, {"status": "pass", "version": "lanyard-tyk-peer"})
        if path.startswith("/tyk/"):
            return self.admin()
        for a in APIS:
            lp = a["proxy"]["listen_path"]
            if path.startswith(lp):
                if a.get("enable_jwt"):
                    return self.api(a, "/" + path[len(lp):].lstrip("/"))
                return self.send(200, {"api": a["api_id"], "ok": True})
        return self.send(404, {"error": "Not found"})

    do_GET = do_POST = do_PUT = do_DELETE = route


srv = ThreadingHTTPServer(("127.0.0.1", int(CONF.get("listen_port", 0))), H)
print(json.dumps({"port": srv.server_address[1]}), flush=True)
srv.serve_forever()
