#!/usr/bin/env bash
# Routing changes under full load (issue 8): "reload/switch under full load: no throughput dip
# beyond noise, 0 errors" and "compiling and swapping a 10,000-service config <= 200 ms and
# without a p99 blip on live traffic". Never run in CI: it needs the whole box.
#
#   benches/switch_load.sh [--rounds 3] [--duration 10] [--warmup 2] [--quick]
#                          [--services 10000] [--only switch|big]
#
# Layout as peers.sh's layout A: the proxy (`serve --workers 1`) pinned to PROXY_CPU (default 1);
# wrk -t1 -c64, the backends (one nginx, 1 worker, blue + green as in peers.sh's
# templates/backends.nginx.conf, on our own ports) and the drivers below on LOAD_CPU (default 0).
# Every run starts a fresh proxy, warms up (wrk --warmup s), then measures one wrk run.
#
# Part 1 "switch" (config as benches/candidate.sh: one service "api", blue/green 90/10),
# interleaved rounds of
#   A  steady wrk load, nothing else;
#   B  the same load while a driver (one keep-alive admin connection) changes the routing every
#      50 ms, cycling PUT /api/v1/services/api/weights {"blue":90,"green":10} -> POST .../switch
#      {"to":"green"} -> PUT weights {"blue":10,"green":90} -> POST switch {"to":"blue"}, and
#      every 1 s rewrites the config file (api's weights 90/10 <-> 80/20 in the file, an edit
#      that wins over the live weights) and sends SIGHUP.
# Part 2 "big": the config plus --services services s0..sN-1 (exact host sN.example.com, two
# versions x one backend each); "api" gets host api.example.com and wrk sends that Host.
# Measures `switchyard check` (parse + validate only), start-up to /ready, 5 idle reloads,
# 10 idle API weight changes (each recompiles the whole table), then interleaved rounds of
#   N  steady load, no reload;   R  the same with 3 reloads at 1/4, 1/2 and 3/4 of the run
#      (s0's weights alternate 50/50 <-> 60/40 in the file, so each reload changes something).
#
# Reload = atomic rewrite of the file + SIGHUP. The proxy's --config is a symlink in a directory
# of its own to the file we rewrite elsewhere, so the file watcher (which watches the config's
# directory) stays quiet and each rewrite is exactly one reload. Reload time is reported twice:
# "log" = the proxy's own "SIGHUP: reloading the config" -> "config reloaded" log lines (JSON
# log, microseconds): parse + compile + swap on the controller; "visible" = from kill -HUP
# until GET /api/v1/status shows the new reload count (polled every 5 ms).
# Per run: req/s, p50/p99/p99.9/p99.99/max (wrk Lua done()), wrk errors (non-2xx + socket
# errors: must be 0), proxy-side non-2xx (from /metrics), proxy CPU% split into the main thread
# (the data path, with --workers 1) and the rest (controller: parse, compile, telemetry ticks),
# "others" = what else ran on PROXY_CPU (noise from outside), changes applied (2xx API answers,
# reloads ok/err from GET /api/v1/status). Medians and the B/A (R/N) ratios at the end; the
# A-run spread over rounds is the noise yardstick for "no dip beyond noise".
# --quick = rounds 1, duration 4 s, warm-up 1 s (smoke run, < 1 min; numbers not meaningful;
# the R run's reloads may then spill past the 4 s). Default run (3 rounds x 10 s): ~3 min plus
# the build, up to ~5 min when the quiet gate below has to wait. --only runs one part.
# API_EVERY (s, default 0.05) and RELOAD_EVERY (s, default 1) set B's change rates; 0 turns
# that kind of change off (to tell which one costs what).
# Noise: before each run, wait up to QUIET_WAIT s (default 10) for the box to be idle (below
# QUIET_MAX %, default 15, of one core), else say so; runs with others > 10% are starred.
# Env: PROXY_CPU, LOAD_CPU, PORT (proxy listener, default 29500; admin = PORT+1, backends
# PORT+11 and PORT+12; all on 127.0.0.1), NO_BUILD=1 (skip cargo build), BIN (switchyard
# binary), CTRL_CPU (diagnostic: after start, move the proxy's controller thread — which
# parses and compiles configs and samples telemetry; the parse threads it spawns inherit the
# mask — to this CPU, to tell CPU contention from other stalls; "others" then excludes it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TPL=$ROOT/../shared/bench/templates/backends.nginx.conf
CMDLINE="$0 $*"
echo "# $CMDLINE"
ROUNDS=3; DUR=10; WARM=2; NSVC=10000; ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --warmup) WARM=$2; shift;;
    --quick) ROUNDS=1; DUR=4; WARM=1;;
    --services) NSVC=$2; shift;; --only) ONLY=$2; shift;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
