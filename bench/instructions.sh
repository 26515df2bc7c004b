#!/usr/bin/env bash
# User-space instructions per request of lanyard's proxy, counted by callgrind
# (a count that does not depend on how busy the machine is).
#
#   bash bench/instructions.sh [LANYARD_BINARY ...]     # default: target/release/lanyard
#   N=4000 bash bench/instructions.sh a/lanyard b/lanyard
#
# For each binary and mode (reverse, forward, aws), `lanyard run` is started under
# callgrind twice, with a client that sends N requests and 0 requests over one
# keep-alive connection to a plain loopback upstream; the difference divided by N
# is the cost of one request (start-up cancels out). One worker thread.
#
#   reverse  /r/<secret>/api/x, a Bearer header injected
#   forward  GET http://127.0.0.1:<up>/x through the proxy, a Bearer header injected
#   aws      the same request through an AWS signing route: the client's placeholder
#            SigV4 headers are stripped and the request is signed afresh (aws-sigv4)
#            with keys from agent/tests/peers/aws_sts.py in `ok` mode (one exchange at
#            start, which cancels out); the ratio aws/forward is printed per binary
#
#   MODES="forward aws" bash bench/instructions.sh ...  # a subset
#
# nginx is counted first the same way (N requests minus none, one process with
# master_process off, proxy_set_header adding the Bearer header, the same upstream),
# and each lanyard row shows its ratio to nginx. NGINX_BASELINE=0 skips it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000}
MODES=${MODES:-reverse forward aws}
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/target/release/lanyard")
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
WORK=$(mktemp -d)
trap 'kill "${UPID:-}" "${STSPID:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

cat >"$WORK/upstream.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        a = self.headers.get("Authorization", "")
        # A Bearer header (injected), or a SigV4 signature with the real key
        # (ASIA… from the STS peer, never the job's ASIALANYARD placeholder).
        ok = a.startswith("Bearer ") or (
            a.startswith("AWS4-HMAC-SHA256 Credential=ASIA")
            and not a.startswith("AWS4-HMAC-SHA256 Credential=ASIALANYARD")
            and "x-amz-date" in self.headers)
        body = b"ok" if ok else b"no credential"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF
cat >"$WORK/client.py" <<'EOF'
import base64, http.client, os, sys
n, mode = int(sys.argv[1]), sys.argv[2]
if mode == "nginx":
    proxy = "http://x:x@127.0.0.1:" + os.environ["NGINX_PORT"]
else:
    proxy = os.environ["LANYARD_PROXY"]
secret = proxy.split("@")[0].rsplit(":", 1)[1]
lhost, lport = proxy.rsplit("@", 1)[1].split(":")
up = os.environ["UP"]
c = http.client.HTTPConnection(lhost, int(lport))
auth = "Basic " + base64.b64encode(f"lanyard:{secret}".encode()).decode()
for _ in range(n):
    if mode == "nginx":  # nginx adds the header (proxy_set_header), like a reverse route
        c.request("GET", "/x", headers={"Host": f"{lhost}:{lport}"})
    elif mode == "reverse":
        c.request("GET", f"/r/{secret}/api/x", headers={"Host": f"{lhost}:{lport}"})
    elif mode == "forward":
        c.request("GET", f"http://127.0.0.1:{up}/x", headers={"Proxy-Authorization": auth})
    else:  # aws: what an SDK sends, signed with the job's placeholder keys
        c.request("GET", f"http://127.0.0.1:{up}/x", headers={
            "Proxy-Authorization": auth,
            "X-Amz-Date": "20260101T000000Z",
            "X-Amz-Security-Token": os.environ["AWS_SESSION_TOKEN"],
            "Authorization": "AWS4-HMAC-SHA256 Credential=" + os.environ["AWS_ACCESS_KEY_ID"]
            + "/20260101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")
EOF
python3 "$WORK/upstream.py" >"$WORK/up.port" &
UPID=$!
until [ -s "$WORK/up.port" ]; do kill -0 "$UPID" || exit 1; sleep 0.05; done
UP=$(cat "$WORK/up.port")
TOKEN=$(python3 - <<'EOF'
import base64, json, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
print(b({"alg": "none", "typ": "JWT"}) + "." + b({"iss": "https://bench.invalid", "sub": "bench", "aud": "bench", "iat": int(time.time()), "exp": int(time.time()) + 3600}) + ".c2ln")
EOF
)
cat >"$WORK/lanyard.toml" <<EOF
[identity]
source = "env"
variable = "BENCH_TOKEN"

[[credential]]
name = "t"
exchange = "passthrough"

[[route]]
name = "api"
url = "http://127.0.0.1:$UP/"
credential = "t"

[audit]
file = "$WORK/audit.jsonl"
EOF
case " $MODES " in *" aws "*)
    mkdir -p "$WORK/sts"
    python3 "$ROOT/agent/tests/peers/aws_sts.py" --dir "$WORK/sts" --mode ok --ttl 3600 >"$WORK/sts.port" 2>/dev/null &
    STSPID=$!
    until [ -s "$WORK/sts.port" ]; do kill -0 "$STSPID" || exit 1; sleep 0.05; done
    STS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/sts.port")
    cat >"$WORK/lanyard-aws.toml" <<EOF
