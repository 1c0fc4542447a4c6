#!/usr/bin/env bash
# Soak: run the release binary for a while at moderate load with periodic reloads, switches,
# weight changes and rollbacks, and print RSS and open-fd samples so leaks show as a slope.
# Not part of CI (it takes minutes). Everything runs on 127.0.0.1 and stops by itself.
#
# Usage: scripts/soak.sh [--minutes 10] [--conns 8] [--sample 10]
# Needs: nginx (backends) and wrk (load); installed with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=10; CONNS=8; SAMPLE=10
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=$2; shift;; --conns) CONNS=$2; shift;; --sample) SAMPLE=$2; shift;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done

need=(); command -v nginx >/dev/null || need+=(nginx-light); command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  rcd=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rcd=1; }
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ $rcd = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

cargo build --release --quiet --bin switchyard
DIR=$(mktemp -d /tmp/switchyard-soak.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat >"$DIR/backends.conf" <<EOF
worker_processes 1; daemon off; pid $DIR/nginx.pid; error_log $DIR/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:29001; location / { return 200 "blue"; } }
  server { listen 127.0.0.1:29002; location / { return 200 "green"; } } }
EOF
nginx -c "$DIR/backends.conf" -p "$DIR" & PIDS+=($!)

write_config() {  # write_config BLUE_WEIGHT GREEN_RELEASE
  cat >"$DIR/soak.yaml.tmp" <<EOF
listeners: [{ name: public, address: "127.0.0.1:28080" }]
admin: { address: "127.0.0.1:29901" }
state_dir: $DIR/state
services:
  api:
    versions:
      blue:  { release: v1, backends: ["127.0.0.1:29001"], weight: $1 }
      green: { release: $2, backends: ["127.0.0.1:29002"], weight: $((100 - $1)) }
    rollout:
      stable: blue
      canary: green
      steps: [{ traffic: 20%, duration: 20s }, { traffic: 100% }]
      analysis: { interval: 5s, metrics: [{ name: error-rate, threshold: 1 }] }
EOF
  mv "$DIR/soak.yaml.tmp" "$DIR/soak.yaml"
}
write_config 100 r0
./target/release/switchyard serve --config "$DIR/soak.yaml" --workers 1 2>"$DIR/proxy.log" & PROXY=$!; PIDS+=($PROXY)
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:29901/ready && break; sleep 0.1; done
curl -sf -o /dev/null http://127.0.0.1:29901/ready || { echo "proxy did not start:" >&2; cat "$DIR/proxy.log" >&2; exit 1; }

API=http://127.0.0.1:29901/api/v1/services/api
END=$(( $(date +%s) + MINUTES * 60 ))
wrk -t 2 -c "$CONNS" -d "${MINUTES}m" --timeout 5s http://127.0.0.1:28080/ >"$DIR/wrk.txt" & PIDS+=($!)

# Churn: every few seconds one of: new release (a rollout), promote, rollback, switch, weights.
( i=0
  while [ "$(date +%s)" -lt "$END" ]; do
    i=$((i + 1))
    case $((i % 5)) in
      0) write_config $((i % 90 + 5)) "r$i" ;;                                   # reload + new rollout
      1) curl -s -o /dev/null -X POST "$API/rollout/promote" ;;
      2) curl -s -o /dev/null -X POST "$API/rollback" -d '{"reason":"soak"}' ;;
      3) curl -s -o /dev/null -X POST "$API/switch" -d '{"to":"blue"}' ;;
      4) curl -s -o /dev/null -X PUT "$API/weights" -d "{\"blue\":$((i % 100)),\"green\":$((100 - i % 100))}" ;;
    esac
    sleep 2
  done ) & PIDS+=($!)

printf '%8s %10s %6s\n' elapsed_s rss_kib fds
START=$(date +%s)
while [ "$(date +%s)" -lt "$END" ]; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY/status")
  fds=$(ls "/proc/$PROXY/fd" | wc -l)
  printf '%8d %10d %6d\n' $(( $(date +%s) - START )) "$rss" "$fds"
  sleep "$SAMPLE"
done
wait "${PIDS[2]}" 2>/dev/null || true
echo; cat "$DIR/wrk.txt"
echo "proxy errors logged: $(grep -c ' ERROR ' "$DIR/proxy.log" || true)"
echo "revisions written: $(wc -l <"$DIR/state/revisions.jsonl")"
