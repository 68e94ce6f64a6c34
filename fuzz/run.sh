#!/usr/bin/env bash
# Fuzzes the HTTP/1 parsers (tests/e2e/fuzz.rs) in a release build, each target
# for SECONDS (default 900) one after another, and prints how many inputs
# each ran. An input that fails is written to fuzz/corpus/<target>/ and
# the run stops; commit it: `cargo test` replays the corpus.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#   targets: request_head answer framing differential normalise (default: all)
#   BATON_FUZZ_SEED=N repeats a run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-900}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(request_head answer framing differential normalise)
fi
for target in "${targets[@]}"; do
  BATON_FUZZ_SEED="${BATON_FUZZ_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}" \
  BATON_FUZZ_SECONDS="$seconds" cargo test --release --test e2e "fuzz::fuzz_$target" -- --exact --nocapture 2>&1 |
    grep -E '^fuzz |fails on|panicked|test result'
done
