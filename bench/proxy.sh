#!/usr/bin/env bash
# Proxy benchmark: in one run, wrk against
#   direct  - a fast backend (nginx returning a fixed body, 1 worker)
#   relay   - bench/relay.rs, a byte relay without HTTP (1 thread) in front of
#             it: the ceiling for any proxy on this machine
#   nginx   - nginx as reverse proxy (1 worker, keepalive upstream) in front of it
#   baton   - Baton (1 worker thread) in front of an identical backend
#   hyper   - the same Baton with its own HTTP/1.1 server switched off
#             (BATON_HTTP1=hyper): every request through hyper's server
# and prints requests/s, latency percentiles, the CPU time each request costs
# the proxy process, the ratios Baton/nginx, Baton/relay and Baton/direct,
# and Baton's idle RSS.
#
#   bench/proxy.sh                 # 10 s per target, 32 connections
#   DURATION=30s CONNS=64 bench/proxy.sh
#   SWEEP="1 8 16 32 128" bench/proxy.sh   # then Baton/nginx at each concurrency
#   SWEEP= bench/proxy.sh               # no sweep
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
SWEEP=${SWEEP-1 8 16 128}
SWEEP_DURATION=${SWEEP_DURATION:-3s}
THREADS=${THREADS:-1}
BACKEND_PORT=${BACKEND_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
BATON_PORT=${BATON_PORT:-18083}
RELAY_PORT=${RELAY_PORT:-18084}
HYPER_PORT=${HYPER_PORT:-18085}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
# Apart: the example takes the dev-dependencies (the fuzz targets), the
# binary must not.
(cd "$ROOT" && cargo build --release -q --example relay && cargo build --release -q --bin baton)
BATON="$ROOT/target/release/baton"
RELAY="$ROOT/target/release/examples/relay"

make_workspace

write_backend_template
backend_conf "$BACKEND_PORT" > "$WORK/backend.conf"
nginx -c "$WORK/backend.conf" -p "$WORK" 2>"$WORK/backend.err" &
PIDS+=($!); BACKEND_MASTER=$!

cat > "$WORK/proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/proxy.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 1024; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
nginx -c "$WORK/proxy.conf" -p "$WORK" 2>"$WORK/proxy.err" &
PIDS+=($!); NGINX_MASTER=$!
"$RELAY" "127.0.0.1:$RELAY_PORT" "127.0.0.1:$BACKEND_PORT" &
PIDS+=($!); RELAY_PID=$!

mkdir -p "$WORK/app"
cat > "$WORK/app/baton.toml" <<CONF
[app]
name = "bench"
[proxy]
listen = "127.0.0.1:$BATON_PORT"
[daemon]
worker_threads = 1
$(backend_web)
CONF
# In the foreground of this script's session, as nginx is: `up --detach`
# starts a session of its own, and with the kernel's scheduler autogroups
# (sched_autogroup_enabled) Baton and its backend would then share one
# group's CPU while nginx, its backend and wrk share another's.
"$BATON" up -c "$WORK/app/baton.toml" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/hyper"
sed -e "s/name = \"bench\"/name = \"bench-hyper\"/" -e "s/:$BATON_PORT/:$HYPER_PORT/" "$WORK/app/baton.toml" > "$WORK/hyper/baton.toml"
BATON_HTTP1=hyper "$BATON" up -c "$WORK/hyper/baton.toml" >"$WORK/hyper-daemon.log" 2>&1 &
PIDS+=($!)

wait_port() { for _ in $(seq 1 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.02; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$BACKEND_PORT"; wait_port "$NGINX_PORT"; wait_port "$RELAY_PORT"
for port in "$BATON_PORT" "$HYPER_PORT"; do
  for _ in $(seq 1 500); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.02; done
done

DAEMON_PID=$("$BATON" status --json -c "$WORK/app/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kb "$DAEMON_PID")
# The process whose CPU time each target costs: for direct the backend's
# worker, otherwise the proxy's (nginx's one worker, Baton's daemon with all
# its threads).
HYPER_PID=$("$BATON" status --json -c "$WORK/hyper/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
declare -A CPU_PID=([direct]=$(worker_of "$BACKEND_MASTER") [relay]=$RELAY_PID [nginx]=$(worker_of "$NGINX_MASTER") [baton]=$DAEMON_PID [hyper]=$HYPER_PID)

TARGETS="direct relay nginx baton hyper"
declare -A RPS P50 P99 CPU PORT=([direct]=$BACKEND_PORT [relay]=$RELAY_PORT [nginx]=$NGINX_PORT [baton]=$BATON_PORT [hyper]=$HYPER_PORT)
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
# In how many rounds the first of two targets served more requests.
won() { python3 -c 'import sys
a, b = (list(map(float, x.split())) for x in sys.argv[1:3])
print(f"{sum(x >= y for x, y in zip(a, b))} of {len(a)}")' "$1" "$2"; }
run() { # one wrk run; appends to the sample lists
  local name=$1 port=${PORT[$1]}
  local before; before=$(cpu_ticks "${CPU_PID[$name]}")
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
  record_wrk "$name" $(($(cpu_ticks "${CPU_PID[$name]}") - before)) "$out"
}
for n in $TARGETS; do wrk -t"$THREADS" -c"$CONNS" -d3s "http://127.0.0.1:${PORT[$n]}/" >/dev/null 2>&1; done # warm-up
# Rounds interleave the targets so that machine noise hits them alike; the
# table shows each target's median.
for _ in $(seq 1 "$ROUNDS"); do for n in $TARGETS; do run "$n"; done; done
# Each round's own Baton/nginx ratio, before the lists become medians: how
# far apart rounds land shows how much one run can be trusted.
PER_ROUND="$(python3 -c 'import sys
b, n = (list(map(float, a.split())) for a in sys.argv[1:3])
r = sorted(x / y for x, y in zip(b, n))
print(f"{r[0]:.2f}-{r[-1]:.2f}")' "${RPS[baton]}" "${RPS[nginx]}"), at least 1.00 in $(won "${RPS[baton]}" "${RPS[nginx]}") rounds"
RPS_RATIO=$(paired "${RPS[baton]}" "${RPS[nginx]}"); P99_RATIO=$(paired "${P99[baton]}" "${P99[nginx]}")
CPU_RATIO=$(paired "${CPU[baton]}" "${CPU[nginx]}")
OWN_RPS=$(paired "${RPS[baton]}" "${RPS[hyper]}"); OWN_P99=$(paired "${P99[baton]}" "${P99[hyper]}")
OWN_CPU=$(paired "${CPU[baton]}" "${CPU[hyper]}"); OWN_WON=$(won "${RPS[baton]}" "${RPS[hyper]}")
HYPER_RPS=$(paired "${RPS[hyper]}" "${RPS[nginx]}")
for n in $TARGETS; do
  RPS[$n]=$(echo "${RPS[$n]}" | median); P50[$n]=$(echo "${P50[$n]}" | median); P99[$n]=$(echo "${P99[$n]}" | median)
  CPU[$n]=$(echo "${CPU[$n]}" | median)
done
LOADED_RSS=$(rss_kb "$DAEMON_PID")

echo
AUTOGROUP=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo "?")
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), scheduler autogroups $AUTOGROUP (all targets in one session)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds"
printf '| %-7s | %12s | %9s | %9s | %13s |\n' target "requests/s" "p50 ms" "p99 ms" "CPU us/req"
printf '|%s|%s|%s|%s|%s|\n' ---------- -------------- ----------- ----------- ---------------
for n in $TARGETS; do
  printf '| %-7s | %12s | %9s | %9s | %13s |\n' "$n" "${RPS[$n]}" "${P50[$n]}" "${P99[$n]}" "${CPU[$n]}"
done
echo
echo "Baton/nginx, the median of each round's own ratio: requests/s $RPS_RATIO   p99 $P99_RATIO   CPU time per request $CPU_RATIO"
echo "Baton/nginx requests/s round by round: $PER_ROUND"
echo "Baton's own HTTP/1.1 server / hyper's (baton/hyper): requests/s $OWN_RPS (ahead in $OWN_WON rounds)   p99 $OWN_P99   CPU time per request $OWN_CPU"
echo "Baton through hyper only / nginx: requests/s $HYPER_RPS"
echo "Baton/relay requests/s: $(ratio "${RPS[baton]}" "${RPS[relay]}")   nginx/relay: $(ratio "${RPS[nginx]}" "${RPS[relay]}")"
echo "Baton/direct requests/s: $(ratio "${RPS[baton]}" "${RPS[direct]}")"
echo "Baton daemon RSS: idle $((IDLE_RSS / 1024)) MB ($IDLE_RSS kB), after load $((LOADED_RSS / 1024)) MB"

# The sweep: the same comparison at other concurrencies, fewer columns.
# At low concurrency the run is bound by latency and wake-ups, at high
# concurrency by CPU.
if [ -n "$SWEEP" ]; then
  echo
  echo "Baton/nginx by concurrency (wrk -t$THREADS -d$SWEEP_DURATION, $ROUNDS interleaved rounds; req/s and p99 are medians, the ratios the median of each round's own ratio):"
  printf '| %-11s | %12s | %12s | %11s | %13s | %13s | %11s | %10s |\n' connections "nginx req/s" "Baton req/s" "Baton/nginx" "nginx p99 ms" "Baton p99 ms" "p99 B/n" "rounds won"
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------- -------------- -------------- ------------- --------------- --------------- ------------- ------------
  for c in $SWEEP; do
    declare -A AT=() TAIL=()
    for _ in $(seq 1 "$ROUNDS"); do for n in nginx baton; do
      out=$(wrk -t"$THREADS" -c"$c" -d"$SWEEP_DURATION" --latency "http://127.0.0.1:${PORT[$n]}/")
      AT[$n]+=" $(echo "$out" | awk '/Requests\/sec/ {print $2}')"
      TAIL[$n]+=" $(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
    done; done
    nginx_rps=$(echo "${AT[nginx]}" | median); baton_rps=$(echo "${AT[baton]}" | median)
    nginx_p99=$(echo "${TAIL[nginx]}" | median); baton_p99=$(echo "${TAIL[baton]}" | median)
    printf '| %-11s | %12s | %12s | %11s | %13s | %13s | %11s | %10s |\n' "$c" "$nginx_rps" "$baton_rps" "$(paired "${AT[baton]}" "${AT[nginx]}")" \
      "$nginx_p99" "$baton_p99" "$(paired "${TAIL[baton]}" "${TAIL[nginx]}")" "$(won "${AT[baton]}" "${AT[nginx]}")"
    unset AT TAIL
  done
fi
