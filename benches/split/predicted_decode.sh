#!/usr/bin/env bash
# Split decoding, predicted against measured (issue 18, point 3): profiles the device and the
# server, starts the server, and runs `server/examples/predicted_decode` through the link shaper.
#
# One 2-vCPU machine stands in for two: the device is pinned to CPU 0 and the server to CPU 1
# (one thread each), so neither computes on the other's core, as on two machines; both
# profiles are measured here, minutes before the table, on the same cores.
#
#   benches/split/predicted_decode.sh [MODEL] [OUT_DIR]
# Environment: LINKS="1:2,100:20" (Mbit/s:round-trip ms), KS="1,15", ROUNDS=3 as the example
# takes them; DEV_CPU=0, SRV_CPU=1 and SRV_THREADS=1 place the two sides (SRV_CPU=0-1
# SRV_THREADS=2: a server twice as fast, sharing the device's core while the device waits).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-$HOME/.cache/edgecut/models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${2:-target/predicted_decode}
DEV_CPU=${DEV_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
SRV_THREADS=${SRV_THREADS:-1}
PORT=${PORT:-7094}
mkdir -p "$OUT"
cargo build --release -q -p edgecut-cli -p edgecut-server --example predicted_decode
bin=target/release
taskset -c "$DEV_CPU" $bin/edgecut profile -m "$MODEL" --threads 1 --seq 1,16,32,64 -o "$OUT/device.json"
taskset -c "$SRV_CPU" $bin/edgecut profile -m "$MODEL" --threads "$SRV_THREADS" --seq 1,16,32,64 -o "$OUT/server.json"
taskset -c "$SRV_CPU" $bin/edgecut serve -m "$MODEL" --threads "$SRV_THREADS" --listen "127.0.0.1:$PORT" \
    >"$OUT/server.log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
lscpu | grep -E 'Model name|^CPU\(s\)' | sed 's/  */ /g'
taskset -c "$DEV_CPU" $bin/examples/predicted_decode "$MODEL" "127.0.0.1:$PORT" \
    "$OUT/device.json" "$OUT/server.json" | tee "$OUT/table.md"
