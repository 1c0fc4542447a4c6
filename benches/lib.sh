# shellcheck shell=bash
# Shared pieces of the round-2 wall-clock benchmarks (tls_load.sh, workers.sh, canary_cost.sh):
# process bookkeeping, the nginx backends, the three proxies' configs, one measured load run
# and medians, written once. Sourced, never run. Conventions as in ../shared/bench/peers.sh:
# every process starts in its own session (setsid) and only those sessions are stopped; the
# proxy runs on PROXY_CPU, the load generator and the backends on LOAD_CPU (layout A);
# req/core = req/s ÷ the proxy's own CPU (utime + stime of its session over the run).
# Needs: ROOT set by the caller. Provides OUT (raw output dir, printed by the caller).
# shellcheck disable=SC2034  # globals (BPID, CMD, RESULT, PROXY_PCT...) are read by the callers

SHARED=${SHARED:-$ROOT/../shared}
[ -f "$SHARED/bench/templates/backends.nginx.conf" ] || SHARED=/work/shared
TPL=$SHARED/bench/templates
PROXY_CPU=${PROXY_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
HZ=$(getconf CLK_TCK)
BLUE=127.0.0.1:19001; GREEN=127.0.0.1:19002
# The proxy's listener and admin port: PORT (each script sets its own default).
LISTEN=127.0.0.1:$PORT; ADMIN=$((PORT + 1))
WRK_THREADS=${WRK_THREADS:-1}

bench_init() {  # bench_init NAME TOOLS... : checks tools, makes $OUT, installs the traps
  local name=$1 t; shift
  for t in "$@"; do command -v "$t" >/dev/null || { echo "$t missing (../shared/bench/peers.sh --quick installs wrk, h2load, nginx, haproxy)" >&2; exit 1; }; done
  [ -f "$TPL/backends.nginx.conf" ] || { echo "no $TPL/backends.nginx.conf: set SHARED to the shared/ directory" >&2; exit 1; }
  # BENCH_OUT (round2.sh sets it): write there instead of a fresh temp dir.
  if [ -n "${BENCH_OUT:-}" ]; then OUT=$BENCH_OUT; mkdir -p "$OUT"; else OUT=$(mktemp -d "/tmp/$name.XXXXXX"); fi
  chmod 755 "$OUT"
  PIDS=()
  trap cleanup EXIT; trap 'exit 130' INT TERM
}
ports_free() {  # ports_free PORT... : exit if one is taken (not ours)
  local p
  for p in "$@"; do
    ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use (not ours); free it or set PORT" >&2; exit 1; }
  done; return 0
}
# start CPUS LOG CMD... -> LASTPID (session leader). CPUS: a taskset list ("1", "0-1").
# With CGROUP set (a cgroup directory), the process joins it before exec'ing CMD.
start() {
  local cpus=$1 log=$2; shift 2
  if [ -n "${CGROUP:-}" ]; then
    # shellcheck disable=SC2016  # $$ and $1 belong to the inner sh
    set -- sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CGROUP" "$@"
  fi  # (cgroup v1 "cgroup.procs" and v2 alike; children inherit it)
  setsid taskset -c "$cpus" "$@" >>"$OUT/$log.log" 2>&1 </dev/null & LASTPID=$!; PIDS+=("$LASTPID")
}
stop() {   # stop PID: TERM its session's process group, wait, then make sure it is gone
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
  local keep=() p; for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done; PIDS=("${keep[@]}")
}
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done; [ "$(type -t bench_cleanup)" = function ] && bench_cleanup; return 0; }
sess_ticks() {  # utime+stime (clock ticks) of every process in session $1
  local t=0 p
  for p in $(ps -o pid= -s "$1" 2>/dev/null); do
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}' || echo 0)))
  done; echo "$t"
}
wait_url() {  # wait_url URL [curl options...]: up to 10 s for any HTTP answer
  local u=$1; shift
  for _ in $(seq 100); do curl -sk -o /dev/null --max-time 1 "$@" "$u" && return 0; sleep 0.1; done; return 1
}
make_cert() {  # make_cert rsa|ecdsa -> $OUT/KIND.crt, .key and .pem (both, for HAProxy)
  if [ "$1" = rsa ]; then set -- rsa -newkey rsa:2048
  else set -- ecdsa -newkey ec -pkeyopt ec_paramgen_curve:P-256; fi
  local kind=$1; shift
  openssl req -x509 "$@" -nodes -keyout "$OUT/$kind.key" -out "$OUT/$kind.crt" -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
  cat "$OUT/$kind.crt" "$OUT/$kind.key" >"$OUT/$kind.pem"
}
start_backends() {  # start_backends CPUS -> BPID: peers.sh's backends (19001 blue, 19002 green)
  sed -e "s|@DIR@|$OUT|g" "$TPL/backends.nginx.conf" >"$OUT/backends.conf"
  CGROUP="" start "$1" backends nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err"; BPID=$LASTPID
  if ! wait_url "http://$BLUE/" || ! wait_url "http://$GREEN/"; then echo "backends did not start: $OUT/backends.err" >&2; exit 1; fi
}

