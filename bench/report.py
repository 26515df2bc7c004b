"""Turns one bench/run.sh run into RESULTS.md and latency-cdf.png.

    python bench/report.py WORKDIR OUTDIR

WORKDIR holds runs.tsv (name group conns cpu_ticks rss_kb workers json), crosscheck.tsv,
errors.tsv, cold.tsv and meta.json, all written by run.sh.
"""
import json
import os
import statistics
import sys

WORK, OUT = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(WORK, "meta.json")))
TCK = meta["clk_tck"]

# ------------------------------------------------------------------ contenders
# name -> (family, description). The family picks the baseline and the reference proxy.
CONTENDERS = {
    "direct": ("plain", "the client adds the header itself, straight to the upstream over HTTP (the physical baseline)"),
    "nginx": ("plain", "nginx reverse proxy, 1 worker, `proxy_set_header Authorization`, upstream keepalive"),
    "haproxy": ("plain", "haproxy, `nbthread 1`, `http-request set-header Authorization`, `http-reuse always`"),
    "mitm-reverse": ("plain", "mitmdump `--mode reverse:` with a 4-line addon that sets the header"),
    "lanyard-reverse": ("plain", "lanyard reverse mode: the client calls `$LANYARD_URL_API`, a route to the HTTP upstream with a `passthrough` credential"),
    "lanyard-forward": ("plain", "lanyard as `HTTP_PROXY`: absolute-form `http://` requests with `Proxy-Authorization` (per-job secret), plain upstream"),
    "direct-tls": ("tls", "the client adds the header itself, straight to the upstream over HTTPS (TLS baseline)"),
    "nginx-tls": ("tls", "nginx terminating the client's TLS and re-originating TLS to the HTTPS upstream (verified, keepalive, session reuse), 1 worker"),
    "mitm-intercept": ("tls", "mitmdump as a forward proxy: CONNECT, TLS interception with mitmproxy's CA, the same addon, verified TLS upstream"),
    "lanyard-forward-tls": ("tls", "lanyard as `HTTP_PROXY` for an `https://` route: the client sends absolute-form `https://` URLs over plain HTTP to the listener, lanyard re-originates verified TLS (client side is plaintext)"),
    "lanyard-intercept": ("tls", "lanyard as `HTTPS_PROXY`: CONNECT, TLS to lanyard's per-job CA (`$LANYARD_CA_FILE`), verified TLS upstream"),
    "bao-direct": ("vault", "`GET /v1/secret/data/bench` straight to OpenBao with a JWT-login token (same policy) in `X-Vault-Token`"),
    "bao-proxy": ("vault", "OpenBao Proxy (`bao proxy`): `auto_auth { method \"jwt\" }` with the job JWT, `api_proxy { use_auto_auth_token = true }`"),
    "lanyard-vault": ("vault", "lanyard `exchange = \"vault\"` credential (JWT login), reverse route to OpenBao with `header = \"X-Vault-Token\"`, `format = \"{token}\"`"),
    "nginx-w1": ("parity", "nginx reverse proxy, `worker_processes 1`"),
    "nginx-w2": ("parity", "nginx reverse proxy, `worker_processes 2`"),
    "lanyard-w1": ("parity", "lanyard reverse mode started with `LANYARD_WORKER_THREADS=1`"),
    "lanyard-w2": ("parity", "lanyard reverse mode started with `LANYARD_WORKER_THREADS=2`"),
}
BASE = {"plain": "direct", "tls": "direct-tls", "vault": "bao-direct"}
REF = {"plain": "nginx", "tls": "nginx-tls", "vault": "bao-proxy"}
REF_LABEL = {"plain": "×nginx", "tls": "×nginx-tls", "vault": "×bao-proxy"}


def rows(name):
    p = os.path.join(WORK, name)
    if not os.path.exists(p):
        return []
    return [l.rstrip("\n").split("\t") for l in open(p) if l.strip()]


