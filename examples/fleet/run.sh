#!/usr/bin/env bash
# A fleet to try by hand: etcd, two backends and three Switchyard replicas on 127.0.0.2-4,
# sharing one routing state through etcd (SPEC §11). Ctrl-C stops everything it started.
#
#   examples/fleet/run.sh            # then, in another shell:
#   switchyard ctl --admin http://127.0.0.2:9901 fleet
#   switchyard ctl --admin http://127.0.0.3:9901 status api
#   curl -s http://127.0.0.4:8080/ ; kill -9 the leader's pid and watch another take over
#
# Needs etcd (Debian: etcd-server) and python3 (the backends are `python3 -m http.server`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
work="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT INT TERM

bin="${SWITCHYARD:-$root/target/release/switchyard}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release --bin switchyard)
fi
command -v etcd >/dev/null || { echo "etcd is not installed (apt install etcd-server)" >&2; exit 1; }

etcd --name example --data-dir "$work/etcd" \
  --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster example=http://127.0.0.1:23800 --log-level warn >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:23790/health >/dev/null 2>&1 && break
  sleep 0.1
done

for v in blue:9001 green:9002; do
  mkdir -p "$work/${v%%:*}" && echo "${v%%:*}" >"$work/${v%%:*}/index.html"
  python3 -m http.server "${v##*:}" --bind 127.0.0.1 --directory "$work/${v%%:*}" \
    >/dev/null 2>&1 &
  pids+=($!)
done

for i in 1 2 3; do
  "$bin" serve --config "$here/edge-$i.yaml" >"$work/edge-$i.log" 2>&1 &
  pids+=($!)
  echo "edge-$i: pid $!, traffic http://127.0.0.$((i + 1)):8080, admin http://127.0.0.$((i + 1)):9901, log $work/edge-$i.log"
done
sleep 2
"$bin" ctl --admin http://127.0.0.2:9901 fleet || true
echo "a rollout of green v2.0 runs on all three; Ctrl-C stops the fleet"
wait
