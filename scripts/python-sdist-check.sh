#!/usr/bin/env bash
# The Python package's source distribution builds from source on a fresh machine: `maturin sdist`
# packs python/ with the workspace crates it depends on, and `pip install` of that tarball in a
# clean venv builds the wheel with nothing but pip, PyPI's maturin and cargo (a whole release
# build in a fresh target folder: ~15 minutes on 2 cores, so not part of scripts/test.sh), then
# imports the package and embeds with it.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
VENV="${EDGECUT_VENV:-$HOME/.cache/edgecut/venv}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$VENV/bin/maturin" sdist -m python/Cargo.toml -o "$work/sdist"
sdist=$(ls "$work"/sdist/edgecut-*.tar.gz)
echo "python-sdist-check: $(basename "$sdist") ($(du -h "$sdist" | cut -f1)), $(tar tzf "$sdist" | wc -l) files" >&2
python3 -m venv "$work/venv"
# A target folder of its own (nothing from this checkout's target/ reused), as on a fresh machine.
CARGO_TARGET_DIR="$work/target" "$work/venv/bin/pip" install --quiet --disable-pip-version-check "$sdist"
cd "$work"
"$work/venv/bin/python" - "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" <<'PY'
import sys
import edgecut
llm = edgecut.LLM(sys.argv[1], threads=2)
g = llm.generate("The capital of France is", max_tokens=8)
print(f"python-sdist-check: edgecut {edgecut.__version__} from the sdist generated {g.text!r}")
assert g.completion_tokens == 8 or g.finish_reason == "stop"
PY
