#!/usr/bin/env bash
# Scaling benchmark (issue 8): Switchyard, nginx and HAProxy side by side, interleaved point by
# point and round by round. Never run in CI: it needs the whole box.
#
#   benches/scaling.sh [--rounds 2] [--duration 8] [--warmup 2] [--quick] [--out FILE.csv]
#                      [--proxies "switchyard nginx haproxy"]
#
# Two sweeps, each point a fresh proxy start + wrk warm-up + measured wrk run:
#   conns: wrk -t1 -c{64,1000,10000} GET /        (4-5 byte body)
#   size:  wrk -t1 -c64 GET /0, /16k, /1m          (0 B, 16 KiB, 1 MiB; the files are streamed
#          by the backend nginx, so the proxies stream them too)
# Layout as peers.sh's layout A: each proxy pinned to PROXY_CPU (default 1) with one worker;
# wrk and the backends (one nginx, 1 worker, blue + green serving the same paths) on LOAD_CPU
# (default 0). The split is 90/10 blue/green. Proxy configs: peers.sh's templates
# (../shared/bench/templates) rendered the same way, with only the connection limits raised so
# that 10,000 client connections fit (nginx worker_connections, HAProxy maxconn); Switchyard
# via benches/candidate.sh.
# Per point: req/s, p99 (wrk --latency), proxy CPU% (utime+stime of the proxy's session over
# the measured run), req/core = req/s / (cpu%/100), MB/s (10^6 bytes/s read by wrk, heads
# included). Raw results: scaling.csv in the output dir printed at start (and --out FILE).
# Plots: python3 benches/plot.py OUTDIR/scaling.csv
# --quick = rounds 1, duration 3 s, warm-up 1 s (smoke run, ~2 min; numbers not meaningful).
# Env: PROXY_CPU, LOAD_CPU, PORT (proxy listener, default 29280: below the ephemeral port range,
# so no client socket holds it; admin = PORT+1, backends = PORT+11 and PORT+12), NO_BUILD=1
# (skip cargo build), BIN (switchyard binary).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TPL=$ROOT/../shared/bench/templates
echo "# $0 $*"
ROUNDS=2; DUR=8; WARM=2; OUTCSV=""; PROXIES="switchyard nginx haproxy"
CONNS_LIST="64 1000 10000"; SIZES="0 16384 1048576"; SIZE_CONNS=64
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DUR=$2; shift;; --warmup) WARM=$2; shift;;
    --quick) ROUNDS=1; DUR=3; WARM=1;;
    --out) OUTCSV=$2; shift;; --proxies) PROXIES=$2; shift;;
    -h|--help) sed -n '2,25p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
PROXY_CPU=${PROXY_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}; PORT=${PORT:-29280}
ADMIN=$((PORT + 1)); BPORT=$((PORT + 11)); GPORT=$((PORT + 12))
BIN=${BIN:-$ROOT/target/release/switchyard}
for tool in wrk nginx haproxy taskset curl ss; do
  command -v $tool >/dev/null || { echo "$tool missing (run ../shared/bench/peers.sh --quick once: it installs them)" >&2; exit 1; }
done
for f in nginx.conf haproxy.cfg; do [ -f "$TPL/$f" ] || { echo "template not found: $TPL/$f" >&2; exit 1; }; done
for p in "$PORT" "$ADMIN" "$BPORT" "$GPORT"; do
  ss -Hltn "sport = :$p" | grep -q . && { echo "port $p is in use (not ours); free it or set PORT" >&2; exit 1; }