case $ONLY in ""|switch|big) ;; *) echo "--only switch|big" >&2; exit 2;; esac
for v in "$ROUNDS" "$DUR" "$WARM" "$NSVC"; do
  if ! [[ $v =~ ^[0-9]+$ ]] || [ "$v" -lt 1 ]; then echo "--rounds/--duration/--warmup/--services take a positive integer" >&2; exit 2; fi
done
if [ "$DUR" -gt 120 ] || [ "$ROUNDS" -gt 20 ]; then echo "keep it bounded: --duration <= 120, --rounds <= 20" >&2; exit 2; fi
PROXY_CPU=${PROXY_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}; PORT=${PORT:-29500}
ADMIN_PORT=$((PORT + 1)); BPORT=$((PORT + 11)); GPORT=$((PORT + 12))
BIN=${BIN:-$ROOT/target/release/switchyard}
for tool in wrk nginx taskset curl ss python3 setsid; do
  command -v $tool >/dev/null || { echo "$tool missing (../shared/bench/peers.sh --quick installs wrk and nginx)" >&2; exit 1; }
done
[ -f "$TPL" ] || { echo "template not found: $TPL (shared/ must sit beside the repo)" >&2; exit 1; }
for p in "$PORT" "$ADMIN_PORT" "$BPORT" "$GPORT"; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use (not ours); free it or set PORT" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
[ -x "$BIN" ] || { echo "no binary: $BIN" >&2; exit 1; }

OUT=$(mktemp -d /tmp/switchyard-switch-load.XXXXXX); chmod 755 "$OUT"
mkdir -p "$OUT/cfg" "$OUT/cfgdata"
export LISTEN=127.0.0.1:$PORT ADMIN=127.0.0.1:$ADMIN_PORT BLUE=127.0.0.1:$BPORT GREEN=127.0.0.1:$GPORT
export NSVC OUT
CFG=$OUT/cfg/switchyard.yaml   # symlink -> $OUT/cfgdata/live.yaml (see the header)
DATA=$OUT/cfgdata/live.yaml
ln -s "$DATA" "$CFG"
. "$ROOT/benches/procs.sh"
ticks() {  # ticks PID: "all main" = utime+stime (clock ticks) of the whole process (exited threads
  # included) and of its main thread (with --workers 1 the data path runs there)
  local a m; a=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12+$13}')
  m=$(sed 's/.*) //' "/proc/$1/task/$1/stat" 2>/dev/null | awk '{print $12+$13}'); echo "${a:-0} ${m:-0}"
}
cpu_busy() { awk -v c="cpu$1" '$1==c {t=$2+$3+$4+$5+$6+$7+$8+$9; print t-$5-$6, t}' /proc/stat; }
opens() { awk '$1=="Tcp:" { if (!n) { for (i=2; i<=NF; i++) if ($i=="ActiveOpens") c=i; n=1 } else print $c }' /proc/net/snmp; }
HZ=$(getconf CLK_TCK)
QUIET_MAX=${QUIET_MAX:-15}; QUIET_WAIT=${QUIET_WAIT:-10}
quiet_gate() {  # before a run: wait (QUIET_WAIT s at most) until the box was idle (< QUIET_MAX % of one
  # core, all CPUs together) for 1 s; only our idle backends run at that point
  local a b busy=0
  for _ in $(seq "$QUIET_WAIT"); do
    a=$(awk '$1=="cpu" {t=$2+$3+$4+$5+$6+$7+$8+$9; print t-$5-$6, t}' /proc/stat); sleep 1
    b=$(awk '$1=="cpu" {t=$2+$3+$4+$5+$6+$7+$8+$9; print t-$5-$6, t}' /proc/stat)
    busy=$(echo "$a $b" | awk -v n="$(nproc)" '{printf "%.0f", ($4>$2) ? n*100*($3-$1)/($4-$2) : 0}')
    [ "$busy" -lt "$QUIET_MAX" ] && return 0
  done
  echo "  (box not quiet: ${busy}% of a core busy before this run after ${QUIET_WAIT}s of waiting)"
}

# ---- helper (Python): config rendering, drivers, parsing, report ------------------------------
PY=$OUT/switch_load.py
cat >"$PY" <<'PYEOF'
import collections, datetime, http.client, json, os, re, signal, statistics, sys, time

E = os.environ
W_PATH, S_PATH = "/api/v1/services/api/weights", "/api/v1/services/api/switch"

