#!/usr/bin/env bash
# Every wall-clock benchmark of performance round 2 (issue 19) and of the canary costs
# (issue 17, "Measure") in one go, for a quiet machine. Never run in CI.
#
#   benches/round2.sh [--quick] [--only "load memory handshake tls workers canary"] [--out DIR] [BIN]
#
# Runs, one after the other (each alone on the box, with its own processes and ports):
#   load       benches/load.sh: peers.sh layout A, HTTP/1.1 (wrk -c64) and h2c (h2load -c64
#              -m10) vs nginx and HAProxy, 3 rounds × 8 s            (~6 min)
#   memory     benches/memory.sh --quick: idle RSS, 10,000 idle keep-alive connections
#              (Switchyard, nginx, HAProxy), per service/backend      (~2–3 min)
#   handshake  benches/handshake.sh: full and resumed TLS handshakes per proxy-CPU second,
#              RSA-2048/ECDSA P-256 × TLS 1.3/1.2, 2 rounds × 3 s     (~4 min)
#   tls        benches/tls_load.sh: h2 over TLS (ALPN) req/core, 3 rounds × 8 s (~2 min)
#   workers    benches/workers.sh: 1 vs 2 workers under a CPU quota per worker (~4 min)
#   canary     benches/canary_cost.sh: rollout / safety net / mirror costs (~4 min)
# ≈ 22–25 minutes in all on a quiet 2-core machine. --quick: every step's smoke settings (a
# few minutes; numbers not meaningful). BIN: the binary to measure (default: cargo build
# --release, then target/release/switchyard; NO_BUILD=1 skips the build).
# Output: DIR (default target/round2/<UTC date-time>) holds each step's full output
# (STEP.txt) and raw files (STEP/), and summary.md: one table of the ratios the goals are
# about, followed by every step's own table. Steps that fail are marked and the rest still
# run. Env passed through: SHARED, PROXY_CPU/LOAD_CPU; QUIET_WAIT (default 20) and TRIES
# (default 1) for peers.sh's noise gate.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0; ONLY="load memory handshake tls workers canary"; DIR=""; BIN=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1;; --only) ONLY=$2; shift;; --out) DIR=$2; shift;;
    -h|--help) sed -n '2,24p' "$0"; exit 0;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) BIN=$1;;
  esac; shift
done
if [ -z "$BIN" ]; then
  if [ -z "${NO_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release --quiet) || exit 1; fi
  BIN=$ROOT/target/release/switchyard
fi
[ -x "$BIN" ] || { echo "no binary $BIN" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
SHARED=${SHARED:-$ROOT/../shared}; [ -f "$SHARED/bench/peers.sh" ] || SHARED=/work/shared
export SHARED
[ -n "$DIR" ] || DIR=$ROOT/target/round2/$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)

if [ $QUICK = 1 ]; then
  LOAD_ARGS=(--quick --rounds 1 --duration 2); HS_ARGS=(--rounds 1 --duration 1 --clients 2); Q=(--quick)
else
  LOAD_ARGS=(--rounds 3 --duration 8 --warmup 2); HS_ARGS=(--rounds 2 --duration 3 --clients 4); Q=()
fi
echo "# round2.sh $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) binary=$BIN ($("$BIN" --version))"
echo "# steps: $ONLY$([ $QUICK = 1 ] && echo " (quick: smoke settings, numbers not meaningful)"); output: $DIR"
echo "# scripts: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) ($ROOT)"
awk '$1 > 1.5 { printf "# WARNING: load average %s: the box is not quiet, wall-clock numbers will be noisy\n", $1 }' /proc/loadavg

declare -A STATUS SECS
step() {  # step NAME CMD...: runs CMD with its output in DIR/NAME.txt, raw files in DIR/NAME/
  local name=$1 t0=$SECONDS rc; shift
  case " $ONLY " in *" $name "*) ;; *) return 0;; esac
  echo "## $name: $* ($(date -u +%T))"
  mkdir -p "$DIR/$name"
  BENCH_OUT=$DIR/$name "$@" >"$DIR/$name.txt" 2>&1 </dev/null; rc=$?
  SECS[$name]=$((SECONDS - t0))
  # load.sh (peers.sh) and memory.sh keep their raw files in a temp dir they print: copy it.
  local raw; raw=$(grep -oE '/tmp/(peers-bench|switchyard-memory)\.[A-Za-z0-9]+' "$DIR/$name.txt" | head -1)
  [ -n "$raw" ] && [ -d "$raw" ] && cp -r "$raw/." "$DIR/$name/"
  if [ $rc = 0 ]; then STATUS[$name]=ok; else STATUS[$name]="FAILED (exit $rc, see $name.txt)"; tail -5 "$DIR/$name.txt" | sed 's/^/   | /'; fi
  echo "   $name: ${STATUS[$name]}, ${SECS[$name]} s"
}
step load env BIN="$BIN" QUIET_WAIT="${QUIET_WAIT:-20}" TRIES="${TRIES:-1}" \
  "$ROOT/benches/load.sh" "${LOAD_ARGS[@]}" --no-caddy --layout A
