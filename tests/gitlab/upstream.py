"""A JWT-checking HTTPS upstream for the CI-integration tests: a stand-in for a gateway such
as Tyk that validates the platform token against the issuer's JWKS (lanyard's `passthrough`).

Run with target/peers/venv/bin/python (pyjwt, cryptography). It makes a throwaway CA and a
leaf for 127.0.0.1, writes the CA to --ca-out (give it to lanyard as [upstream] extra_ca),
listens on 127.0.0.1:0 and prints one ready line, {"port": P, "url": "https://127.0.0.1:P",
"ca_file": PATH}, then logs to stderr. Exits 0 on SIGTERM.

Every request needs `Authorization: Bearer <JWT>` signed by --issuer's key, unexpired, with
iss = --issuer. The answer is 200 {"ok": true, "iss", "sub", "aud", "method", "path"}, or
401 {"ok": false, "error"}. It never echoes or logs the token.
"""
import argparse
import datetime
import ipaddress
import json
import signal
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certs(ca_out):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lanyard test upstream CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(ca_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    # The server's own chain and key only need to live until load_cert_chain has read them.
    tmp = tempfile.NamedTemporaryFile(prefix="upstream-", suffix=".pem")
    tmp.write(leaf.public_bytes(serialization.Encoding.PEM))
    tmp.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    tmp.flush()
    return tmp


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: %s\n" % (fmt % args))

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self.reply(401, {"ok": False, "error": "no bearer token"})
        try:
            key = self.server.jwks.get_signing_key_from_jwt(token.strip()).key
            claims = jwt.decode(token.strip(), key, algorithms=["RS256"], issuer=self.server.issuer,
                                options={"verify_aud": False, "require": ["exp", "iss"]})
        except Exception as e:  # noqa: BLE001 - any failure is a 401, named by its type
            return self.reply(401, {"ok": False, "error": f"token rejected: {type(e).__name__}"})
        self.reply(200, {"ok": True, "iss": claims.get("iss"), "sub": claims.get("sub"),
                         "aud": claims.get("aud"), "method": self.command, "path": self.path})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the request's thread, so a stuck client blocks only itself.
        super().finish_request(self.ctx.wrap_socket(request, server_side=True), client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--ca-out", required=True)
    args = ap.parse_args()
    chain = make_certs(args.ca_out)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain.name)
    chain.close()
    server = Server(("127.0.0.1", 0), Handler)
    server.ctx = ctx
    server.issuer = args.issuer
    server.jwks = jwt.PyJWKClient(args.issuer + "/jwks.json", cache_keys=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    port = server.server_address[1]
    print(json.dumps({"port": port, "url": f"https://127.0.0.1:{port}", "ca_file": args.ca_out}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    main()
