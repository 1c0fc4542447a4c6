#!/usr/bin/env bash
# Memory benchmark (issue 8): resident set size (VmRSS from /proc/PID/status) of the release
# binary with one worker (`serve --workers 1`). Never run in CI.
#
#   benches/memory.sh [--conns 10000] [--proxies "switchyard nginx haproxy"] [--parts "a b c"] [--quick]
#
# (a) idle RSS with the bench config (benches/candidate.sh: 90/10 split, 2 backends) right
#     after start-up (listener bound), 1 s later and settled ("settled" = sampled each second
#     until two samples in a row moved < 0.2%, at most 30 s: the controller's per-version
#     telemetry fills its windows for ~11 s after start);
# (b) RSS delta for N idle keep-alive client connections (benches/idle_conns.py: each did one
#     HTTP/1.1 request, then stays open), KiB per connection open; the same for nginx and
#     HAProxy (peers.sh's templates, connection limits raised as in scaling.sh) for context.
#     Every proxy's idle keep-alive timeout is raised to HOLD s (default 600) so that on a
#     busy machine, where opening 10,000 connections can take longer than the default 10 s,
#     none has closed when RSS is sampled: it is sampled once `ss` shows them all established
#     and RSS has settled, and the open count is taken again after it (the smaller one is
#     the divisor). RSS is summed over the proxy's session (nginx: master + worker). Kernel
#     socket buffers are not in RSS;
# (c) RSS (1 s after start-up, and settled) with 1, 1000 and 10000 services (2 versions x 1
#     backend each, exact hosts sN.example.com) -> KiB per service; and one service with 1,
#     100, 1000 backends -> KiB per backend. Backend addresses in (c) are 127.0.0.1 ports that
#     are never contacted (no health checks, no requests). The idle CPU % over the settling
#     phase is printed too (the controller ticks every 250 ms).
# --quick = (c) with 1000 services at most. Takes ~2 minutes. Output dir printed at start.
# Env: PORT (listener, default 29380: below the ephemeral port range; admin = PORT+1, backends
# = PORT+11 and PORT+12), HOLD (s, see (b)), NO_BUILD=1 (skip cargo build), BIN (switchyard binary), SHARED (the
# shared/ directory with bench/templates; default: beside the repo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TPL=${SHARED:-$ROOT/../shared}/bench/templates
echo "# $0 $*"
CONNS=10000; PROXIES="switchyard nginx haproxy"; PARTS="a b c"; SERVICES="1 1000 10000"; BACKENDS="1 100 1000"
while [ $# -gt 0 ]; do
  case $1 in
    --conns) CONNS=$2; shift;; --proxies) PROXIES=$2; shift;; --parts) PARTS=$2; shift;; --quick) SERVICES="1 1000";;
    -h|--help) sed -n '2,27p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
PORT=${PORT:-29380}; HOLD=${HOLD:-600}; ADMIN=$((PORT + 1)); BPORT=$((PORT + 11)); GPORT=$((PORT + 12))
BIN=${BIN:-$ROOT/target/release/switchyard}
for tool in nginx haproxy python3 curl ss; do
  command -v $tool >/dev/null || { echo "$tool missing (../shared/bench/peers.sh --quick installs nginx, haproxy)" >&2; exit 1; }
done
for f in nginx.conf haproxy.cfg; do [ -f "$TPL/$f" ] || { echo "template not found: $TPL/$f" >&2; exit 1; }; done
for p in "$PORT" "$ADMIN" "$BPORT" "$GPORT"; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use (not ours); free it or set PORT" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" -gt $((CONNS + 500)) ] || echo "# warning: ulimit -n is $NOFILE; $CONNS connections may fail" >&2
if [ -z "${NO_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
[ -x "$BIN" ] || { echo "no binary: $BIN" >&2; exit 1; }

OUT=$(mktemp -d /tmp/switchyard-memory.XXXXXX); chmod 755 "$OUT"
export LISTEN=127.0.0.1:$PORT BLUE=127.0.0.1:$BPORT GREEN=127.0.0.1:$GPORT BLUE_WEIGHT=90 GREEN_WEIGHT=10
export BENCH_DIR=$OUT RUST_LOG=${RUST_LOG:-warn}
. "$ROOT/benches/procs.sh"
listening() {  # listening PORT TIMEOUT_S: wait until something listens on 127.0.0.1:PORT
  for _ in $(seq $(($2 * 20))); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; return 1
}
rss() {  # VmRSS in KiB, summed over the processes of session $1
  local t=0 p v; for p in $(ps --sid "$1" -o pid= 2>/dev/null); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null); t=$((t + ${v:-0}))
  done; echo "$t"
}
settle() {  # settle SID MAX_S: sample RSS each second until two samples in a row move < 0.2%
  local prev=0 cur calm=0 n=0   # -> $SETTLED (KiB), $SETTLE_S (seconds waited)
  while [ $n -lt "$2" ]; do
    sleep 1; n=$((n + 1)); cur=$(rss "$1")
    if [ $((cur - prev)) -le $((cur / 500)) ] && [ $((prev - cur)) -le $((cur / 500)) ]; then calm=$((calm + 1)); else calm=0; fi
    prev=$cur; [ $calm -ge 2 ] && break
  done
  SETTLED=$cur; SETTLE_S=$n
}
established() { ss -Htn state established "$1" | wc -l; }

