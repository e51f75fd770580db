#!/usr/bin/env bash
# Two edgecut builds under the same load, alternating (A B, B A, ...), one model served: for
# before/after claims on a machine whose speed drifts between runs more than the difference.
#
#   EDGECUT_BEFORE=/path/to/older/edgecut benches/compare/pair_load.sh MODE [PAIRS]
#
# MODE: chat8 | chat1 (SmolLM2 Q4_1, `load_api chat N 5 64`), embed16 (MiniLM Q8_0, `load_api
# embed 16 100`), mixed (both models, `load_api mixed`), decode (`edgecut serve --listen` with a
# token, `load_decode` 16 devices x 64 tokens at cut 1). A is target/release/edgecut (override
# with EDGECUT_AFTER). Needs the release CLI and examples (cargo build --release -p edgecut-cli;
# cargo build --release -p edgecut-server --example load_api --example load_decode) and the
# models compare_api.sh uses (it writes the MiniLM Q8_0 file on its first run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
MODE="${1:?MODE: chat8 | chat1 | embed16 | mixed | decode}"
PAIRS="${2:-3}"
A="${EDGECUT_AFTER:-target/release/edgecut}"
B="${EDGECUT_BEFORE:?EDGECUT_BEFORE: the older edgecut binary}"
MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
GEN="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
EMB="$MODELS/minilm-llamacpp-q8_0.gguf"
LOAD=target/release/examples/load_api
WORK="$(mktemp -d)"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
. benches/compare/serve_lib.sh
batch() { curl -s "$1/metrics" | awk '/^edgecut_batch_size_sum/ {s += $2} /^edgecut_batch_size_count/ {c += $2} END {if (c) printf "mean batch %.2f", s / c}'; }
run() {
    local bin="$1" name="$2" port out
    port=$(free_port)
    if [ "$MODE" = decode ]; then
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"
        local mport; mport=$(free_port)
        "$bin" serve -m "$GEN" --listen "127.0.0.1:$port" --metrics "127.0.0.1:$mport" \
            --token-file "$WORK/token" --max-sessions 16 --threads 2 2>"$WORK/$name.log" &
        PID=$!
        wait_up "http://127.0.0.1:$mport/metrics"
        out=$(EDGECUT_TOKEN=$(cat "$WORK/token") target/release/examples/load_decode "$GEN" \
            "127.0.0.1:$port" 16 64 1 "127.0.0.1:$mport" 2>&1 | tr '\n' ' ')
    else
        local models=(-m "$GEN")
        [ "$MODE" = embed16 ] && models=(-m "$EMB")
        [ "$MODE" = mixed ] && models=(-m "$EMB" -m "$GEN")
        "$bin" serve --http "127.0.0.1:$port" --device cpu --threads 2 "${models[@]}" \
            2>"$WORK/$name.log" &
        PID=$!
        local url="http://127.0.0.1:$port"
        wait_up "$url/health"
        local gn en
        gn=$(basename "$GEN" .gguf); en=$(basename "$EMB" .gguf)
        case "$MODE" in
            chat8) out=$("$LOAD" "$url" chat "$gn" 8 5 64 | tail -1) ;;
            chat1) out=$("$LOAD" "$url" chat "$gn" 1 5 64 | tail -1) ;;
            embed16) out=$("$LOAD" "$url" embed "$en" 16 100 | tail -1) ;;
            mixed) out=$("$LOAD" "$url" mixed "$en" "$gn" | grep -E 'req/s' | tr '\n' ' ') ;;
            *) echo "unknown MODE $MODE" >&2; exit 2 ;;
        esac
        out="$out | $(batch "$url")"
    fi
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    echo "$name: $out"
}
lscpu | grep -E '^(Model name|CPU\(s\))'
for i in $(seq "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then run "$A" after; run "$B" before; else run "$B" before; run "$A" after; fi
done
