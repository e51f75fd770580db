#!/usr/bin/env bash
# Every fuzz target of fuzz/ for a short fixed time (FUZZ_SECONDS each, 15 by default), with a
# fixed seed, under AddressSanitizer as `cargo fuzz` builds it: called by scripts/test.sh, so a
# parser change that panics on hostile input fails CI. Long runs are the README's commands.
# Installs cargo-fuzz if it is missing (the nightly flags come from RUSTC_BOOTSTRAP=1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-15}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
    echo "fuzz-smoke: $t for $SECONDS_EACH s" >&2
    # Inputs found along the way stay in a scratch corpus, not in the tree.
    corpus="$(mktemp -d)"
    rc=0
    cargo fuzz run "$t" "$corpus" -- -max_total_time="$SECONDS_EACH" -seed=1 \
        -print_final_stats=1 >"$corpus.log" 2>&1 || rc=$?
    grep -E "^stat::number_of_executed_units" "$corpus.log" >&2 || true
    if [ "$rc" != 0 ]; then
        tail -40 "$corpus.log" >&2
        echo "fuzz-smoke: $t failed" >&2
        exit 1
    fi
    rm -rf "$corpus" "$corpus.log"
done
