#!/usr/bin/env bash
# Static files: in one run, wrk against
#   nginx  - nginx serving a folder (1 worker, sendfile on, tcp_nopush on)
#   baton  - Baton serving the same folder as an app's [static] (1 worker
#            thread; the app's own instance is not asked)
# for two files: a small hashed chunk (2 KiB, read into the answer's one
# write) and a large one (256 KiB, sent with sendfile). Prints requests/s,
# p50/p99 and the CPU time per request of each server, and baton/nginx.
#
#   bench/static.sh                       # 10 s per run, 3 rounds
#   DURATION=5s ROUNDS=5 bench/static.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}

need_tools
NGINX_PORT=$(free_port); BATON_PORT=$(free_port)

make_workspace

mkdir -p "$WORK/app/public/js"
python3 -c 'import base64, os, sys
for name, size in (("small.1a2b3c4d.js", 2048), ("large.5e6f7a8b.js", 262144)):
    open(os.path.join(sys.argv[1], name), "wb").write(base64.encodebytes(os.urandom(size))[:size])' "$WORK/app/public/js"

# nginx's worker runs as nobody: the folder must be readable to others.
chmod -R a+rX "$WORK"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  include /etc/nginx/mime.types;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /static/ { alias $WORK/app/public/; }
  }
}
CONF
write_backend_template
cat > "$WORK/app/baton.toml" <<CONF
[app]
name = "static"
[proxy]
listen = "127.0.0.1:$BATON_PORT"
[daemon]
worker_threads = 1
[static]
dir = "public"
prefix = "/static"
$(backend_web)
CONF

# Both in this script's session, as wrk is (see bench/proxy.sh on
# scheduler autogroups).
nginx -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx.err" &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
"$BATON" up -c "$WORK/app/baton.toml" >"$WORK/baton.log" 2>&1 &
BATON_PID=$!
PIDS+=("$BATON_PID")
for port in "$NGINX_PORT" "$BATON_PORT"; do
  for _ in $(seq 1 3000); do
    curl -sf "http://127.0.0.1:$port/static/js/small.1a2b3c4d.js" >/dev/null && break
    sleep 0.02
  done
done
for f in small.1a2b3c4d.js large.5e6f7a8b.js; do
  for port in "$NGINX_PORT" "$BATON_PORT"; do
    curl -sf "http://127.0.0.1:$port/static/js/$f" | cmp -s - "$WORK/app/public/js/$f" \
      || { echo "port $port does not serve $f whole" >&2; curl -si "http://127.0.0.1:$port/static/js/$f" | head -20 >&2; cat "$WORK"/*.err "$WORK"/*.log >&2; exit 1; }
  done
done
declare -A CPU_PID=([nginx]=$(worker_of "$NGINX_MASTER") [baton]=$BATON_PID)
declare -A PORT=([nginx]=$NGINX_PORT [baton]=$BATON_PORT)
declare -A FILE=([small]=small.1a2b3c4d.js [large]=large.5e6f7a8b.js)

declare -A RPS P50 P99 CPU
run() {
  wrk_round "$1-$2" "http://127.0.0.1:${PORT[$1]}/static/js/${FILE[$2]}" "${CPU_PID[$1]}"
}
for n in nginx baton; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$n]}/static/js/small.1a2b3c4d.js" >/dev/null; done
for _ in $(seq 1 "$ROUNDS"); do for s in small large; do for n in nginx baton; do run "$n" "$s"; done; done; done

echo
echo "machine: $(nproc) cores, $(uname -sr); wrk -t1 -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds; 2 KiB and 256 KiB files"
echo "| server | file | requests/s | p50 ms | p99 ms | CPU us/req |"
echo "|---|---|---|---|---|---|"
for s in small large; do for n in nginx baton; do
  k="$n-$s"
  printf "| %s | %s | %s | %s | %s | %s |\n" "$n" "$s" "$(echo "${RPS[$k]}" | median)" "$(echo "${P50[$k]}" | median)" \
    "$(echo "${P99[$k]}" | median)" "$(echo "${CPU[$k]}" | median)"
done; done
echo
for s in small large; do
  echo "baton/nginx, $s file, the median of each round's own ratio: requests/s $(paired "${RPS[baton-$s]}" "${RPS[nginx-$s]}")   p99 $(paired "${P99[baton-$s]}" "${P99[nginx-$s]}")   CPU time per request $(paired "${CPU[baton-$s]}" "${CPU[nginx-$s]}")"
done
