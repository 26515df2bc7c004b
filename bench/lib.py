"""Helpers for bench/run.sh that are awkward in shell (run with the bench venv's python).

  lib.py free-port [--pair]          an ephemeral 127.0.0.1 port (--pair: PORT+1 free too)
  lib.py proxy-parts URL             prints "host:port base64(user:pass)" of a proxy URL
  lib.py openbao-setup ADDR DIR      JWT auth + role + policy + KV secret in a dev OpenBao;
                                     writes DIR/jwt (a signed job token) and DIR/token (a
                                     login token with the same policy, for direct reads)
"""
import base64
import json
import socket
import sys
import time
import urllib.parse
import urllib.request


def free_port(pair=False):
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if not pair:
            s.close()
            return port
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port + 1))
        except OSError:
            s.close()
            continue
        s.close()
        t.close()
        return port
    raise SystemExit("no free port pair")


def proxy_parts(url):
    u = urllib.parse.urlsplit(url)
    cred = f"{urllib.parse.unquote(u.username or '')}:{urllib.parse.unquote(u.password or '')}"
    print(f"{u.hostname}:{u.port}", base64.b64encode(cred.encode()).decode())


def call(addr, method, path, body=None, token="root"):
    req = urllib.request.Request(
        f"{addr}/v1/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Vault-Token": token} if token else {},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else {}


def openbao_setup(addr, out):
    import jwt  # pyjwt[crypto], in the bench venv
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    iss = "https://bench-issuer.invalid"
    call(addr, "POST", "sys/auth/jwt", {"type": "jwt"})
    call(addr, "POST", "auth/jwt/config", {"jwt_validation_pubkeys": [pub], "bound_issuer": iss})
    call(addr, "PUT", "sys/policies/acl/bench",
         {"policy": 'path "secret/data/bench" { capabilities = ["read"] }'})
    call(addr, "POST", "auth/jwt/role/bench", {
        "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["bench"],
        "bound_claims": {"repository": "acme/app"}, "token_policies": ["bench"],
        "token_ttl": "1h", "token_max_ttl": "2h",
    })
    call(addr, "POST", "secret/data/bench", {"data": {"api_key": "sk_bench_0123456789abcdef"}})
    now = int(time.time())
    tok = jwt.encode({
        "iss": iss, "sub": "repo:acme/app:ref:refs/heads/main", "aud": "bench",
        "repository": "acme/app", "iat": now, "nbf": now - 5, "exp": now + 6 * 3600,
    }, key, algorithm="RS256", headers={"kid": "bench"})
    with open(f"{out}/jwt", "w") as f:
        f.write(tok)
    login = call(addr, "POST", "auth/jwt/login", {"role": "bench", "jwt": tok}, token=None)
    with open(f"{out}/token", "w") as f:
        f.write(login["auth"]["client_token"])
    # the direct token reads the secret
    call(addr, "GET", "secret/data/bench", token=login["auth"]["client_token"])


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "free-port":
        print(free_port(pair="--pair" in sys.argv))
    elif cmd == "proxy-parts":
        proxy_parts(sys.argv[2])
    elif cmd == "openbao-setup":
        openbao_setup(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
