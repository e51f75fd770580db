#!/usr/bin/env bash
# Side by side on this machine, same model files, same run: edgecut's OpenAI-compatible server
# (`edgecut serve --http`) and llama.cpp's (llama-cpp-python's `llama_cpp.server`), each on 2
# threads, under the same load from server/examples/load_api.rs: embedding requests/s (MiniLM,
# 1 and 16 clients) and chat tokens/s (SmolLM2, 1 and 8 clients). Rounds alternate the servers;
# every round's figures are printed. Then edgecut alone under the mixed load of issue 20 (64
# clients x 100 embeddings and 8 clients x 5 chats at once), with its mean embedding batch.
#
#   benches/compare/compare_api.sh [ROUNDS]
#
# With EDGECUT_BEFORE=/path/to/an/older/edgecut, each round also runs that build under the same
# load (before/after figures of a change from one run; the mixed load runs both too).
#
# Needs a release build (cargo build --release -p edgecut-cli && cargo build --release -p
# edgecut-server --example load_api), the models (scripts/fetch-models.sh), and
# llama-cpp-python[server] 0.3.36 built from source in $EDGECUT_PEER_VENV (default
# ~/.cache/edgecut/peervenv; docs/benchmarks.md has the command). The MiniLM file both serve is
# llama.cpp's own Q8_0 quantization of edgecut's f32 conversion (llama.cpp cannot run
# edgecut's Q8_0 file, whose embedding tables are Q8_0 too), made here if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${1:-2}"
MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
PEER="${EDGECUT_PEER_VENV:-$HOME/.cache/edgecut/peervenv}/bin/python"
BIN=target/release/edgecut
LOAD=target/release/examples/load_api
GEN="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
WORK="$(mktemp -d)"
EMB="$MODELS/minilm-llamacpp-q8_0.gguf"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -f "$EMB" ]; then
    "$BIN" convert "$MODELS/all-MiniLM-L6-v2" -o "$WORK/minilm-f32.gguf" --type f32 >&2
    "$PEER" - "$WORK/minilm-f32.gguf" "$EMB" <<'PY'
import ctypes, sys
import llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
p.nthread = 2
assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0
PY
fi

. benches/compare/serve_lib.sh

edgecut_up() {
    EP=$(free_port)
    "${1:-$BIN}" serve --http "127.0.0.1:$EP" --device cpu --threads 2 -m "$EMB" -m "$GEN" \
        2>"$WORK/edgecut.log" &
    EPID=$!; PIDS+=("$EPID")
    wait_up "http://127.0.0.1:$EP/health"
}
peer_up() {
    LE=$(free_port); LG=$(free_port)
    "$PEER" -m llama_cpp.server --model "$EMB" --embedding true --n_threads 2 \
        --n_threads_batch 2 --port "$LE" 2>"$WORK/peer-emb.log" >&2 &
    PE=$!; PIDS+=("$PE")
    # Requests queue rather than interrupt the one running (the default drops it).
    "$PEER" -m llama_cpp.server --model "$GEN" --n_threads 2 --n_threads_batch 2 \
        --n_ctx 2048 --interrupt_requests false --port "$LG" 2>"$WORK/peer-gen.log" >&2 &
    PG=$!; PIDS+=("$PG")
    wait_up "http://127.0.0.1:$LE/v1/models"
    wait_up "http://127.0.0.1:$LG/v1/models"
}

EN=$(basename "$EMB" .gguf); GN=$(basename "$GEN" .gguf)
lscpu | grep -E '^(Model name|CPU\(s\))'
for r in $(seq "$ROUNDS"); do
    echo "== round $r: edgecut"
    edgecut_up
    "$LOAD" "http://127.0.0.1:$EP" embed "$EN" 1 200
    "$LOAD" "http://127.0.0.1:$EP" embed "$EN" 16 50
    "$LOAD" "http://127.0.0.1:$EP" chat "$GN" 1 5 64
    "$LOAD" "http://127.0.0.1:$EP" chat "$GN" 8 5 64
    kill "$EPID"; wait "$EPID" 2>/dev/null || true
    if [ -n "${EDGECUT_BEFORE:-}" ]; then
        echo "== round $r: edgecut before ($EDGECUT_BEFORE)"
        edgecut_up "$EDGECUT_BEFORE"
        "$LOAD" "http://127.0.0.1:$EP" embed "$EN" 1 200
        "$LOAD" "http://127.0.0.1:$EP" embed "$EN" 16 50
        "$LOAD" "http://127.0.0.1:$EP" chat "$GN" 1 5 64
        "$LOAD" "http://127.0.0.1:$EP" chat "$GN" 8 5 64
        kill "$EPID"; wait "$EPID" 2>/dev/null || true
    fi
    echo "== round $r: llama.cpp (llama-cpp-python server)"
    peer_up
    "$LOAD" "http://127.0.0.1:$LE" embed "$EN" 1 200
    "$LOAD" "http://127.0.0.1:$LE" embed "$EN" 16 50
    "$LOAD" "http://127.0.0.1:$LG" chat "$GN" 1 5 64
    "$LOAD" "http://127.0.0.1:$LG" chat "$GN" 8 5 64
    kill "$PE" "$PG"; wait "$PE" "$PG" 2>/dev/null || true
done

mixed() {
    echo "== $2 under the mixed load (64 x 100 embeddings, 8 x 5 chats at once)"
    edgecut_up "$1"
    "$LOAD" "http://127.0.0.1:$EP" mixed "$EN" "$GN"
    curl -s "http://127.0.0.1:$EP/metrics" | awk -v e="$EN" -v g="$GN" '
    $1 == "edgecut_batch_size_sum{model=\"" e "\"}" { es = $2 }
    $1 == "edgecut_batch_size_count{model=\"" e "\"}" { ec = $2 }
    $1 == "edgecut_batch_size_sum{model=\"" g "\"}" { gs = $2 }
    $1 == "edgecut_batch_size_count{model=\"" g "\"}" { gc = $2 }
    END { printf "mean embedding batch %.2f inputs (%d batches); mean decode batch %.2f turns\n", es / ec, ec, gs / gc }'
    kill "$EPID"; wait "$EPID" 2>/dev/null || true
}
mixed "$BIN" edgecut
if [ -n "${EDGECUT_BEFORE:-}" ]; then mixed "$EDGECUT_BEFORE" "edgecut before"; fi
