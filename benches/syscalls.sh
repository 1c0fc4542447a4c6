#!/usr/bin/env bash
# System calls per proxied request, by kind: the kernel-side cost callgrind does not see
# (docs/PERFORMANCE.md, "HTTP/2 instructions against HAProxy"). Counted with perf's syscall
# tracepoints (`perf stat -e syscalls:sys_enter_…`, needs root or perf_event_paranoid ≤ -1),
# which unlike `strace -c` barely slows the proxy, so the batching it measures is the real one.
# Counts, not time: fine on a shared machine. Never run in CI.
#
#   benches/syscalls.sh [BIN|haproxy] [h2c|h2|h1]    # default: target/release/switchyard, h2c
#
# Starts the nginx backends (../shared/bench/templates/backends.nginx.conf), the proxy with a
# 90/10 split and one worker (`haproxy`: ../shared/bench/templates/haproxy.cfg, one thread),
# warms it with 2,000 requests, then counts its system calls over N requests (default 20,000;
# h2load -cC -m10 -t1, C default 64; h1: h2load --h1 -cC) and prints each kind ÷ N.
# PORT (default 29290), BACKEND_PREFIX (default 192: backends on PREFIX01/PREFIX02/PREFIX11),
# SHARED: the shared/ directory (default: beside the repo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}; MODE=${2:-h2c}
PORT=${PORT:-29290}; ADMIN=$((PORT + 1)); SHARED=${SHARED:-$ROOT/../shared}
BP=${BACKEND_PREFIX:-192}; N=${N:-20000}; C=${C:-64}
for tool in perf h2load nginx curl; do
  command -v $tool >/dev/null || { echo "$tool missing" >&2; exit 1; }
done
for p in $PORT $ADMIN ${BP}01 ${BP}02 ${BP}11; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use; free it or set PORT" >&2; exit 1; }
done
OUT=$(mktemp -d /tmp/switchyard-syscalls.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sed -e "s|@DIR@|$OUT|g; s|127.0.0.1:190|127.0.0.1:$BP|" "$SHARED/bench/templates/backends.nginx.conf" >"$OUT/backends.conf"
setsid nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err" >/dev/null 2>&1 </dev/null &
PIDS+=($!)
SCHEME=http
if [ "$MODE" = h2 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$OUT/cert.key" \
    -out "$OUT/cert.crt" -days 2 -subj /CN=bench.test 2>/dev/null
  SCHEME=https
fi
if [ "$BIN" = haproxy ]; then
  TLS=""
  if [ "$MODE" = h2 ]; then
    cat "$OUT/cert.crt" "$OUT/cert.key" >"$OUT/cert.pem"
    TLS=" ssl crt $OUT/cert.pem alpn h2,http/1.1"
  fi
  sed -e "s|@LISTEN@|127.0.0.1:$PORT$TLS|; s|@BLUE@|127.0.0.1:${BP}01|; s|@GREEN@|127.0.0.1:${BP}02|" \
    "$SHARED/bench/templates/haproxy.cfg" >"$OUT/haproxy.cfg"
  setsid haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/proxy.log" 2>&1 </dev/null &
else
  LISTENER="{ name: public, address: \"127.0.0.1:$PORT\" }"
  [ "$MODE" = h2 ] && LISTENER="{ name: public, address: \"127.0.0.1:$PORT\", tls: { certificates: [{ cert: \"$OUT/cert.crt\", key: \"$OUT/cert.key\" }] } }"
  cat >"$OUT/config.yaml" <<CFG
listeners: [$LISTENER]
admin: { address: "127.0.0.1:$ADMIN" }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["127.0.0.1:${BP}01"], weight: 90 }
      green: { release: v2, backends: ["127.0.0.1:${BP}02"], weight: 10 }
CFG
  RUST_LOG=warn setsid "$BIN" serve --config "$OUT/config.yaml" --workers 1 >"$OUT/proxy.log" 2>&1 </dev/null &
fi
pid=$!; PIDS+=($pid)
for _ in $(seq 100); do curl -skf -o /dev/null "$SCHEME://127.0.0.1:$PORT/" && break; sleep 0.2; done
case $MODE in
  h1) LOAD=(--h1 -c"$C" -t1);;
  h2c|h2) LOAD=(-c"$C" -m10 -t1);;
  *) echo "mode must be h1, h2c or h2" >&2; exit 2;;
esac
h2load "${LOAD[@]}" -n2000 "$SCHEME://127.0.0.1:$PORT/" | grep -E "^requests:" >/dev/null
KINDS=(read recvfrom recvmsg readv write sendto sendmsg writev epoll_wait epoll_pwait epoll_ctl futex accept4 connect close)
EVENTS=$(printf 'syscalls:sys_enter_%s,' "${KINDS[@]}"); EVENTS=${EVENTS%,}
perf stat -x, -e "$EVENTS,raw_syscalls:sys_enter" -p "$pid" -o "$OUT/perf.csv" -- \
  h2load "${LOAD[@]}" -n"$N" "$SCHEME://127.0.0.1:$PORT/" >"$OUT/h2load.txt"
grep -E "^requests:" "$OUT/h2load.txt"
awk -F, -v n="$N" -v name="$(basename "$BIN") $MODE (h2load ${LOAD[*]} -n$N)" '
  /sys_enter/ { k = $3; sub(/.*sys_enter_?/, "", k); if (k == "") k = "all"; if ($1 + 0 > 0) v[k] = $1 / n }
  END { printf "%s, per request:", name; for (k in v) if (k != "all") printf " %s %.3f", k, v[k]; printf "; all %.3f\n", v["all"] }
' "$OUT/perf.csv"
