"""A recording HTTPS (or plain HTTP) upstream for the data-plane tests.

Binds 127.0.0.1:0 and prints one JSON ready line:
  {"port": P, "ca": "<dir>/ca.pem"}   (ca is null with --plain)
Every request is appended as one JSON line to <dir>/records.jsonl:
  {"method", "path", "headers": [[name, value], ...], "body": "<text>"}
The answer never echoes headers, so a credential can only leak through the
proxy, never through this server.

Paths:
  /redirect?to=URL   302 to URL
  /reject-first      401 for the first Authorization value it sees, 200 after
  /status/N          answers N
  anything else      200 {"ok": true, "method", "path"}
"""

import datetime
import ipaddress
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certs(folder):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lanyard test upstream CA " + os.urandom(6).hex())])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(folder, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    cert_path = os.path.join(folder, "leaf.pem")
    with open(cert_path, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    key_path = os.path.join(folder, "leaf.key")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path, cert_path, key_path


LOCK = threading.Lock()
SEEN_AUTH = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    records = None

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with LOCK:
            with open(self.records, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": [[k, v] for k, v in self.headers.items()],
                            "body": body.decode("utf-8", "replace"),
                            # the client's port: which connection carried it
                            "peer": self.client_address[1],
                        }
                    )
                    + "\n"
                )
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            return self.websocket_echo()
        url = urlsplit(self.path)
        status, extra, payload = 200, {}, {"ok": True, "method": self.command, "path": url.path}
        if url.path == "/redirect":
            status = 302
            extra["Location"] = parse_qs(url.query).get("to", ["/"])[0]
        elif url.path.endswith("/reject-first"):
            auth = self.headers.get("Authorization")
            with LOCK:
                if not SEEN_AUTH:
                    SEEN_AUTH.append(auth)
                if auth == SEEN_AUTH[0]:
                    status = 401
        elif url.path.startswith("/status/"):
            status = int(url.path.split("/")[2])
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def websocket_echo(self):
        """RFC 6455 handshake, then echo raw bytes until the peer closes.
        Enough to prove the upgrade and both directions through the proxy."""
        import base64
        import hashlib

        key = self.headers.get("Sec-WebSocket-Key") or ""
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            chunk = self.connection.recv(4096)
            if not chunk:
                break
            self.connection.sendall(chunk)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def main():
    folder = sys.argv[sys.argv.index("--dir") + 1]
    plain = "--plain" in sys.argv
    Handler.records = os.path.join(folder, "records.jsonl")
    open(Handler.records, "w").close()
    # --port P: take a given port (a test's impostor on a port just freed).
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ca_path = None
    if not plain:
        ca_path, cert, key = make_certs(folder)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"port": server.server_address[1], "ca": ca_path}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
