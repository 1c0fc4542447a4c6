#!/usr/bin/env bash
# System calls per proxied HTTP/1.1 request by strace -f -c over a fixed load: Switchyard,
# nginx and HAProxy, one worker each (benches/syscalls.sh counts by perf tracepoints instead,
# without strace's slowing, but runs no nginx), the same nginx backends and 90/10 split as
# benches/instructions.sh and ../shared/bench/templates. Counts, not time: strace slows every
# call alike and changes batching a little (more requests pile up per wake-up when the proxy
# is slower), so compare proxies within one run. Never run in CI.
#
#   benches/syscalls_strace.sh [BIN] [PROXIES]   # default: target/release/switchyard, "switchyard nginx haproxy"
#
# N (default 20000) requests over C (default 64) keep-alive connections (h2load --h1); the
# warm-up run (W, default 2000) is subtracted, so connection set-up cancels out. PORT (default
# 29290), BACKEND_PREFIX (default 192): as in instructions.sh. Output: a table per proxy
# (calls per request by syscall) and the files in $OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}; PROXIES=${2:-switchyard nginx haproxy}
PORT=${PORT:-29290}; ADMIN=$((PORT + 1)); SHARED=${SHARED:-$ROOT/../shared}
BP=${BACKEND_PREFIX:-192}; N=${N:-20000}; C=${C:-64}; W=${W:-2000}
for tool in strace h2load nginx haproxy curl; do
  command -v $tool >/dev/null || { echo "$tool missing" >&2; exit 1; }
done
OUT=$(mktemp -d /tmp/switchyard-syscalls.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT
T=$SHARED/bench/templates
sed -e "s|@DIR@|$OUT|g; s|127.0.0.1:190|127.0.0.1:$BP|" "$T/backends.nginx.conf" >"$OUT/backends.conf"
setsid nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err" >/dev/null 2>&1 </dev/null &
PIDS+=($!)
BLUE=127.0.0.1:${BP}01 GREEN=127.0.0.1:${BP}02
cat >"$OUT/switchyard.yaml" <<CFG
listeners: [{ name: public, address: "127.0.0.1:$PORT" }]
admin: { address: "127.0.0.1:$ADMIN" }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["$BLUE"], weight: 90 }
      green: { release: v2, backends: ["$GREEN"], weight: 10 }
CFG
sed -e "s|@DIR@|$OUT|g; s|@BLUE@|$BLUE|; s|@GREEN@|$GREEN|; s|@LISTEN@|127.0.0.1:$PORT|; s|@H2@||" \
  -e "s|^worker_processes 1;|worker_processes 1; master_process off;|" "$T/nginx.conf" >"$OUT/nginx.conf"
sed -e "s|@BLUE@|$BLUE|; s|@GREEN@|$GREEN|; s|@LISTEN@|127.0.0.1:$PORT|" "$T/haproxy.cfg" >"$OUT/haproxy.cfg"
start() { # $1 proxy, $2 strace output file
  case $1 in
    switchyard) set -- "$2" "$BIN" serve --config "$OUT/switchyard.yaml" --workers 1;;
    nginx) set -- "$2" nginx -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/proxy-nginx.err";;
    haproxy) set -- "$2" haproxy -db -f "$OUT/haproxy.cfg";;
  esac
  local file=$1; shift
  RUST_LOG=warn setsid strace -f -c -o "$file" "$@" >>"$OUT/proxy.log" 2>&1 </dev/null &
  PID=$!; PIDS+=($PID)
  for _ in $(seq 150); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && return; sleep 0.2; done
  echo "$1 did not answer" >&2; exit 1
}
for p in $PROXIES; do
  for n in $W $N; do
    start "$p" "$OUT/$p-$n.strace"
    h2load --h1 -c"$C" -t1 -n"$n" "http://127.0.0.1:$PORT/" | grep -E "^requests:" >&2
    kill -INT "$PID"; sleep 0.5; kill -TERM -- "-$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
  done
  # strace -c: "% time seconds usecs/call calls errors syscall"; rows with errors have 6 fields.
  calls() { awk '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {print $NF, $4, (NF == 6 ? $5 : 0)}' "$1"; }
  echo "== $p: system calls per request ((N=$N) - (N=$W)) / $((N - W)), errors (EAGAIN...) per request"
  join -a1 -a2 -e0 -o 0,1.2,1.3,2.2,2.3 <(calls "$OUT/$p-$N.strace" | sort) <(calls "$OUT/$p-$W.strace" | sort) \
    | awk -v d=$((N - W)) '{c = ($2 - $4) / d; e = ($3 - $5) / d; t += c; if (c > 0.005 || c < -0.005) printf "  %-16s %6.3f  (errors %5.3f)\n", $1, c, e} END {printf "  %-16s %6.3f\n", "total", t}' \
    | sort -k2 -nr
done
echo "(files: $OUT)"