done
# 10,000 client connections + the proxy's upstream connections: raise the fd limit as far as
# the hard limit allows (containers often cap it, e.g. at 20000).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" -ge 20000 ] || echo "# warning: ulimit -n is $NOFILE; 10,000 connections may fail" >&2
if [ -z "${NO_BUILD:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
[ -x "$BIN" ] || { echo "no binary: $BIN" >&2; exit 1; }

OUT=$(mktemp -d /tmp/switchyard-scaling.XXXXXX); chmod 755 "$OUT"
export LISTEN=127.0.0.1:$PORT BLUE=127.0.0.1:$BPORT GREEN=127.0.0.1:$GPORT BLUE_WEIGHT=90 GREEN_WEIGHT=10
export BENCH_DIR=$OUT
. "$ROOT/benches/procs.sh"

# ---- backends: one nginx, blue and green serve the same paths --------------------------------
mkdir -p "$OUT/www"
head -c 16384 /dev/zero | tr '\0' x >"$OUT/www/16k"
head -c 1048576 /dev/zero | tr '\0' x >"$OUT/www/1m"
backend() {  # backend PORT NAME
  printf '    server { listen 127.0.0.1:%s; root %s/www;\n' "$1" "$OUT"
  printf '             location = / { return 200 "%s"; }\n' "$2"
  printf '             location /0 { return 200 ""; } }\n'
}
cat >"$OUT/backends.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/backends.pid;
error_log $OUT/backends.err warn;
events { worker_connections $NOFILE; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
$(backend "$BPORT" blue)
$(backend "$GPORT" green)
}
EOF
start "$LOAD_CPU" backends nginx -p "$OUT" -c "$OUT/backends.conf" -e "$OUT/backends.err"
for u in "http://$BLUE/" "http://$GREEN/1m" "http://$BLUE/0"; do
  up "$u" "$LASTPID" || { echo "backends did not start: $OUT/backends.err" >&2; exit 1; }
done

# ---- proxies ------------------------------------------------------------------------------
# HAProxy refuses to start when 2 x maxconn fds do not fit under the hard limit; a capped
# limit (e.g. 20000) still holds 10,000 clients + its few reused server connections.
HA_STRICT=""; [ "$NOFILE" -lt 20300 ] && HA_STRICT='s|^global$|global\n    no strict-limits|;'
render() {  # as peers.sh's render(), plus the connection limits raised for 10,000 clients
  local ups; ups="$(printf "$BLUE %.0s" 1 2 3 4 5 6 7 8 9)$GREEN"
  sed -e "s|@DIR@|$OUT|g; s|@LISTEN@|$LISTEN|g; s|@PORT@|$PORT|g; s|@BLUE@|$BLUE|g" \
      -e "s|@GREEN@|$GREEN|g; s|@H2@||g; s|@UPSTREAMS@|$ups|g" \
      -e "s|worker_connections [0-9]*;|worker_connections $NOFILE;|; s|maxconn [0-9]*|maxconn 10100|; $HA_STRICT" "$TPL/$1"
}
render nginx.conf >"$OUT/proxy-nginx.conf"; render haproxy.cfg >"$OUT/haproxy.cfg"
if ! grep -q "worker_connections $NOFILE;" "$OUT/proxy-nginx.conf" || ! grep -q "maxconn 10100" "$OUT/haproxy.cfg"; then
  echo "templates changed: could not raise the connection limits" >&2; exit 1
fi
start_proxy() {  # start_proxy NAME -> $PPID_
  case $1 in
    nginx)      start "$PROXY_CPU" nginx nginx -p "$OUT" -c "$OUT/proxy-nginx.conf" -e "$OUT/proxy-nginx.err";;
    haproxy)    start "$PROXY_CPU" haproxy haproxy -db -f "$OUT/haproxy.cfg";;
    switchyard) start "$PROXY_CPU" switchyard "$ROOT/benches/candidate.sh" "$BIN" "$ADMIN";;
    *) echo "unknown proxy $1" >&2; exit 2;;
  esac
  PPID_=$LASTPID
}
sess_ticks() {  # utime+stime (clock ticks) of all processes in session $1
  local t=0 p v; for p in $(ps --sid "$1" -o pid= 2>/dev/null); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}'); t=$((t + ${v:-0}))
  done; echo "$t"
}
cpu_busy() { awk -v c="cpu$1" '$1==c {t=$2+$3+$4+$5+$6+$7+$8+$9; print t-$5-$6, t}' /proc/stat; }
lovf() { awk '$1=="TcpExt:" { if (!n) { for (i=2; i<=NF; i++) if ($i=="ListenOverflows") c=i; n=1 } else print $c }' /proc/net/netstat; }
to_ms() { awk '{v=$1; if (v ~ /us$/) v/=1000; else if (v ~ /ms$/) v+=0; else if (v ~ /s$/) v*=1000; printf "%.3f", v}'; }
HZ=$(getconf CLK_TCK)

# ---- run ------------------------------------------------------------------------------------
POINTS=(); for c in $CONNS_LIST; do POINTS+=("conns:$c"); done; for s in $SIZES; do POINTS+=("size:$s"); done
read -ra PX <<<"$PROXIES"
CSV=$OUT/scaling.csv; echo "proxy,sweep,x,round,req_s,p99_ms,cpu_pct,req_core,mb_s" >"$CSV"
echo "# scaling.sh  $(date -u +%FT%TZ)  nproc=$(nproc)  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)  ulimit -n $NOFILE"
echo "# $("$BIN" --version) | $(nginx -v 2>&1) | $(haproxy -v | head -1 | cut -d' ' -f1-3) | wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
echo "# proxy on CPU$PROXY_CPU (1 worker), wrk + backends on CPU$LOAD_CPU; wrk -t1 -cN -d${DUR}s --latency --timeout 10s" \
     "(warm-up ${WARM}s); $ROUNDS round(s), proxies: ${PX[*]}; output: $OUT"
printf '  %-5s %-8s %-10s %-2s %9s %9s %6s %9s %9s %6s %5s %6s\n' sweep x proxy r req/s p99ms proxy% req/core MB/s load% errs lovf
i=0
for r in $(seq "$ROUNDS"); do
  for pt in "${POINTS[@]}"; do
    sweep=${pt%%:*}; x=${pt#*:}
    if [ "$sweep" = conns ]; then c=$x; path=/; else c=$SIZE_CONNS
      case $x in 0) path=/0;; 16384) path=/16k;; 1048576) path=/1m;; *) echo "no path for size $x" >&2; exit 2;; esac
    fi
    n=${#PX[@]}
    for k in $(seq 0 $((n - 1))); do   # rotate the proxy order from point to point
      p=${PX[$(( (k + i) % n ))]}
      start_proxy "$p"
      if ! up "http://$LISTEN$path" "$PPID_"; then echo "  $p did not start (log: $OUT/$p.log)"; stop "$PPID_"; continue; fi
      raw=$OUT/wrk-$sweep-$x-$p-r$r.txt
      taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${WARM}s" --timeout 10s "http://$LISTEN$path" >/dev/null 2>&1 || true
      t0=$(sess_ticks "$PPID_"); l0=$(cpu_busy "$LOAD_CPU"); o0=$(lovf); s0=$(date +%s.%N)
      taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${DUR}s" --timeout 10s --latency "http://$LISTEN$path" >"$raw" 2>&1 || true
      t1=$(sess_ticks "$PPID_"); l1=$(cpu_busy "$LOAD_CPU"); o1=$(lovf); s1=$(date +%s.%N)
      stop "$PPID_"
      rps=$(awk '/^Requests\/sec/ {print $2}' "$raw"); rps=${rps:-0}
      p99=$(awk '$1=="99%" {print $2}' "$raw" | to_ms)
      mbs=$(awk '/^Transfer\/sec/ {v=$2; m=1; if (v ~ /GB$/) m=2^30; else if (v ~ /MB$/) m=2^20; else if (v ~ /KB$/) m=2^10
             sub(/[KMG]?B$/, "", v); printf "%.2f", v*m/1e6}' "$raw")
      err=$(awk '/Non-2xx/ {e+=$NF} /Socket errors/ {gsub(",",""); e+=$4+$6+$8+$10} END {print e+0}' "$raw")
      cpu=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(s1-s0)}')
      eff=$(awk -v r="$rps" -v c="$cpu" 'BEGIN{printf "%.0f", (c>0 ? r*100/c : 0)}')
      load=$(echo "$l0 $l1" | awk '{printf "%.0f", ($4>$2) ? 100*($3-$1)/($4-$2) : 0}')
      echo "$p,$sweep,$x,$r,$rps,$p99,$cpu,$eff,${mbs:-0}" >>"$CSV"
      printf '  %-5s %-8s %-10s %-2s %9.0f %9s %6s %9s %9s %6s %5s %6s\n' "$sweep" "$x" "$p" "$r" "$rps" "$p99" "$cpu" "$eff" \
        "${mbs:-0}" "$load" "$err" "$((${o1:-0} - ${o0:-0}))"
    done
    i=$((i + 1))
  done
done

echo; echo "# medians over $ROUNDS round(s)"
awk -F, 'NR>1 { k=$2 SUBSEP $3 SUBSEP $1; if (!(k in seen)) { seen[k]=1; o[++n]=k }
               for (c=5; c<=9; c++) v[k,c]=v[k,c] " " $c }
  function med(s,   a,m,i,j,x) { m=split(s,a," "); for(i=2;i<=m;i++){x=a[i];for(j=i-1;j>0&&a[j]+0>x+0;j--)a[j+1]=a[j];a[j+1]=x}
                                 return (m%2)? a[(m+1)/2] : (a[m/2]+a[m/2+1])/2 }
  END { printf "| sweep | x | proxy | req/s | p99 ms | proxy CPU %% | req/core | MB/s |\n|---|---|---|---|---|---|---|---|\n"
        for (i=1; i<=n; i++) { split(o[i], f, SUBSEP)
          printf "| %s | %s | %s | %.0f | %.2f | %.1f | %.0f | %.1f |\n", f[1], f[2], f[3],
            med(v[o[i],5]), med(v[o[i],6]), med(v[o[i],7]), med(v[o[i],8]), med(v[o[i],9]) } }' "$CSV" | tee "$OUT/table.md"
cat <<EOF

# load% = busy % of CPU$LOAD_CPU (wrk + backends): near 100 with proxy CPU% clearly below 100 means
# the load side, not the proxy, set req/s (req/core is still the proxy's own efficiency).
# errs = socket errors + non-2xx responses. lovf = TCP listen-queue overflows during the run (whole
# box): connects that were dropped and retried 1 s+ later (wrk opens all -c connections at once).
# Raw wrk output and logs: $OUT
# CSV: $CSV   plots: python3 $ROOT/benches/plot.py $CSV
EOF
if [ -n "$OUTCSV" ]; then cp "$CSV" "$OUTCSV" && echo "# copied to $OUTCSV"; fi
