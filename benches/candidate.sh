#!/usr/bin/env bash
# peers.sh --candidate for Switchyard: writes a config from the env vars peers.sh exports
# (LISTEN, BLUE, GREEN, BLUE_WEIGHT, GREEN_WEIGHT, BENCH_DIR) and execs the proxy with ONE
# worker thread. Metrics on (always), access log off (not configured), upstream keep-alive on
# (the default). Usage: candidate.sh PATH/TO/switchyard [ADMIN_PORT]; log level warn.
# LIMITS (optional): more `limits:` fields, e.g. LIMITS='header_read_timeout: 600s'.
set -eu
bin=$1; admin=${2:-47181}
cfg=${BENCH_DIR:-/tmp}/switchyard-$(basename "$bin").yaml
cat >"$cfg" <<CFG
listeners:
  - { name: public, address: "$LISTEN" }
admin: { address: "127.0.0.1:$admin" }
limits: { max_connections: 100000${LIMITS:+, $LIMITS} }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["$BLUE"], weight: $BLUE_WEIGHT }
      green: { release: v2, backends: ["$GREEN"], weight: $GREEN_WEIGHT }
CFG
export RUST_LOG=${RUST_LOG:-warn}
# WRAP (optional) runs the proxy under a tool, e.g. WRAP="valgrind --tool=callgrind".
exec ${WRAP:-} "$bin" serve --config "$cfg" --workers 1