# proxy_cmd NAME WORKERS CERT [EXTRA_YAML] -> CMD (array): writes NAME's config for a 90/10
# split on $LISTEN (admin: $ADMIN) with WORKERS workers; CERT "" = plain (h1 + h2c), else
# rsa/ecdsa = TLS with ALPN h2 + http/1.1. EXTRA_YAML (Switchyard only) is appended under the
# service (a rollout:). Peers as in ../shared/bench/templates: upstream keep-alive, no logs.
proxy_cmd() {
  local name=$1 workers=$2 cert=$3 extra=${4:-} tag; tag=$name-w$2-${3:-plain}
  case $name in
    switchyard)
      local tls=""; [ -n "$cert" ] && tls=", tls: { certificates: [{ cert: \"$OUT/$cert.crt\", key: \"$OUT/$cert.key\" }] }"
      cat >"$OUT/$tag.yaml" <<CFG
listeners: [{ name: public, address: "$LISTEN"$tls }]
admin: { address: "127.0.0.1:$ADMIN" }
limits: { max_connections: 100000 }
services:
  api:
    versions:
      blue:  { release: v1, backends: ["$BLUE"], weight: 90 }
      green: { release: v2, backends: ["$GREEN"], weight: 10 }
$extra
CFG
      CMD=(env "RUST_LOG=warn" "$BIN" serve --config "$OUT/$tag.yaml" --workers "$workers");;
    nginx)
      local listen="$LISTEN http2" tlsconf=""
      [ -n "$cert" ] && listen="$LISTEN ssl http2" &&
        tlsconf="ssl_certificate $OUT/$cert.crt; ssl_certificate_key $OUT/$cert.key; ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m; ssl_session_tickets on;   # resumption: session IDs and tickets"
      [ -z "$cert" ] && [ "${H2C:-0}" = 0 ] && listen=$LISTEN   # nginx 1.22: a cleartext listener is h1 or h2c, not both
      cat >"$OUT/$tag.conf" <<CFG
worker_processes $workers;
daemon off;
pid $OUT/$tag.pid;
error_log $OUT/$tag.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    upstream split {
        server $BLUE weight=90;
        server $GREEN weight=10;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 120s;
    }
    server {
        listen $listen;
        $tlsconf
        location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CFG
      CMD=(nginx -p "$OUT" -c "$OUT/$tag.conf" -e "$OUT/$tag.err");;
    haproxy)
      local bind=$LISTEN; [ -n "$cert" ] && bind="$LISTEN ssl crt $OUT/$cert.pem alpn h2,http/1.1"
      cat >"$OUT/$tag.cfg" <<CFG
global
    nbthread $workers
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    http-reuse always
frontend fe
    bind $bind
    default_backend split
