#!/usr/bin/env bash
# HTTP/2 over TLS, requests per proxy core: Switchyard side by side with nginx and HAProxy
# (issue 19, goal "TLS h2 req/core vs HAProxy and nginx ≥ 1.0×"). Never run in CI.
#
#   benches/tls_load.sh [--rounds 3] [--duration 8] [--warmup 2] [--conns 64] [--cert ecdsa|rsa]
#                       [--proxies "switchyard nginx haproxy"] [--h1] [--quick] [BIN]
#
# Each proxy terminates TLS (1.2 + 1.3, ALPN h2 + http/1.1; a self-signed certificate made
# here with openssl, ECDSA P-256 by default) with ONE worker pinned to PROXY_CPU (default 1)
# and splits 90/10 to peers.sh's nginx backends over plain HTTP/1.1 with keep-alive; h2load
# (-c64 -m10, ALPN h2, one thread) and the backends share LOAD_CPU (default 0): layout A of
# ../shared/bench/peers.sh. Configs are written here (benches/lib.sh), one per proxy, from the
# same shape as peers.sh's templates. Rounds are interleaved (every proxy once per round, the
# order rotated). req/core = req/s ÷ the proxy's own CPU share (utime + stime of its session);
# the fair column, since in layout A the load side (h2load's own TLS included) may saturate
# first: proxy% well below 100 says so. --h1 adds HTTP/1.1-over-TLS rows (wrk -c64).
# Round 1 first checks the split (200 sequential requests on one connection, ~10% green).
# Output: a table of medians with Switchyard ÷ each peer; raw files in the printed directory
# (summary.md: the table). PORT (default 28280, below the ephemeral range; admin PORT+1), SHARED, PROXY_CPU, LOAD_CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-28280}
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
ROUNDS=3; DUR=8; WARM=2; CONNS=64; CERT=ecdsa; PROXIES="switchyard nginx haproxy"; KINDS=h2
BIN=$ROOT/target/release/switchyard
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --warmup) WARM=$2; shift;;
    --conns) CONNS=$2; shift;; --cert) CERT=$2; shift;; --proxies) PROXIES=$2; shift;;
    --h1) KINDS="h2 h1";; --quick) ROUNDS=1; DUR=2; WARM=1;;
    -h|--help) sed -n '2,19p' "$0"; exit 0;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) BIN=$1;;
  esac; shift
done
case $CERT in rsa|ecdsa) ;; *) echo "--cert is rsa or ecdsa" >&2; exit 2;; esac
[ -x "$BIN" ] || { echo "no binary $BIN (cargo build --release)" >&2; exit 1; }
bench_init tls-load wrk h2load nginx haproxy openssl curl taskset
ports_free "$PORT" "$ADMIN" 19001 19002 19011
make_cert "$CERT"
start_backends "$LOAD_CPU"
echo "# tls_load.sh $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) rounds=$ROUNDS duration=${DUR}s conns=$CONNS cert=$CERT"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | $(haproxy -v | head -1 | cut -d' ' -f1-3) | $(h2load --version) | raw: $OUT"
echo "# proxy on CPU$PROXY_CPU (one worker), load + backends on CPU$LOAD_CPU; h2: h2load -c$CONNS -m10 over TLS (ALPN h2)"

RES=$OUT/results.tsv
printf 'kind\tproxy\tround\treq_s\tp50_ms\tp99_ms\tproxy_pct\treq_core\terrors\n' >"$RES"
read -ra PLIST <<<"$PROXIES"
for r in $(seq "$ROUNDS"); do
  for i in "${!PLIST[@]}"; do
    name=${PLIST[$(( (i + r - 1) % ${#PLIST[@]} ))]}
    proxy_cmd "$name" 1 "$CERT"
    CGROUP="" start "$PROXY_CPU" "$name" "${CMD[@]}"; PROXY_SID=$LASTPID
    if ! wait_url "https://$LISTEN/" --http2; then echo "$name did not come up over TLS: $OUT/$name.log" >&2; exit 1; fi
    [ "$(curl -sk --http2 -o /dev/null -w '%{http_version}' "https://$LISTEN/")" = 2 ] ||
      { echo "$name did not negotiate h2 by ALPN" >&2; exit 1; }
    if [ "$r" = 1 ]; then  # split check: 200 sequential requests on one connection, ~10% green
      curl -sk -w '\n' "https://$LISTEN/?[1-200]" | awk -v p="$name" '{ n[$0]++ } END {
        printf "  split %-10s blue %d green %d other %d\n", p, n["blue"], n["green"], NR - n["blue"] - n["green"] }' | tee -a "$OUT/split.txt"
    fi
    for kind in $KINDS; do
      load_run "$OUT/raw-$kind-$name-r$r.txt" "$CONNS" "$DUR" "$WARM" "$kind" "https://$LISTEN/"
      read -r rps p50 p99 err <<<"$RESULT"
      eff=$(awk -v r="$rps" -v c="$PROXY_PCT" 'BEGIN { printf "%.0f", (c > 0 ? r * 100 / c : 0) }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$r" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err" >>"$RES"
      printf '  [r%s] %-3s %-10s %8s req/s  p50 %7s ms  p99 %7s ms  proxy %5s%%  %8s req/core  errors %s\n' \
        "$r" "$kind" "$name" "$rps" "$p50" "$p99" "$PROXY_PCT" "$eff" "$err"
    done
    stop "$PROXY_SID"
  done
done

# Medians per (kind, proxy); Switchyard ÷ each peer by req/core.
median_table "$RES" 2 7 | sort -s -t"$(printf '\t')" -k1,1r | awk -F'\t' '
  { k[NR] = $1 "\t" $2; row[NR] = $0; core[$1, $2] = $8 }
  END {
    print "| TLS | proxy | req/s | p50 ms | p99 ms | proxy% | req/core | Switchyard ÷ it (req/core) | errors (median) |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= NR; i++) { split(row[i], f, "\t"); sy = core[f[1], "switchyard"]
      ratio = (f[2] == "switchyard" || f[8] + 0 == 0 || sy == "") ? "—" : sprintf("**%.2f**", sy / f[8])
      printf "| %s | %s | %.0f | %s | %s | %.0f | %.0f | %s | %s |\n", (f[1] == "h2" ? "h2 (ALPN)" : "HTTP/1.1"), f[2], f[4], f[5], f[6], f[7], f[8], ratio, f[9] } }' \
  | tee "$OUT/summary.md"
echo "# medians of $ROUNDS rounds; h2 p50 = h2load's mean; raw: $OUT"
