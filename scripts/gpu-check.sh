#!/usr/bin/env bash
# The GPU checks on a machine with an NVIDIA GPU and no Rust toolchain (the device tool): runs
# test binaries built here with the GPU features and carried over in target/gpucheck/:
#   scripts/gpu-check.sh build   (here: builds and strips them into target/gpucheck/)
#   scripts/gpu-check.sh run     (there: runs the contract suite and the kernel conformance
#                                  suite on CUDA, and on wgpu when a Vulkan adapter is present)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=target/gpucheck
case "${1:-run}" in
build)
    mkdir -p "$DIR"
    for t in contract gpu_conformance; do
        exe=$(cargo test --release -p edgecut-backends --features vulkan,cuda --test "$t" \
            --no-run --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])' | tail -1)
        # Compressed: the device tool carries at most 64 MiB with the working tree.
        strip -o "$DIR/$t" "$exe" && gzip -9f "$DIR/$t"
    done
    ls -l "$DIR"
    ;;
run)
    for t in contract gpu_conformance; do
        [ -f "$DIR/$t.gz" ] && gunzip -c "$DIR/$t.gz" > "/tmp/$t" && chmod +x "/tmp/$t"
    done
    DIR=/tmp
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
    status=0
    echo "== contract suite, CUDA" && "$DIR/contract" cuda --nocapture || status=1
    echo "== kernel conformance, CUDA" && "$DIR/gpu_conformance" cuda --nocapture || status=1
    echo "== contract suite, wgpu (a Vulkan adapter if present)"
    "$DIR/contract" wgpu --nocapture || echo "(no usable wgpu adapter here)"
    exit $status
    ;;
esac
