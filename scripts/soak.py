"""The soak driver behind scripts/soak.sh (issue 11). Run it through soak.sh.

Starts the real peers on loopback (issuer.py, the RFC 8693 STS with
TOKEN_TTL=5, and three validating upstreams), starts lanyard with
`lanyard start`, sends mixed load for DURATION, samples lanyard's RSS and
open fds, stops lanyard with `lanyard stop`, and prints a summary.

The routed upstreams check every presented credential themselves: the first
time they see a token they ask the STS (RFC 7662 introspection) whether it is
active and when it expires; then, on every request, `now >= exp` counts as an
expired credential served and gets 401, like a real API would answer. The
unrouted upstream (reached through a CONNECT tunnel) counts any Authorization
it gets that the client did not send itself.

Environment: LANYARD_BIN, DURATION (30m; humantime-ish: 90s, 2m, 1h),
SAMPLE (seconds between RSS/fd samples, 10), CLIENTS (threads per load kind,
1), TTL (credential lifetime in seconds, 5), SOAK_DIR (scratch; kept).
"""

import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "agent", "tests", "peers")
sys.path.insert(0, PEERS)
from upstream import make_certs  # noqa: E402  (the test upstream's CA and leaf)

LOCK = threading.Lock()
STATS = {
    "requests": 0,
    "ok": 0,
    "errors": 0,
    "client_401": 0,
    "upstream_401": 0,
    "expired_served": 0,
    "inactive_served": 0,
    "missing_credential": 0,
    "tunnel_leaks": 0,
    "tokens_seen": 0,
    "min_margin_ms": None,
}
KINDS = {}
ERRORS = {}
# Each expired credential served: when, how late, and the token's iat/exp
# as the STS states them (at most 50 kept).
EXPIRED = []


def bump(key, n=1):
    with LOCK:
        STATS[key] += n


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", s.strip())
    if not m:
        raise SystemExit(f"DURATION {s!r}: expected e.g. 90s, 2m, 30m, 1h")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def spawn_ready(name, argv, env, logdir):
    """Start a peer that prints one JSON ready line on stdout."""
    err = open(os.path.join(logdir, f"{name}.log"), "w")
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    line = p.stdout.readline()
    if not line:
        raise SystemExit(f"{name} exited before its ready line; see {logdir}/{name}.log")
    return p, json.loads(line)


