"""A CI-shaped OIDC issuer for tests: GitHub/GitLab claim sets, JWKS, and GitHub's token request endpoint.

Run with target/peers/venv/bin/python. Prints one ready line, {"port": P, "issuer": "http://127.0.0.1:P"},
then logs to stderr. See README.md beside this file.
"""
import argparse
import json
import secrets
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "lanyard-test-" + secrets.token_hex(4)
PUBLIC_JWK = {**json.loads(RSAAlgorithm.to_jwk(KEY.public_key())), "kid": KID, "use": "sig", "alg": "RS256"}

GITHUB = {
    "sub": "repo:acme/app:ref:refs/heads/main",
    "repository": "acme/app",
    "repository_owner": "acme",
    "repository_id": "123456789",
    "repository_owner_id": "987654",
    "repository_visibility": "private",
    "ref": "refs/heads/main",
    "ref_type": "branch",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "workflow": "deploy",
    "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
    "job_workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
    "run_id": "4242",
    "run_number": "17",
    "run_attempt": "1",
    "actor": "octocat",
    "actor_id": "583231",
    "event_name": "push",
    "runner_environment": "github-hosted",
}
GITLAB = {
    "sub": "project_path:acme/app:ref_type:branch:ref:main",
    "namespace_id": "4711",
    "namespace_path": "acme",
    "project_id": "815",
    "project_path": "acme/app",
    "user_login": "dev",
    "user_id": "42",
    "pipeline_id": "777",
    "pipeline_source": "push",
    "job_id": "9001",
    "ref": "main",
    "ref_type": "branch",
    "ref_protected": "true",
    "environment": "production",
    "sha": "0123456789abcdef0123456789abcdef01234567",
}
PLATFORMS = {"github": GITHUB, "gitlab": GITLAB, "plain": {"sub": "plain"}}

state = {"gha_requests": 0, "mints": 0, "introspections": 0, "gha_ttl": 300, "gha_claims": {}}
lock = threading.Lock()


def mint(issuer, platform, aud, ttl=300, overrides=None):
    now = int(time.time())
    claims = {"iss": issuer, **PLATFORMS[platform], "aud": aud, "iat": now, "nbf": now, "exp": now + int(ttl),
              "jti": str(uuid.uuid4())}
    for k, v in (overrides or {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": KID, "typ": "JWT"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def issuer(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def log_message(self, fmt, *args):
        sys.stderr.write("issuer: %s\n" % (fmt % args))

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw.strip() else {}

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            self.reply(200, {
                "issuer": self.issuer,
                "jwks_uri": self.issuer + "/jwks.json",
                "introspection_endpoint": self.issuer + "/introspect",
                "userinfo_endpoint": self.issuer + "/userinfo",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "claims_supported": sorted({"iss", "sub", "aud", "iat", "nbf", "exp", "jti", *GITHUB, *GITLAB}),
                "scopes_supported": ["openid"],
            })
        elif url.path == "/jwks.json":
            self.reply(200, {"keys": [PUBLIC_JWK]})
        elif url.path == "/gha/token":
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            with lock:
                state["gha_requests"] += 1
                ttl, claims = state["gha_ttl"], dict(state["gha_claims"])
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self.server.gha_bearer):
                return self.reply(401, {"message": "bad bearer"})
            aud = parse_qs(url.query).get("audience", ["https://github.com/acme"])[-1]
            self.reply(200, {"count": 1, "value": mint(self.issuer, "github", aud, ttl, claims)})
        elif url.path == "/userinfo":
            # OIDC UserInfo for the tokens this issuer minted (Bearer): Keycloak's
            # external-to-internal exchange reads the identity from it.
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            claims = self.verified(token.strip()) if scheme.lower() == "bearer" else None
            if claims is None:
                return self.reply(401, {"error": "invalid_token"})
            self.reply(200, claims)
        elif url.path == "/stats":
            with lock:
                self.reply(200, {"gha_requests": state["gha_requests"], "mints": state["mints"],
                                "introspections": state["introspections"]})
        else:
            self.reply(404, {"message": "not found"})

    def introspect(self):
        """RFC 7662 for the tokens this issuer minted: active with their claims
        when the signature, issuer and expiry hold, else {"active": false}.
        Keycloak's external-to-internal token exchange validates through it."""
        n = int(self.headers.get("Content-Length") or 0)
        form = parse_qs((self.rfile.read(n) if n else b"").decode())
        token = form.get("token", [""])[-1]
        with lock:
            state["introspections"] += 1
        claims = self.verified(token)
        if claims is None:
            return self.reply(200, {"active": False})
        self.reply(200, {"active": True, "token_type": "Bearer", **claims})

    def verified(self, token):
        """The claims of a token this issuer minted and that is still valid, else None."""
        try:
            return jwt.decode(token, KEY.public_key(), algorithms=["RS256"], issuer=self.issuer,
                              options={"verify_aud": False, "require": ["exp", "iss", "sub"]})
        except jwt.PyJWTError as e:
            sys.stderr.write(f"issuer: token refused ({e})\n")
            return None

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/introspect":
            return self.introspect()
        try:
            req = self.body()
        except ValueError as e:
            return self.reply(400, {"message": f"bad JSON: {e}"})
        if path == "/mint":
            platform = req.get("platform", "github")
            if platform not in PLATFORMS:
                return self.reply(400, {"message": f"unknown platform {platform!r}"})
            with lock:
                state["mints"] += 1
            self.reply(200, {"token": mint(self.issuer, platform, req.get("aud", self.issuer),
                                           req.get("ttl", 300), req.get("claims"))})
        elif path == "/gha/config":
            with lock:
                state["gha_ttl"] = int(req.get("ttl", 300))
                state["gha_claims"] = dict(req.get("claims") or {})
            self.reply(200, {"ttl": state["gha_ttl"], "claims": state["gha_claims"]})
        else:
            self.reply(404, {"message": "not found"})


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gha-bearer", default="gha-request-token",
                    help="the ACTIONS_ID_TOKEN_REQUEST_TOKEN that /gha/token accepts")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.gha_bearer = args.gha_bearer
    # shutdown() blocks until serve_forever returns, so call it from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    port = server.server_address[1]
    print(json.dumps({"port": port, "issuer": f"http://127.0.0.1:{port}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    main()