cat >"$OUT/backends.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/backends.pid;
error_log $OUT/backends.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 120s;
    server { listen $BLUE;  location / { return 200 "blue"; } }
    server { listen $GREEN; location / { return 200 "green"; } }
}
EOF
start any backends nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err"
for u in "http://$BLUE/" "http://$GREEN/"; do up "$u" "$LASTPID" || { echo "backends did not start: $OUT/backends.err" >&2; exit 1; }; done

HA_STRICT=""; [ "$NOFILE" -lt 20300 ] && HA_STRICT='s|^global$|global\n    no strict-limits|;'
render() {  # as peers.sh's render(), connection limits raised for $CONNS clients
  local ups; ups="$(printf "$BLUE %.0s" 1 2 3 4 5 6 7 8 9)$GREEN"
  sed -e "s|@DIR@|$OUT|g; s|@LISTEN@|$LISTEN|g; s|@PORT@|$PORT|g; s|@BLUE@|$BLUE|g" \
      -e "s|@GREEN@|$GREEN|g; s|@H2@||g; s|@UPSTREAMS@|$ups|g" \
      -e "s|worker_connections [0-9]*;|worker_connections $NOFILE;|; s|maxconn [0-9]*|maxconn $((CONNS + 100))|; $HA_STRICT" \
      -e "s|keepalive_timeout [0-9]*s;|keepalive_timeout ${HOLD}s;|; s|timeout client [0-9]*s|timeout client ${HOLD}s|" \
      -e "s|timeout http-keep-alive [0-9]*s|timeout http-keep-alive ${HOLD}s|" "$TPL/$1"
}
render nginx.conf >"$OUT/proxy-nginx.conf"; render haproxy.cfg >"$OUT/haproxy.cfg"
start_proxy() {  # start_proxy NAME -> $PPID_
  case $1 in
    nginx)      start any nginx nginx -p "$OUT" -c "$OUT/proxy-nginx.conf" -e "$OUT/proxy-nginx.err";;
    haproxy)    start any haproxy haproxy -db -f "$OUT/haproxy.cfg";;
    switchyard) start any switchyard env LIMITS="header_read_timeout: ${HOLD}s" "$ROOT/benches/candidate.sh" "$BIN" "$ADMIN";;
    *) echo "unknown proxy $1" >&2; exit 2;;
  esac
  PPID_=$LASTPID
}
echo "# memory.sh  $(date -u +%FT%TZ)  nproc=$(nproc)  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)  ulimit -n $NOFILE  output: $OUT"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | $(haproxy -v | head -1 | cut -d' ' -f1-3) | $(python3 --version)"

part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }

# ---- (a) idle RSS -----------------------------------------------------------------------------
if part a; then
start_proxy switchyard
listening "$PORT" 10 || { echo "switchyard did not start: $OUT/switchyard.log" >&2; exit 1; }
a0=$(rss "$PPID_"); sleep 1; a1=$(rss "$PPID_"); settle "$PPID_" 30
stop "$PPID_"
echo; echo "## (a) idle RSS, switchyard serve --workers 1, bench config (1 service, 2 versions)"
printf '| when | VmRSS KiB |\n|---|---|\n| listener bound | %s |\n| 1 s later | %s |\n| settled (%s s more) | %s |\n' \
  "$a0" "$a1" "$SETTLE_S" "$SETTLED" | tee "$OUT/a.md"
fi

# ---- (b) idle keep-alive connections ---------------------------------------------------------
if part b; then
echo; echo "## (b) $CONNS idle keep-alive connections, one HTTP/1.1 request each (python3 $ROOT/benches/idle_conns.py)"
B=$OUT/b.md; printf '| proxy | RSS before KiB | RSS after KiB | client conns open (of ok) | upstream conns | KiB per open conn |\n|---|---|---|---|---|---|\n' >"$B"
for p in $PROXIES; do
  start_proxy "$p"
  up "http://$LISTEN/" "$PPID_" || { echo "$p did not start: $OUT/$p.log" >&2; exit 1; }
  curl -s "http://$LISTEN/?[1-100]" >/dev/null   # warm: first requests, upstream pool
  settle "$PPID_" 30; before=$SETTLED; t0=$SECONDS
  rm -f "$OUT/ready-$p"
  start any "client-$p" python3 "$ROOT/benches/idle_conns.py" 127.0.0.1 "$PORT" "$CONNS" "$OUT/ready-$p" "$HOLD"; cpid=$LASTPID
  for _ in $(seq $((HOLD * 5))); do [ -s "$OUT/ready-$p" ] && break; kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
  [ -s "$OUT/ready-$p" ] || { echo "client did not finish in $((HOLD / 2)) s: $OUT/client-$p.log" >&2; exit 1; }
  read -r ok failed <"$OUT/ready-$p"; setup=$((SECONDS - t0))
  # Sample only when every connection that made its request shows as established.
  for _ in $(seq 300); do [ "$(established "( sport = :$PORT )")" -ge "$ok" ] && break; sleep 0.1; done
  settle "$PPID_" 30; after=$SETTLED
  open=$(established "( sport = :$PORT )"); ups=$(established "( dport = :$BPORT or dport = :$GPORT )")
  [ $((SECONDS - t0)) -lt "$HOLD" ] || echo "  warning: sampled after HOLD=$HOLD s; connections may have timed out" >&2
  stop "$cpid"; stop "$PPID_"
  echo "  $p: $ok connections ok, $failed failed, set up in $setup s, $open open when sampled"
  awk -v p="$p" -v b="$before" -v a="$after" -v o="$open" -v u="$ups" -v n="$ok" \
    'BEGIN { d = (o < n ? o : n); printf "| %s | %d | %d | %d of %d | %d | %.2f |\n", p, b, a, o, n, u, (d > 0 ? (a - b) / d : 0) }' >>"$B"