class Introspector:
    """token → exp (epoch seconds) from the STS, asked once per token."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.cache = {}
        self.lock = threading.Lock()

    def exp(self, token):
        with self.lock:
            if token in self.cache:
                return self.cache[token]
        req = urllib.request.Request(
            self.endpoint,
            data=("token=" + token).encode(),
            headers={
                "Authorization": "Basic " + b64encode(b"lanyard:lanyard-secret").decode(),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.load(r)
        exp = (answer["exp"], answer.get("iat")) if answer.get("active") else None
        with self.lock:
            if token not in self.cache:
                STATS["tokens_seen"] += 1
            self.cache[token] = exp
        return exp


def upstream(name, tls_dir, introspector):
    """A validating upstream: 200 for a live credential, 401 otherwise."""

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            status = 200
            auth = self.headers.get_all("Authorization") or []
            if introspector is None:
                # Unrouted: only what the client itself sent may arrive.
                if auth != (["Bearer client-own"] if self.headers.get("X-Own") else []):
                    bump("tunnel_leaks")
                    status = 500
            elif len(auth) != 1 or not auth[0].startswith("Bearer "):
                bump("missing_credential")
                status = 401
            else:
                token = auth[0][len("Bearer "):]
                known = introspector.exp(token)
                now = time.time()
                exp, iat = known if known else (None, None)
                if exp is None:
                    bump("inactive_served")
                    status = 401
                else:
                    margin = int((exp - now) * 1000)
                    with LOCK:
                        m = STATS["min_margin_ms"]
                        STATS["min_margin_ms"] = margin if m is None else min(m, margin)
                    if now >= exp:
                        bump("expired_served")
                        status = 401
                        with LOCK:
                            if len(EXPIRED) < 50:
                                EXPIRED.append({"at": round(now, 3), "late_ms": int((now - exp) * 1000),
                                                "iat": iat, "exp": exp, "path": self.path})
            if status == 401:
                bump("upstream_401")
            data = json.dumps({"ok": status == 200, "len": len(body)}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = answer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    if tls_dir:
        os.makedirs(tls_dir, exist_ok=True)
        ca, cert, key = make_certs(tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, name=name, daemon=True).start()
    return srv.server_address[1], (os.path.join(tls_dir, "ca.pem") if tls_dir else None)


def load(kind, make, deadline, stop):
    """One client thread: a keep-alive session, renewed every 50 requests."""
    s, n = None, 0
    while time.time() < deadline and not stop.is_set():
        if s is None or n % 50 == 0:
            if s is not None:
                s.close()
            s = requests.Session()
            s.trust_env = False
        n += 1
        method, url, kw, expect = make(n)
        try:
            r = s.request(method, url, timeout=30, **kw)
            code = r.status_code
            r.content
        except Exception as e:  # noqa: BLE001 - every failure is counted and kept
            code = None
            with LOCK:
                ERRORS[f"{kind}: {type(e).__name__}: {str(e)[:160]}"] = (
                    ERRORS.get(f"{kind}: {type(e).__name__}: {str(e)[:160]}", 0) + 1
                )
            s = None
        with LOCK:
            STATS["requests"] += 1
            KINDS[kind] = KINDS.get(kind, 0) + 1
            if code == expect:
                STATS["ok"] += 1
            elif code == 401:
                STATS["client_401"] += 1
            elif code is not None:
                STATS["errors"] += 1
                ERRORS[f"{kind}: status {code}"] = ERRORS.get(f"{kind}: status {code}", 0) + 1
            else:
                STATS["errors"] += 1


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    lanyard = os.environ.get("LANYARD_BIN") or os.path.join(ROOT, "target/release/lanyard")
    duration = parse_duration(os.environ.get("DURATION", "30m"))
    every = float(os.environ.get("SAMPLE", "10"))
    clients = int(os.environ.get("CLIENTS", "1"))
    ttl = int(os.environ.get("TTL", "5"))
    work = os.environ.get("SOAK_DIR") or tempfile.mkdtemp(prefix="lanyard-soak.")
    os.makedirs(work, exist_ok=True)
    log(f"scratch {work}; {lanyard}; duration {duration:.0f}s; ttl {ttl}s")
    procs = []
    env = dict(os.environ)
    try:
        py = os.path.join(ROOT, "target/peers/venv/bin/python")
        p, iss = spawn_ready("issuer", [py, os.path.join(PEERS, "issuer.py")], env, work)
        procs.append(p)
        issuer = iss["issuer"]
        p, sts = spawn_ready(
            "sts",
            ["node", os.path.join(PEERS, "sts/server.mjs")],
            dict(env, SUBJECT_ISSUER=issuer, TOKEN_TTL=str(ttl)),
            work,
        )
        procs.append(p)
        mint = json.dumps({"platform": "gitlab", "aud": "https://sts.test",
                           "ttl": int(duration) + 3600, "claims": {"project_path": "acme/app"}})
        with urllib.request.urlopen(urllib.request.Request(
                issuer + "/mint", data=mint.encode(),
                headers={"Content-Type": "application/json"}), timeout=10) as r:
            subject = json.load(r)["token"]
        intro = Introspector(sts["introspection_endpoint"])
        ups_port, ups_ca = upstream("routed-https", os.path.join(work, "ups"), intro)
        up_port, _ = upstream("routed-http", None, intro)
        other_port, other_ca = upstream("unrouted-https", os.path.join(work, "other"), None)
        shutil.copy(ups_ca, os.path.join(work, "upstream-ca.pem"))
        cfg = os.path.join(work, "lanyard.toml")
        with open(cfg, "w") as f:
            f.write(f"""[identity]
source = "env"
variable = "CI_JOB_JWT"

[[credential]]
name = "sts"
exchange = "token-exchange"
issuer = "{sts['issuer']}"
client_id = "lanyard"
client_secret_env = "STS_SECRET"
audience = "https://api.test"

[[route]]
name = "api"
url = "https://127.0.0.1:{ups_port}/v1/"
credential = "sts"

[[route]]
name = "plain"
url = "http://127.0.0.1:{up_port}/v1/"
credential = "sts"

