#!/usr/bin/env bash
# TLS handshakes per second per core, Switchyard side by side with nginx and HAProxy
# (issue 19, item 2), and server CPU per handshake with each rustls crypto provider.
#
#   benches/handshake.sh [--rounds 3] [--duration 5] [--clients 4] [--only NAME] [BIN]
#   benches/handshake.sh --providers [N]      # ring vs aws-lc-rs, in memory (no sockets)
#
# Peers run: RSA-2048 and ECDSA P-256 certificates (made here with openssl), TLS 1.3 and 1.2,
# full (`openssl s_time -new`) and resumed (`-reuse`) handshakes. Each proxy runs with ONE
# worker pinned to PROXY_CPU (default 1); CLIENTS s_time processes and the nginx backends
# share LOAD_CPU (default 0) — the layout A of ../shared/bench/peers.sh. s_time connects,
# handshakes and closes (no request; resumed TLS 1.3 makes one GET per connection, because
# s_time only reads the session ticket when it reads a response), so the proxies' TLS stacks
# are what is measured. The
# load side saturates before a proxy can (an ECDSA verification costs the client more than
# the signature costs the server), so the fair column is handshakes per proxy-CPU second:
# handshakes ÷ (utime + stime of the proxy's processes over the run), the peers.sh req/core.
# Rounds are interleaved (every proxy once per cell, who goes first rotated per round); the
# table shows medians. Resumed
# rows show how many of the connections really resumed (s_time prints `r` for each).
# Wall clock: run it on a quiet machine (it checks nothing about the neighbours; compare
# ratios from one run). Every process is started in its own session and only those are
# stopped. SHARED: the shared/ directory (default: beside the repo, else /work/shared); PORT
# (default 18443; admin PORT+1). Output: summary.md (the table) and raw.txt in the printed dir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-18443}
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
ROUNDS=3; DUR=5; CLIENTS=4; ONLY=""; BIN=$ROOT/target/release/switchyard
while [ $# -gt 0 ]; do
  case $1 in
    --providers)
      shift
      DIR=$(mktemp -d /tmp/handshake-certs.XXXXXX)
      openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/rsa.key" -out "$DIR/rsa.crt" \
        -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/ecdsa.key" \
        -out "$DIR/ecdsa.crt" -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
      cargo build --release --quiet --manifest-path "$ROOT/benches/handshake/Cargo.toml"
      taskset -c "$PROXY_CPU" "$ROOT/benches/handshake/target/release/handshake-cpu" "$DIR" "${1:-2000}"
      rm -rf "$DIR"; exit 0;;
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --clients) CLIENTS=$2; shift;;
    --only) ONLY=$2; shift;;
    -h|--help) sed -n '2,25p' "$0"; exit 0;;
    *) BIN=$1;;
  esac; shift
done
[ -x "$BIN" ] || { echo "no $BIN (cargo build --release)" >&2; exit 1; }
bench_init handshake-bench openssl nginx haproxy taskset curl
ports_free "$PORT" "$ADMIN" 19001 19002 19011

