#!/usr/bin/env bash
# What a canary costs the request path (issue 17, "Measure"), wall clock. Never run in CI.
#
#   benches/canary_cost.sh [--rounds 3] [--duration 8] [--warmup 2] [--conns 64] [--delay-ms 4] [--quick] [BIN]
#
# Switchyard alone (one worker on PROXY_CPU; wrk -t1 and peers.sh's nginx backends on
# LOAD_CPU: layout A), one fresh proxy per run, variants interleaved round by round (order
# rotated), medians. Every variant is the same service (blue v1 = stable, green v2 = canary):
#   plain    no rollout, weights 90/10
#   rollout  a running rollout at { traffic: 10% } (impact counting on), safety net off
#   net      the same with safety_net { retry_on_stable: true, budget: 20% } and a healthy
#            canary: nothing is replayed, so req/core must equal `rollout` within noise
#   zero     a running rollout at { traffic: 0% }: every user on the stable, no copies
#   mirror   a running rollout at { mirror: 100% }: every user on the stable, and a copy of
#            every request sent to the canary off the request path (SPEC §13)
# (a) saturated: wrk -c64 closed loop, all five variants -> req/core (req/s ÷ the proxy's own
#     CPU share). The mirror row pays for its copies in the same process on the same core.
# (b) paced: wrk -c64 with a delay of DELAY_MS between a connection's requests (a wrk script;
#     an offered load of ~conns × 1000 / (delay + latency) req/s, well below saturation:
#     check proxy% < ~70) for `zero` and `mirror`: the stable's p50/p99 with mirroring on vs
#     off — what users feel. wrk measures from send, so this is latency at a fixed rate, not
#     corrected for coordinated omission (there is none to speak of when unsaturated).
# Rollouts have analysis every 1 h and fast-fail off, so none advances or rolls back during a
# run; each run checks through the API that its rollout is running in the expected mode.
# PORT (default 28300; admin PORT+1), SHARED, PROXY_CPU, LOAD_CPU. Output: summary.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-28300}
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
ROUNDS=3; DUR=8; WARM=2; CONNS=64; DELAY=4
BIN=$ROOT/target/release/switchyard
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --warmup) WARM=$2; shift;;
    --conns) CONNS=$2; shift;; --delay-ms) DELAY=$2; shift;; --quick) ROUNDS=1; DUR=2; WARM=1;;
    -h|--help) sed -n '2,27p' "$0"; exit 0;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) BIN=$1;;
  esac; shift
done
[ -x "$BIN" ] || { echo "no binary $BIN (cargo build --release)" >&2; exit 1; }
bench_init canary-cost wrk nginx curl jq taskset
ports_free "$PORT" "$ADMIN" 19001 19002 19011
start_backends "$LOAD_CPU"
PACE=$(pace_script "$DELAY")

rollout_yaml() {  # rollout_yaml VARIANT -> the service's rollout block ("" for plain)
  local first net=""
  case $1 in
    plain) return 0;;
    rollout) first="{ traffic: 10%, duration: 1h }";;
    net) first="{ traffic: 10%, duration: 1h }"; net="safety_net: { retry_on_stable: true, budget: 20% }";;
    zero) first="{ traffic: 0%, duration: 1h }";;
    mirror) first="{ mirror: 100%, duration: 1h }";;
  esac
  printf '    rollout:\n      stable: blue\n      canary: green\n      %s\n      steps: [%s, { traffic: 100%% }]\n      analysis: { interval: 1h, fast_fail: off }\n' \
    "$net" "$first"
}
check_rollout() {  # check_rollout VARIANT: the API shows the rollout progressing in its mode
  [ "$1" = plain ] && return 0
  local want=traffic doc; [ "$1" = mirror ] && want=mirror
  for _ in $(seq 50); do
    doc=$(curl -sf "http://127.0.0.1:$ADMIN/api/v1/services/api" || true)
    [ "$(jq -r '.rollout.state // empty' <<<"$doc")" = progressing ] && [ "$(jq -r '.rollout.mode // empty' <<<"$doc")" = $want ] &&
      [ "$(jq -r '.rollout.safety_net.enabled' <<<"$doc")" = "$([ "$1" = net ] && echo true || echo false)" ] && return 0
    sleep 0.1
  done
  echo "variant $1: the rollout is not progressing in $want mode (safety net on only for net); GET /api/v1/services/api: $doc" >&2; exit 1
}