def render(kind, alt):
    out = [
        "listeners:",
        '  - { name: public, address: "%s" }' % E["LISTEN"],
        'admin: { address: "%s" }' % E["ADMIN"],
        "limits: { max_connections: 100000 }",
        "services:",
        "  api:",
    ]
    if kind == "small":
        bw, gw = (90, 10) if alt == 0 else (80, 20)
    else:
        bw, gw = 90, 10
        out.append('    match: { hosts: ["api.example.com"] }')
    out += [
        "    versions:",
        '      blue:  { release: v1, backends: ["%s"], weight: %d }' % (E["BLUE"], bw),
        '      green: { release: v2, backends: ["%s"], weight: %d }' % (E["GREEN"], gw),
    ]
    if kind == "big":
        for i in range(int(E["NSVC"])):
            sb, sg = ((50, 50) if alt == 0 else (60, 40)) if i == 0 else (90, 10)
            out += [
                "  s%d:" % i,
                '    match: { hosts: ["s%d.example.com"] }' % i,
                "    versions:",
                '      blue:  { release: v1, backends: ["%s"], weight: %d }' % (E["BLUE"], sb),
                '      green: { release: v2, backends: ["%s"], weight: %d }' % (E["GREEN"], sg),
            ]
    return "\n".join(out) + "\n"

def write_cfg(path, kind, alt):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(render(kind, alt))
    os.replace(tmp, path)

class Admin:
    """One keep-alive connection to the admin API (reconnects once on a stale connection)."""
    def __init__(self):
        self.c = None
        self.reconnects = 0
    def req(self, method, path, body=None, timeout=5):
        for attempt in (0, 1):
            if self.c is None:
                host, port = E["ADMIN"].rsplit(":", 1)
                self.c = http.client.HTTPConnection(host, int(port), timeout=timeout)
            try:
                data = None if body is None else json.dumps(body)
                hdrs = {} if body is None else {"Content-Type": "application/json"}
                self.c.request(method, path, body=data, headers=hdrs)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError) as e:
                self.c.close()
                self.c = None
                if attempt:
                    return 0, ("%s: %s" % (type(e).__name__, e)).encode()
                self.reconnects += 1
    def reload_counts(self):
        code, body = self.req("GET", "/api/v1/status")
        if code != 200:
            return None
        s = json.loads(body)
        return s["reloads"]["ok"], s["reloads"]["error"], s.get("last_reload_error")

def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def churn(pid, data, duration, interval, reload_every, out):
    """Part 1 B: an API change every `interval` s, a file rewrite + SIGHUP every `reload_every` s."""
    adm = Admin()
    steps = [("PUT", W_PATH, {"blue": 90, "green": 10}), ("POST", S_PATH, {"to": "green"}),
             ("PUT", W_PATH, {"blue": 10, "green": 90}), ("POST", S_PATH, {"to": "blue"})]
    before = adm.reload_counts()
    api = interval > 0
    interval = interval if api else 0.05  # API_EVERY=0: reloads only
    codes, lat, bad, skipped, hups, alt = collections.Counter(), [], [], 0, 0, 0
    t0 = time.monotonic()
    k, next_reload = 0, reload_every
    while True:
        due = t0 + k * interval
        if due - t0 >= duration:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if reload_every > 0 and time.monotonic() - t0 >= next_reload:
            alt ^= 1
            write_cfg(data, "small", alt)
            os.kill(pid, signal.SIGHUP)
            hups += 1
            next_reload += reload_every
        if api:
            method, path, body = steps[k % len(steps)]
            s = time.monotonic()
            code, resp = adm.req(method, path, body)
            lat.append((time.monotonic() - s) * 1000)
            codes[code] += 1
            if not 200 <= code < 300 and len(bad) < 10:
                bad.append({"t": round(s - t0, 3), "call": "%s %s %s" % (method, path, json.dumps(body)),
                            "code": code, "body": resp.decode(errors="replace")[:300]})
        # No catching up in bursts: a late call moves the schedule to the next free slot.
        nk = int((time.monotonic() - t0) / interval) + 1
        skipped += max(0, nk - (k + 1))
        k = max(k + 1, nk)
    time.sleep(0.3)  # let the last reload land before reading the counts
    after = adm.reload_counts()
    res = {
        "api_calls": sum(codes.values()),
        "api_2xx": sum(v for c, v in codes.items() if 200 <= c < 300),
        "api_codes": {str(c): v for c, v in sorted(codes.items())},
        "api_ms_p50": pct(lat, 50), "api_ms_p99": pct(lat, 99), "api_ms_max": max(lat) if lat else None,
        "ticks_skipped": skipped, "reconnects": adm.reconnects, "hups": hups,
        "reloads_ok": after[0] - before[0] if before and after else None,
        "reloads_err": after[1] - before[1] if before and after else None,
        "last_reload_error": after[2] if after else "status unavailable",
        "bad": bad, "driver_cpu_s": round(sum(os.times()[:2]), 2),
    }
    json.dump(res, open(out, "w"), indent=1)

