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
# handshakes and closes (no request), so the proxies' TLS stacks are what is measured. The
# load side saturates before a proxy can (an ECDSA verification costs the client more than
# the signature costs the server), so the fair column is handshakes per proxy-CPU second:
# handshakes ÷ (utime + stime of the proxy's processes over the run), the peers.sh req/core.
# Rounds are interleaved (every proxy once per round); the table shows medians. Resumed
# rows show how many of the connections really resumed (s_time prints `r` for each).
# Wall clock: run it on a quiet machine (it checks nothing about the neighbours; compare
# ratios from one run). Every process is started in its own session and only those are
# stopped. SHARED: the shared/ directory (default: beside the repo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
ROUNDS=3; DUR=5; CLIENTS=4; ONLY=""; BIN=$ROOT/target/release/switchyard
PROXY_CPU=${PROXY_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}; PORT=${PORT:-18443}; ADMIN=$((PORT + 1))
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
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) BIN=$1;;
  esac; shift
done
for tool in openssl nginx haproxy taskset curl; do
  command -v $tool >/dev/null || { echo "$tool missing" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no $BIN (cargo build --release)" >&2; exit 1; }
for p in $PORT $ADMIN 19001 19002 19011; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use; free it or set PORT" >&2; exit 1; }
done

OUT=$(mktemp -d /tmp/handshake-bench.XXXXXX); chmod 755 "$OUT"
PIDS=()
start() {  # start CPU LOG CMD... -> LASTPID, its own session
  local cpu=$1 log=$2; shift 2
  setsid taskset -c "$cpu" "$@" >>"$OUT/$log.log" 2>&1 </dev/null & LASTPID=$!; PIDS+=("$LASTPID")
}
stop() {
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  local keep=() p; for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done; PIDS=("${keep[@]}")
}
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done; }
trap cleanup EXIT; trap 'exit 130' INT TERM
# CPU ticks (utime + stime) of every process in session $1.
ticks() {
  local t=0 p
  for p in $(ps -o pid= -s "$1" 2>/dev/null); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}' || echo 0)))
  done
  echo $t
}
HZ=$(getconf CLK_TCK)

# ---- certificates and backends -----------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$OUT/rsa.key" -out "$OUT/rsa.crt" -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$OUT/ecdsa.key" \
  -out "$OUT/ecdsa.crt" -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
for c in rsa ecdsa; do cat "$OUT/$c.crt" "$OUT/$c.key" >"$OUT/$c.pem"; done
sed -e "s|@DIR@|$OUT|g" "$SHARED/bench/templates/backends.nginx.conf" >"$OUT/backends.conf"
start "$LOAD_CPU" backends nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err"

# ---- the proxies (one worker each, TLS 1.2 + 1.3, resumption as each ships it on) ----------
config() {  # config NAME CERT -> writes the config, prints the command
  local name=$1 cert=$2
  case $name in
    switchyard)
      cat >"$OUT/sy-$cert.yaml" <<CFG
listeners:
  - name: public
    address: "127.0.0.1:$PORT"
    tls: { certificates: [{ cert: "$OUT/$cert.crt", key: "$OUT/$cert.key" }] }
admin: { address: "127.0.0.1:$ADMIN" }
limits: { max_connections: 100000 }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["127.0.0.1:19001"], weight: 90 }
      green: { release: v2, backends: ["127.0.0.1:19002"], weight: 10 }
CFG
      echo "env RUST_LOG=warn $BIN serve --config $OUT/sy-$cert.yaml --workers 1";;
    nginx)
      cat >"$OUT/nginx-$cert.conf" <<CFG
worker_processes 1;
daemon off;
pid $OUT/proxy-nginx.pid;
error_log $OUT/proxy-nginx.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;   # session IDs (TLS 1.2); tickets are on by default
    ssl_session_tickets on;
    upstream split { server 127.0.0.1:19001 weight=90; server 127.0.0.1:19002 weight=10; keepalive 256; }
    server {
        listen 127.0.0.1:$PORT ssl http2;
        ssl_certificate $OUT/$cert.crt;
        ssl_certificate_key $OUT/$cert.key;
        location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
      echo "nginx -p $OUT -c $OUT/nginx-$cert.conf";;
    haproxy)
      cat >"$OUT/haproxy-$cert.cfg" <<CFG