runs = {}  # (name, group, conns) -> list of run dicts
for row in rows("runs.tsv"):
    name, group, conns, ticks, rss, workers, path = row[:7]
    tw = int(row[7]) if len(row) > 7 else None
    steal = float(row[8]) if len(row) > 8 else None
    others = float(row[9]) if len(row) > 9 else None
    attempts = int(row[10]) if len(row) > 10 else 1
    try:
        lg = json.load(open(path))
    except Exception as e:  # noqa: BLE001
        lg = {"error": f"unreadable loadgen output: {e}"}
    err_path = path + ".err"
    if os.path.exists(err_path) and not lg.get("requests"):
        msg = open(err_path).read().strip()
        if msg:
            lg.setdefault("error", msg[-300:])
    ok = lg.get("ok", 0) or 0
    d = {
        "lg": lg, "ok": ok, "rps": lg.get("rps", 0.0) or 0.0,
        "p50": lg.get("p50_us"), "p99": lg.get("p99_us"),
        "errors": (lg.get("errors", 0) or 0), "bad": (lg.get("unexpected_status", 0) or 0),
        "ticks": int(ticks), "workers": workers, "tw": tw,
        "steal": steal, "others": others, "attempts": attempts,
        "rss_mb": None if rss == "-" else int(rss) / 1024,
        # a proxy that died during the run leaves fewer ticks behind than before it
        "proc": rss != "-" and int(ticks) >= 0,
    }
    d["cpu_s"] = d["ticks"] / TCK if d["proc"] else None
    # CPU is read around the whole loadgen run (warm-up included): divide by every request it completed
    allreq = lg.get("all_requests") or ok
    d["cpu_us"] = (d["ticks"] / TCK * 1e6 / allreq) if (d["proc"] and ok) else None
    runs.setdefault((name, group, conns), []).append(d)
errors = {n: m for n, m in rows("errors.tsv")}
cross = rows("crosscheck.tsv")
cold = {k: v for k, v in rows("cold.tsv")}

conns_list = meta["knobs"].get("CONNS", "1 64").split()
cmax = conns_list[-1]
cmin = conns_list[0]


def get(name, conns, group="main"):
    r = runs.get((name, group, str(conns)))
    return r[0] if r else None


def f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def ratio(a, b):
    return a / b if (a is not None and b) else None


NOISE_STEAL = float(os.environ.get("NOISE_STEAL_PCT") or meta["knobs"].get("NOISE_STEAL_PCT") or 5)
NOISE_OTHERS = float(os.environ.get("NOISE_OTHERS") or meta["knobs"].get("NOISE_OTHERS") or 0.25)


def noise(d):
    """steal % / other processes' cores, the number of runs, and a flag if still noisy."""
    if d.get("steal") is None:
        return "–"
    cell = f"{d['steal']:.1f} / {d['others']:.2f}"
    if d["attempts"] > 1:
        cell += f" ({d['attempts']} runs)"
    if d["steal"] > NOISE_STEAL or d["others"] > NOISE_OTHERS:
        cell += " **noisy**"
    return cell


