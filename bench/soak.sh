#!/usr/bin/env bash
# Soak: DEPLOYS deploys (default 100) of alternating versions, and a kill -9
# of a random instance every KILL_EVERY deploys, each under load from
# `baton probe` (CONC connections, closed loop). Prints the failed and total
# requests, and the daemon's open fds and RSS at the start and at the end.
#
#   bench/soak.sh                         # 100 deploys, watch_after_switch 1s
#   DEPLOYS=20 WATCH=10s bench/soak.sh    # fewer deploys, the default watch
set -euo pipefail
DEPLOYS=${DEPLOYS:-100}
KILL_EVERY=${KILL_EVERY:-5}
CONC=${CONC:-8}
WATCH=${WATCH:-1s}
. "$(dirname "$0")/lib.sh"
cp "$ROOT/tests/apps/server.js" "$WORK/"
PORT=$(free_port)
config() { # $1: the version the next deploy serves
  cat > "$WORK/baton.toml" <<CONF
[app]
name = "soak"
[proxy]
listen = "127.0.0.1:$PORT"
[web]
command = "node server.js"
instances = 2
env = { APP_VERSION = "$1" }
watch_after_switch = "$WATCH"
[web.readiness]
kind = "http"
path = "/health"
CONF
}
config v0
"$BATON" up -c "$WORK/baton.toml" >"$WORK/daemon.log" 2>&1 &
for _ in $(seq 1 500); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.02; done
PID=$("$BATON" status --json -c "$WORK/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
fds() { ls "/proc/$PID/fd" | wc -l; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
FDS0=$(fds); RSS0=$(rss_kb)

FAILED=0; TOTAL=0; DEPLOY_FAILURES=0; KILLS=0
# Load for as long as `$@` runs; adds the probe's counts to the totals.
under_load() {
  "$BATON" probe "http://127.0.0.1:$PORT/" --json --concurrency "$CONC" --duration 1h >"$WORK/probe.json" 2>/dev/null &
  local probe=$!
  "$@" || DEPLOY_FAILURES=$((DEPLOY_FAILURES + 1))
  kill -INT "$probe" 2>/dev/null || true
  wait "$probe" || true
  read -r f t < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["failed"], r["requests"])' "$WORK/probe.json")
  FAILED=$((FAILED + f)); TOTAL=$((TOTAL + t))
}
kill_one() { # kill -9 a random ready instance, then wait until both serve again
  local pids
  pids=$("$BATON" status --json -c "$WORK/baton.toml" | python3 -c 'import json,sys; print(" ".join(str(i["pid"]) for i in json.load(sys.stdin)["instances"] if i["state"]=="ready" and i["pid"]))')
  local victim
  victim=$(echo "$pids" | tr ' ' '\n' | shuf -n1)
  [ -n "$victim" ] && kill -9 "$victim" && KILLS=$((KILLS + 1))
  for _ in $(seq 1 500); do
    [ "$("$BATON" status --json -c "$WORK/baton.toml" | python3 -c 'import json,sys; print(sum(i["state"]=="ready" for i in json.load(sys.stdin)["instances"]))')" = 2 ] && return 0
    sleep 0.02
  done
  return 1
}
for n in $(seq 1 "$DEPLOYS"); do
  config "v$n"
  under_load "$BATON" deploy -c "$WORK/baton.toml" >/dev/null
  if [ $((n % KILL_EVERY)) = 0 ]; then under_load kill_one; fi
  printf '\r%d/%d deploys, %d kills, %d failed of %d requests' "$n" "$DEPLOYS" "$KILLS" "$FAILED" "$TOTAL" >&2
done
echo >&2
FDS1=$(fds); RSS1=$(rss_kb)
echo "deploys: $DEPLOYS ($DEPLOY_FAILURES failed), instances killed: $KILLS"
echo "requests: $TOTAL, failed: $FAILED"
echo "daemon fds: $FDS0 at the start, $FDS1 at the end"
echo "daemon RSS: $((RSS0 / 1024)) MB ($RSS0 kB) at the start, $((RSS1 / 1024)) MB ($RSS1 kB) at the end"
