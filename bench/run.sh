#!/usr/bin/env bash
# First cut of the lanyard benchmark harness (issue 5).
#
#   bash bench/run.sh            # DURATION=5s by default; DURATION=10s bash bench/run.sh
#
# Installs nginx and wrk from Debian if missing, builds lanyard in release mode into
# target/bench, starts a local upstream nginx and measures, with wrk, the same job
# (adding `Authorization: Bearer <token>`) done by: the client itself (direct), an nginx
# reverse proxy, lanyard in reverse mode and lanyard in forward mode (plain HTTP).
# Writes the table and the machine description to bench/RESULTS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
DURATION=${DURATION:-5s}
CONNS=${CONNS:-"1 64"}
COLD_RUNS=${COLD_RUNS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}
LANYARD=$CARGO_TARGET_DIR/release/lanyard

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
for t in python3 curl; do command -v "$t" >/dev/null 2>&1 || need_apt+=("$t"); done
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- build
log "building lanyard (release) into $CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --locked -p lanyard) >&2

# ---------------------------------------------------------------- scratch + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-bench.XXXXXX")
PIDS=()
LANYARD_RUNNING=0
cleanup() {
    set +e
    if [ "$LANYARD_RUNNING" = 1 ]; then
        LANYARD_STATE_DIR=$WORK/state "$LANYARD" stop >/dev/null 2>&1
    fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_http() { # url [curl args...]: poll until the server answers at all
    local url=$1; shift
    for _ in $(seq 200); do
        if curl -s -o /dev/null --max-time 1 --noproxy "*" "$@" "$url"; then return 0; fi
        sleep 0.05
    done
    log "no answer from $url"; return 1
}

expect_status() { # want url [curl args...]
    local want=$1 url=$2; shift 2
    local got
    got=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 --noproxy "*" "$@" "$url" || true)
    if [ "$got" != "$want" ]; then log "expected $want from $url, got $got"; return 1; fi
}

# A well-formed unsigned JWT with a future exp: lanyard decodes identity tokens as JWTs.
TOKEN=$(python3 - <<'EOF'
import base64, json, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
print(b({"alg": "none", "typ": "JWT"}) + "." + b({"iss": "https://bench.invalid", "sub": "bench", "aud": "bench", "iat": int(time.time()), "exp": int(time.time()) + 6 * 3600}) + ".c2ln")
EOF
)

# ---------------------------------------------------------------- upstream nginx
UP_PORT=$(free_port)
BODY='{"id":"0f8e2c1a-bench","status":"ok","service":"lanyard-bench-upstream","items":[{"name":"alpha","value":1},{"name":"beta","value":2},{"name":"gamma","value":3}],"note":"static json served only to authorized callers"}'

nginx_common() { # dir
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
EOF
}

start_nginx() { # name conf-body -> sets NGINX_PID
    local dir=$WORK/$1
    mkdir -p "$dir"
    { nginx_common "$dir"; printf '%s\n}\n' "$2"; } >"$dir/nginx.conf"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

start_nginx upstream "
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type application/json;
            if (\$http_authorization != \"Bearer $TOKEN\") { return 401 '{\"error\":\"unauthorized\"}'; }
            return 200 '$BODY';
        }
    }"
UP_PID=$NGINX_PID
UP_URL=http://127.0.0.1:$UP_PORT/
wait_http "$UP_URL"
expect_status 401 "$UP_URL"
expect_status 200 "$UP_URL" -H "Authorization: Bearer $TOKEN"
log "upstream nginx on $UP_URL (body $(curl -s --noproxy "*" -H "Authorization: Bearer $TOKEN" "$UP_URL" | wc -c) bytes)"

# ---------------------------------------------------------------- nginx reverse proxy
NP_PORT=$(free_port)
start_nginx proxy "
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NP_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Authorization \"Bearer $TOKEN\";
        }
    }"
NP_PID=$NGINX_PID
NP_URL=http://127.0.0.1:$NP_PORT/
wait_http "$NP_URL"
expect_status 200 "$NP_URL"

# ---------------------------------------------------------------- lanyard
cat >"$WORK/lanyard.toml" <<EOF
[identity]
source = "env"
variable = "BENCH_TOKEN"

[[credential]]
name = "t"
exchange = "passthrough"

[[route]]
name = "api"
url = "http://127.0.0.1:$UP_PORT/"
credential = "t"
EOF

