#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with an NVIDIA GPU and no Rust toolchain
# (the device tool): everything it runs is built here and carried in target/gpucheck/.
#
#   scripts/gpu-check.sh build   here: the release CLI with the GPU features, the conformance
#                                test binaries, the random-weights writer (stripped, gzipped),
#                                MiniLM Q8_0, SmolLM2's metadata and the Vulkan loader package
#   scripts/gpu-check.sh run     there (or here): conformance and MiniLM fidelity on CUDA and
#                                Vulkan, MiniLM sentences/s at batch 1/32/128 x 128 tokens,
#                                decoder prefill/decode tokens/s (SmolLM2's shapes, random
#                                weights written there; and the same weights converted there
#                                to llama.cpp's Q4_K_M mix by `edgecut convert --type q4_k_m`),
#                                PyTorch on the same shapes; one table. The contract suite runs
#                                every block type's f32-activation products on each device.
#
# Environment: EDGECUT_PYTHON (a python with torch for the peer; default: the first of
# ~/.cache/edgecut/refvenv and python3 that imports torch), GPUCHECK_DIR (default
# target/gpucheck). A device that is absent is reported as such, not as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${GPUCHECK_DIR:-target/gpucheck}
MODELS=${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}

build() {
    mkdir -p "$DIR"
    cargo build --release -p edgecut-cli --features gpu
    cargo build --release -p edgecut-cli --example random_weights
    cargo test --release -p edgecut-backends --features vulkan,cuda --no-run \
        --test contract --test gpu_conformance
    strip -o "$DIR/edgecut" target/release/edgecut
    strip -o "$DIR/random_weights" target/release/examples/random_weights
    for t in contract gpu_conformance; do
        exe=$(cargo test --release -p edgecut-backends --features vulkan,cuda --test "$t" \
            --no-run --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])' | tail -1)
        strip -o "$DIR/$t" "$exe"
    done
    target/release/examples/random_weights skeleton "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" \
        "$DIR/smollm2-skeleton.gguf"
    cp "$MODELS/all-MiniLM-L6-v2.q8_0.gguf" "$DIR/minilm-q8_0.gguf"
    # The Vulkan loader (the NVIDIA driver brings its own ICD, not always the loader).
    (cd "$DIR" && rm -f libvulkan1_*.deb && apt-get download libvulkan1 >/dev/null 2>&1) ||
        echo "(no libvulkan1 package downloaded: the machine's own loader will be used)"
    # The device tool carries at most 64 MiB with the working tree.
    for f in edgecut random_weights contract gpu_conformance minilm-q8_0.gguf \
        smollm2-skeleton.gguf; do
        gzip -9f "$DIR/$f"
    done
    du -ch "$DIR"/* | tail -1
}

# Runs `$@` with a time limit, its output in $LOG; prints pass, FAIL, or absent (the suite
# found no such device: a CUDA suite without a driver, a wgpu suite without an adapter).
verdict() {
    local rc=0
    timeout 240 "$@" >"$LOG" 2>&1 || rc=$?
    # Where CUDA is expected, a suite that cannot open it fails (it never reads as absent).
    if [ -n "${EDGECUT_EXPECT_CUDA:-}" ] && [ "${2:-}" = cuda ] && [ $rc != 0 ]; then
        echo FAIL
    elif grep -q "no device:\|no CUDA device\|device wgpu is unavailable\|device cuda is unavailable" "$LOG"; then
        echo absent
    elif [ $rc = 0 ]; then
        echo pass
    else
        echo FAIL
    fi
}

# `edgecut bench` output field: the sentences/s column of a MiniLM run.
sentences() { awk '$1 ~ /^[0-9]+$/ && NF >= 5 {print $5; exit}'; }

run() {
    local T=/tmp/gpucheck
    mkdir -p "$T"
    for f in edgecut random_weights contract gpu_conformance minilm-q8_0.gguf \
        smollm2-skeleton.gguf; do
        if [ -f "$DIR/$f.gz" ]; then gunzip -c "$DIR/$f.gz" >"$T/$f"; else cp "$DIR/$f" "$T/$f"; fi
    done
    chmod +x "$T/edgecut" "$T/random_weights" "$T/contract" "$T/gpu_conformance"
    # (A here-string, not a pipe: `grep -q` closing early would fail the pipe under pipefail.)
    if ! grep -q libvulkan.so.1 <<<"$(ldconfig -p 2>/dev/null || true)"; then
        for d in "$DIR"/libvulkan1_*.deb; do
            [ -f "$d" ] && dpkg-deb -x "$d" "$T/vk" &&
                export LD_LIBRARY_PATH="$T/vk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
        done
    fi
    local gpu
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true)
    # An NVIDIA GPU is here: the CUDA suites must run on it, not pass by finding no device.
    [ -n "$gpu" ] && export EDGECUT_EXPECT_CUDA=1
    "$T/random_weights" fill "$T/smollm2-skeleton.gguf" "$T/decoder.gguf"
    "$T/edgecut" convert "$T/decoder.gguf" -o "$T/decoder-q4_k_m.gguf" --type q4_k_m >/dev/null
    local py=${EDGECUT_PYTHON:-}
    if [ -z "$py" ]; then
        for c in "$HOME/.cache/edgecut/refvenv/bin/python" python3; do
            if "$c" -c "import torch" 2>/dev/null; then py=$c; break; fi
        done
    fi
    declare -A R
    LOG=$T/log
    for dev in cuda wgpu; do
        R[contract_$dev]=$(verdict "$T/contract" "$dev" --nocapture)
        cp "$LOG" "$T/contract-$dev.log"
        R[conf_$dev]=$(verdict "$T/gpu_conformance" "$dev" --nocapture)
        cp "$LOG" "$T/conformance-$dev.log"
    done
    local devs="cpu cuda wgpu" software=0
    for dev in $devs; do
        if ! timeout 300 "$T/edgecut" bench -m "$T/minilm-q8_0.gguf" --device "$dev" --seq 16 \
            --iters 1 >"$LOG" 2>&1; then
            # No such device is "absent"; a device that is there and fails is a failure.
            if grep -q "is unavailable\|not available in this build" "$LOG"; then
                R[fid_$dev]=absent
            else
                R[fid_$dev]=FAIL
                cp "$LOG" "$T/bench-$dev.log"
            fi
            continue
        fi
        grep -q llvmpipe "$LOG" && [ "$dev" = wgpu ] && software=1
        R[fid_$dev]=$(timeout 600 python3 scripts/gpucheck/fidelity.py "$T/edgecut" \
            "$T/minilm-q8_0.gguf" "$dev" tests/fixtures/minilm.json | awk '{print $2}') ||
            R[fid_$dev]=FAIL
        # A software adapter (lavapipe) runs small batches only, for orientation.
        local sizes="1 32 128"
        [ "$dev" = wgpu ] && [ $software = 1 ] && sizes="1 8"
        for b in $sizes; do
            # A failed run (out of memory at 128, say) leaves its cell empty, not the table.
            R[mini_${b}_$dev]=$(timeout 300 "$T/edgecut" bench -m "$T/minilm-q8_0.gguf" \
                --device "$dev" --seq 128 --batch "$b" --batch-size "$b" --iters 3 \
                2>>"$T/bench-$dev.log" | sentences) || R[mini_${b}_$dev]=FAIL
        done
        local gen=64 iters=3
        if [ "$dev" = wgpu ] && [ $software = 1 ]; then gen=8 iters=1; fi
        timeout 600 "$T/edgecut" bench -m "$T/decoder.gguf" --device "$dev" --prompt-tokens 128 \
            --gen-tokens $gen --iters $iters >"$LOG" 2>&1 || echo "decoder bench on $dev failed" >>"$LOG"
        cp "$LOG" "$T/decoder-$dev.log"
        R[prefill_$dev]=$(awk '$1 == 128 {print $4}' "$LOG")
        R[decode_$dev]=$(awk '$1 == 128 {print $6}' "$LOG")
        timeout 600 "$T/edgecut" bench -m "$T/decoder-q4_k_m.gguf" --device "$dev" \
            --prompt-tokens 128 --gen-tokens $gen --iters $iters >"$LOG" 2>&1 ||
            echo "Q4_K_M decoder bench on $dev failed" >>"$LOG"
        cp "$LOG" "$T/decoder-q4_k_m-$dev.log"
        R[kprefill_$dev]=$(awk '$1 == 128 {print $4}' "$LOG")
        R[kdecode_$dev]=$(awk '$1 == 128 {print $6}' "$LOG")
    done
    local pdev=cpu
    [ -n "$gpu" ] && pdev=cuda
    if [ -n "$py" ]; then
        while read -r k v; do R[torch_$k]=$v; done < <(timeout 600 "$py" scripts/gpucheck/peer.py "$pdev" 2>"$T/peer.log" || true)
    fi
    local ratio="-"
    if [ -n "${R[decode_cuda]:-}" ] && [ -n "${R[decode_wgpu]:-}" ]; then
        ratio=$(awk -v c="${R[decode_cuda]}" -v w="${R[decode_wgpu]}" 'BEGIN{printf "%.2f", c / w}')
    fi
    echo
    echo "GPU check: ${gpu:-no NVIDIA GPU}; edgecut $("$T/edgecut" --version | awk '{print $2}'); peer: PyTorch on $pdev${py:+ ($("$py" -c 'import torch; print(torch.__version__)'))}"
    if [ $software = 1 ]; then
        echo "(wgpu is a software adapter here, lavapipe: orientation only; batches 1 and 8)"
    fi
    printf '%-34s %10s %10s %10s %11s %11s\n' "" cuda wgpu cpu "torch fp32" "torch fp16"
    row() { printf '%-34s %10s %10s %10s %11s %11s\n' "$1" "${2:--}" "${3:--}" "${4:--}" "${5:--}" "${6:--}"; }
    row "contract suite" "${R[contract_cuda]}" "${R[contract_wgpu]}" "pass (CI)"
    row "kernel conformance" "${R[conf_cuda]}" "${R[conf_wgpu]}" "reference"
    row "MiniLM min cosine to PyTorch" "${R[fid_cuda]:-}" "${R[fid_wgpu]:-}" "${R[fid_cpu]:-}"
    for b in 1 8 32 128; do
        [ -z "${R[mini_${b}_cuda]:-}${R[mini_${b}_wgpu]:-}${R[mini_${b}_cpu]:-}${R[torch_minilm_b${b}_fp32]:-}" ] && continue
        row "MiniLM sentences/s, $b x 128" "${R[mini_${b}_cuda]:-}" "${R[mini_${b}_wgpu]:-}" \
            "${R[mini_${b}_cpu]:-}" "${R[torch_minilm_b${b}_fp32]:-}" "${R[torch_minilm_b${b}_fp16]:-}"
    done
    row "decoder prefill tok/s, 128" "${R[prefill_cuda]:-}" "${R[prefill_wgpu]:-}" \
        "${R[prefill_cpu]:-}" "${R[torch_prefill_fp32]:-}" "${R[torch_prefill_fp16]:-}"
    row "decoder decode tok/s" "${R[decode_cuda]:-}" "${R[decode_wgpu]:-}" \
        "${R[decode_cpu]:-}" "${R[torch_decode_fp32]:-}" "${R[torch_decode_fp16]:-}"
    row "Q4_K_M decoder prefill tok/s, 128" "${R[kprefill_cuda]:-}" "${R[kprefill_wgpu]:-}" \
        "${R[kprefill_cpu]:-}"
    row "Q4_K_M decoder decode tok/s" "${R[kdecode_cuda]:-}" "${R[kdecode_wgpu]:-}" \
        "${R[kdecode_cpu]:-}"
    echo "decode CUDA / Vulkan: $ratio (the aim: Vulkan within 1.5x of CUDA, same kernels)"
    echo "logs: $T/*.log"
    case "${R[contract_cuda]} ${R[conf_cuda]} ${R[contract_wgpu]} ${R[conf_wgpu]}" in
    *FAIL*) exit 1 ;;
    esac
}

case "${1:-run}" in
build) build ;;
run) run ;;
*)
    echo "usage: scripts/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac
