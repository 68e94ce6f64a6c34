# Shared by the benchmark scripts that put proxies side by side (proxy.sh,
# tls.sh, hosts.sh; lib.sh takes free_port from here): the nginx backend
# behind every proxy, and the arithmetic on wrk's output. Functions only;
# each script keeps its own work folder, targets, rounds and tables.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The backend: nginx answering a fixed body, 1 worker, written to
# $WORK/backend.tmpl; PORT is filled in per copy (`backend_conf PORT >
# file`, or Baton's [web] command, `backend_command`).
write_backend_template() {
  cat > "$WORK/backend.tmpl" <<CONF
worker_processes 1;
daemon off;
pid $WORK/backend-PORT.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server { listen 127.0.0.1:PORT; location / { return 200 "hello from the backend\n"; } }
}
CONF
}
backend_conf() { sed "s/PORT/$1/g" "$WORK/backend.tmpl"; }
# The same backend as a Baton app's [web] command, on the $PORT Baton gives.
backend_command() { echo "sed s/PORT/\$PORT/g $WORK/backend.tmpl > $WORK/b-\$PORT.conf && exec nginx -c $WORK/b-\$PORT.conf -p $WORK"; }

# The [web] section of a Baton that fronts one such backend (ready once it
# listens).
backend_web() {
  cat <<CONF
[web]
command = "$(backend_command)"
[web.readiness]
kind = "tcp"
CONF
}

# The worker process of the nginx master $1.
worker_of() { for _ in $(seq 1 500); do pgrep -P "$1" && return 0; sleep 0.02; done; echo "nginx $1 started no worker" >&2; exit 1; }

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, all threads

to_ms() { # wrk prints 1.23ms, 456.00us, 1.02s
  python3 -c 'import sys
v=sys.argv[1]
for u,f in (("us",0.001),("ms",1),("s",1000)):
    if v.endswith(u) and (u!="s" or not v.endswith(("ms","us"))):
        print(round(float(v[:-len(u)])*f,3)); break' "$1"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Two targets measured in the same rounds: the median of the rounds' own
# ratios, which cancels the noise that hits both halves of a round alike;
# $3 digits (default 2).
paired() { python3 -c 'import sys, statistics
a, b = (list(map(float, x.split())) for x in sys.argv[1:3])
print(f"{statistics.median(x / y for x, y in zip(a, b)):.{sys.argv[3]}f}")' "$1" "$2" "${3:-2}"; }

# nginx and wrk from Debian packages when missing, and Baton's release
# build in $BATON ($ROOT is the repository).
need_tools() {
  if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
  fi
  (cd "$ROOT" && cargo build --release -q --bin baton)
  BATON="$ROOT/target/release/baton"
}

# One wrk run of $DURATION with $CONNS connections against URL ($2), its
# figures recorded under KEY ($1) with the CPU time of the process $3 (see
# record_wrk); extra arguments go to wrk.
wrk_round() {
  local key=$1 url=$2 pid=$3; shift 3
  local before; before=$(cpu_ticks "$pid")
  local out; out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
  record_wrk "$key" $(($(cpu_ticks "$pid") - before)) "$out"
}

# wrk's output ($3), and the CPU ticks ($2) of the process it measured
# during the run: appended to RPS, P50, P99 and CPU (per request) under
# KEY ($1). The caller declares the four associative arrays.
record_wrk() {
  local key=$1 ticks=$2 out=$3
  local requests; requests=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS[$key]+=" $(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  P50[$key]+=" $(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")"
  P99[$key]+=" $(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
  CPU[$key]+=" $(python3 -c "print(round($ticks / $CLK_TCK * 1e6 / max($requests, 1), 2))")"
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "$key: $(echo "$out" | grep 'Non-2xx\|Socket errors')" >&2; fi
}

# A work folder in $WORK, and at exit: every Baton whose baton.toml is one
# level down stopped, the processes in PIDS killed, the folder removed.
make_workspace() {
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup_workspace EXIT
}
cleanup_workspace() {
  for config in "$WORK"/*/baton.toml; do
    [ -f "$config" ] && "$BATON" stop -c "$config" >/dev/null 2>&1 || true
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