def reloads(pid, data, offsets, out):
    """Rewrite the big config + SIGHUP at each offset (s); time until /api/v1/status shows it."""
    adm = Admin()
    alt, res = 0, []
    t0 = time.monotonic()
    for off in offsets:
        now = time.monotonic()
        if t0 + off > now:
            time.sleep(t0 + off - now)
        before = adm.reload_counts()
        alt ^= 1
        write_cfg(data, "big", alt)
        s = time.monotonic()
        os.kill(pid, signal.SIGHUP)
        result, after = "timeout", None
        while time.monotonic() - s < 10:
            after = adm.reload_counts()
            if after and before and after[0] + after[1] > before[0] + before[1]:
                result = "ok" if after[0] > before[0] else "error: %s" % after[2]
                break
            time.sleep(0.005)
        res.append({"at_s": round(s - t0, 3), "visible_ms": round((time.monotonic() - s) * 1000, 1),
                    "result": result})
    json.dump(res, open(out, "w"), indent=1)

def api_latency(n, out):
    adm = Admin()
    lat, codes = [], collections.Counter()
    for i in range(n):
        body = {"blue": 90, "green": 10} if i % 2 else {"blue": 80, "green": 20}
        s = time.monotonic()
        code, _ = adm.req("PUT", W_PATH, body, timeout=10)
        lat.append((time.monotonic() - s) * 1000)
        codes[code] += 1
    json.dump({"n": n, "codes": {str(c): v for c, v in codes.items()}, "ms": [round(x, 1) for x in lat],
               "ms_p50": pct(lat, 50), "ms_max": max(lat)}, open(out, "w"), indent=1)

def wait_ready(timeout):
    """ms until GET /ready answers 200 (polled every 10 ms); -1 on timeout."""
    s = time.monotonic()
    while time.monotonic() - s < timeout:
        try:
            host, port = E["ADMIN"].rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=1)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return round((time.monotonic() - s) * 1000)
        except (http.client.HTTPException, OSError):
            pass
        time.sleep(0.01)
    return -1

def log_reloads(path):
    """[(ms, outcome)] from the proxy's JSON log: each SIGHUP line to the next reload outcome."""
    pending, res = collections.deque(), []
    for line in open(path, errors="replace"):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        msg = j.get("fields", {}).get("message", "")
        t = datetime.datetime.fromisoformat(j.get("timestamp", "").replace("Z", "+00:00")).timestamp() \
            if j.get("timestamp") else None
        if msg.startswith("SIGHUP"):
            pending.append(t)
        elif pending and (msg == "config reloaded" or msg.startswith("config rejected")
                          or msg.startswith("config not applied")):
            t0 = pending.popleft()
            res.append((round((t - t0) * 1000, 1), "ok" if msg == "config reloaded" else msg[:40]))
    return res

def metrics_non2xx():
    adm = Admin()
    code, body = adm.req("GET", "/metrics")
    if code != 200:
        return {"metrics": "unavailable (%s)" % code}
    res = collections.Counter()
    for line in body.decode().splitlines():
        m = re.match(r'switchyard_requests_total\{(.*)\} (\S+)', line)
        if m:
            c = re.search(r'code="([^"]*)"', m.group(1))
            res["proxy_code_" + (c.group(1) if c else "?")] += float(m.group(2))
        m = re.match(r'switchyard_request_failures_total\{(.*)\} (\S+)', line)
        if m and float(m.group(2)) > 0:
            r = re.search(r'reason="([^"]*)"', m.group(1))
            res["proxy_fail_" + (r.group(1) if r else "?")] += float(m.group(2))
    return {k: int(v) for k, v in res.items()}

def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[m.group(2)]

