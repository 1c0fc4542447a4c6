#!/usr/bin/env bash
# Two workers (issue 19, item 5): Switchyard `--workers 2` vs nginx `worker_processes 2` vs
# HAProxy `nbthread 2`, each against its own one-worker run. Never run in CI.
#
#   benches/workers.sh [--rounds 3] [--duration 8] [--warmup 2] [--conns 64] [--share 40]
#                      [--proxies "switchyard nginx haproxy"] [--quick] [BIN]
#
# Layout Q (quota), for a 2-core box where a proxy with 2 workers and its load generator
# cannot each have cores of their own: every process may run on both CPUs (no pinning), and
# the proxy's CPU time is capped by a CFS bandwidth quota of SHARE% of one core PER WORKER
# (default 40%: 0.4 core for 1 worker, 0.8 for 2), set on a cgroup made for the run —
# cgroup v2 `cpu.max` when the unified hierarchy has the cpu controller, else v1
# `cpu.cfs_quota_us`/`cpu.cfs_period_us` (period QUOTA_PERIOD_US, default 20,000 µs). The
# load side (wrk -t2 -c64, HTTP/1.1, and peers.sh's one-worker nginx backends) keeps the
# other ≥ 1.2 cores. So doubling the workers doubles the proxy's CPU budget, and
#   scaling = req/s with 2 workers ÷ req/s with 1 (ideal 2.0),
#   per-CPU = req/core with 2 ÷ req/core with 1 (ideal 1.0: what the second worker's
#             coordination costs — cross-thread wake-ups, shared pools, accept balancing),
# req/core = req/s ÷ the proxy's measured CPU (utime + stime of its session).
# Caveats: (1) the quota is enforced per period, so a proxy runs in bursts and is throttled
# for the rest of each period: latency includes throttling (p99 is not the point here);
# (2) workers share the two CPUs with the load side, so cache and scheduler effects of real
# dedicated cores are not reproduced — a box with ≥ 4 cores (proxy on 2, load on the rest)
# gives the clean number; (3) if proxy% stays well below the quota, the load side was the
# limit ("load-bound" in the table) and that row's scaling understates the proxy. Without a
# writable cpu cgroup it falls back to no quota (everything on both CPUs): then only the
# per-CPU column is meaningful, and the header says so (NO_QUOTA=1 forces that).
# Rounds interleaved (every proxy × {1, 2} workers once per round, order rotated). PORT
# (default 28290), SHARED. Output: summary.md in the printed directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-28290}
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
ROUNDS=3; DUR=8; WARM=2; CONNS=64; SHARE=40; PROXIES="switchyard nginx haproxy"
PERIOD=${QUOTA_PERIOD_US:-20000}
BIN=$ROOT/target/release/switchyard
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --warmup) WARM=$2; shift;;
    --conns) CONNS=$2; shift;; --share) SHARE=$2; shift;; --proxies) PROXIES=$2; shift;;
    --quick) ROUNDS=1; DUR=2; WARM=1;;
    -h|--help) sed -n '2,31p' "$0"; exit 0;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) BIN=$1;;
  esac; shift
done
[ -x "$BIN" ] || { echo "no binary $BIN (cargo build --release)" >&2; exit 1; }
bench_init workers wrk nginx haproxy curl taskset
ports_free "$PORT" "$ADMIN" 19001 19002 19011
ALL_CPUS=0-$(( $(nproc) - 1 )); LOAD_CPU=$ALL_CPUS; WRK_THREADS=2

