#!/usr/bin/env bash
# The test command: sets up what the tests need (scripts/setup.sh), then runs the house checks,
# every test of the workspace, the GPU backend's tests (wgpu on lavapipe without a GPU), the
# ARM builds and tests under qemu-user (scripts/test-arm.sh), and a short run of every fuzz
# target (scripts/fuzz-smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says when it starts and how long the run has taken, so a slow CI run shows where;
# the disk's free space too: a full disk kills the linker with SIGBUS, which says nothing of space.
step() {
    echo "test.sh: [${SECONDS}s] [$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ') free] $*" >&2
    "$@"
}
step scripts/setup.sh
step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets --release -- -D warnings
step cargo test --workspace --release
# The Python package (python/): its wheel built on that release build, pytest, stubtest, mypy
# --strict, and the README's example in a clean venv.
step scripts/test-python.sh
# The HTTP API against its contract, docs/openapi.yaml (schemathesis, about a minute).
step scripts/schemathesis.sh target/release/edgecut
# The Helm chart, manifests, recording and adapter rules, and the HPA arithmetic.
step scripts/deploy-validate.sh
# The GPU backend, behind features: its lints, the conformance suite, MiniLM and SmolLM2 end to
# end on wgpu (Vulkan through lavapipe where there is no GPU; two of SmolLM2's ten prompts for
# 16 tokens and one of Gemma 3's for 6, EDGECUT_GPU_LLAMA_ALL=1 for all), a tiny random Llama against the scalar CPU, `edgecut serve
# --device wgpu` answering encoder and decoder splits, and the cuda feature built and failing
# cleanly where there is no CUDA driver.
GPU_FEATURES=edgecut-cli/gpu,edgecut-backends/vulkan,edgecut-backends/cuda,edgecut-models/vulkan,edgecut-models/cuda,edgecut-tests/vulkan,edgecut-tests/cuda
step cargo clippy --workspace --all-targets --release --features "$GPU_FEATURES" -- -D warnings
# Every GPU test from one package selection and feature set: their dependencies (wgpu, CubeCL)
# build once, where a selection per package rebuilt them for each (8 minutes of CI).
GPU_TESTS=(cargo test --release -p edgecut-backends -p edgecut-models -p edgecut-tests -p edgecut-cli
    --features "$GPU_FEATURES")
step "${GPU_TESTS[@]}" --test gpu_conformance --test contract
step "${GPU_TESTS[@]}" --test tiny_models on_wgpu
step "${GPU_TESTS[@]}" --test it gpu_
step "${GPU_TESTS[@]}" --test serve_gpu
step scripts/test-arm.sh
# Each fuzz target for 15 s (parsers of files and frames must not panic on hostile bytes).
step scripts/fuzz-smoke.sh
echo "test.sh: [${SECONDS}s] done" >&2
