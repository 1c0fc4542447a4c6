#!/usr/bin/env bash
# Instructions per proxied request (valgrind callgrind, whole process, all threads): the
# measure this repo's optimization log uses, because unlike wall clock it does not depend on
# what the neighbours on this shared machine are doing. Never run in CI.
#
#   benches/instructions.sh [BIN] [h1|h2c|h2]   # default: target/release/switchyard, h1
#
# Starts nginx backends (../shared/bench/templates/backends.nginx.conf, 19001/19002), runs BIN
# under callgrind with a 90/10 split and one worker, sends 2,000 and then 12,000 requests on
# one connection (h2load: --h1 sequential, or h2c with 10 streams in flight; h2: the same over
# TLS 1.3 with an ECDSA P-256 certificate made here, ALPN h2 — the one handshake per run
# cancels out) and prints the
# difference ÷ 10,000, so start-up and shutdown cancel out (and the same for the data path's
# own functions alone, switchyard_proxy::…). The controller's 250 ms tick runs on its own
# thread and is counted in the first number (a few hundred instructions per request of noise);
# runs of one binary vary by about ±1,000. Caveat: callgrind counts a `rep movsb` memcpy
# per byte, so copy-heavy code looks worse here than it runs.
# Output files (callgrind_annotate them): $OUT/cg-{2000,12000}.out. PORT (default 29190);
# SHARED: the shared/ directory (default: beside the repo, as for peers.sh). BACKEND_PREFIX
# (default 190): the backends' ports are PREFIX01/PREFIX02/PREFIX11, so two runs can share
# the machine (e.g. BACKEND_PREFIX=191 PORT=29390).
# FLEET=1: the same with a `cluster:` block (SPEC §11): starts its own etcd (Debian's
# etcd-server) on PORT+2/PORT+3 with a temp data dir, so cluster on vs off compare.
# BACKEND_HOST (default 127.0.0.1): `localhost` makes the backends names, resolved by the
# control plane (SPEC §12), to compare with literal addresses. Each run waits for one 200
# first (a name resolves after /ready), in both runs alike.
# ROLLOUT=on runs the same 90/10 split as a running canary rollout (SPEC §6; the impact
# counters then count every request), ROLLOUT=net with the safety net on too (SPEC §13; the
# canary is healthy, so nothing is replayed: this is the net's cost when it is not needed),
# ROLLOUT=mirror a mirror step copying 100% of requests to the canary (the copy's work —
# its task, its exchange with the canary — is counted in the same process).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/switchyard}; MODE=${2:-h1}
PORT=${PORT:-29190}; ADMIN=$((PORT + 1)); SHARED=${SHARED:-$ROOT/../shared}
HOST=${BACKEND_HOST:-127.0.0.1}; BP=${BACKEND_PREFIX:-190}
for tool in valgrind callgrind_annotate h2load nginx curl; do
  command -v $tool >/dev/null || { echo "$tool missing" >&2; exit 1; }
