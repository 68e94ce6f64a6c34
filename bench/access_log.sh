#!/usr/bin/env bash
# Access log cost: in one run, wrk against two Batons that differ only in
# `[proxy] access_log` (off, and on in the combined format), each in front
# of the same kind of fast backend (nginx, fixed body, 1 worker), Baton
# with 1 worker thread. Prints requests/s, p50/p99 and the CPU time per
# request of each daemon, and on/off.
#
#   bench/access_log.sh                   # 10 s per run, 3 rounds
#   DURATION=5s ROUNDS=5 bench/access_log.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}

need_tools
OFF_PORT=$(free_port); ON_PORT=$(free_port)

make_workspace

write_backend_template
config() { # name port access-log-line
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/baton.toml" <<CONF
[app]
name = "$1"
[proxy]
listen = "127.0.0.1:$2"
$3
[daemon]
worker_threads = 1
$(backend_web)
CONF
}
config off "$OFF_PORT" ""
config on "$ON_PORT" 'access_log = "access.log"'

# In this script's session, as the backends are (see bench/proxy.sh on
# scheduler autogroups).
declare -A CPU_PID PORT=([off]=$OFF_PORT [on]=$ON_PORT)
for n in off on; do
  "$BATON" up -c "$WORK/$n/baton.toml" >"$WORK/$n.log" 2>&1 &
  CPU_PID[$n]=$!
  PIDS+=($!)
done
for n in off on; do
  for _ in $(seq 1 3000); do
    curl -sf "http://127.0.0.1:${PORT[$n]}/" >/dev/null && break
    sleep 0.02
  done
done
curl -s "http://127.0.0.1:$ON_PORT/warm" >/dev/null
for _ in $(seq 1 500); do [ -s "$WORK/on/access.log" ] && break; sleep 0.02; done
[ -s "$WORK/on/access.log" ] || { echo "the access log stays empty" >&2; exit 1; }

declare -A RPS P50 P99 CPU
run() {
  wrk_round "$1" "http://127.0.0.1:${PORT[$1]}/" "${CPU_PID[$1]}"
}
for n in off on; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$n]}/" >/dev/null; done
for _ in $(seq 1 "$ROUNDS"); do for n in off on; do run "$n"; done; done

lines=$(cat "$WORK"/on/access.log* | wc -l) # rotated at 16 MiB: every generation
echo
echo "machine: $(nproc) cores, $(uname -sr); wrk -t1 -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds; $lines lines logged"
echo "| access log | requests/s | p50 ms | p99 ms | CPU us/req |"
echo "|---|---|---|---|---|"
for n in off on; do
  printf "| %s | %s | %s | %s | %s |\n" "$n" "$(echo "${RPS[$n]}" | median)" "$(echo "${P50[$n]}" | median)" \
    "$(echo "${P99[$n]}" | median)" "$(echo "${CPU[$n]}" | median)"
done
echo
echo "on/off, the median of each round's own ratio: requests/s $(paired "${RPS[on]}" "${RPS[off]}" 3)   p99 $(paired "${P99[on]}" "${P99[off]}" 3)   CPU time per request $(paired "${CPU[on]}" "${CPU[off]}" 3)"