lanyard_start() { # prints the sh exports
    BENCH_TOKEN=$TOKEN LANYARD_STATE_DIR=$WORK/state \
        "$LANYARD" start --config "$WORK/lanyard.toml" --export sh --watch-pid $$
}
lanyard_stop() { LANYARD_STATE_DIR=$WORK/state "$LANYARD" stop >/dev/null 2>&1; }

# cold start to ready (passthrough: no exchange round trip), median of COLD_RUNS
cold=()
for _ in $(seq "$COLD_RUNS"); do
    t0=$(date +%s%N)
    if ! lanyard_start >"$WORK/exports.sh" 2>"$WORK/start.err"; then
        log "lanyard start failed:"; cat "$WORK/start.err" >&2; exit 1
    fi
    t1=$(date +%s%N)
    LANYARD_RUNNING=1
    cold+=($(( (t1 - t0) / 1000 )))
    lanyard_stop
    LANYARD_RUNNING=0
done
COLD_MS=$(printf '%s\n' "${cold[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}')
log "lanyard cold start to ready: median ${COLD_MS} ms over $COLD_RUNS runs (${cold[*]} us)"

lanyard_start >"$WORK/exports.sh" 2>"$WORK/start.err" || { cat "$WORK/start.err" >&2; exit 1; }
LANYARD_RUNNING=1
# read the exports in a subshell: this shell must not pick up the proxy variables
# shellcheck disable=SC1091
LY_REV_URL=$(. "$WORK/exports.sh"; printf '%s' "$LANYARD_URL_API")
# shellcheck disable=SC1091
LY_PROXY=$(. "$WORK/exports.sh"; printf '%s' "$LANYARD_PROXY")
LY_PID=$(tr -d '[:space:]' <"$WORK/state/pid")
expect_status 200 "$LY_REV_URL"
# forward mode: absolute-form request through the proxy, with the per-job secret
read -r LY_FWD_URL LY_PROXY_AUTH < <(python3 -c '
import sys, base64, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(f"http://{u.hostname}:{u.port}/", base64.b64encode(f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password)}".encode()).decode())
' "$LY_PROXY")
expect_status 200 "$UP_URL" --noproxy '' -x "$LY_PROXY"
BINARY_BYTES=$(stat -c %s "$LANYARD")
log "lanyard pid $LY_PID, reverse $LY_REV_URL, proxy on $LY_FWD_URL"

# ---------------------------------------------------------------- wrk
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF
cat "$WORK/report.lua" >"$WORK/direct.lua"
printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$TOKEN" >>"$WORK/direct.lua"
cat "$WORK/report.lua" >"$WORK/forward.lua"
cat >>"$WORK/forward.lua" <<EOF
wrk.path = "http://127.0.0.1:$UP_PORT/"
wrk.headers["Host"] = "127.0.0.1:$UP_PORT"
wrk.headers["Proxy-Authorization"] = "Basic $LY_PROXY_AUTH"
EOF

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid (and its children, for nginx's master + worker)
    local total=0 p f
    for p in "$1" $(pgrep -P "$1" || true); do
        f=$(cut -d' ' -f14,15 <"/proc/$p/stat" 2>/dev/null) || continue
        total=$(( total + ${f% *} + ${f#* } ))
    done
    echo "$total"
}
peak_rss_kb() { # sum of VmHWM over pid and children
    local total=0 p v
    for p in "$1" $(pgrep -P "$1" || true); do
        v=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        total=$(( total + ${v:-0} ))
    done
    echo "$total"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
run_wrk() { # name pid(or -) url script conns
    local name=$1 pid=$2 url=$3 script=$4 c=$5 t=1 before=0 after=0 out line
    [ "$c" -ge 2 ] && t=2
    local tw0 tw
    tw0=$(ss -Htn state time-wait "( dport = :$UP_PORT )" 2>/dev/null | wc -l || echo 0)
    [ "$pid" != - ] && before=$(cpu_ticks "$pid")
    out=$(wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$script" "$url")
    [ "$pid" != - ] && after=$(cpu_ticks "$pid")
    tw=$(ss -Htn state time-wait "( dport = :$UP_PORT )" 2>/dev/null | wc -l || echo 0)
    log "$name c=$c: new upstream sockets in TIME-WAIT during the run: $(( tw - tw0 )) (0 = upstream connections reused)"
    printf '%s\n' "$out" >"$WORK/wrk-$name-$c.txt"
    line=$(grep '^BENCH ' <<<"$out")
    eval "local ${line#BENCH }"
    local rss=-
    [ "$pid" != - ] && rss=$(peak_rss_kb "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$requests" "$duration_us" \
        "$p50_us" "$p99_us" "$((errors + non2xx))" "$(( after - before ))" "$rss" >>"$RESULTS"
    log "$name c=$c: $requests req in ${duration_us}us, p50 ${p50_us}us p99 ${p99_us}us, errors+non2xx $((errors + non2xx))"
}

for c in $CONNS; do
    run_wrk direct - "$UP_URL" "$WORK/direct.lua" "$c"
    run_wrk nginx "$NP_PID" "$NP_URL" "$WORK/report.lua" "$c"
    run_wrk lanyard-reverse "$LY_PID" "$LY_REV_URL" "$WORK/report.lua" "$c"
    run_wrk lanyard-forward "$LY_PID" "$LY_FWD_URL" "$WORK/forward.lua" "$c"
done
UP_RSS=$(peak_rss_kb "$UP_PID")

# ---------------------------------------------------------------- report
CMD="bash bench/run.sh  (DURATION=$DURATION CONNS=\"$CONNS\" COLD_RUNS=$COLD_RUNS; wrk -t1 at 1 connection, -t2 at 64)"
TABLE=$(python3 - "$RESULTS" "$CLK_TCK" "$COLD_MS" "$BINARY_BYTES" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tck = int(sys.argv[2])
data = {}
for name, c, req, dur, p50, p99, err, ticks, rss in rows:
    req, dur = int(req), int(dur)
    d = dict(rps=req / (dur / 1e6), p50=int(p50), p99=int(p99), err=int(err),
             cpu=(int(ticks) / tck * 1e6 / req) if rss != "-" else None,
             rss=int(rss) / 1024 if rss != "-" else None, req=req)
    data[(name, c)] = d
def f(x, fmt):
    return "–" if x is None else fmt.format(x)
out = ["| contender | conns | req/s | ×direct | ×nginx | p50 µs | p99 µs | added p50 µs | proxy CPU µs/req | ×nginx CPU | peak RSS MB | errors |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for (name, c), d in data.items():
    base, ng = data[("direct", c)], data.get(("nginx", c))
    added = d["p50"] - base["p50"] if name != "direct" else None
    cpu_ratio = d["cpu"] / ng["cpu"] if (d["cpu"] and ng and ng["cpu"]) else None
    out.append("| {} | {} | {:,.0f} | {:.2f} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        name, c, d["rps"], d["rps"] / base["rps"], f(d["rps"] / ng["rps"] if ng else None, "{:.2f}"),
        d["p50"], d["p99"], f(added, "{:+d}"), f(d["cpu"], "{:.1f}"), f(cpu_ratio, "{:.2f}"),
        f(d["rss"], "{:.1f}"), d["err"]))
cold, binary = float(sys.argv[3]), int(sys.argv[4]) / 1048576
out += ["", "Targets of issue 5 that this run can check (lanyard-reverse unless said):", "",
        "| target | this run | met |", "|---|---:|:---:|"]
def chk(what, value, ok):
    out.append("| {} | {} | {} |".format(what, value, "yes" if ok else "**no**"))
ly1, ly64 = data.get(("lanyard-reverse", "1")), data.get(("lanyard-reverse", "64"))
ng1, ng64 = data.get(("nginx", "1")), data.get(("nginx", "64"))
d1 = data.get(("direct", "1"))
if ly64 and ng64:
    chk("proxy CPU per request at 64 conns ≤ nginx's", "{:.1f} vs {:.1f} µs".format(ly64["cpu"], ng64["cpu"]), ly64["cpu"] <= ng64["cpu"])
    chk("throughput at 64 conns ≥ 1.0× nginx (lanyard: 2 threads, nginx: 1 worker)", "{:.2f}×".format(ly64["rps"] / ng64["rps"]), ly64["rps"] >= ng64["rps"])
    chk("peak RSS at 64 conns < 20 MB", "{:.1f} MB".format(ly64["rss"]), ly64["rss"] < 20)
if ly1 and ng1 and d1:
    a, b = ly1["p50"] - d1["p50"], ng1["p50"] - d1["p50"]
    chk("added median latency at 1 conn ≤ nginx's", "{:+d} vs {:+d} µs".format(a, b), a <= b)
    chk("proxy CPU per request at 1 conn ≤ nginx's", "{:.1f} vs {:.1f} µs".format(ly1["cpu"], ng1["cpu"]), ly1["cpu"] <= ng1["cpu"])
chk("cold start to ready (no exchange) < 20 ms", "{:.1f} ms".format(cold), cold < 20)
chk("release binary < 15 MB", "{:.1f} MB".format(binary), binary < 15)
print("\n".join(out))
EOF
)

CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
NGINX_VER=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VER=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)
LY_VER=$("$LANYARD" --version 2>/dev/null || echo unknown)
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)

{
cat <<EOF
# lanyard benchmarks — first cut

Generated by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), lanyard at commit \`$GIT_REV\` (\`$LY_VER\`).

**Read with care.** Client (wrk), proxy and upstream share the same $(nproc) cores, and
other jobs (test suites of other agents) were running on the machine during this run, so
throughput and latency are noisy; proxy CPU time per request is the steadier figure.
Nothing is pinned to a core yet.

## Command

\`\`\`
$CMD
\`\`\`

## Machine

- nproc: $(nproc)
- CPU: $CPU_MODEL
- \`uname -a\`: $(uname -a)
- $NGINX_VER (one worker, master process on; figures sum master + worker), $WRK_VER, lanyard built with \`cargo build --release --locked -p lanyard\` (tokio runtime with 2 worker threads, fixed in \`agent/src/cli.rs\`)

## Results

Every contender does the same job: a GET whose request must reach the upstream nginx
with \`Authorization: Bearer <token>\` (a ~200-byte JSON comes back; 401 without it).

- **direct**: wrk adds the header itself (the physical baseline).
- **nginx**: second nginx, one worker, \`proxy_set_header Authorization\`, upstream keepalive.
- **lanyard-reverse**: \`lanyard start\`, \`passthrough\` credential from an \`env\` identity, wrk against \`\$LANYARD_URL_API\`.
- **lanyard-forward**: the same daemon as an HTTP forward proxy: wrk sends absolute-form requests to the listener with \`Proxy-Authorization: Basic\` (the per-job secret); plain HTTP to a plain-HTTP upstream.

$TABLE

- ×direct / ×nginx: req/s relative to direct and to nginx at the same connection count, same run.
- added p50: contender's median latency minus direct's at the same connection count.
- proxy CPU: utime+stime of the proxy process(es) from \`/proc/<pid>/stat\` over the run, divided by requests (clock tick $((1000 / CLK_TCK)) ms). The lanyard rows share one daemon, so its peak RSS is cumulative over the runs before it.
- peak RSS: \`VmHWM\` from \`/proc/<pid>/status\` after the run (nginx: master + worker). Upstream nginx peak RSS: $(awk "BEGIN {printf \"%.1f\", $UP_RSS/1024}") MB.
- errors: socket errors + non-2xx answers counted by wrk.

| other figure | value | target (issue 5) |
|---|---:|---:|
| lanyard cold start to ready (\`lanyard start\`, passthrough, no exchange), median of $COLD_RUNS | $COLD_MS ms | < 20 ms |
| release binary size (\`$(realpath --relative-to="$ROOT" "$LANYARD")\`) | $(awk "BEGIN {printf \"%.1f\", $BINARY_BYTES/1048576}") MB ($BINARY_BYTES bytes) | < 15 MB |

Cold start samples (µs): ${cold[*]}

## Not measured yet

- mitmproxy (reverse mode with an addon, and forward with TLS interception)
- haproxy with \`http-request set-header\`
- OpenBao Proxy with auto-auth vs lanyard's Vault KV read (and direct OpenBao); cold start with a local OpenBao exchange
- HTTPS: upstream over TLS, nginx terminating and re-originating TLS, lanyard forward to an HTTPS upstream, intercepted HTTPS (CONNECT + interception)
- lanyard at 64 connections with 1 and with 2 worker threads against nginx with 1 and 2 workers (the worker count is fixed at 2 in \`agent/src/cli.rs\`; today it is compared with a 1-worker nginx)
- CPU pinning (client on one core, proxy + upstream on the other) and whether it steadies the figures
- latency CDF plot (PNG)
- \`oha\` as a second load generator
EOF
} >"$BENCH/RESULTS.md"

printf '\n%s\n\ncold start to ready: %s ms (median of %s); binary: %s bytes\n' "$TABLE" "$COLD_MS" "$COLD_RUNS" "$BINARY_BYTES"
log "wrote $BENCH/RESULTS.md"