done
FLEET=${FLEET:-0}; ETCD_CLIENT=$((PORT + 2)); ETCD_PEER=$((PORT + 3))
[ "$FLEET" = 1 ] && { command -v etcd >/dev/null || { echo "etcd missing" >&2; exit 1; }; }
for p in $PORT $ADMIN ${BP}01 ${BP}02 ${BP}11 $( [ "$FLEET" = 1 ] && echo $ETCD_CLIENT $ETCD_PEER ); do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use; free it or set PORT" >&2; exit 1; }
done
OUT=$(mktemp -d /tmp/switchyard-instructions.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sed -e "s|@DIR@|$OUT|g; s|127.0.0.1:190|127.0.0.1:$BP|" "$SHARED/bench/templates/backends.nginx.conf" >"$OUT/backends.conf"
setsid nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err" >/dev/null 2>&1 </dev/null &
PIDS+=($!)
SCHEME=http LISTENER="{ name: public, address: \"127.0.0.1:$PORT\" }"
if [ "$MODE" = h2 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$OUT/cert.key" \
    -out "$OUT/cert.crt" -days 2 -subj /CN=bench.test 2>/dev/null
  SCHEME=https
  LISTENER="{ name: public, address: \"127.0.0.1:$PORT\", tls: { certificates: [{ cert: \"$OUT/cert.crt\", key: \"$OUT/cert.key\" }] } }"
fi
cat >"$OUT/config.yaml" <<CFG
listeners: [$LISTENER]
admin: { address: "127.0.0.1:$ADMIN" }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["$HOST:${BP}01"], weight: 90 }
      green: { release: v2, backends: ["$HOST:${BP}02"], weight: 10 }
CFG
case ${ROLLOUT:-off} in
  off) ;;
  on|net|mirror)
    [ "$ROLLOUT" = net ] && NET="safety_net: { retry_on_stable: true, budget: 20% }" || NET=""
    [ "$ROLLOUT" = mirror ] && FIRST="{ mirror: 100%, duration: 1h }" || FIRST="{ traffic: 10%, duration: 1h }"
    cat >>"$OUT/config.yaml" <<CFG
    rollout:
      stable: blue
      canary: green
      $NET
      steps: [$FIRST, { traffic: 100% }]
      analysis: { interval: 1h, fast_fail: off }
CFG
    ;;
  *) echo "ROLLOUT must be off, on, net or mirror" >&2; exit 2;;
esac
case $MODE in
  h1) LOAD=(--h1 -c1 -t1); STREAMS="sequential HTTP/1.1";;
  h2c) LOAD=(-c1 -m10 -t1); STREAMS="h2c, 10 streams in flight";;
  h2) LOAD=(-c1 -m10 -t1); STREAMS="TLS h2, 10 streams in flight";;
  *) echo "mode must be h1, h2c or h2" >&2; exit 2;;
esac
if [ "$FLEET" = 1 ]; then
  setsid etcd --name=bench --data-dir="$OUT/etcd" --log-level=warn \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster="bench=http://127.0.0.1:$ETCD_PEER" >"$OUT/etcd.log" 2>&1 </dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ETCD_CLIENT/health" | grep -q true && break; sleep 0.2; done
  cat >>"$OUT/config.yaml" <<CFG
cluster:
  etcd: { endpoints: ["127.0.0.1:$ETCD_CLIENT"], prefix: /switchyard/bench-@N@ }
  replica: bench
CFG
  STREAMS="$STREAMS, cluster: on"
fi
declare -A TOTAL PROXY
for n in 2000 12000; do
  # Each run its own fleet prefix, so both start alike (as the leader of an empty fleet).
  sed -e "s|@N@|$n|" "$OUT/config.yaml" >"$OUT/config-$n.yaml"
  RUST_LOG=warn setsid valgrind --tool=callgrind --callgrind-out-file="$OUT/cg-$n.out" \
    "$BIN" serve --config "$OUT/config-$n.yaml" --workers 1 >"$OUT/proxy-$n.log" 2>&1 </dev/null &
  pid=$!; PIDS+=($pid)
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready" && break; sleep 0.2; done
  for _ in $(seq 100); do curl -skf -o /dev/null "$SCHEME://127.0.0.1:$PORT/" && break; sleep 0.2; done
  h2load "${LOAD[@]}" -n"$n" "$SCHEME://127.0.0.1:$PORT/" | grep -E "^requests:"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  TOTAL[$n]=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUT/cg-$n.out")
  # The data path's own functions (switchyard_proxy::…, inlined code included), which
  # unlike the whole process do not count background work that scales with the run's length.
  PROXY[$n]=$(callgrind_annotate --auto=no --threshold=100 "$OUT/cg-$n.out" 2>/dev/null \
    | awk '/file:function/ {p = 1; next} p && /switchyard_proxy/ {gsub(",", "", $1); t += $1} END {print t + 0}')
done
echo "$(basename "$BIN") $MODE ($STREAMS, backends $HOST): $(( (TOTAL[12000] - TOTAL[2000]) / 10000 )) instructions per request, $(( (PROXY[12000] - PROXY[2000]) / 10000 )) of them in switchyard_proxy  (files: $OUT)"