# ------------------------------------------------------------------ main tables
def table(family):
    out = [
        f"| contender | conns | workers | req/s | ×{BASE[family]} | {REF_LABEL[family]} | p50 µs | p99 µs | added p50 µs | proxy CPU µs/req | CPU ×{REF[family]} | proxy CPU s | peak RSS MB | new upstream TIME-WAITs | steal % / other CPU (cores) | errors / non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    names = [n for n, (fam, _) in CONTENDERS.items() if fam == family]
    for c in conns_list:
        for n in names:
            d = get(n, c)
            if d is None:
                if n in errors and c == cmin:
                    out.append(f"| {n} | {c} | | | | | | | | | | | | | | **failed**: {errors[n]} |")
                continue
            base, ref = get(BASE[family], c), get(REF[family], c)
            added = (d["p50"] - base["p50"]) if (base and n != BASE[family] and d["p50"] is not None and base["p50"] is not None) else None
            ok = d["ok"] > 0
            note = f"{d['errors']} / {d['bad']}"
            first = d["lg"].get("first_error") or d["lg"].get("first_unexpected") or d["lg"].get("error")
            if first and (d["errors"] or d["bad"] or not ok):
                note += f": {str(first)[:120]}"
            elif not ok:
                note += (f": no request completed inside the window ({d['lg'].get('all_requests', 0)} completed"
                         " during warm-up; the rest were still in flight when the window closed)")
            out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                n, c, d["workers"], f(d["rps"] if ok else None, "{:,.0f}"),
                f(ratio(d["rps"], base["rps"]) if base and ok else None, "{:.2f}"),
                f(ratio(d["rps"], ref["rps"]) if ref and ok else None, "{:.2f}"),
                f(d["p50"] if ok else None, "{}"), f(d["p99"] if ok else None, "{}"),
                f(added, "{:+d}"), f(d["cpu_us"]),
                f(ratio(d["cpu_us"], ref["cpu_us"]) if ref else None, "{:.2f}"),
                f(d["cpu_s"], "{:.2f}"), f(d["rss_mb"]), f(d["tw"], "{}"), noise(d), note))
    return "\n".join(out)