step memory env BIN="$BIN" NO_BUILD=1 "$ROOT/benches/memory.sh" --quick
step handshake "$ROOT/benches/handshake.sh" "${HS_ARGS[@]}" "$BIN"
step tls "$ROOT/benches/tls_load.sh" "${Q[@]}" "$BIN"
step workers "$ROOT/benches/workers.sh" "${Q[@]}" "$BIN"
step canary "$ROOT/benches/canary_cost.sh" "${Q[@]}" "$BIN"

# ---- one table of the goals' ratios ----------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
md_cell() {  # md_cell FILE COL MATCH...: column COL (1-based, between |) of the first row whose cells match
  local f=$1 col=$2 IFS=$'\t'; shift 2
  [ -f "$f" ] || return 0
  awk -F'|' -v col="$col" -v pat="$*" '
    BEGIN { n = split(pat, want, "\t") }
    { ok = 1; for (i = 1; i <= n; i++) { hit = 0
        for (c = 2; c < NF; c++) { v = $c; gsub(/^ +| +$/, "", v); if (v == want[i]) hit = 1 }
        if (!hit) ok = 0 }
      if (ok) { v = $(col + 1); gsub(/^ +| +$|\*/, "", v); print v; exit } }' "$f"
}
{
  echo "# Round 2 summary ($(date -u +%FT%TZ), $("$BIN" --version), scripts $(git -C "$ROOT" describe --always --dirty 2>/dev/null), loadavg at end $(cut -d' ' -f1-3 /proc/loadavg))"
  [ $QUICK = 1 ] && echo "**--quick: smoke settings, numbers NOT meaningful.**"
  echo
  echo "| measure | Switchyard | nginx | HAProxy | Switchyard ÷ nginx | Switchyard ÷ HAProxy | goal |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  if [ "${STATUS[load]:-}" = ok ]; then
    # peers.sh's table: L p target req/s spread p50 p99 proxy% req/core ...
    for p in 1 2; do
      read -r sy ng hp sp np hpp < <(awk -v p="$p" '$1 == "A" && $2 == p { c[$3] = $9; l[$3] = $7 }
        END { printf "%s %s %s %s %s %s\n", c["switchyard"], c["nginx"], c["haproxy"], l["switchyard"], l["nginx"], l["haproxy"] }' "$DIR/load.txt")
      if [ "$p" = 1 ]; then
        echo "| HTTP/1.1 req/core (p99 ms), layout A | $sy ($sp) | $ng ($np) | $hp ($hpp) | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | ≥ 1.2× the better peer, p99 ≤ its |"
      else
        echo "| h2c req/core, layout A | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | ≥ 1.0× HAProxy (stretch 1.2×) |"
      fi
    done
  fi
  if [ "${STATUS[tls]:-}" = ok ]; then
    f=$DIR/tls/summary.md; sy=$(md_cell "$f" 7 "h2 (ALPN)" switchyard); ng=$(md_cell "$f" 7 "h2 (ALPN)" nginx); hp=$(md_cell "$f" 7 "h2 (ALPN)" haproxy)
    echo "| TLS h2 req/core (ALPN, ECDSA) | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | ≥ 1.0× both |"
  fi
  if [ "${STATUS[handshake]:-}" = ok ]; then
    f=$DIR/handshake/summary.md
    for cert in rsa ecdsa; do for v in "TLS 1.3" "TLS 1.2"; do for m in full resumed; do
      sy=$(md_cell "$f" 6 "$cert" "$v" "$m" switchyard); ng=$(md_cell "$f" 6 "$cert" "$v" "$m" nginx); hp=$(md_cell "$f" 6 "$cert" "$v" "$m" haproxy)
      goal=""; [ "$m" = full ] && goal="≥ 1.0× nginx"
      echo "| handshakes per proxy-CPU s, $cert $v $m | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | $goal |"
    done; done; done
  fi
  if [ "${STATUS[memory]:-}" = ok ]; then
    # memory.sh (b): | proxy | RSS before | RSS after | client conns open | upstream conns | KiB per conn |
    read -r sy ng hp < <(awk -F'|' '/^## \(b\)/ { b = 1 } /^## \(c\)/ { b = 0 }
      b && NF > 6 { n = $2; gsub(/ /, "", n); v = $7; gsub(/ /, "", v); k[n] = v }
      END { printf "%s %s %s\n", k["switchyard"], k["nginx"], k["haproxy"] }' "$DIR/memory.txt")
    echo "| KiB per idle keep-alive connection (10,000) | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | ≤ 1.0 KiB |"
  fi
  if [ "${STATUS[workers]:-}" = ok ]; then
    f=$DIR/workers/summary.md
    sy=$(md_cell "$f" 4 switchyard); ng=$(md_cell "$f" 4 nginx); hp=$(md_cell "$f" 4 haproxy)
    echo "| 2-worker scaling (req/s 2 ÷ 1 under a quota per worker; ideal 2.0) | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | ≥ theirs |"
    sy=$(md_cell "$f" 7 switchyard); ng=$(md_cell "$f" 7 nginx); hp=$(md_cell "$f" 7 haproxy)
    echo "| 2-worker req/core ÷ 1-worker req/core (ideal 1.0) | $sy | $ng | $hp | $(ratio "$sy" "$ng") | $(ratio "$sy" "$hp") | |"
  fi
  if [ "${STATUS[canary]:-}" = ok ]; then
    f=$DIR/canary/summary.md
    pl=$(md_cell "$f" 7 saturated plain); ro=$(md_cell "$f" 7 saturated rollout); ne=$(md_cell "$f" 7 saturated net)
    ze=$(md_cell "$f" 7 saturated zero); mi=$(md_cell "$f" 7 saturated mirror)
    echo "| canary: req/core plain / rollout / safety net on (healthy canary) | $pl / $ro / $ne | | | net ÷ rollout $(ratio "$ne" "$ro"), rollout ÷ plain $(ratio "$ro" "$pl") | | net = rollout within noise |"
    echo "| canary: req/core, all on stable, no mirror / 100% mirror (saturated) | $ze / $mi | | | mirror ÷ none $(ratio "$mi" "$ze") | | (cost of the copies) |"
    z99=$(md_cell "$f" 5 paced zero); m99=$(md_cell "$f" 5 paced mirror); z50=$(md_cell "$f" 4 paced zero); m50=$(md_cell "$f" 4 paced mirror)
    echo "| canary: stable's p99 (p50) ms at a paced rate, no mirror / 100% mirror | $z99 ($z50) / $m99 ($m50) | | | p99 mirror ÷ none $(ratio "$m99" "$z99") | | unchanged within noise |"
  fi
  echo
  echo "| step | status | seconds |"
  echo "| --- | --- | --- |"
  for s in $ONLY; do echo "| $s | ${STATUS[$s]:-not run} | ${SECS[$s]:-} |"; done
  echo
  echo "## Each step's table"
  for s in $ONLY; do
    echo; echo "### $s"
    case $s in
      load) sed -n '/^# results:/,/^$/p' "$DIR/load.txt" 2>/dev/null | sed 's/^/    /';;
      memory) sed -n '/^## (b)/,/^(KiB per conn/p' "$DIR/memory.txt" 2>/dev/null;;
      *) cat "$DIR/$s/summary.md" 2>/dev/null;;
    esac
  done
} >"$DIR/summary.md"
sed -n '1,/^## Each step/p' "$DIR/summary.md" | sed '$d'
echo "# full summary (with every step's table): $DIR/summary.md"
