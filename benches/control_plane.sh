#!/usr/bin/env bash
# Control-plane measurements (docs/PERFORMANCE.md, "Control plane"):
#   1. the rollout clock's tick latency at 10,000 services, idle and while GET
#      /api/v1/services is polled back to back (the dashboard polls it every second);
#   2. the proxy's memory with a 100,000-revision history in state_dir, and after 2,000
#      more changes through the API.
# Not a load benchmark: a handful of admin requests on loopback, the numbers are
# milliseconds and megabytes. Usage: benches/control_plane.sh [path/to/switchyard]
set -euo pipefail
bin=${1:-target/release/switchyard}
[ -x "$bin" ] || { echo "build it first: cargo build --release ($bin)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- 1. tick latency at 10,000 services ---------------------------------------------------
listen=$(port); admin=$(port)
{
  echo "listeners: [{ name: public, address: \"127.0.0.1:$listen\" }]"
  echo "admin: { address: \"127.0.0.1:$admin\" }"
  echo "services:"
  for i in $(seq 0 9999); do
    echo "  svc$i:"
    echo "    match: { hosts: [\"svc$i.test\"] }"
    echo "    versions:"
    echo "      blue: { release: v1, backends: [\"127.0.0.1:9\"], weight: 100 }"
    echo "      green: { release: v2, backends: [\"127.0.0.1:9\"], weight: 0 }"
    if [ "$i" = 0 ]; then
      echo "    rollout: { stable: blue, canary: green, steps: [{ traffic: 10%, duration: 1h }, { traffic: 100% }] }"
    fi
  done
} > "$work/big.yaml"
RUST_LOG="warn,switchyard_control::controller=debug" "$bin" serve --config "$work/big.yaml" \
  --log-format json > "$work/big.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.1; done

ticks() { # p50 p99 max of tick durations (µs) logged after line $1
  tail -n +"$1" "$work/big.log" | grep '"message":"tick"' | grep -o '"elapsed_us":[0-9]*' | cut -d: -f2 | sort -n |
    awk '{a[NR]=$1} END {if (NR==0) {print "no ticks"; exit} printf "%d ticks: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", NR, a[int(NR*0.5)+1]/1000, a[int(NR*0.99)+1]/1000, a[NR]/1000}'
}
sleep 5
mark=$(wc -l < "$work/big.log")
sleep 20
echo "idle:                      $(ticks "$mark")"
mark=$(wc -l < "$work/big.log")
get_ms=$work/get.ms
for c in 1 2; do
  ( end=$((SECONDS + 20)); while [ $SECONDS -lt $end ]; do
      curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$admin/api/v1/services"
    done >> "$get_ms.$c" ) &
done
wait %2 %3 2>/dev/null || true
sleep 0.5
echo "GET /services back to back: $(ticks "$mark")"
cat "$get_ms".* | sort -n | awk '{a[NR]=$1} END {printf "GET /api/v1/services (10,000 services): %d answers, p50 %.0f ms, max %.0f ms\n", NR, a[int(NR*0.5)+1]*1000, a[NR]*1000}'
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

# ---- 2. memory with a 100,000-revision history -------------------------------------------
listen=$(port); admin=$(port)
mkdir -p "$work/state"
cat > "$work/small.yaml" <<EOF
listeners: [{ name: public, address: "127.0.0.1:$listen" }]
admin: { address: "127.0.0.1:$admin" }
state_dir: $work/state
services:
  api:
    versions:
      blue: { release: v1, backends: ["127.0.0.1:9"], weight: 100 }
      green: { release: v2, backends: ["127.0.0.1:9"], weight: 0 }
EOF
python3 - "$work/state" <<'EOF'
import json, sys
with open(sys.argv[1] + "/revisions.jsonl", "w") as f:
    for i in range(1, 100_001):
        f.write(json.dumps({"id": i, "service": "api", "at": "2026-12-01T12:00:00.000Z",
            "source": "api", "reason": f"weights set: blue={i % 100} green={100 - i % 100}",
            "weights": {"blue": i % 100, "green": 100 - i % 100}}, separators=(",", ":")) + "\n")
EOF
"$bin" serve --config "$work/small.yaml" > "$work/small.log" 2>&1 &
pid=$!; pids+=($pid)
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$pid/status"; }
echo "RSS with 100,000 revisions in the log: $(rss)"
for i in $(seq 1 2000); do
  curl -s -o /dev/null -X PUT -H 'content-type: application/json' \
    -d "{\"blue\": $((i % 100 + 1)), \"green\": 1}" "http://127.0.0.1:$admin/api/v1/services/api/weights"
done
echo "RSS after 2,000 more changes through the API: $(rss)"
echo "revisions kept in memory (GET history): $(curl -s "http://127.0.0.1:$admin/api/v1/services/api/history" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["revisions"]))')"