# ---- certificates, backends; the proxies (one worker each, TLS 1.2 + 1.3, resumption as
# each ships it: rustls tickets; nginx tickets + a shared session cache; HAProxy's cache and
# tickets) are configured by lib.sh's proxy_cmd ----------------------------------------------
make_cert rsa; make_cert ecdsa
start_backends "$LOAD_CPU"
tls_up() { for _ in $(seq 100); do openssl s_client -connect "127.0.0.1:$PORT" </dev/null >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# One measured run: run PROXY CERT VERSION MODE -> "handshakes reused proxy_seconds"
run() {
  local name=$1 cert=$2 version=$3 mode=$4 i
  proxy_cmd "$name" 1 "$cert"
  start "$PROXY_CPU" "proxy-$name" "${CMD[@]}"; local pid=$LASTPID
  tls_up || { echo "$name did not come up (see $OUT/proxy-$name.log)" >&2; exit 1; }
  local t0; t0=$(sess_ticks "$pid")
  local clients=() www=()
  # TLS 1.3 sends its session ticket after the handshake: s_time only reads it (and so can
  # resume) when it reads a response, so resumed TLS 1.3 connections make one GET each.
  [ "$version" = 1_3 ] && [ "$mode" = reuse ] && www=(-www /)
  for i in $(seq "$CLIENTS"); do
    setsid taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$PORT" "-$mode" "-tls$version" \
      "${www[@]}" -time "$DUR" >"$OUT/stime-$name-$cert-$version-$mode-r$round-$i.out" 2>&1 </dev/null & clients+=($!)
  done
  for i in "${clients[@]}"; do wait "$i" || true; done
  local t1; t1=$(sess_ticks "$pid")
  stop "$pid"
  local total=0 reused=0 errors=0 n r f
  for i in $(seq "$CLIENTS"); do
    f=$OUT/stime-$name-$cert-$version-$mode-r$round-$i.out
    n=$(grep -Eo '^[0-9]+ connections in [0-9.]+s' "$f" | tail -1 | cut -d' ' -f1)
    # s_time prints one character per connection: '*' new, 'r' resumed (lines of those only).
    r=$(grep -E '^[*r]+$' "$f" | tr -cd 'r' | wc -c)
    total=$((total + ${n:-0})); reused=$((reused + r)); errors=$((errors + $(grep -Eci 'errno|error' "$f" || true)))
  done
  echo "$total $reused $(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz }') $errors"
}

PROXIES="switchyard nginx haproxy"; [ -n "$ONLY" ] && PROXIES=$ONLY
echo "# handshake.sh $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) rounds=$ROUNDS duration=${DUR}s clients=$CLIENTS"
echo "# $("$BIN" --version 2>/dev/null || echo switchyard) / $(nginx -v 2>&1) / $(haproxy -v | head -1)"
RAW=$OUT/raw.txt
read -ra PLIST <<<"$PROXIES"
for round in $(seq "$ROUNDS"); do
  # Rotate who goes first each round, so a drift in background load hits every proxy alike.
  ORDER=(); for i in "${!PLIST[@]}"; do ORDER+=("${PLIST[$(( (i + round - 1) % ${#PLIST[@]} ))]}"); done
  for cert in rsa ecdsa; do
    for version in 1_3 1_2; do
      for mode in new reuse; do
        for name in "${ORDER[@]}"; do
          read -r hs reused secs errors < <(run "$name" "$cert" "$version" "$mode") ||
            { echo "the run of $name $cert TLS$version $mode failed (logs in $OUT)" >&2; exit 1; }
          rate=$(awk -v h="$hs" -v d="$DUR" 'BEGIN { printf "%.0f", h / d }')
          core=$(awk -v h="$hs" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? h / s : 0) }')
          printf '  [r%s] %-10s %-5s TLS%s %-5s %8s hs/s  proxy %6.2f s CPU  %8s hs/core  reused %s/%s%s\n' \
            "$round" "$name" "$cert" "$version" "$mode" "$rate" "$secs" "$core" "$reused" "$hs" \
            "$([ "$errors" -gt 0 ] && echo "  ERRORS $errors (s_time output in $OUT)")"
          echo "$name $cert $version $mode $rate $core $reused $hs" >>"$RAW"
        done
      done
    done
  done
done

echo
{ echo "| certificate | TLS | handshake | proxy | handshakes/s | handshakes per proxy-core s | ÷ nginx | reused (last round) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  awk '
  { key = $2 " " $3 " " $4 " " $1; n[key]++; rate[key, n[key]] = $5; core[key, n[key]] = $6
    re[key] = $7; hs[key] = $8; if (!(key in order)) order[key] = NR }
  function median(arr, k, m,   i, j, t, v) {
    for (i = 1; i <= m; i++) v[i] = arr[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((m + 1) / 2)]
  }
  END {
    for (k in n) { mr[k] = median(rate, k, n[k]); mc[k] = median(core, k, n[k]) }
    for (k in n) {
      split(k, f, " "); base = f[1] " " f[2] " " f[3] " nginx"
      ratio = (base in mc && mc[base] > 0) ? sprintf("%.2f", mc[k] / mc[base]) : "-"
      mode = f[3] == "new" ? "full" : "resumed"; v = f[2]; sub("_", ".", v)
      printf "%s | %s | TLS %s | %s | %s | %d | %d | %s | %s/%s |\n", order[k], f[1], v, mode, f[4], mr[k], mc[k], ratio, re[k], hs[k]
    }
  }' "$RAW" | sort -n | cut -d'|' -f2- | sed 's/^ /| /'; } | tee "$OUT/summary.md"
echo
echo "# raw: $RAW"
