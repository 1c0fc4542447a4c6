#!/usr/bin/env bash
# The rollback drill (deploy_bad_version → trigger_auto_rollback → verify_recovery_time):
# builds the release binary, then runs examples/drill.rs twice — threshold analysis only, and
# with fast-fail — against a canary that fails every request at 10% share.
#
# Then the users drill (SPEC §13, the runbook's "affected users < 1%"): the same bad canary
# (`switchyard demo`'s v2: 10% of answers 500, 5% slow) three ways — safety net off, safety
# net on, and bad from the start so the mirror step catches it — and, for each, how many
# users saw an error, as the proxy's `rollout.impact` counted them.
#
# Usage: scripts/drill.sh [--rate 1000] [--share 10]     both drills
#        scripts/drill.sh users                            the users drill only
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin switchyard --example drill
if [[ "${1:-}" != users ]]; then
  for ff in off on; do
    ./target/release/examples/drill --fast-fail "$ff" "$@"
    echo
  done
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The rollout's impact as the demo's admin API reports it: "2.81% of users (runbook: < 1%)".
impact_pct() {
  python3 - "$1" <<'PY'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/services/shop"
impact = json.load(urllib.request.urlopen(url, timeout=5))["rollout"]["impact"]
pct = impact["users_failed_pct"]
print(f"{pct:.2f}% of users ({'within' if pct < 1 else 'over'} the runbook's < 1%)")
PY
}

# One demo run to its rollback: its last line (the API's numbers) and the API's share of users
# who saw an error, read while the demo still serves.
users_run() {
  local out port admin pid pct=""
  out=$(mktemp)
  port=$(free_port)
  admin=$(free_port)
  NO_COLOR=1 ./target/release/switchyard demo --port "$port" --admin-port "$admin" "$@" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 90); do
    grep -q 'Ctrl-C to stop' "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if grep -q 'Ctrl-C to stop' "$out"; then
    pct=$(impact_pct "$admin" 2>&1) || pct="(API: $pct)"
  fi
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if grep -qE 'canary requests failed' "$out"; then
    echo "$(grep -E 'canary requests failed' "$out") -> $pct"
    rm -f "$out"
  else
    echo "(no rollback within 90 s, or the demo stopped; its output is in $out)"
  fi
}

echo "users drill: the same bad v2, 500 users at 200 requests/s"
printf '  %-34s %s\n' "safety net off:" "$(users_run --no-safety-net)"
printf '  %-34s %s\n' "safety net on:" "$(users_run)"
printf '  %-34s %s\n' "bad from the start, mirror first:" "$(users_run --bad-after 0s)"