def parity_table():
    pc = meta["knobs"].get("PARITY_CONNS", "64")
    out = ["| contender | conns | worker threads/processes (counted) | req/s | ×nginx same workers | p50 µs | p99 µs | proxy CPU µs/req | peak RSS MB | errors / non-200 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in ("nginx-w1", "lanyard-w1", "nginx-w2", "lanyard-w2"):
        d = get(n, pc, "parity")
        if d is None:
            if n in errors:
                out.append(f"| {n} | {pc} | | | | | | | | **failed**: {errors[n]} |")
            continue
        ref = get("nginx-" + n.split("-")[1], pc, "parity")
        out.append("| {} | {} | {} | {:,.0f} | {} | {} | {} | {} | {} | {} / {} |".format(
            n, pc, d["workers"], d["rps"], f(ratio(d["rps"], ref["rps"]) if ref else None, "{:.2f}"),
            d["p50"], d["p99"], f(d["cpu_us"]), f(d["rss_mb"]), d["errors"], d["bad"]))
    return "\n".join(out)


# ------------------------------------------------------------------ targets
targets = []


def target(what, value, ok, note=""):
    verdict = "n/a" if ok is None else ("met" if ok else "**not met**")
    targets.append(f"| {what} | {value} | {verdict} | {note} |")


def t_cpu(name, ref, label):
    d, r = get(name, cmax), get(ref, cmax)
    if d and r and d["cpu_us"] and r["cpu_us"]:
        target(f"proxy CPU per request ≤ nginx's ({label})", f"{d['cpu_us']:.1f} vs {r['cpu_us']:.1f} µs ({name} vs {ref}, {cmax} conns)",
               d["cpu_us"] <= r["cpu_us"])
    else:
        target(f"proxy CPU per request ≤ nginx's ({label})", "not measured", None)


# instructions per request (callgrind, bench/instructions.sh, in this run)
instr = {}
_ip = os.path.join(WORK, "instructions.txt")
if os.path.exists(_ip):
    for line in open(_ip):
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("nginx", "reverse", "forward") and parts[2].isdigit():
            instr[parts[1]] = int(parts[2])
instr_lines = ["| what | instructions per request | ×nginx |", "|---|---:|---:|"]
for k in ("nginx", "reverse", "forward"):
    if k in instr:
        instr_lines.append(f"| {'nginx' if k == 'nginx' else 'lanyard ' + k} | {instr[k]:,} | "
                           f"{f(ratio(instr[k], instr.get('nginx')), '{:.2f}')} |")
for k in ("reverse", "forward"):
    what = f"user-space instructions per request ≤ 1.5× nginx (lanyard {k}, callgrind)"
    if k in instr and "nginx" in instr:
        target(what, f"{instr[k]:,} vs {instr['nginx']:,} ({instr[k] / instr['nginx']:.2f}×)", instr[k] <= 1.5 * instr["nginx"])
    else:
        target(what, "not measured", None)
if "reverse" in instr and "forward" in instr:
    target("forward within 5 % of reverse (instructions per request)",
           f"{instr['forward']:,} vs {instr['reverse']:,} ({instr['forward'] / instr['reverse'] - 1:+.1%})",
           instr["forward"] <= 1.05 * instr["reverse"])
else:
    target("forward within 5 % of reverse (instructions per request)", "not measured", None)
t_cpu("lanyard-reverse", "nginx", "plain HTTP")
t_cpu("lanyard-forward", "nginx", "plain HTTP, forward")
t_cpu("lanyard-intercept", "nginx-tls", "TLS both sides")
pc = meta["knobs"].get("PARITY_CONNS", "64")
for w in ("1", "2"):
    d, r = get(f"lanyard-w{w}", pc, "parity"), get(f"nginx-w{w}", pc, "parity")
    if d and r and d["ok"] and r["ok"]:
        note = ""
        if d["workers"] != w:
            note = f"lanyard ran {d['workers']} tokio worker threads: this build ignores `LANYARD_WORKER_THREADS`"
        target(f"throughput at {pc} conns ≥ 1.0× nginx, {w} worker(s) each", f"{d['rps'] / r['rps']:.2f}×", d["rps"] >= r["rps"], note)
    else:
        target(f"throughput at {pc} conns ≥ 1.0× nginx, {w} worker(s) each", "not measured", None)
d, n, b = get("lanyard-reverse", cmin), get("nginx", cmin), get("direct", cmin)
if d and n and b and d["ok"] and n["ok"]:
    a1, a2 = d["p50"] - b["p50"], n["p50"] - b["p50"]
    target(f"added median latency at {cmin} conn ≤ nginx's", f"{a1:+d} vs {a2:+d} µs", a1 <= a2)
else:
    target(f"added median latency at {cmin} conn ≤ nginx's", "not measured", None)
d, n, m = get("lanyard-intercept", cmax), get("nginx-tls", cmax), get("mitm-intercept", cmax)
if d and n and d["ok"] and n["ok"]:
    note = f"{d['rps'] / m['rps']:.0f}× mitmproxy intercepting (aim ≈ 40×)" if (m and m["ok"]) else ""
    target(f"intercepted HTTPS ≥ 0.8× nginx terminating TLS ({cmax} conns)", f"{d['rps'] / n['rps']:.2f}×", d["rps"] >= 0.8 * n["rps"], note)
else:
    target("intercepted HTTPS ≥ 0.8× nginx terminating TLS", "not measured", None)
d, n, m = get("lanyard-vault", cmax), get("bao-direct", cmax), get("bao-proxy", cmax)
if d and n and d["ok"] and n["ok"]:
    note = f"{d['rps'] / m['rps']:.2f}× OpenBao Proxy (aim ≈ 2×)" if (m and m["ok"]) else ""
    target(f"Vault KV read via lanyard ≥ 0.85× direct OpenBao ({cmax} conns)", f"{d['rps'] / n['rps']:.2f}×", d["rps"] >= 0.85 * n["rps"], note)
else:
    target("Vault KV read via lanyard ≥ 0.85× direct OpenBao", "not measured", None)
ly_rss = [(n, get(n, cmax)) for n in ("lanyard-reverse", "lanyard-forward", "lanyard-forward-tls", "lanyard-intercept", "lanyard-vault")]
ly_rss = [(n, d["rss_mb"]) for n, d in ly_rss if d and d["rss_mb"]]
if ly_rss:
    worst = max(ly_rss, key=lambda x: x[1])
    target(f"peak RSS < 20 MB at {cmax} conns", f"{worst[1]:.1f} MB (highest lanyard row: {worst[0]})", worst[1] < 20)
else:
    target("peak RSS < 20 MB", "not measured", None)


def med_ms(v):
    try:
        s = [int(x) for x in v.split()]
        return statistics.median(s) / 1000, s
    except Exception:  # noqa: BLE001
        return None, v


cold_pass, cold_pass_s = med_ms(cold.get("passthrough", "error: not measured"))
cold_vault, cold_vault_s = med_ms(cold.get("vault", "error: not measured"))
if cold_pass is not None:
    target("cold start to ready, excluding the exchange < 20 ms", f"{cold_pass:.1f} ms (median of {len(cold_pass_s)}, passthrough)", cold_pass < 20)
else:
    target("cold start to ready, excluding the exchange < 20 ms", f"failed: {cold_pass_s}", None)
binary_mb = meta["binary_bytes"] / 1048576
target("release binary < 15 MB", f"{binary_mb:.1f} MB", binary_mb < 15)


# ------------------------------------------------------------------ pinning study
def spread(vals):
    if len(vals) < 2:
        return None
    m = statistics.mean(vals)
    return statistics.stdev(vals) / m * 100 if m else None


pin_lines = ["| contender | conns | pass | req/s per pass | mean req/s | CV of req/s | p50 µs per pass | CV of p50 |",
             "|---|---:|---|---|---:|---:|---|---:|"]
pin_verdicts = []
for n in meta["knobs"].get("PIN_CONTENDERS", "").split():
    off, on = runs.get((n, "pin-off", pc), []), runs.get((n, "pin-on", pc), [])
    for label, rs in (("unpinned", off), ("pinned", on)):
        if not rs:
            continue
        r = [x["rps"] for x in rs]
        p = [x["p50"] or 0 for x in rs]
        pin_lines.append("| {} | {} | {} | {} | {:,.0f} | {} | {} | {} |".format(
            n, pc, label, ", ".join(f"{x:,.0f}" for x in r), statistics.mean(r), f(spread(r), "{:.1f} %"),
            ", ".join(str(x) for x in p), f(spread(p), "{:.1f} %")))
    if off and on:
        so, sn = spread([x["rps"] for x in off]), spread([x["rps"] for x in on])
        if so is not None and sn is not None:
            pin_verdicts.append(f"{n}: CV {so:.1f} % unpinned vs {sn:.1f} % pinned, mean "
                                f"{statistics.mean([x['rps'] for x in off]):,.0f} vs {statistics.mean([x['rps'] for x in on]):,.0f} req/s")

# ------------------------------------------------------------------ wrk cross-check
cross_lines = ["| contender | conns | loadgen req/s | wrk req/s | wrk/loadgen | loadgen p50/p99 µs | wrk p50/p99 µs | wrk errors |",
               "|---|---:|---:|---:|---:|---|---|---:|"]
for r in cross:
    n, c = r[0], r[1]
    d = get(n, c)
    if len(r) < 7 or d is None:
        cross_lines.append(f"| {n} | {c} | {f(d['rps'] if d else None, '{:,.0f}')} | error | | | | |")
        continue
    req, dur, p50, p99, err = (int(x) for x in r[2:7])
    wrps = req / (dur / 1e6) if dur else 0
    cross_lines.append(f"| {n} | {c} | {d['rps']:,.0f} | {wrps:,.0f} | {f(ratio(wrps, d['rps']), '{:.2f}')} | {d['p50']} / {d['p99']} | {p50} / {p99} | {err} |")

# ------------------------------------------------------------------ plot
plot_note = ""
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = {"plain": "-", "tls": "--", "vault": ":"}
    fig, axes = plt.subplots(2, len(conns_list), figsize=(7 * len(conns_list), 10), squeeze=False)
    cmap = plt.get_cmap("tab20")
    order = [n for n in CONTENDERS if CONTENDERS[n][0] != "parity"]
    colors = {n: cmap(i % 20) for i, n in enumerate(order)}
    for j, c in enumerate(conns_list):
        top, bot = axes[0][j], axes[1][j]
        for n in order:
            d = get(n, c)
            if not d or not d["ok"] or not d["lg"].get("cdf_us"):
                continue
            q = d["lg"]["cdf_us"]
            k = len(q) - 1
            ys = [i / k for i in range(k + 1)]
            xs = [max(v, 1) for v in q]
            style = fams[CONTENDERS[n][0]]
            lw = 2.4 if n.startswith("lanyard") else 1.3
            top.plot(xs, ys, style, color=colors[n], lw=lw, label=f"{n} (p50 {d['p50']} µs)")
            tail = [(x, 1 - y) for x, y in zip(xs, ys) if 1 - y > 0]
            bot.plot([t[0] for t in tail], [t[1] for t in tail], style, color=colors[n], lw=lw, label=n)
        top.set_xscale("log")
        top.set_title(f"latency CDF, {c} connection{'s' if c != '1' else ''}")
        top.set_xlabel("latency (µs, log)")
        top.set_ylabel("fraction of requests ≤ x")
        top.grid(True, which="both", alpha=0.3)
        if top.get_legend_handles_labels()[0]:
            top.legend(fontsize=7, loc="lower right")
        bot.set_xscale("log")
        bot.set_yscale("log")
        bot.set_ylim(1e-3, 1)
        bot.set_title(f"tail: fraction of requests slower than x, {c} conn{'s' if c != '1' else ''}")
        bot.set_xlabel("latency (µs, log)")
        bot.set_ylabel("1 − CDF (log)")
        bot.grid(True, which="both", alpha=0.3)
    title = "lanyard bench: solid = plain HTTP, dashed = TLS to the upstream, dotted = Vault KV read"
    if meta.get("label"):
        title = f"{meta['label']} — " + title
    fig.suptitle(title + f"\n{meta['date']}, {meta['nproc']} cores shared by client, proxy and upstream, DURATION={meta['knobs'].get('DURATION')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "latency-cdf.png"), dpi=90)
    plot_note = "![latency CDF per contender](latency-cdf.png)"
except Exception as e:  # noqa: BLE001
    plot_note = f"(no plot: {e})"

# ------------------------------------------------------------------ RESULTS.md
k = meta["knobs"]
cmd = " ".join(f"{key}={json.dumps(v) if ' ' in v else v}" for key, v in k.items() if key != "LABEL") + " bash bench/run.sh"
label = meta.get("label") or ""
desc = "\n".join(f"- **{n}** — {d}" for n, (fam, d) in CONTENDERS.items())
failed = "\n".join(f"- **{n}**: {m}" for n, m in errors.items()) or "- none"
v = meta["versions"]

# bench/ANALYSIS.md: the hand-written reading of the figures (profiles, fixes, what
# remains). It is dated by the commit it was written at, so a later run shows whether
# it still applies.
_analysis_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
analysis = ""
if os.path.exists(_analysis_path):
    with open(_analysis_path) as _f:
        analysis = _f.read().rstrip() + "\n\n"

md = f"""# lanyard benchmarks{(' — ' + label) if label else ''}

Generated by `bench/run.sh` on {meta['date']}, lanyard at commit `{meta['git']}` (`{v['lanyard']}`); the run took {meta['elapsed_s']} s.

**The {meta['nproc']} cores are shared by the load client, the proxy and the upstream**, and
on this machine also by whatever else runs (`/proc/loadavg` at the end of the run, which
includes the benchmark itself: `{meta['loadavg_end']}`). Throughput and latency are therefore noisy;
proxy CPU time per request is the steadier figure. {'**This is a smoke run (DURATION=' + k.get('DURATION', '?') + '): it proves every row is produced; its numbers are not results.**' if 'smoke' in label.lower() else ''}

## Command

```
{cmd}
```

Knobs: `DURATION`, `CONNS`, `CONTENDERS` (or `all`), `PARITY_CONNS`, `PIN_REPEAT`, `PIN_CONTENDERS`,
`CROSSCHECK`, `COLD_RUNS`, `LOADGEN_THREADS`, `LABEL`, `OUT`, `BENCH_KEEP` (see the head of `bench/run.sh`).

## Machine

- {meta['nproc']} cores: {meta['cpu']}; {meta['mem']}; `{meta['uname']}`
- {v['nginx']}; {v['haproxy']}; mitmproxy {v['mitmproxy'].split()[1] if len(v['mitmproxy'].split()) > 1 else v['mitmproxy']}; {v['openbao'].split(' (')[0]}; {v['wrk']}
- load client: `bench/loadgen` (Rust, tokio + hyper 1 + tokio-rustls), closed loop, one request at a time per keep-alive connection, {'1 thread at 1 connection and 2 otherwise' if 'LOADGEN_THREADS' not in k else k['LOADGEN_THREADS'] + ' threads'}; connections (and TLS handshakes, CONNECTs) are opened before the clock starts
- lanyard: `cargo build --release --locked -p lanyard` (`{meta['binary_path']}`)

## Contenders

Every contender does the same job: a GET that must reach the upstream with the right
credential header. The upstream is nginx (1 worker) serving a {len('x') and ''}~200-byte JSON over HTTP and
HTTPS (ECDSA P-256 certificate from a test CA) only to requests carrying
`Authorization: Bearer <token>`, 401 otherwise; for the Vault rows it is an OpenBao dev
server serving a KV v2 secret to a token with the `bench` policy. Each contender is started
on an ephemeral 127.0.0.1 port, waited for with a real request that must answer 200 (so the
header did arrive), measured, and stopped by PID. Every request of every row is counted as
an error unless it answered 200.

{desc}

## Results: plain HTTP (baseline: direct)

{table('plain')}

## Results: HTTPS to the upstream (baseline: direct-tls)

{table('tls')}

## Results: Vault KV read (baseline: bao-direct)

{table('vault')}

## Worker parity ({pc} connections)

{parity_table()}

## Instructions per request (callgrind, fixed request count)

`N={meta["knobs"].get("INSTR_N", "2000")} MODES="reverse forward" bash bench/instructions.sh {meta["binary_path"]}`: user-space
instructions of the proxy for N requests minus none over one keep-alive connection,
one worker, nginx counted the same way in the same run. Machine load does not move
these figures; `python3 bench/breakdown.py` splits them by function (see the analysis).

{chr(10).join(instr_lines) if len(instr_lines) > 2 else '(not run: INSTRUCTIONS=0, or callgrind failed; see the log)'}

## Targets (issues 5 and 16)

| target | this run | verdict | note |
|---|---|---|---|
{chr(10).join(targets)}

## Does pinning steady the figures?

Each pass is {k.get('DURATION')} at {pc} connections; unpinned and pinned passes alternate.
Pinned: the client runs under `taskset -c 0`, the proxy (every thread), the upstream and
OpenBao are moved to core 1 with `taskset -a -p` for the pass and back afterwards.
CV = standard deviation / mean over the passes (lower is steadier).

{chr(10).join(pin_lines) if len(pin_lines) > 2 else '(not run: PIN_REPEAT=0 or no pin contender selected)'}

{chr(10).join('- ' + x for x in pin_verdicts)}

## Cross-check with wrk (plain-HTTP rows)

Same duration and connection count, wrk `-t1` at 1 connection and `-t2` otherwise.

{chr(10).join(cross_lines) if len(cross_lines) > 2 else '(not run: CROSSCHECK=0)'}

## lanyard start-up and size

| figure | value | target |
|---|---:|---:|
| cold start to ready, `lanyard start` with a passthrough credential (env identity, no exchange), median | {f(cold_pass)} ms | < 20 ms |
| cold start to ready, `lanyard start` with a Vault JWT login against the local OpenBao, median | {f(cold_vault)} ms | – |
| release binary (`{meta['binary_path']}`) | {binary_mb:.1f} MB ({meta['binary_bytes']} bytes) | < 15 MB |

Cold start samples (µs) — passthrough: {cold_pass_s}; vault: {cold_vault_s}.
Each is `lanyard start … --export sh` from exec to exit, which happens once the listener is
up and the first credentials are ready, followed by a `lanyard stop` outside the timing.

## Latency CDF

{plot_note}

{analysis}## What the numbers mean

- **req/s**: 200 answers per second over the measured window; **×baseline** divides by the
  baseline row of the same family at the same connection count, same run; **×nginx** (or
  ×nginx-tls, ×bao-proxy) by the reference proxy of that family.
- **p50 / p99**: per-request latency seen by the client (send to last body byte).
  **added p50**: the row's p50 minus the baseline's p50 at the same connection count.
- **proxy CPU µs/req**: utime+stime of the proxy process and its children (nginx master +
  workers) from `/proc/<pid>/stat` around the whole client run, divided by every request the
  client completed in it (warm-up included); clock tick
  {1000 // TCK} ms, so short runs are coarse. Only the proxy's CPU is counted, not the upstream's.
- **proxy CPU s**: the same ticks in seconds. **peak RSS**: `VmHWM` from
  `/proc/<pid>/status` after the run (summed over nginx's master and workers); every lanyard
  row is its own daemon, so its peak covers only that row's runs. Upstream nginx peak RSS:
  {meta['upstream_rss_kb'] / 1024:.1f} MB.
- **new upstream TIME-WAITs**: sockets on connections to the upstream's port that entered
  TIME-WAIT during the run (in `ss`'s list after the run and not before it): roughly how
  many upstream connections were closed, so ≈ 0 when the proxy reuses its upstream
  connections. On the direct rows it counts the client's own connections, closed when it exits.
- **workers**: as configured (nginx `worker_processes`, haproxy `nbthread`), or, for lanyard,
  the tokio worker threads counted in `/proc/<pid>/task/*/comm`.
- **errors / non-200**: socket or protocol errors and timeouts / answers other than 200; the
  first of each is quoted.

## Failed contenders in this run

{failed}

## Known gaps of the harness

- **Shared cores.** Client, proxy and upstream (and OpenBao) share {meta['nproc']} cores; the
  pinned passes above are the only isolation. Throughput ratios on this machine say more
  about scheduling than about the proxies; CPU per request is the figure to trust most.
- **Worker parity** needs `LANYARD_WORKER_THREADS` in the binary under test; the "workers"
  column shows the tokio worker threads actually counted, and the target row says when
  the variable was ignored.
- **One load client for everything.** `bench/loadgen` drives every row (wrk cannot speak
  CONNECT + TLS through a proxy, and `oha` was not installed: it needs cmake and a long
  build on two cores; whether its `--proxy` does CONNECT with a custom CA was not checked).
  wrk cross-checks the plain-HTTP rows only, without warm-up.
- **HTTP/1.1 only**, client and upstream (the client offers ALPN `http/1.1`; the upstream
  nginx does not enable HTTP/2), so lanyard's HTTP/2-to-upstream path is not measured.
- **CPU clock tick** is {1000 // TCK} ms: at `DURATION=1s` a row's CPU time is a few dozen ticks.
- **OpenBao Proxy** runs with `api_proxy` only (no `cache` stanza); OpenBao itself shares
  the cores, so the Vault rows mostly measure OpenBao.
- **lanyard-forward-tls** is plaintext between client and lanyard (absolute-form
  `https://` URL), TLS only upstream; **lanyard-intercept** is the TLS-both-sides row.
- **Cold start** is the wall time of the `lanyard start` command (fork/exec of the CLI,
  daemon spawn, listener, first credentials); the previous start's `lanyard stop` may
  still be finishing in the background during it.
"""
open(os.path.join(OUT, "RESULTS.md"), "w").write(md)
print(md[: md.index("## Contenders")] if "## Contenders" in md else "")
for fam in ("plain", "tls", "vault"):
    print(table(fam))
print(parity_table())
print("\n".join(instr_lines))
print("\n".join(targets))