backend split
    balance roundrobin
    server blue  $BLUE  weight 90
    server green $GREEN weight 10
CFG
      CMD=(haproxy -db -f "$OUT/$tag.cfg");;
    *) echo "unknown proxy $name" >&2; exit 2;;
  esac
}

# load_run RAW CONNS DUR WARM KIND URL [LUA] -> RESULT="req/s p50_ms p99_ms errors" and
# PROXY_PCT (% of one core: session $PROXY_SID's CPU time over the run): one warm-up and one
# measured run on LOAD_CPU. KIND: h1 (wrk --latency; LUA: a wrk script) or h2 (h2load -m10;
# h2 over TLS when URL is https; p50 = h2load's mean, p99 "-"). Not in a subshell.
load_run() {
  local raw=$1 conns=$2 dur=$3 warm=$4 kind=$5 url=$6 lua=${7:-} t0 t1 s0 s1 script=()
  local load=(taskset -c "$LOAD_CPU")
  [ -n "$lua" ] && script=(-s "$lua")
  if [ "$kind" = h1 ]; then "${load[@]}" wrk -t"$WRK_THREADS" -c"$conns" -d"${warm}s" "${script[@]}" "$url" >/dev/null 2>&1 || true
  else "${load[@]}" h2load -t"$WRK_THREADS" -c"$conns" -m10 -D"$warm" "$url" >/dev/null 2>&1 || true; fi
  t0=$(sess_ticks "$PROXY_SID"); s0=$(date +%s.%N)
  if [ "$kind" = h1 ]; then "${load[@]}" wrk -t"$WRK_THREADS" -c"$conns" -d"${dur}s" --latency "${script[@]}" "$url" >"$raw" 2>&1 || true
  else "${load[@]}" h2load -t"$WRK_THREADS" -c"$conns" -m10 -D"$dur" "$url" >"$raw" 2>&1 || true; fi
  t1=$(sess_ticks "$PROXY_SID"); s1=$(date +%s.%N)
  PROXY_PCT=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (s1 - s0) }')
  if [ "$kind" = h1 ]; then
    RESULT=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /^Requests\/sec/ { r = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
      /Non-2xx/ { e += $NF } /Socket errors/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
      END { printf "%.0f %.3f %.3f %d\n", r, p50, p99, e }' "$raw")
  else
    RESULT=$(awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /^finished in/ { r = $4 } /^time for request/ { p50 = ms($6) } /^requests:/ { e = $10 + $12 + $14; if ($8 == 0) r = 0 }
      END { printf "%.0f %.3f - %d\n", r, p50, e }' "$raw")
  fi
}

# A wrk script that paces each connection: DELAY_MS between its requests (an offered load of
# about conns × 1000 / (DELAY_MS + latency) req/s), for latency at a fixed, unsaturated rate.
pace_script() {  # pace_script DELAY_MS -> prints the script's path
  printf 'function delay()\n  return %s\nend\n' "$1" >"$OUT/pace-$1.lua"; echo "$OUT/pace-$1.lua"
}

# median_table FILE KEYCOLS VALCOLS: prints "key... median(val)..." per distinct key (tab
# separated input, header line skipped), in first-seen order. Values "-" pass through.
median_table() {
  awk -F'\t' -v kc="$2" -v vc="$3" '
    function med(s,   a, n, i, j, x) { n = split(s, a, " "); if (a[1] == "-") return "-"
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    NR == 1 { next }
    { k = ""; for (i = 1; i <= kc; i++) k = k (i > 1 ? "\t" : "") $i
      if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      for (i = kc + 1; i <= kc + vc; i++) v[k, i] = v[k, i] " " $i }
    END { for (o = 1; o <= n; o++) { k = order[o]; line = k
            for (i = kc + 1; i <= kc + vc; i++) line = line "\t" med(v[k, i]); print line } }' "$1"
}
