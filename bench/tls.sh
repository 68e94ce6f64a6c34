#!/usr/bin/env bash
# HTTPS benchmark: in one run, wrk over TLS against
#   nginx - nginx terminating TLS (1 worker, session cache, keepalive
#           upstream) in front of a fast backend (nginx, fixed body)
#   baton - Baton (1 worker thread) terminating TLS in front of an identical
#           backend
# both with the same ECDSA P-256 certificate, in two modes:
#   keepalive - 32 connections kept open: the cost of TLS records
#   handshake - every request on a new connection (Connection: close): the
#               cost of full TLS handshakes
# and two ways of sharing the machine's cores:
#   shared  - every process on any core, as the scheduler likes
#   pinned  - the proxy alone on CPU 1; wrk and the backends on CPU 0 (the
#             proxy's work is then measured apart from the load generator's)
# Prints requests/s, p50/p99 and the CPU time each request costs the proxy
# process, the negotiated protocol and cipher of each, and Baton/nginx.
#
#   bench/tls.sh                    # 10 s per run, 3 interleaved rounds
#   DURATION=5s ROUNDS=5 bench/tls.sh
#   MODES=handshake bench/tls.sh    # one mode only
#   CORES=pinned bench/tls.sh       # one way of sharing only
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
MODES=${MODES:-keepalive handshake}
CORES=${CORES:-shared pinned}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk openssl >/dev/null
fi
(cd "$ROOT" && cargo build --release -q --bin baton)
BATON="$ROOT/target/release/baton"
BACKEND_PORT=$(free_port); NGINX_PORT=$(free_port); BATON_HTTP=$(free_port); BATON_PORT=$(free_port)

make_workspace

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 600 "$WORK/key.pem"

write_backend_template
backend_conf "$BACKEND_PORT" > "$WORK/backend.conf"
nginx -c "$WORK/backend.conf" -p "$WORK" 2>"$WORK/backend.err" &
PIDS+=($!)

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
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
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

mkdir -p "$WORK/app"
cat > "$WORK/app/baton.toml" <<CONF
[app]
name = "bench-tls"
[proxy]
listen = "127.0.0.1:$BATON_HTTP"
https_listen = "127.0.0.1:$BATON_PORT"
[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[daemon]
worker_threads = 1
$(backend_web)
CONF
# In this script's session, as nginx is (see bench/proxy.sh on autogroups).
"$BATON" up -c "$WORK/app/baton.toml" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)

for port in "$NGINX_PORT" "$BATON_PORT"; do
  for _ in $(seq 1 500); do
    curl -sfk --resolve "bench.test:$port:127.0.0.1" "https://bench.test:$port/" >/dev/null && break
    sleep 0.02
  done
done
DAEMON_PID=$("$BATON" status --json -c "$WORK/app/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
declare -A CPU_PID=([nginx]=$(worker_of "$NGINX_MASTER") [baton]=$DAEMON_PID)
declare -A PORT=([nginx]=$NGINX_PORT [baton]=$BATON_PORT)

# Every process of each side, by the pids that lead them (a process and
# its children: nginx's workers, Baton's instances).
BATON_BACKEND=$("$BATON" status --json -c "$WORK/app/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"][0]["pid"])')
PROXIES="$NGINX_MASTER $DAEMON_PID"
BACKENDS="${PIDS[0]} $BATON_BACKEND"
# Sets the cores of each pid in $2 and of its descendants (every thread).
place() {
  local cpus=$1 pid
  for pid in $2; do
    taskset -a -p -c "$cpus" "$pid" >/dev/null
    place "$cpus" "$(pgrep -P "$pid" | tr '\n' ' ')"
  done
}
share() { # shared | pinned
  if [ "$1" = pinned ]; then
    place 1 "$PROXIES"; place 0 "$BACKENDS"; WRK_CPUS=0
  else
    place 0-$(($(nproc) - 1)) "$PROXIES $BACKENDS"; WRK_CPUS=0-$(($(nproc) - 1))
  fi
}

declare -A RPS P50 P99 CPU WRK
run() { # name mode cores
  local name=$1 mode=$2 key="$1/$2/$3" port=${PORT[$1]}
  local extra=()
  [ "$mode" = handshake ] && extra=(-H "Connection: close")
  local before; before=$(cpu_ticks "${CPU_PID[$name]}")
  local TIMEFORMAT=%U+%S
  { time taskset -c "$WRK_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${extra[@]}" "https://127.0.0.1:$port/" >"$WORK/wrk.out"; } 2>"$WORK/wrk.cpu"
  local out; out=$(cat "$WORK/wrk.out")
  local ticks=$(($(cpu_ticks "${CPU_PID[$name]}") - before))
  # wrk's own share of a core: near 1.0, its one thread is the bottleneck
  # and latency is measured partly in its own queue.
  WRK[$key]+=" $(python3 -c "print(round(($(cat "$WORK/wrk.cpu")) / $(to_ms "$DURATION") * 1000, 2))")"
  record_wrk "$key" "$ticks" "$out"
}
for _ in $(seq 1 "$ROUNDS"); do
  for cores in $CORES; do
    share "$cores"
    for mode in $MODES; do for n in nginx baton; do run "$n" "$mode" "$cores"; done; done
  done
done

negotiated() {
  echo | openssl s_client -connect "127.0.0.1:$1" -servername bench.test 2>/dev/null |
    awk '/^New,/ {print $2, $5}' | head -1
}
echo
echo "machine: $(nproc) cores, $(uname -sr); wrk -t1 -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds"
echo "negotiated (openssl s_client): nginx $(negotiated "$NGINX_PORT"); baton $(negotiated "$BATON_PORT")"
echo "| cores | target | mode | requests/s | p50 ms | p99 ms | CPU us/req | wrk's core |"
echo "|---|---|---|---|---|---|---|---|"
for cores in $CORES; do
  for mode in $MODES; do
    for n in nginx baton; do
      k="$n/$mode/$cores"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n" "$cores" "$n" "$mode" "$(echo "${RPS[$k]}" | median)" \
        "$(echo "${P50[$k]}" | median)" "$(echo "${P99[$k]}" | median)" "$(echo "${CPU[$k]}" | median)" \
        "$(echo "${WRK[$k]}" | median)"
    done
  done
done
echo
for cores in $CORES; do
  for mode in $MODES; do
    b="baton/$mode/$cores" n="nginx/$mode/$cores"
    echo "Baton/nginx $mode $cores, the median of each round's own ratio: requests/s $(paired "${RPS[$b]}" "${RPS[$n]}")   p99 $(paired "${P99[$b]}" "${P99[$n]}")   CPU time per request $(paired "${CPU[$b]}" "${CPU[$n]}")"
  done
done
