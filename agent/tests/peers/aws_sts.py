"""An AWS STS query-API peer that misbehaves on purpose, for agent/tests/aws.rs.

  python aws_sts.py --dir DIR --mode MODE [--ttl S] [--count N] [--delay S]

Binds 127.0.0.1:0 and prints one JSON ready line: {"port": P}. Every request
is appended to DIR/requests.jsonl as one JSON line: the form fields, except
that WebIdentityToken is replaced by its unverified claims (the payload
decoded, no signature check) so a test can see the audience and subject sent.
Every answer's keys are appended to DIR/issued.jsonl, so a test can check they
never show anywhere.

Modes (each request is answered by the first rule that applies):
  ok         a well-formed AssumeRoleWithWebIdentityResponse; Expiration is
             now + --ttl seconds (default: the DurationSeconds asked for)
  slow       sleep --delay seconds, then answer ok
  5xx        503 with an XML ServiceUnavailable error
  garbage    200 with a body that is not XML
  truncated  200 with the ok answer cut inside the SecretAccessKey (framing
             intact: Content-Length is the cut length)
  cut        200 with Content-Length of the whole answer, half of it sent,
             then the connection closed
  error:CODE:STATUS  an ErrorResponse with that code and status, whose
             message quotes the WebIdentityToken (lanyard must not)
  moto       forwards the request to moto (--upstream) and answers with
             moto's own role session (real keys moto checks signatures
             with), its Expiration rewritten to now + --ttl seconds. Real
             STS's minimum DurationSeconds is 900 and moto honours it; the
             long-job test compresses time instead of waiting 15 minutes,
             and lanyard's refresh path is the same. moto, unlike real STS,
             checks the signature of AssumeRoleWithWebIdentity too once its
             checks are on, so the forwarded call is signed with
             --front-key/--front-secret (an IAM user allowed exactly that
             call); needs botocore (run with the aws venv's python).
Modes apply to the first --count requests (default: all); later ones get ok.
"""

import argparse
import base64
import datetime
import json
import os
import re
import secrets
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

LOCK = threading.Lock()
SEEN = [0]
ARGS = None


def claims_of(jwt):
    try:
        payload = jwt.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except Exception:  # noqa: BLE001 - a test peer reports what it got
        return {"unparsable": True}


def append(name, obj):
    with LOCK:
        with open(os.path.join(ARGS.dir, name), "a") as f:
            f.write(json.dumps(obj) + "\n")


def ok_body(form):
    duration = int(form.get("DurationSeconds", "3600"))
    ttl = ARGS.ttl if ARGS.ttl is not None else duration
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
    key_id = "ASIA" + secrets.token_hex(8).upper()
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    token = "FwoGZXIvYXdzE" + base64.b64encode(secrets.token_bytes(120)).decode()
    append("issued.jsonl", {"AccessKeyId": key_id, "SecretAccessKey": secret, "SessionToken": token})
    session = form.get("RoleSessionName", "")
    role = form.get("RoleArn", "")
    return (
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult>"
        f"<SubjectFromWebIdentityToken>{claims_of(form.get('WebIdentityToken', '')).get('sub', '')}</SubjectFromWebIdentityToken>"
        f"<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/{role.split('/')[-1]}/{session}</Arn>"
        f"<AssumedRoleId>AROAEXAMPLE:{session}</AssumedRoleId></AssumedRoleUser>"
        f"<Credentials><SessionToken>{token}</SessionToken><SecretAccessKey>{secret}</SecretAccessKey>"
        f"<Expiration>{exp.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration><AccessKeyId>{key_id}</AccessKeyId></Credentials>"
        "<Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult>"
        "<ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
    ).encode()


def moto_body(form):
    """moto's answer to the same call, Expiration rewritten (see `moto`)."""
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = urllib.parse.urlencode(form)
    req = AWSRequest(method="POST", url=ARGS.upstream + "/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials(ARGS.front_key, ARGS.front_secret), "sts", "us-east-1").add_auth(req)
    prepared = req.prepare()
    out = urllib.request.urlopen(
        urllib.request.Request(prepared.url, data=body.encode(), headers=dict(prepared.headers), method="POST"),
        timeout=20,
    )
    text = out.read().decode()
    exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ARGS.ttl or 6)
    text, n = re.subn(r"<Expiration>[^<]*</Expiration>", f"<Expiration>{exp.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>", text)
    assert n == 1, text
    keys = {k: re.search(f"<{k}>([^<]*)</{k}>", text).group(1) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    append("issued.jsonl", keys)
    return text.encode()


def error_body(code, message):
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>req-err</RequestId></ErrorResponse>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("aws_sts: " + (fmt % args) + "\n")

    def send(self, status, body, length=None):
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
        jwt = form.get("WebIdentityToken", "")
        shown = {k: v for k, v in form.items() if k != "WebIdentityToken"}
        shown["token_claims"] = claims_of(jwt)
        with LOCK:
            SEEN[0] += 1
            nth = SEEN[0]
        append("requests.jsonl", shown)
        mode = ARGS.mode if (ARGS.count is None or nth <= ARGS.count) else "ok"
        if mode == "slow":
            time.sleep(ARGS.delay)
            mode = "ok"
        if mode == "ok":
            self.send(200, ok_body(form))
        elif mode == "moto":
            self.send(200, moto_body(form))
        elif mode == "5xx":
            self.send(503, error_body("ServiceUnavailable", "Service is unavailable"))
        elif mode == "garbage":
            self.send(200, b"\x00\xffnot <xml at all>>> &&&")
        elif mode == "truncated":
            body = ok_body(form)
            self.send(200, body[: body.index(b"<SecretAccessKey>") + 27])
        elif mode == "cut":
            body = ok_body(form)
            self.send(200, body[: len(body) // 2], length=len(body))
            self.close_connection = True
        elif mode.startswith("error:"):
            _, code, status = mode.split(":")
            self.send(int(status), error_body(code, f"Rejected token {jwt} for {form.get('RoleArn')}"))
        else:
            self.send(500, b"unknown mode")


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--mode", default="ok")
    p.add_argument("--ttl", type=int)
    p.add_argument("--count", type=int)
    p.add_argument("--delay", type=float, default=15.0)
    p.add_argument("--upstream")
    p.add_argument("--front-key")
    p.add_argument("--front-secret")
    ARGS = p.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    print(json.dumps({"port": srv.server_address[1]}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
