#!/usr/bin/env bash
# Load benchmark of the release binary (issue 8). Never run in CI: it needs the whole box.
#
#   benches/load.sh [peers.sh options...]     # Switchyard side by side with nginx/HAProxy
#   benches/load.sh --record-cost [--rounds N] [--duration S] [--conns C]
#                                             # recording on vs off, interleaved (issue 3)
#   benches/load.sh --record-cost --instructions
#                                             # the same as instructions per request (callgrind)
#
# Peers mode builds `target/release/switchyard` and runs ../shared/bench/peers.sh (beside
# this repo, or SHARED) with benches/candidate.sh as the candidate: 90/10 split, one worker
# thread, pinned like the peers. Pass --quick for a smoke run. BIN=path runs that binary
# instead (no build), NO_BUILD=1 the last build.
#
# Record-cost mode builds the binary twice — normally and with `--features bench-no-record`
# (the record phase is a no-op) — starts peers.sh's nginx backends, and alternates the two
# builds round by round under the same wrk load (proxy on PROXY_CPU, wrk + backends on
# LOAD_CPU, as peers.sh's layout A). It reports median req/s, p99 and req/core (req/s per
# fully used proxy core, from the proxy's own CPU time) and the cost of recording.
# NO_BUILD=1 skips the two builds and reuses the binaries of the last run; PORT moves the
# proxy's listener (default 47180).
# With --instructions it instead runs each build under valgrind's callgrind for 2,000 and
# 12,000 requests (h2load --h1, fixed count, one connection) and reports the difference per
# request: an instruction count does not depend on what the neighbours are doing; wall-clock
# numbers do.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}; [ -f "$SHARED/bench/peers.sh" ] || SHARED=/work/shared
PEERS=$SHARED/bench/peers.sh
cd "$ROOT"

if [ "${1:-}" != --record-cost ]; then
  [ -x "$PEERS" ] || [ -f "$PEERS" ] || { echo "not found: $PEERS (set SHARED to the shared/ directory)" >&2; exit 1; }
  # BIN: another binary (then nothing is built); NO_BUILD=1: the last build as it is.
  if [ -z "${BIN:-}" ]; then [ -n "${NO_BUILD:-}" ] || cargo build --release --quiet; BIN=$ROOT/target/release/switchyard; fi
  # Port 28180 (admin 28181), not peers.sh's default 18080 (often taken by someone's dev
  # proxy) and below the ephemeral range; a later --port in "$@" wins.
  exec bash "$PEERS" --name switchyard --port 28180 \
    --candidate "exec $ROOT/benches/candidate.sh $BIN 28181" "$@"
fi
shift
ROUNDS=6; DUR=10; WARM=2; CONNS=64; INSTR=0
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --conns) CONNS=$2; shift;;
    --warmup) WARM=$2; shift;; --instructions) INSTR=1;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
