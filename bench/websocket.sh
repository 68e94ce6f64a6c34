#!/usr/bin/env bash
# Memory per idle WebSocket connection through Baton: the daemon's RSS
# before and while CONNS idle connections are open.
#
#   bench/websocket.sh          # 2000 connections
set -euo pipefail
CONNS=${CONNS:-2000}
. "$(dirname "$0")/lib.sh"
cp "$ROOT/tests/apps/server.js" "$WORK/"
PORT=$(free_port)
cat > "$WORK/baton.toml" <<CONF
[app]
name = "bench-ws"
[proxy]
listen = "127.0.0.1:$PORT"
[web]
command = "node server.js"
[web.readiness]
kind = "http"
path = "/health"
CONF
ulimit -n 65536 2>/dev/null || true
"$BATON" up --detach -c "$WORK/baton.toml" >/dev/null
PID=$("$BATON" status --json -c "$WORK/baton.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
BEFORE=$(rss)
# Idle: one message at the start, the next one an hour later.
"$BATON" probe "ws://127.0.0.1:$PORT/ws" --concurrency "$CONNS" --duration 8s --interval 1h --json > "$WORK/ws.json" &
PROBE=$!
for _ in $(seq 1 400); do
  open=$("$BATON" status --json -c "$WORK/baton.toml" | python3 -c 'import json,sys; print(sum(i["connections"] for i in json.load(sys.stdin)["instances"]))')
  [ "$open" -ge "$CONNS" ] && break
  sleep 0.02
done
DURING=$(rss)
wait "$PROBE" || true
echo
echo "Baton RSS: ${BEFORE} kB idle, ${DURING} kB with $open idle WebSocket connections"
python3 -c "print(f'per connection: {($DURING - $BEFORE) * 1024 / max($open, 1) / 1024:.1f} kB')"
