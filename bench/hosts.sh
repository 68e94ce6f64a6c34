#!/usr/bin/env bash
# Host routing benchmark: in one run, wrk against
#   one   - Baton serving one app (a baton.toml with [app]), every host
#   many  - Baton serving a server of HOSTS apps (app1.test … appN.test,
#           each its own app with its own instance), wrk asking for one of
#           them by Host
# each app's instance a fast backend (nginx, fixed body, 1 worker), Baton
# with 1 worker thread. Prints requests/s, p50/p99 and the CPU time per
# request of each daemon, and many/one.
#
#   bench/hosts.sh                     # 100 apps, 10 s per run, 3 rounds
#   HOSTS=20 DURATION=5s ROUNDS=5 bench/hosts.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
HOSTS=${HOSTS:-100}

need_tools
ONE_PORT=$(free_port); MANY_PORT=$(free_port)

make_workspace

write_backend_template

mkdir -p "$WORK/one"
{ printf '[app]\nname = "one"\n[proxy]\nlisten = "127.0.0.1:%s"\n[daemon]\nworker_threads = 1\n' "$ONE_PORT"; backend_web; } > "$WORK/one/baton.toml"

mkdir -p "$WORK/many"
apps=""
for i in $(seq 1 "$HOSTS"); do
  mkdir -p "$WORK/many/app$i"
  { printf '[app]\nname = "app%s"\nhosts = ["app%s.test"]\n' "$i" "$i"; backend_web; } > "$WORK/many/app$i/baton.toml"
  apps+="\"app$i/baton.toml\", "
done
printf '[server]\napps = [%s]\n[proxy]\nlisten = "127.0.0.1:%s"\n[daemon]\nworker_threads = 1\n' "$apps" "$MANY_PORT" > "$WORK/many/baton.toml"

# In this script's session, as the backends are (see bench/proxy.sh on
# scheduler autogroups).
"$BATON" up -c "$WORK/one/baton.toml" >"$WORK/one.log" 2>&1 &
PIDS+=($!)
"$BATON" up -c "$WORK/many/baton.toml" >"$WORK/many.log" 2>&1 &
PIDS+=($!)
HOST="app$(( (HOSTS + 1) / 2 )).test"
for port in "$ONE_PORT" "$MANY_PORT"; do
  for _ in $(seq 1 3000); do
    curl -sf -H "Host: $HOST" "http://127.0.0.1:$port/" >/dev/null && break
    sleep 0.02
  done
done
pid_of() { "$BATON" status --json -c "$1" --app "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
declare -A CPU_PID=([one]=$(pid_of "$WORK/one/baton.toml" one) [many]=$(pid_of "$WORK/many/baton.toml" app1))
declare -A PORT=([one]=$ONE_PORT [many]=$MANY_PORT)

declare -A RPS P50 P99 CPU
run() {
  wrk_round "$1" "http://127.0.0.1:${PORT[$1]}/" "${CPU_PID[$1]}" -H "Host: $HOST"
}
for n in one many; do wrk -t1 -c"$CONNS" -d2s -H "Host: $HOST" "http://127.0.0.1:${PORT[$n]}/" >/dev/null; done
for _ in $(seq 1 "$ROUNDS"); do for n in one many; do run "$n"; done; done

echo
echo "machine: $(nproc) cores, $(uname -sr); wrk -t1 -c$CONNS -d$DURATION -H 'Host: $HOST', median of $ROUNDS interleaved rounds; $HOSTS apps in 'many'"
echo "| target | requests/s | p50 ms | p99 ms | CPU us/req |"
echo "|---|---|---|---|---|"
for n in one many; do
  printf "| %s | %s | %s | %s | %s |\n" "$n" "$(echo "${RPS[$n]}" | median)" "$(echo "${P50[$n]}" | median)" \
    "$(echo "${P99[$n]}" | median)" "$(echo "${CPU[$n]}" | median)"
done
echo
echo "many/one, the median of each round's own ratio: requests/s $(paired "${RPS[many]}" "${RPS[one]}" 3)   p99 $(paired "${P99[many]}" "${P99[one]}" 3)   CPU time per request $(paired "${CPU[many]}" "${CPU[one]}" 3)"
