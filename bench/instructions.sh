#!/usr/bin/env bash
# Instructions per request of the Baton daemon, counted by callgrind:
# (Ir after N2 requests - Ir after N1) / (N2 - N1), so that start and stop
# cancel out. Deterministic to a fraction of a per cent where CPU time per
# request moves by 10 % between runs; for before/after comparisons of a
# change to the request path (this VM has no PMU for `perf stat`).
#
#   bench/instructions.sh                    # this tree's release binary
#   BATON=/path/to/other/baton bench/instructions.sh
#   MODES="proxied tls redirect" N1=1000 N2=5000 bench/instructions.sh
#
#   proxied:  plain HTTP/1.1 keep-alive through Baton to an nginx instance
#   tls:      the same over HTTPS
#   redirect: plain HTTP answered by Baton itself (308 to HTTPS)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/measure.sh"
MODES=${MODES:-proxied tls redirect}
N1=${N1:-1000}
N2=${N2:-5000}
for tool in valgrind h2load nginx openssl curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install valgrind nghttp2-client nginx openssl curl" >&2; exit 1; }
done
if [ -z "${BATON:-}" ]; then
  (cd "$ROOT" && cargo build --release -q --bin baton)
  BATON="$ROOT/target/release/baton"
fi

# Total Ir of a daemon that served $2 requests in mode $1.
count() {
  local mode=$1 n=$2
  local http https
  http=$(free_port); https=$(free_port)
  WORK=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  chmod 600 "$WORK/key.pem"
  write_backend_template
  mkdir -p "$WORK/app"
  local tls="" url="http://127.0.0.1:$http/"
  if [ "$mode" != proxied ]; then
    tls=$(printf 'https_listen = "127.0.0.1:%s"\n[tls]\ncert = "%s"\nkey = "%s"' "$https" "$WORK/cert.pem" "$WORK/key.pem")
  fi
  [ "$mode" = tls ] && url="https://127.0.0.1:$https/"
  cat > "$WORK/app/baton.toml" <<CONF
[app]
name = "instructions"
[daemon]
worker_threads = 1
[proxy]
listen = "127.0.0.1:$http"
$tls
$(backend_web)
CONF
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$BATON" up -c "$WORK/app/baton.toml" >"$WORK/daemon.log" 2>&1 &
  local vg=$!
  for _ in $(seq 1 1500); do
    curl -sk -o /dev/null "$url" && break
    sleep 0.1
  done
  h2load --h1 -n "$n" -c 4 "$url" >"$WORK/h2load.txt" 2>&1 || true
  grep -q "$n succeeded" "$WORK/h2load.txt" || { cat "$WORK/h2load.txt" >&2; exit 1; }
  "$BATON" stop -c "$WORK/app/baton.toml" >/dev/null 2>&1 || kill "$vg"
  wait "$vg" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out"
  rm -rf "$WORK"
}

echo "baton: $BATON; requests: $N2 - $N1, 4 connections (h2load --h1)"
for mode in $MODES; do
  a=$(count "$mode" "$N1")
  b=$(count "$mode" "$N2")
  echo "$mode: $(( (b - a) / (N2 - N1) )) instructions per request"
done
