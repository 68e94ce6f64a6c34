# Shared by the bench scripts: build Baton, make a work folder that is
# cleaned up with the daemon, and pick free ports.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release -q)
BATON="$ROOT/target/release/baton"
WORK=$(mktemp -d)
trap '"$BATON" stop -c "$WORK/baton.toml" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