[identity]
source = "env"
variable = "BENCH_TOKEN"

[[credential]]
name = "aws"
exchange = "aws-web-identity"
role_arn = "arn:aws:iam::123456789012:role/bench"
region = "us-east-1"
sts_endpoint = "http://127.0.0.1:$STS"

[[route]]
name = "api"
url = "http://127.0.0.1:$UP/"
credential = "aws"
aws_service = "sts"
aws_region = "us-east-1"

[audit]
file = "$WORK/audit.jsonl"
EOF
    ;;
esac

count() { # binary mode n → total instructions of the lanyard process
    local out="$WORK/cg-$(basename "$1")-$2-$3.out" config="$WORK/lanyard.toml"
    [ "$2" != aws ] || config="$WORK/lanyard-aws.toml"
    rm -f "$out"
    (cd "$WORK" && BENCH_TOKEN="$TOKEN" UP="$UP" LANYARD_WORKER_THREADS=1 \
        valgrind --tool=callgrind --callgrind-out-file="$out" --trace-children=no \
        "$1" run --config "$config" -- python3 "$WORK/client.py" "$3" "$2" \
        >"$WORK/run.log" 2>&1) || { cat "$WORK/run.log" >&2; return 1; }
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
count_nginx() { # n → total instructions of nginx (one process: master_process off), the same
    # request proxied to the same upstream with one header set (proxy_set_header)
    local n=$1 out="$WORK/cg-nginx-$1.out" dir="$WORK/nginx-$1" port vp end
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    upstream up {
        server 127.0.0.1:$UP;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer bench";
        }
    }
}
EOF
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$NGINX" -p "$dir" -c "$dir/nginx.conf" \
        -e "$dir/error.log" >"$dir/run.log" 2>&1 &
    vp=$!
    end=$((SECONDS + 60))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; do
        if ! kill -0 "$vp" 2>/dev/null || [ $SECONDS -gt $end ]; then cat "$dir/run.log" "$dir/error.log" >&2; return 1; fi
        sleep 0.1
    done
    # the readiness probe above is one connection without a request, in both counts
    UP="$UP" NGINX_PORT="$port" python3 "$WORK/client.py" "$n" nginx || { kill "$vp"; return 1; }
    kill -QUIT "$vp"
    wait "$vp" || true
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}
ratio() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / int(sys.argv[2]):.2f}x")' "$1" "$2"; }

printf '%-60s %-8s %12s\n' binary mode instr/request
if [ "${NGINX_BASELINE:-1}" = 1 ] && [ -x "$NGINX" ]; then
    base=$(count_nginx 0)
    full=$(count_nginx "$N")
    NGINX_PER=$(((full - base) / N))
    printf '%-60s %-8s %12d\n' "$NGINX" nginx "$NGINX_PER"
fi
for bin in "${BINS[@]}"; do
    declare -A per=()
    for mode in $MODES; do
        base=$(count "$bin" "$mode" 0)
        full=$(count "$bin" "$mode" "$N")
        per[$mode]=$(((full - base) / N))
        if [ -n "${NGINX_PER:-}" ]; then
            printf '%-60s %-8s %12d %6s\n' "$bin" "$mode" "${per[$mode]}" "$(ratio "${per[$mode]}" "$NGINX_PER")"
        else
            printf '%-60s %-8s %12d\n' "$bin" "$mode" "${per[$mode]}"
        fi
    done
    if [ -n "${per[aws]:-}" ] && [ -n "${per[forward]:-}" ]; then
        ratio=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / int(sys.argv[2]):.2f}x")' "${per[aws]}" "${per[forward]}")
        printf '%-60s %-8s %12s\n' "$bin" aws/fwd "$ratio"
    fi
    unset per
done