# ---- the proxy's cgroup: v2 cpu.max, else v1 cpu controller, else none ------------------
CG=""; CGV=""
if [ -z "${NO_QUOTA:-}" ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null && mkdir "/sys/fs/cgroup/switchyard-bench-$$" 2>/dev/null; then
  CG=/sys/fs/cgroup/switchyard-bench-$$; CGV=2
  # No cpu.max unless the root delegates the cpu controller (+cpu in cgroup.subtree_control,
  # which systemd hosts do); this script does not change that: fall back below.
  [ -f "$CG/cpu.max" ] || { rmdir "$CG"; CG=""; CGV=""; }
fi
if [ -z "${NO_QUOTA:-}" ] && [ -z "$CG" ] && [ -w /sys/fs/cgroup/cpu ] && mkdir "/sys/fs/cgroup/cpu/switchyard-bench-$$" 2>/dev/null; then
  CG=/sys/fs/cgroup/cpu/switchyard-bench-$$; CGV=1
fi
bench_cleanup() { [ -n "$CG" ] && rmdir "$CG" 2>/dev/null; return 0; }
set_quota() {  # set_quota WORKERS: SHARE% of a core per worker
  local q=$(( PERIOD * SHARE * $1 / 100 ))
  if [ "$CGV" = 2 ]; then echo "$q $PERIOD" >"$CG/cpu.max"
  elif [ "$CGV" = 1 ]; then echo "$PERIOD" >"$CG/cpu.cfs_period_us"; echo "$q" >"$CG/cpu.cfs_quota_us"; fi
}
if [ -n "$CG" ]; then LAYOUT="layout Q: proxy capped at $SHARE% of a core per worker (cgroup v$CGV, period ${PERIOD} µs), all processes on CPUs $ALL_CPUS"
else LAYOUT="NO cpu cgroup available: no quota, all processes on CPUs $ALL_CPUS; only the per-CPU column is meaningful"; fi

start_backends "$ALL_CPUS"
echo "# workers.sh $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) rounds=$ROUNDS duration=${DUR}s conns=$CONNS"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | $(haproxy -v | head -1 | cut -d' ' -f1-3) | raw: $OUT"
echo "# $LAYOUT; wrk -t2 -c$CONNS HTTP/1.1"

RES=$OUT/results.tsv
printf 'proxy\tworkers\tround\treq_s\tp50_ms\tp99_ms\tproxy_pct\treq_core\terrors\n' >"$RES"
CELLS=(); for name in $PROXIES; do CELLS+=("$name 1" "$name 2"); done
for r in $(seq "$ROUNDS"); do
  for i in "${!CELLS[@]}"; do
    read -r name w <<<"${CELLS[$(( (i + r - 1) % ${#CELLS[@]} ))]}"
    proxy_cmd "$name" "$w" ""
    set_quota "$w"
    CGROUP=$CG start "$ALL_CPUS" "$name-w$w" "${CMD[@]}"; PROXY_SID=$LASTPID
    wait_url "http://$LISTEN/" || { echo "$name ($w workers) did not come up: $OUT/$name-w$w.log" >&2; exit 1; }
    load_run "$OUT/raw-$name-w$w-r$r.txt" "$CONNS" "$DUR" "$WARM" h1 "http://$LISTEN/"
    read -r rps p50 p99 err <<<"$RESULT"
    [ -n "$CG" ] && { echo "# cgroup cpu.stat after the run (throttled periods: the quota held)"; cat "$CG/cpu.stat"; } >>"$OUT/raw-$name-w$w-r$r.txt"
    eff=$(awk -v r="$rps" -v c="$PROXY_PCT" 'BEGIN { printf "%.0f", (c > 0 ? r * 100 / c : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$w" "$r" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err" >>"$RES"
    printf '  [r%s] %-10s %s worker(s) %8s req/s  p50 %7s ms  p99 %7s ms  proxy %5s%%  %8s req/core  errors %s\n' \
      "$r" "$name" "$w" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err"
    stop "$PROXY_SID"
  done
done

median_table "$RES" 2 7 | awk -F'\t' -v share="$SHARE" -v q="$([ -n "$CG" ] && echo 1 || echo 0)" '
  { n[$1]++; if (n[$1] == 1) order[++k] = $1; rps[$1, $2] = $4; pct[$1, $2] = $7; core[$1, $2] = $8; p99[$1, $2] = $6; err[$1] += $9 }
  END {
    print "| proxy | req/s 1 worker | req/s 2 workers | scaling (2 ÷ 1) | req/core 1 | req/core 2 | per-CPU (2 ÷ 1) | proxy% 1 / 2 | p99 ms 1 / 2 | Switchyard scaling ÷ its |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    sy = (rps["switchyard", 1] > 0) ? rps["switchyard", 2] / rps["switchyard", 1] : 0
    for (i = 1; i <= k; i++) { p = order[i]; s = (rps[p, 1] > 0) ? rps[p, 2] / rps[p, 1] : 0
      e = (core[p, 1] > 0) ? core[p, 2] / core[p, 1] : 0
      flag = ""; if (q && (pct[p, 1] < 0.85 * share || pct[p, 2] < 0.85 * 2 * share)) flag = " (load-bound)"
      printf "| %s | %.0f | %.0f | **%.2f**%s | %.0f | %.0f | %.2f | %.0f / %.0f | %s / %s | %s |\n", p, rps[p, 1], rps[p, 2], s, flag,
        core[p, 1], core[p, 2], e, pct[p, 1], pct[p, 2], p99[p, 1], p99[p, 2], (p == "switchyard" || s == 0 || sy == 0 ? "—" : sprintf("**%.2f**", sy / s)) } }' \
  | tee "$OUT/summary.md"
echo "# medians of $ROUNDS rounds; $LAYOUT; raw: $OUT"
