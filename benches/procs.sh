# shellcheck shell=bash
# Process bookkeeping shared by the bench scripts (sourced, not run). Needs $OUT (a scratch
# dir for logs). Every process gets its own session, so stop() can kill its whole group and
# only the groups we started are ever killed; cleanup() runs on exit.
PIDS=()
start() {  # start CPU|any LOGNAME CMD... -> $LASTPID (pinned to CPU with taskset unless "any")
  local cpu=$1 log=$2; shift 2
  if [ "$cpu" = any ]; then
    setsid "$@" >>"$OUT/$log.log" 2>&1 </dev/null & LASTPID=$!
  else
    setsid taskset -c "$cpu" "$@" >>"$OUT/$log.log" 2>&1 </dev/null & LASTPID=$!
  fi
  PIDS+=("$LASTPID")
}
stop() {
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  local keep=() p; for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done; PIDS=("${keep[@]}")
}
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done; }
trap cleanup EXIT; trap 'exit 130' INT TERM
up() {  # up URL PID: wait (10 s at most) until URL answers 2xx; give up early if PID exited
  for _ in $(seq 100); do curl -sf -o /dev/null --max-time 1 "$1" && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}