[upstream]
extra_ca = "upstream-ca.pem"
""")
        state = os.path.join(work, "state")
        lenv = dict(env, CI_JOB_JWT=subject, STS_SECRET="lanyard-secret",
                    LANYARD_STATE_DIR=state, LANYARD_LOG=env.get("LANYARD_LOG", "info"))
        out = subprocess.run(
            [lanyard, "start", "--config", cfg, "--export", "sh", "--watch-pid", str(os.getpid()),
             "--max-lifetime", f"{int(duration) + 600}s"],
            env=lenv, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise SystemExit(f"lanyard start: {out.returncode}: {out.stderr}")
        with open(os.path.join(work, "exports.sh"), "w") as f:
            f.write(out.stdout)
        dump = subprocess.run(["bash", "-c", '. "$1" && env -0', "-", os.path.join(work, "exports.sh")],
                              env={"PATH": env["PATH"]}, capture_output=True, check=True)
        ex = dict(kv.split("=", 1) for kv in dump.stdout.decode().split("\0") if "=" in kv)
        pid = int(open(os.path.join(state, "pid")).read().strip())
        proxy, ca = ex["HTTPS_PROXY"], ex["LANYARD_CA_FILE"]
        reverse = ex["LANYARD_URL_API"].rstrip("/")
        log(f"lanyard pid {pid}; proxy {re.sub(r'//[^@]*@', '//[secret]@', proxy)}")

        def body(n):
            return json.dumps({"n": n, "pad": "x" * (n % 7 * 300)})

        kinds = {
            # routed HTTPS through CONNECT: intercepted with the job CA
            "intercept": lambda n: (("POST", f"https://127.0.0.1:{ups_port}/v1/items",
                                     {"data": body(n), "headers": {"Content-Type": "application/json"}})
                                    if n % 3 == 0 else
                                    ("GET", f"https://127.0.0.1:{ups_port}/v1/items/{n}", {})) +
                                   ({"proxies": {"https": proxy}, "verify": ca},),
            # routed plain HTTP through the forward proxy (absolute-form)
            "forward-http": lambda n: ("POST" if n % 4 == 0 else "GET",
                                       f"http://127.0.0.1:{up_port}/v1/x/{n}",
                                       {"proxies": {"http": proxy}, "data": body(n) if n % 4 == 0 else None}),
            # reverse mode: no proxy, lanyard re-originates TLS
            "reverse": lambda n: ("PUT" if n % 5 == 0 else "GET", f"{reverse}/r{n}",
                                  {"data": body(n) if n % 5 == 0 else None}),
            # unrouted: tunnelled untouched, the client's own header only
            "tunnel": lambda n: ("GET", f"https://127.0.0.1:{other_port}/t/{n}",
                                 {"proxies": {"https": proxy}, "verify": other_ca,
                                  "headers": {"Authorization": "Bearer client-own", "X-Own": "1"} if n % 2 else {}}),
        }

        def wrap(make):
            def f(n):
                m = make(n)
                kw = dict(m[2])
                if len(m) > 3:
                    kw.update(m[3])
                return m[0], m[1], {k: v for k, v in kw.items() if v is not None}, 200
            return f

        stop = threading.Event()
        deadline = time.time() + duration
        threads = [threading.Thread(target=load, args=(k, wrap(m), deadline, stop), daemon=True)
                   for k, m in kinds.items() for _ in range(clients)]
        samples = []
        with open(os.path.join(work, "samples.csv"), "w") as csv:
            csv.write("t_s,rss_kb,fds,requests\n")
            t0 = time.time()
            samples.append((0, *sample(pid)))
            for t in threads:
                t.start()
            while time.time() < deadline:
                time.sleep(min(every, max(0.0, deadline - time.time())))
                s = (round(time.time() - t0), *sample(pid))
                samples.append(s)
                csv.write(f"{s[0]},{s[1]},{s[2]},{STATS['requests']}\n")
                csv.flush()
                log(f"t={s[0]}s rss={s[1]}kB fds={s[2]} requests={STATS['requests']} "
                    f"errors={STATS['errors']} 401={STATS['client_401']}/{STATS['upstream_401']} "
                    f"expired={STATS['expired_served']} tokens={STATS['tokens_seen']}")
            for t in threads:
                t.join(60)
        # Right after the load stopped (pooled upstream connections may still be open).
        idle = sample(pid)
        stop_out = subprocess.run([lanyard, "stop"], env=lenv, capture_output=True, text=True, timeout=60)
        summary = dict(STATS)
        summary.update({
            "duration_s": round(duration),
            "ttl_s": ttl,
            "per_kind": KINDS,
            "error_kinds": ERRORS,
            "expired_events": EXPIRED,
            # the first sample after one minute of load (warm pools, caches), the last, the max
            "rss_kb": {"start": samples[0][1], "warm": warm(samples)[1], "last": samples[-1][1],
                       "max": max(s[1] for s in samples), "after_load": idle[0]},
            "fds": {"start": samples[0][2], "warm": warm(samples)[2], "last": samples[-1][2],
                    "max": max(s[2] for s in samples), "after_load": idle[1]},
            "lanyard_stop": stop_out.returncode,
            "scratch": work,
        })
        print(json.dumps(summary, indent=2))
        bad = summary["expired_served"] or summary["client_401"] or summary["upstream_401"] \
            or summary["errors"] or summary["tunnel_leaks"] or summary["missing_credential"]
        return 1 if bad else 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def warm(samples):
    return next((s for s in samples if s[0] >= 60), samples[-1])


if __name__ == "__main__":
    sys.exit(main())
