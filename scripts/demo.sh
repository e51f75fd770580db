#!/usr/bin/env bash
# The main job on a fresh machine: fetch the real MiniLM checkpoint, convert it to edgecut's
# INT8 GGUF and inspect the result.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="$(scripts/fetch-models.sh)"
cargo build --release --quiet -p edgecut-cli
EDGECUT=target/release/edgecut
OUT="$MODELS/all-MiniLM-L6-v2.q8_0.gguf"
$EDGECUT convert "$MODELS/all-MiniLM-L6-v2" -o "$OUT"
$EDGECUT inspect "$OUT" | head -n 30