global
    nbthread 1
    maxconn 8000   # FDs: 2 x maxconn + a few must fit the limit (ulimit -n, often 20,000)
    ssl-default-bind-options ssl-min-ver TLSv1.2
    # tune.ssl.cachesize: 20000 sessions by default; tickets on by default
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$PORT ssl crt $OUT/$cert.pem alpn h2,http/1.1
    default_backend split
backend split
    balance roundrobin
    http-reuse always
    server blue  127.0.0.1:19001 weight 90
    server green 127.0.0.1:19002 weight 10
CFG
      echo "haproxy -db -f $OUT/haproxy-$cert.cfg";;
  esac
}
tls_up() { for _ in $(seq 100); do openssl s_client -connect "127.0.0.1:$PORT" </dev/null >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# One measured run: run PROXY CERT VERSION MODE -> "handshakes reused proxy_seconds"
run() {
  local name=$1 cert=$2 version=$3 mode=$4 i
  # shellcheck disable=SC2046
  start "$PROXY_CPU" "proxy-$name" $(config "$name" "$cert"); local pid=$LASTPID
  tls_up || { echo "$name did not come up (see $OUT/proxy-$name.log)" >&2; exit 1; }
  local t0; t0=$(ticks "$pid")
  local clients=() www=()
  # TLS 1.3 sends its session ticket after the handshake: s_time only reads it (and so can
  # resume) when it reads a response, so resumed TLS 1.3 connections make one GET each.
  [ "$version" = 1_3 ] && [ "$mode" = reuse ] && www=(-www /)
  for i in $(seq "$CLIENTS"); do
    setsid taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$PORT" "-$mode" "-tls$version" \
      "${www[@]}" -time "$DUR" >"$OUT/stime-$i.out" 2>&1 </dev/null & clients+=($!)
  done
  for i in "${clients[@]}"; do wait "$i" || true; done
  local t1; t1=$(ticks "$pid")
  stop "$pid"
  local total=0 reused=0 n r
  for i in $(seq "$CLIENTS"); do
    n=$(grep -Eo '^[0-9]+ connections in [0-9.]+s' "$OUT/stime-$i.out" | tail -1 | cut -d' ' -f1)
    # s_time prints one character per connection: '*' new, 'r' resumed (lines of those only).
    r=$(grep -E '^[*r]+$' "$OUT/stime-$i.out" | tr -cd 'r' | wc -c)
    total=$((total + ${n:-0})); reused=$((reused + r))
  done
  echo "$total $reused $(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz }')"
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
          read -r hs reused secs < <(run "$name" "$cert" "$version" "$mode")
          rate=$(awk -v h="$hs" -v d="$DUR" 'BEGIN { printf "%.0f", h / d }')
          core=$(awk -v h="$hs" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? h / s : 0) }')
          printf '  [r%s] %-10s %-5s TLS%s %-5s %8s hs/s  proxy %6.2f s CPU  %8s hs/core  reused %s/%s\n' \
            "$round" "$name" "$cert" "$version" "$mode" "$rate" "$secs" "$core" "$reused" "$hs"
          echo "$name $cert $version $mode $rate $core $reused $hs" >>"$RAW"
        done
      done
    done
  done
done

echo
echo "| certificate | TLS | handshake | proxy | handshakes/s | handshakes per proxy-core s | ÷ nginx | reused |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
awk '
  { key = $2 " " $3 " " $4 " " $1; n[key]++; rate[key, n[key]] = $5; core[key, n[key]] = $6
    re[key] = $7; hs[key] = $8; order[key] = NR }
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
  }' "$RAW" | sort -n | cut -d'|' -f2- | sed 's/^ /| /'
echo
echo "# raw: $RAW"