done
cat "$B"
echo "(KiB per open conn = (after - before) / the connections open when sampled (at most those that completed their"
echo " request); after = settled RSS once all showed established; upstream conns = the proxy's"
echo " established connections to the backends at the 'after' moment; they are in the delta too)"
fi

# ---- (c) RSS per configured service and per backend ------------------------------------------
services_yaml() {  # services_yaml N: N services, exact host, 2 versions x 1 backend (never contacted)
  printf 'listeners:\n  - { name: public, address: "%s" }\nadmin: { address: "127.0.0.1:%s" }\nservices:\n' "$LISTEN" "$ADMIN"
  awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) {
    printf "  s%d:\n    match: { hosts: [\"s%d.example.com\"] }\n    versions:\n", i, i
    printf "      blue:  { release: v1, backends: [\"127.0.0.1:%d\"], weight: 90 }\n", 20000 + 2 * (i - 1)
    printf "      green: { release: v2, backends: [\"127.0.0.1:%d\"], weight: 10 }\n", 20001 + 2 * (i - 1) } }'
}
backends_yaml() {  # backends_yaml N: one service, one version with N backends (never contacted)
  printf 'listeners:\n  - { name: public, address: "%s" }\nadmin: { address: "127.0.0.1:%s" }\nservices:\n' "$LISTEN" "$ADMIN"
  printf '  api:\n    versions:\n      blue: { release: v1, weight: 100, backends: [%s] }\n' \
    "$(awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%s\"127.0.0.1:%d\"", (i ? ", " : ""), 20000 + i }')"
}
measure_cfg() {  # measure_cfg FILE -> $s (start-up s), $r1 (VmRSS KiB 1 s later), $r (settled), $cpu (% idle)
  local t0 t1 c0 c1 pid
  t0=$(date +%s.%N)
  start any cfg "$BIN" serve --config "$1" --workers 1; pid=$LASTPID
  listening "$PORT" 60 || { echo "switchyard did not start with $1: $OUT/cfg.log" >&2; exit 1; }
  t1=$(date +%s.%N); sleep 1; r1=$(rss "$pid")
  c0=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12+$13}')
  settle "$pid" 30; r=$SETTLED
  c1=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12+$13}'); stop "$pid"
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  cpu=$(awk -v a="$c0" -v b="$c1" -v n="$SETTLE_S" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / n }')
}
part c || exit 0
echo; echo "## (c) RSS per configured service and per backend, 1 s after start-up and settled"
C=$OUT/c.md
printf '| config | start-up s | RSS 1 s KiB | RSS settled KiB (after s) | idle CPU %% | KiB per added service/backend (settled) |\n|---|---|---|---|---|---|\n' >"$C"
row() {  # row LABEL: one table line; per added item against $base ("count rss" of the group's first row)
  awk -v l="$1" -v n="$n" -v s="$s" -v r1="$r1" -v r="$r" -v w="$SETTLE_S" -v c="$cpu" -v b="$base" 'BEGIN { split(b, x, " ")
    printf "| %s | %s | %d | %d (%d) | %s | %s |\n", l, s, r1, r, w, c, (n > x[1] ? sprintf("%.2f", (r - x[2]) / (n - x[1])) : "-") }' >>"$C"
}
base=""
for n in $SERVICES; do
  services_yaml "$n" >"$OUT/services-$n.yaml"; measure_cfg "$OUT/services-$n.yaml"
  [ -z "$base" ] && base="$n $r"
  row "$n services"
done
base=""
for n in $BACKENDS; do
  backends_yaml "$n" >"$OUT/backends-$n.yaml"; measure_cfg "$OUT/backends-$n.yaml"
  [ -z "$base" ] && base="$n $r"
  row "1 service, $n backends"
done
cat "$C"
echo "(per added service/backend = (settled RSS - that of the group's first row) / (count - first count); RSS includes"
echo " whatever the allocator kept from parsing the YAML. The sparkline points (one per version per second, 300 kept)"
echo " still grow for 5 minutes after 'settled'. Configs, logs and tables: $OUT)"
