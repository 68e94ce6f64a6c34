#!/usr/bin/env bash
# Deploy overhead: the time from `baton deploy` to "switched", minus the
# app's own start time (spawn to accepting connections, measured on its
# own), over ROUNDS deploys. What is left is Baton's part: spawning, the
# readiness checks (every 5 ms at first, slowing to the 50 ms interval)
# and the swap.
#
#   bench/deploy.sh            # 7 rounds
set -euo pipefail
ROUNDS=${ROUNDS:-7}
. "$(dirname "$0")/lib.sh"
cp "$ROOT/examples/hello/server.js" "$WORK/"
PORT=$(free_port)
cat > "$WORK/baton.toml" <<CONF
[app]
name = "bench-deploy"
[proxy]
listen = "127.0.0.1:$PORT"
[web]
command = "node server.js"
instances = 1
[web.readiness]
kind = "http"
path = "/health"
interval = "50ms"
CONF

# The app's own start time: spawn node, poll the port every 1 ms.
APP_MS=$(python3 - "$WORK/server.js" "$ROUNDS" <<'PY'
import os, socket, subprocess, sys, time, statistics
script, rounds = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(rounds):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    t0 = time.monotonic()
    p = subprocess.Popen(["node", script], env={**os.environ, "PORT": str(port)}, stdout=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close(); break
        except OSError:
            time.sleep(0.001)
    times.append((time.monotonic() - t0) * 1000)
    p.kill(); p.wait()
print(round(statistics.median(times), 1))
PY
)

"$BATON" up --detach -c "$WORK/baton.toml" >/dev/null
SWITCH=()
for _ in $(seq 1 "$ROUNDS"); do
  ms=$("$BATON" deploy --json -c "$WORK/baton.toml" | python3 -c 'import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e["event"]=="done": print(e["switch_ms"])')
  SWITCH+=("$ms")
done
MED=$(printf '%s\n' "${SWITCH[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "deploy to switched (median of $ROUNDS): ${MED} ms; the app's own start: ${APP_MS} ms"
python3 -c "print(f'Baton overhead: {float($MED) - float($APP_MS):.1f} ms (readiness checks: from 5 ms apart up to the 50 ms interval)')"