echo "# canary_cost.sh $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) rounds=$ROUNDS duration=${DUR}s conns=$CONNS delay=${DELAY}ms"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | raw: $OUT"
echo "# proxy (one worker) on CPU$PROXY_CPU; wrk -t1 and backends on CPU$LOAD_CPU"
RES=$OUT/results.tsv
printf 'load\tvariant\tround\treq_s\tp50_ms\tp99_ms\tproxy_pct\treq_core\terrors\tcopies\n' >"$RES"
CELLS=("sat plain" "sat rollout" "sat net" "sat zero" "sat mirror" "paced zero" "paced mirror")
for r in $(seq "$ROUNDS"); do
  for i in "${!CELLS[@]}"; do
    read -r load v <<<"${CELLS[$(( (i + r - 1) % ${#CELLS[@]} ))]}"
    proxy_cmd switchyard 1 "" "$(rollout_yaml "$v")"
    cp "$OUT/switchyard-w1-plain.yaml" "$OUT/config-$v.yaml"
    CGROUP="" start "$PROXY_CPU" "switchyard-$v" "${CMD[@]}"; PROXY_SID=$LASTPID
    wait_url "http://$LISTEN/" || { echo "switchyard ($v) did not come up: $OUT/switchyard-$v.log" >&2; exit 1; }
    check_rollout "$v"
    lua=""; [ "$load" = paced ] && lua=$PACE
    load_run "$OUT/raw-$load-$v-r$r.txt" "$CONNS" "$DUR" "$WARM" h1 "http://$LISTEN/" "$lua"
    read -r rps p50 p99 err <<<"$RESULT"
    # The copies' outcomes, for the mirror rows (sent / dropped / failed).
    curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep -E '^switchyard_(mirror_requests|safety_net_retries)_total' >>"$OUT/raw-$load-$v-r$r.txt" || true
    copies=$(awk '/^switchyard_mirror_requests_total/ && /"sent"/ { s = $NF } /^switchyard_mirror_requests_total/ && /"dropped"/ { d = $NF }
      END { printf "%d/%d", s, d }' "$OUT/raw-$load-$v-r$r.txt")
    eff=$(awk -v r="$rps" -v c="$PROXY_PCT" 'BEGIN { printf "%.0f", (c > 0 ? r * 100 / c : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$v" "$r" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err" "$copies" >>"$RES"
    printf '  [r%s] %-5s %-8s %8s req/s  p50 %7s ms  p99 %7s ms  proxy %5s%%  %8s req/core  errors %s  copies sent/dropped %s\n' \
      "$r" "$load" "$v" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err" "$copies"
    stop "$PROXY_SID"
  done
done

median_table "$RES" 2 7 | awk -F'\t' -v res="$RES" '
  BEGIN { while ((getline l < res) > 0) { split(l, x, "\t"); last[x[1], x[2]] = x[10] } }
  { load[NR] = $1; v[NR] = $2; row[NR] = $0; core[$1, $2] = $8; p99[$1, $2] = $6; p50[$1, $2] = $5 }
  END {
    print "| load | variant | req/s | p50 ms | p99 ms | proxy% | req/core | ratio | errors (median) | copies sent/dropped (last round) |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= NR; i++) { split(row[i], f, "\t"); ratio = "—"
      if (f[1] == "sat" && f[2] != "plain" && core["sat", "plain"] > 0) ratio = sprintf("req/core ÷ plain **%.3f**", f[8] / core["sat", "plain"])
      if (f[1] == "sat" && f[2] == "net" && core["sat", "rollout"] > 0) ratio = ratio sprintf(", ÷ rollout **%.3f**", f[8] / core["sat", "rollout"])
      if (f[1] == "paced" && f[2] == "mirror" && p99["paced", "zero"] > 0)
        ratio = sprintf("p99 ÷ zero **%.2f**, p50 ÷ zero %.2f", f[6] / p99["paced", "zero"], f[5] / p50["paced", "zero"])
      printf "| %s | %s | %.0f | %s | %s | %.0f | %.0f | %s | %s | %s |\n", (f[1] == "sat" ? "saturated" : "paced"), f[2], f[4], f[5], f[6], f[7], f[8], ratio, f[9], last[f[1], f[2]] } }' \
  | tee "$OUT/summary.md"
echo "# medians of $ROUNDS rounds; paced = wrk -c$CONNS with ${DELAY} ms between a connection's requests; raw: $OUT"
