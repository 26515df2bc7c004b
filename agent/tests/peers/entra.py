"""A strict Entra ID token endpoint and Key Vault secrets API, for agent/tests/azure*.rs.

  python entra.py --dir DIR --issuer CI_ISSUER_URL --tenant T --client-id C
                  [--subject SUB] [--secret NAME=VALUE ...] [--ttl S]
                  [--tls-cert PEM --tls-key PEM]
                  [--vault-port P --vault-cert PEM --vault-key PEM]

There is no real Entra or Key Vault here; this peer enforces their documented
contract so that lanyard cannot get away with less:

POST /<tenant>/oauth2/v2.0/token (Microsoft identity platform, client
credentials with a federated client assertion):
  - Content-Type application/x-www-form-urlencoded, each field once;
  - grant_type=client_credentials, client_id = --client-id (else AADSTS700016),
    the path's tenant = --tenant (else AADSTS90002);
  - client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer;
  - client_assertion: an RS256 JWT whose signature verifies against the CI
    issuer's JWKS (from its OpenID discovery), not expired (AADSTS700024),
    whose iss is the issuer (AADSTS700211), aud api://AzureADTokenExchange
    (AADSTS700212) and sub = --subject when given (AADSTS70021);
  - scope: exactly one <resource>/.default (AADSTS70011).
  Success: {"token_type":"Bearer","expires_in","ext_expires_in","access_token"}
  where the access token is a JWT signed by this peer, aud = the resource.
  Errors are Entra's JSON: error, error_description "AADSTS<n>: ...",
  error_codes [n], timestamp, trace_id, correlation_id, error_uri.

GET /secrets/<name>[/<version>]?api-version=7.4 (Key Vault):
  - without a Bearer token: 401 with Key Vault's challenge
    (WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
    resource="https://vault.azure.net"), as the SDK's first request expects;
  - the token must be one this peer issued, unexpired, for
    https://vault.azure.net (401 AKV10022/AKV10032 otherwise);
  - api-version is required (400 BadParameter);
  - answers {"value","id","attributes"}; an unknown name is 404 SecretNotFound.

PUT /secrets/<name>?api-version=7.4 (Key Vault's SetSecret): the same token
checks (a request without a token gets the challenge, as the SDK's body-less
first request expects), then a JSON body with a string `value` (400
BadParameter otherwise); the value is kept and the new bundle answered.

--vault-port serves the same API (token endpoint included) on a second,
TLS-only listener at 127.0.0.1:P with --vault-cert/--vault-key, for tests
that put a `*.vault.azure.net` name on loopback port 443 for the unmodified
SecretClient.

--garbage token|secret answers 200 with a body that is not the contract's
(not JSON for the token endpoint, a bundle without `value` for Key Vault):
lanyard must fail closed.

Binds 127.0.0.1:0 and prints one JSON ready line: {"port": P, "url": U}
(and "vault_port" with --vault-port).
Every request is appended to DIR/requests.jsonl (the assertion replaced by its
unverified claims); every access token issued to DIR/issued.jsonl, so tests
can check it never shows anywhere.
"""

import argparse
import base64
import json
import os
import secrets
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIENCE = "api://AzureADTokenExchange"
VAULT_RESOURCE = "https://vault.azure.net"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER_PREFIX = "https://sts.windows.net/"
LOCK = threading.Lock()
ARGS = None
JWKS = {}


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


class Refuse(Exception):
    def __init__(self, status, error, code, message):
        super().__init__(message)
        self.status, self.error, self.code, self.message = status, error, code, message


