# Shared by the bench scripts: build Baton, make a work folder that is
# cleaned up with the daemon, and pick free ports.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release -q)
BATON="$ROOT/target/release/baton"
WORK=$(mktemp -d)
trap '"$BATON" stop -c "$WORK/baton.toml" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
. "$ROOT/bench/measure.sh" # free_port