PROXY_CPU=${PROXY_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
for tool in wrk nginx taskset; do
  command -v $tool >/dev/null || { echo "$tool missing: run $PEERS --quick once (it installs wrk, nginx)" >&2; exit 1; }
done

if [ -z "${NO_BUILD:-}" ]; then  # NO_BUILD=1 reuses the two binaries of the last run
  echo "# building release with and without recording"
  cargo build --release --quiet --features bench-no-record
  cp target/release/switchyard target/release/switchyard-no-record
  cargo build --release --quiet
  cp target/release/switchyard target/release/switchyard-record
fi

OUT=$(mktemp -d /tmp/switchyard-record-cost.XXXXXX)
export LISTEN=127.0.0.1:${PORT:-47180} BLUE=127.0.0.1:19001 GREEN=127.0.0.1:19002 BLUE_WEIGHT=90 GREEN_WEIGHT=10
export BENCH_DIR=$OUT
PIDS=()
stop() {
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done; }
trap cleanup EXIT; trap 'exit 130' INT TERM
up() { for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://$1/" && return 0; sleep 0.1; done; return 1; }

for p in "${LISTEN#*:}" 19001 19002 19011 47181; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use (not ours); free it or set PORT" >&2; exit 1; }
done
sed -e "s|@DIR@|$OUT|g" "$SHARED/bench/templates/backends.nginx.conf" >"$OUT/backends.conf"
setsid taskset -c "$LOAD_CPU" nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err" \
  >"$OUT/backends.log" 2>&1 </dev/null & PIDS+=($!)
if ! up "$BLUE" || ! up "$GREEN"; then echo "backends did not start: $OUT/backends.err" >&2; exit 1; fi

if [ "$INSTR" = 1 ]; then
  { command -v valgrind >/dev/null && command -v h2load >/dev/null; } ||
    { echo "needs valgrind and h2load (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
  echo "# instructions per request under callgrind (all threads), GET / over one keep-alive connection (sequential: the least scheduling noise)"
  printf 'variant\trequests\tinstructions\n' | tee "$OUT/instructions.tsv"
  for v in record no-record; do
    for n in 2000 12000; do
      WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind-$v-$n.out" \
        setsid "$ROOT/benches/candidate.sh" "$ROOT/target/release/switchyard-$v" \
        >"$OUT/$v-$n.log" 2>&1 </dev/null & pid=$!; PIDS+=("$pid")
      up "$LISTEN" || { echo "switchyard-$v did not start: $OUT/$v-$n.log" >&2; exit 1; }
      h2load --h1 -n"$n" -c1 -t1 "http://$LISTEN/" >"$OUT/h2load-$v-$n.txt" 2>&1
      grep -q "succeeded, 0 failed" "$OUT/h2load-$v-$n.txt" ||
        grep -q "$n succeeded" "$OUT/h2load-$v-$n.txt" || { echo "requests failed: $OUT/h2load-$v-$n.txt" >&2; exit 1; }
      kill -TERM "$pid"   # graceful shutdown; callgrind writes its file at exit
      for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      stop "$pid"
      ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUT/callgrind-$v-$n.out")
      printf '%s\t%s\t%s\n' "$v" "$n" "$ir" | tee -a "$OUT/instructions.tsv"
    done
  done
  awk -F'\t' 'NR>1 { ir[$1,$2]=$3 } END {
    on=(ir["record",12000]-ir["record",2000])/10000; off=(ir["no-record",12000]-ir["no-record",2000])/10000
    printf "instructions/request: recording on %.0f, off %.0f, cost %.0f (%+.2f%%)\n", on, off, on-off, 100*(on/off-1) }' \
    "$OUT/instructions.tsv" | tee "$OUT/table.txt"
  exit 0
fi

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
HZ=$(getconf CLK_TCK)
echo "# wrk -t1 -c$CONNS -d${DUR}s --latency, $ROUNDS rounds alternating; proxy on CPU$PROXY_CPU, wrk+backends on CPU$LOAD_CPU; raw: $OUT"
printf 'round\tvariant\treq_s\tp99_ms\tproxy_cpu_pct\treq_per_core\n' | tee "$OUT/results.tsv"
for r in $(seq "$ROUNDS"); do
  # Alternate which variant goes first, so a drift in background load hits both alike.
  if [ $((r % 2)) = 1 ]; then order="record no-record"; else order="no-record record"; fi
  for v in $order; do
    setsid taskset -c "$PROXY_CPU" "$ROOT/benches/candidate.sh" "$ROOT/target/release/switchyard-$v" \
      >"$OUT/$v-r$r.log" 2>&1 </dev/null & pid=$!; PIDS+=("$pid")
    up "$LISTEN" || { echo "switchyard-$v did not start: $OUT/$v-r$r.log" >&2; exit 1; }
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARM}s" "http://$LISTEN/" >/dev/null
    t0=$(ticks "$pid"); s0=$(date +%s.%N)
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://$LISTEN/" >"$OUT/wrk-$v-r$r.txt"
    t1=$(ticks "$pid"); s1=$(date +%s.%N)
    stop "$pid"
    rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/wrk-$v-r$r.txt")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) v/=1000; else if (v ~ /ms$/) v+=0; else if (v ~ /s$/) v*=1000; print v}' "$OUT/wrk-$v-r$r.txt")
    cpu=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(s1-s0)}')
    eff=$(awk -v r="$rps" -v c="$cpu" 'BEGIN{printf "%.0f", (c>0 ? r*100/c : 0)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$rps" "$p99" "$cpu" "$eff" | tee -a "$OUT/results.tsv"
  done
done

echo; echo "# medians over $ROUNDS rounds"
awk -F'\t' 'NR>1 { rps[$2]=rps[$2] " " $3; p99[$2]=p99[$2] " " $4; eff[$2]=eff[$2] " " $6; cpu[$2]=cpu[$2] " " $5 }
  function med(s,   a,n,i,j,x) { n=split(s,a," "); for(i=2;i<=n;i++){x=a[i];for(j=i-1;j>0&&a[j]+0>x+0;j--)a[j+1]=a[j];a[j+1]=x}
                                 return (n%2)? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2 }
  END {
    printf "%-10s %9s %8s %8s %9s\n", "variant", "req/s", "p99 ms", "proxy%", "req/core"
    for (v in rps) { R[v]=med(rps[v]); E[v]=med(eff[v])
      printf "%-10s %9.0f %8.2f %8.1f %9.0f\n", v, R[v], med(p99[v]), med(cpu[v]), E[v] }
    printf "recording cost: req/s %+.1f%%, req/core %+.1f%% (negative = recording is slower)\n",
      100*(R["record"]/R["no-record"]-1), 100*(E["record"]/E["no-record"]-1) }' "$OUT/results.tsv" | tee "$OUT/table.txt"