def wrk_parse(path):
    txt = open(path, errors="replace").read()
    r = {"rps": 0.0, "non2xx": 0, "sock_err": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    if m:
        r["sock_err"] = sum(int(x) for x in m.groups())
        r["sock_err_detail"] = m.group(0)
    m = re.search(r"^SY lat_us (.*)$", txt, re.M)
    if m:
        kv = m.group(1).split()
        for k, v in zip(kv[::2], kv[1::2]):
            r[k + "_ms"] = float(v) / 1000
    m = re.search(r"^SY requests (\d+)", txt, re.M)
    if m:
        r["requests"] = int(m.group(1))
    return r

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def f(x, nd=2):
    return "-" if x is None else ("%.*f" % (nd, x))

def report(runs_path, cmdline, load0, load1):
    runs = [json.loads(l) for l in open(runs_path)]
    o = []
    o.append("## switch_load.sh results\n")
    o.append("command: `%s`  " % cmdline)
    o.append("load average before / after: %s / %s; proxy on CPU%s (1 worker), wrk -t1 -c64 + backends + drivers on CPU%s  \n"
             % (load0, load1, E["PROXY_CPU"], E["LOAD_CPU"]))
    for part, (a, b), title in (("switch", ("A", "B"), "Part 1: API weights/switch every 50 ms + file rewrite & SIGHUP every 1 s"),
                                ("big", ("N", "R"), "Part 2: %s-service config, 3 reloads per run (R) vs none (N)" % E["NSVC"])):
        rs = [r for r in runs if r["part"] == part and r["variant"] in (a, b)]
        if not rs:
            continue
        o.append("\n### " + title + "\n")
        if part == "switch":
            o.append("| round | run | req/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | max ms | wrk non-2xx | wrk socket err | proxy non-2xx | proxy CPU %: data path + controller | others on its CPU % | load CPU busy % | TCP connects | API 2xx / sent | API ms p50 / p99 / max | reloads ok / err | reload ms (log) p50 / max |")
            o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        else:
            o.append("| round | run | req/s | p50 ms | p99 ms | p99.9 ms | p99.99 ms | max ms | wrk non-2xx | wrk socket err | proxy non-2xx | proxy CPU %: data path + controller | others on its CPU % | load CPU busy % | TCP connects | reload ms visible (log) |")
            o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            row = "| %s | %s%s | %.0f | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s |" % (
                r["round"], r["variant"], "*" if (r.get("other_pct") or 0) > 10 else "", r["rps"], f(r.get("p50_ms")), f(r.get("p99_ms")), f(r.get("p999_ms")),
                f(r.get("p9999_ms")), f(r.get("max_ms")), r["non2xx"], r["sock_err"], r.get("proxy_non2xx", "-"),
                "%s + %s" % (f(r.get("main_pct"), 0), f(r.get("side_pct"), 0)), f(r.get("other_pct"), 0),
                f(r.get("load_busy_pct"), 0), r.get("tcp_opens", "-"))
            if part == "switch":
                c = r.get("churn") or {}
                lr = [x[0] for x in r.get("log_reloads", [])]
                row += " %s | %s | %s | %s |" % (
                    ("%s / %s" % (c.get("api_2xx"), c.get("api_calls"))) if c else "-",
                    ("%s / %s / %s" % (f(c.get("api_ms_p50"), 1), f(c.get("api_ms_p99"), 1), f(c.get("api_ms_max"), 1))) if c else "-",
                    ("%s / %s" % (c.get("reloads_ok"), c.get("reloads_err"))) if c else "-",
                    ("%s / %s" % (f(med(lr), 1), f(max(lr), 1))) if lr else "-")
            else:
                rl, lr = r.get("reloads") or [], r.get("log_reloads", [])
                row += " %s |" % (", ".join("%s (%s)%s" % (f(x["visible_ms"], 0), f(lr[i][0], 0) if i < len(lr) else "?",
                                                              "" if x["result"] == "ok" else " " + x["result"])
                                            for i, x in enumerate(rl)) or "-")
            o.append(row)
        A = [r for r in rs if r["variant"] == a]
        B = [r for r in rs if r["variant"] == b]
        ra, rb = med([r["rps"] for r in A]), med([r["rps"] for r in B])
        pa, pb = med([r.get("p99_ms") for r in A]), med([r.get("p99_ms") for r in B])
        xa, xb = med([r.get("max_ms") for r in A]), med([r.get("max_ms") for r in B])
        spread = lambda xs: (100 * (max(xs) - min(xs)) / statistics.median(xs)) if len(xs) > 1 and statistics.median(xs) else None
        errs = sum(r["non2xx"] + r["sock_err"] for r in rs)
        o.append("\nmedians: %s %.0f req/s, p99 %s ms, max %s ms | %s %.0f req/s, p99 %s ms, max %s ms  " %
                 (a, ra or 0, f(pa), f(xa), b, rb or 0, f(pb), f(xb)))
        pairs = [(x, y) for x in A for y in B if x["round"] == y["round"]]
        if pairs:
            o.append("per round %s/%s: req/s %s; p99 %s  " % (b, a,
                     ", ".join(f(y["rps"] / x["rps"] if x["rps"] else None, 3) for x, y in pairs),
                     ", ".join(f(y["p99_ms"] / x["p99_ms"] if x.get("p99_ms") else None, 3) for x, y in pairs)))
        if any((r.get("other_pct") or 0) > 10 for r in rs):
            o.append("(* = more than 10% of the proxy's CPU went to other processes during that run: noisy)  ")
        o.append("**%s/%s: req/s %s, p99 %s** (noise: %s-run spread of req/s %s%%, of p99 %s%%, over %d rounds); wrk errors in all runs: %d  " %
                 (b, a, f(rb / ra if ra else None, 3), f(pb / pa if pa else None, 3), a,
                  f(spread([r["rps"] for r in A]), 1), f(spread([r.get("p99_ms") or 0 for r in A]), 1), len(A), errs))
        if part == "switch":
            bad = [x for r in B for x in (r.get("churn") or {}).get("bad", [])]
            if bad:
                o.append("\nrefused/failed API calls (first ones): " + json.dumps(bad[:5]))
    info = [r for r in runs if r["part"] == "big-info"]
    if info:
        i = info[0]
        lr = [x[0] for x in i.get("log_reloads", [])]
        vis = [x["visible_ms"] for x in i.get("idle_reloads", [])]
        al = i.get("api") or {}
        o.append("\n### Part 2: %s-service config, idle proxy\n" % E["NSVC"])
        o.append("| measure | value |\n|---|---|")
        o.append("| config size | %s lines, %s KiB |" % (i.get("lines"), i.get("kib")))
        o.append("| `switchyard check` (parse + validate, no compile), ms, %d runs | %s |" % (len(i.get("check_ms", [])), ", ".join(str(x) for x in i.get("check_ms", []))))
        o.append("| start-up to /ready, ms | %s |" % i.get("startup_ms"))
        o.append("| idle reload, log (SIGHUP -> \"config reloaded\"), ms | %s (median %s) |" % (", ".join(f(x, 0) for x in lr), f(med(lr), 0)))
        o.append("| idle reload, visible in /api/v1/status, ms | %s (median %s) |" % (", ".join(f(x, 0) for x in vis), f(med(vis), 0)))
        o.append("| idle API weight change (PUT, answered after the swap), ms | %s (median %s, codes %s) |" % (
            ", ".join(f(x, 0) for x in al.get("ms", [])), f(al.get("ms_p50"), 0), al.get("codes")))
        o.append("| RSS after start / after the reloads, MiB | %s / %s |" % (i.get("rss0_mib"), i.get("rss1_mib")))
    print("\n".join(o))

if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "render":
        write_cfg(a[0], a[1], int(a[2]))
    elif cmd == "churn":
        churn(int(a[0]), a[1], float(a[2]), float(a[3]), float(a[4]), a[5])
    elif cmd == "reloads":
        reloads(int(a[0]), a[1], [float(x) for x in a[2].split(",")], a[3])
    elif cmd == "api-latency":
        api_latency(int(a[0]), a[1])
    elif cmd == "ready":
        print(wait_ready(float(a[0])))
    elif cmd == "log-reloads":
        print(json.dumps(log_reloads(a[0])))
    elif cmd == "record":
        # record PART ROUND VARIANT WRKFILE "PROXY% MAIN% BUSY% LOADBUSY%" LOG [EXTRA_JSON_FILE KEY]...
        cpu, main, busy, lbusy, opens = (float(x) for x in a[4].split())
        r = {"part": a[0], "round": int(a[1]), "variant": a[2], "cpu_pct": cpu, "main_pct": main,
             "side_pct": round(max(0.0, cpu - main), 1), "busy_pct": busy, "load_busy_pct": lbusy,
             "tcp_opens": int(opens)}
        # Others = whatever else ran on PROXY_CPU (the whole proxy is pinned there unless CTRL_CPU
        # moved its controller away).
        r["other_pct"] = round(max(0.0, busy - (main if E.get("CTRL_CPU") else cpu)), 1)
        r.update(wrk_parse(a[3]))
        r["log_reloads"] = log_reloads(a[5])
        m = metrics_non2xx()
        r["proxy_metrics"] = m
        r["proxy_non2xx"] = sum(v for k, v in m.items() if k.startswith("proxy_code_") and k != "proxy_code_2xx") \
            if "metrics" not in m else None
        for path, key in zip(a[6::2], a[7::2]):
            r[key] = json.load(open(path)) if os.path.exists(path) else None
        print(json.dumps(r))
    elif cmd == "report":
        report(a[0], a[1], a[2], a[3])
    else:
        sys.exit("unknown command " + cmd)
PYEOF
py() { python3 "$PY" "$@"; }
cat >"$OUT/stats.lua" <<'EOF'
-- wrk: print errors and high percentiles in a parseable form (no per-request Lua: no cost).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SY requests %d duration_us %d connect %d read %d write %d status %d timeout %d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("SY lat_us p50 %d p99 %d p999 %d p9999 %d max %d\n", latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9), latency:percentile(99.99), latency.max))
end
EOF

