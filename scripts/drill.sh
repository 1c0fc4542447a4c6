#!/usr/bin/env bash
# The rollback drill (deploy_bad_version → trigger_auto_rollback → verify_recovery_time):
# builds the release binary, then runs examples/drill.rs twice — threshold analysis only, and
# with fast-fail — against a canary that fails every request at 10% share.
# Usage: scripts/drill.sh [--rate 1000] [--share 10]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin switchyard --example drill
for ff in off on; do
  ./target/release/examples/drill --fast-fail "$ff" "$@"
  echo
done