def aad_error(e):
    trace = str(uuid.uuid4())
    return {
        "error": e.error,
        "error_description": f"AADSTS{e.code}: {e.message} Trace ID: {trace} Correlation ID: {uuid.uuid4()} Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
        "error_codes": [e.code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"https://login.microsoftonline.com/error?code={e.code}",
    }


def token_request(tenant, headers, raw):
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise Refuse(400, "invalid_request", 900144, f"The request body must contain the following parameter: 'grant_type'. (Content-Type was {ctype!r})")
    form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    if any(len(v) != 1 for v in form.values()):
        raise Refuse(400, "invalid_request", 90014, "A parameter was sent more than once.")
    f = {k: v[0] for k, v in form.items()}
    record = {k: v for k, v in f.items() if k != "client_assertion"}
    record["path_tenant"] = tenant
    if "client_assertion" in f:
        record["assertion_claims"] = claims_of(f["client_assertion"])
    append("requests.jsonl", record)
    if tenant != ARGS.tenant:
        raise Refuse(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
    if f.get("grant_type") != "client_credentials":
        raise Refuse(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{f.get('grant_type')}'.")
    if f.get("client_id") != ARGS.client_id:
        raise Refuse(400, "unauthorized_client", 700016, f"Application with identifier '{f.get('client_id')}' was not found in the directory '{tenant}'.")
    if f.get("client_assertion_type") != ASSERTION_TYPE:
        raise Refuse(400, "invalid_request", 50027, "Invalid client_assertion_type.")
    if "client_secret" in f:
        raise Refuse(400, "invalid_request", 90014, "Only one client credential may be sent.")
    assertion = f.get("client_assertion", "")
    try:
        key = jwks_client().get_signing_key_from_jwt(assertion).key
        claims = jwt.decode(assertion, key, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False, "require": ["exp", "iss", "sub", "aud"]})
    except Exception as e:  # noqa: BLE001 - the peer refuses anything it cannot verify
        raise Refuse(401, "invalid_client", 50013, f"Assertion failed signature validation. [{type(e).__name__}]") from None
    if claims["exp"] <= time.time():
        raise Refuse(400, "invalid_client", 700024, "Client assertion is not within its valid time range.")
    if claims["iss"] != ARGS.issuer:
        raise Refuse(400, "invalid_client", 700211, f"No matching federated identity record found for presented assertion issuer '{claims['iss']}'.")
    auds = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if AUDIENCE not in auds:
        raise Refuse(400, "invalid_client", 700212, f"No matching federated identity record found for presented assertion audience '{claims['aud']}'.")
    if ARGS.subject and claims["sub"] != ARGS.subject:
        raise Refuse(400, "invalid_client", 70021, f"No matching federated identity record found for presented assertion. Assertion Issuer: '{claims['iss']}'. Assertion Subject: '{claims['sub']}'. Assertion Audience: '{AUDIENCE}'.")
    scope = f.get("scope", "")
    if len(scope.split()) != 1 or not scope.endswith("/.default"):
        raise Refuse(400, "invalid_scope", 70011, f"The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. ({scope!r})")
    resource = scope[: -len("/.default")]
    now = int(time.time())
    at = jwt.encode({
        "aud": resource, "iss": ISSUER_PREFIX + ARGS.tenant + "/", "iat": now, "nbf": now,
        "exp": now + ARGS.ttl, "appid": ARGS.client_id, "tid": ARGS.tenant, "sub": ARGS.client_id,
        "oid": str(uuid.uuid4()), "uti": secrets.token_urlsafe(16),
    }, KEY, algorithm="RS256", headers={"kid": "entra-peer"})
    append("issued.jsonl", {"access_token": at, "resource": resource})
    return {"token_type": "Bearer", "expires_in": ARGS.ttl, "ext_expires_in": ARGS.ttl, "access_token": at}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("entra: " + fmt % args + "\n")

    def send(self, status, body, extra=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return self.send(404, {"error": "not_found"})
        try:
            answer = token_request(parts[0], self.headers, raw)
            if ARGS.garbage == "token":
                data = b"<html>login.microsoftonline.com is having a moment</html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return self.wfile.write(data)
            self.send(200, answer)
        except Refuse as e:
            sys.stderr.write(f"entra: refused AADSTS{e.code}: {e.message}\n")
            self.send(e.status, aad_error(e))

    def authorized(self, method, url):
        """Key Vault's checks shared by GET and PUT: the request is logged,
        then (parts, None) when it may go on, (None, sent) when answered."""
        q = parse_qs(url.query)
        auth = self.headers.get("Authorization") or ""
        append("requests.jsonl", {"method": method, "path": url.path, "query": url.query,
                                  "host": self.headers.get("Host"), "authorization_scheme": auth.split(" ")[0],
                                  "content_length": self.headers.get("Content-Length")})
        parts = url.path.strip("/").split("/")
        if parts[0] != "secrets" or len(parts) not in (2, 3) or (method == "PUT" and len(parts) != 2):
            return None, self.send(404, {"error": {"code": "NotFound", "message": "Not found"}})
        if q.get("api-version") is None:
            return None, self.send(400, {"error": {"code": "BadParameter", "message": "The request URI contains an invalid API version."}})
        challenge = ("WWW-Authenticate", f'Bearer authorization="{ARGS.authority}/{ARGS.tenant}", resource="{VAULT_RESOURCE}"')
        scheme, _, token = auth.partition(" ")
        if scheme != "Bearer" or not token:
            return None, self.send(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}, [challenge])
        try:
            c = jwt.decode(token, KEY.public_key(), algorithms=["RS256"], audience=VAULT_RESOURCE)
        except jwt.InvalidAudienceError:
            return None, self.send(401, {"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience."}}, [challenge])
        except Exception as e:  # noqa: BLE001
            return None, self.send(401, {"error": {"code": "Unauthorized", "message": f"AKV10032: Invalid issuer or signature. [{type(e).__name__}]"}}, [challenge])
        if c.get("tid") != ARGS.tenant:
            return None, self.send(401, {"error": {"code": "Unauthorized", "message": "AKV10032: Invalid issuer."}}, [challenge])
        return parts, None

    def bundle(self, name, version):
        host = self.headers.get("Host") or "127.0.0.1"
        scheme = "https" if (ARGS.tls_cert or self.server.server_address[1] == ARGS.vault_port) else "http"
        now = int(time.time())
        return {
            "value": ARGS.secrets[name],
            "id": f"{scheme}://{host}/secrets/{name}/{version}",
            "attributes": {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        }

    def do_GET(self):  # noqa: N802 - http.server's name
        parts, _ = self.authorized("GET", urlsplit(self.path))
        if parts is None:
            return
        name = parts[1]
        if name not in ARGS.secrets:
            return self.send(404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found in this key vault."}})
        version = parts[2] if len(parts) == 3 else "0123456789abcdef0123456789abcdef"
        bundle = self.bundle(name, version)
        if ARGS.garbage == "secret":
            bundle["value"] = {"nested": ARGS.secrets[name]}
        self.send(200, bundle)

    def do_PUT(self):  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        parts, _ = self.authorized("PUT", urlsplit(self.path))
        if parts is None:
            return
        try:
            body = json.loads(raw)
            value = body["value"]
            if not isinstance(value, str):
                raise ValueError("value")
        except Exception:  # noqa: BLE001 - Key Vault's answer to a bad body
            return self.send(400, {"error": {"code": "BadParameter", "message": "The request body must be JSON with a string 'value'."}})
        with LOCK:
            ARGS.secrets[parts[1]] = value
        self.send(200, self.bundle(parts[1], uuid.uuid4().hex))


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--issuer", required=True, help="the CI issuer whose tokens the federated credential trusts")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--subject", help="the federated credential's subject; any when absent")
    ap.add_argument("--secret", action="append", default=[], help="NAME=VALUE served by Key Vault")
    ap.add_argument("--ttl", type=int, default=3599)
    ap.add_argument("--authority", default="https://login.microsoftonline.com")
    ap.add_argument("--garbage", choices=["token", "secret"])
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--vault-port", type=int)
    ap.add_argument("--vault-cert")
    ap.add_argument("--vault-key")
    ARGS = ap.parse_args()
    ARGS.secrets = dict(s.split("=", 1) for s in ARGS.secret)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if ARGS.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    scheme = "https" if ARGS.tls_cert else "http"
    ready = {"port": port, "url": f"{scheme}://127.0.0.1:{port}"}
    if ARGS.vault_port:
        vault = ThreadingHTTPServer(("127.0.0.1", ARGS.vault_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.vault_cert, ARGS.vault_key)
        vault.socket = ctx.wrap_socket(vault.socket, server_side=True)
        threading.Thread(target=vault.serve_forever, daemon=True).start()
        ready["vault_port"] = vault.server_address[1]
    print(json.dumps(ready), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