# ---- backends: peers.sh's backends.nginx.conf on our ports (no h2c reference server) ---------
sed -e "s|@DIR@|$OUT|g; s|127.0.0.1:19001;|$BLUE;|; s|127.0.0.1:19002;|$GREEN;|; /19011/d" "$TPL" >"$OUT/backends.conf"
if ! grep -q "listen $BLUE;" "$OUT/backends.conf" || ! grep -q "listen $GREEN;" "$OUT/backends.conf" ||
   grep -q '190[01][12];' "$OUT/backends.conf"; then
  echo "backends template changed: could not move it to our ports ($OUT/backends.conf)" >&2; exit 1
fi
start "$LOAD_CPU" backends nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err"
for u in "http://$BLUE/" "http://$GREEN/"; do
  up "$u" "$LASTPID" || { echo "backends did not start: $OUT/backends.err" >&2; exit 1; }
done

# ---- proxy ------------------------------------------------------------------------------------
PROXY=""
start_proxy() {  # start_proxy KIND LOGNAME -> $PROXY, $STARTUP_MS
  py render "$DATA" "$1" 0
  local s0; s0=$(date +%s%N)
  RUST_LOG=info start "$PROXY_CPU" "$2" "$BIN" --log-format json serve --config "$CFG" --workers 1 --drain-timeout 1s
  PROXY=$LASTPID
  if [ "$(taskset -c "$LOAD_CPU" python3 "$PY" ready 30)" -lt 0 ] || ! kill -0 "$PROXY" 2>/dev/null; then
    echo "proxy did not become ready: $OUT/$2.log" >&2; tail -5 "$OUT/$2.log" >&2; exit 1
  fi
  STARTUP_MS=$(( ($(date +%s%N) - s0) / 1000000 ))
  if [ -n "${CTRL_CPU:-}" ]; then
    local t; for t in /proc/"$PROXY"/task/*; do
      if [ "$(cat "$t/comm")" = switchyard-cont ]; then taskset -p -c "$CTRL_CPU" "${t##*/}" >/dev/null; fi
    done
  fi
}
WRK_HOST=()
measure() {  # measure PART ROUND VARIANT [DRIVER ARGS...]: warm-up, measured wrk (+ driver), record
  local part=$1 r=$2 v=$3 log=$1-$3-r$2; shift 3
  local raw=$OUT/wrk-$log.txt drv=$OUT/driver-$log.json t0 t1 s0 s1 l0 l1 g0 g1 o0 o1 cpu dpid=""
  taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${WARM}s" "${WRK_HOST[@]}" "http://$LISTEN/" >/dev/null 2>&1 || true
  t0=$(ticks "$PROXY"); l0=$(cpu_busy "$PROXY_CPU"); g0=$(cpu_busy "$LOAD_CPU"); o0=$(opens); s0=$(date +%s.%N)
  if [ $# -gt 0 ]; then
    taskset -c "$LOAD_CPU" python3 "$PY" "$@" "$drv" >"$OUT/driver-$log.err" 2>&1 & dpid=$!
  fi
  taskset -c "$LOAD_CPU" timeout $((DUR + 30)) wrk -t1 -c64 -d"${DUR}s" --timeout 10s --latency -s "$OUT/stats.lua" \
    "${WRK_HOST[@]}" "http://$LISTEN/" >"$raw" 2>&1 || true
  t1=$(ticks "$PROXY"); l1=$(cpu_busy "$PROXY_CPU"); g1=$(cpu_busy "$LOAD_CPU"); o1=$(opens); s1=$(date +%s.%N)
  if [ -n "$dpid" ]; then
    local n=0; while kill -0 "$dpid" 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
    kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true
    [ -s "$OUT/driver-$log.err" ] && { echo "  driver said:"; sed 's/^/    /' "$OUT/driver-$log.err"; }
  fi
  # -> "proxy% main-thread% PROXY_CPU-busy% LOAD_CPU-busy%" over the measured run
  cpu=$(echo "$t0 $t1 $l0 $l1 $s0 $s1 $g0 $g1" | awk -v hz="$HZ" '{s=$10-$9
    printf "%.1f %.1f %.1f %.1f", 100*($3-$1)/hz/s, 100*($4-$2)/hz/s, ($8>$6) ? 100*($7-$5)/($8-$6) : 0,
      ($14>$12) ? 100*($13-$11)/($14-$12) : 0}')
  py record "$part" "$r" "$v" "$raw" "$cpu $((o1 - o0))" "$OUT/$log.log" "$drv" "$([ "$part" = switch ] && echo churn || echo reloads)" \
    >>"$OUT/runs.jsonl"
  python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
c = r.get("churn") or {}
rl = r.get("reloads") or []
extra = ""
if c: extra = "  api 2xx %s/%s reloads ok %s err %s driver cpu %ss" % (c["api_2xx"], c["api_calls"], c["reloads_ok"], c["reloads_err"], c["driver_cpu_s"])
if rl: extra = "  reloads visible ms " + ",".join("%.0f" % x["visible_ms"] for x in rl)
lr = r.get("log_reloads") or []
if lr: extra += "  log ms max %.0f" % max(x[0] for x in lr)
print("  %-6s r%-2s %-2s %8.0f req/s  p50 %6.2f  p99 %6.2f  p99.9 %6.2f  max %7.2f ms  errs %d/%d  proxy non-2xx %s  cpu %s+%s%% others %s%% load-cpu %s%% tcp-opens %s%s" % (
    r["part"], r["round"], r["variant"], r["rps"], r.get("p50_ms", -1), r.get("p99_ms", -1), r.get("p999_ms", -1),
    r.get("max_ms", -1), r["non2xx"], r["sock_err"], r.get("proxy_non2xx"), r["main_pct"], r["side_pct"], r["other_pct"], r["load_busy_pct"], r["tcp_opens"], extra))
EOF
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# switch_load.sh  $(date -u +%FT%TZ)  nproc=$(nproc)  loadavg=$LOAD0"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
echo "# proxy on CPU$PROXY_CPU (1 worker), wrk -t1 -c64 + backends + drivers on CPU$LOAD_CPU; $ROUNDS round(s) x ${DUR}s (warm-up ${WARM}s); output: $OUT"
: >"$OUT/runs.jsonl"

# ---- part 1: API changes every 50 ms + rewrite & SIGHUP every 1 s ----------------------------
if [ "$ONLY" != big ]; then
  echo "## part 1: A = steady load, B = load + API change every 50 ms + config rewrite & SIGHUP every 1 s"
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for v in $order; do
      quiet_gate; start_proxy small "switch-$v-r$r"
      if [ "$v" = A ]; then measure switch "$r" A
      else measure switch "$r" B churn "$PROXY" "$DATA" "$DUR" "${API_EVERY:-0.05}" "${RELOAD_EVERY:-1}"; fi
      stop "$PROXY"
    done
  done
fi

# ---- part 2: a 10,000-service config -----------------------------------------------------------
if [ "$ONLY" != switch ]; then
  echo "## part 2: $NSVC services; N = steady load, R = load + 3 reloads of the whole config"
  WRK_HOST=(-H "Host: api.example.com")
  py render "$OUT/big.yaml" big 0
  check_ms=()
  for _ in 1 2 3; do
    s0=$(date +%s%N)
    taskset -c "$PROXY_CPU" "$BIN" check --config "$OUT/big.yaml" >"$OUT/check.log" 2>&1 ||
      { echo "switchyard check rejected the big config: $OUT/check.log" >&2; exit 1; }
    check_ms+=("$(( ($(date +%s%N) - s0) / 1000000 ))")
  done
  start_proxy big big-idle
  rss0=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PROXY/status")
  if ! curl -sf -H "Host: api.example.com" "http://$LISTEN/" >/dev/null ||
     ! curl -sf -H "Host: s9.example.com" "http://$LISTEN/" >/dev/null; then
    echo "the big config does not route api.example.com / s9.example.com" >&2; exit 1
  fi
  taskset -c "$LOAD_CPU" python3 "$PY" reloads "$PROXY" "$DATA" 0.2,1.2,2.2,3.2,4.2 "$OUT/idle-reloads.json"
  taskset -c "$LOAD_CPU" python3 "$PY" api-latency 10 "$OUT/idle-api.json"
  rss1=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PROXY/status")
  python3 - "$OUT" "$STARTUP_MS" "$rss0" "$rss1" "${check_ms[@]}" >>"$OUT/runs.jsonl" <<EOF
import json, os, sys
sys.path.insert(0, "$OUT"); import switch_load as s
out = sys.argv[1]
big = open(out + "/big.yaml").read()
print(json.dumps({"part": "big-info", "startup_ms": int(sys.argv[2]), "rss0_mib": sys.argv[3], "rss1_mib": sys.argv[4],
  "check_ms": [int(x) for x in sys.argv[5:]], "lines": big.count("\n"), "kib": len(big) // 1024,
  "idle_reloads": json.load(open(out + "/idle-reloads.json")), "api": json.load(open(out + "/idle-api.json")),
  "log_reloads": s.log_reloads(out + "/big-idle.log")}))
EOF
  python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys
i = [json.loads(l) for l in open(sys.argv[1]) if '"big-info"' in l][-1]
print("  check ms %s | start-up %s ms | idle reloads visible ms %s | log ms %s | idle API PUT ms %s" % (
  i["check_ms"], i["startup_ms"], [x["visible_ms"] for x in i["idle_reloads"]], [x[0] for x in i["log_reloads"]], i["api"]["ms"]))
EOF
  stop "$PROXY"
  offs=$(awk -v d="$DUR" 'BEGIN{printf "%.2f,%.2f,%.2f", d/4, d/2, 3*d/4}')
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="N R"; else order="R N"; fi
    for v in $order; do
      quiet_gate; start_proxy big "big-$v-r$r"
      if [ "$v" = N ]; then measure big "$r" N
      else measure big "$r" R reloads "$PROXY" "$DATA" "$offs"; fi
      stop "$PROXY"
    done
  done
fi

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
echo
PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU py report "$OUT/runs.jsonl" "$CMDLINE" "$LOAD0" "$LOAD1" | tee "$OUT/table.md"
cat <<EOF

# wrk errors = "Non-2xx or 3xx responses" + "Socket errors" (must be 0); proxy non-2xx = the
# proxy's own switchyard_requests_total with a code other than 2xx over the whole proxy lifetime
# (warm-up included). p99.9/p99.99/max come from wrk's done() hook (stats.lua). TCP connects =
# the box's TCP ActiveOpens during the measured run (wrk's own 64 at its start + the proxy's new
# upstream connections + the drivers' admin connections; anything else on the box too).
# Raw wrk outputs, driver JSON, proxy logs (JSON), configs: $OUT   table: $OUT/table.md
EOF
