#!/usr/bin/env bash
# Makes tests/fixtures/llama-cpp/all-MiniLM-L6-v2.q8_0.gguf with llama.cpp's own converter
# (convert_hf_to_gguf.py as vendored in the llama-cpp-python 0.3.36 source package on PyPI).
# The converter needs PyTorch, so the file is made once and committed; CI does not run this.
#   REFPY: a Python with torch + transformers (default ~/.cache/edgecut/refvenv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
REFPY="${REFPY:-$HOME/.cache/edgecut/refvenv/bin/python}"
MODELS="$(scripts/fetch-models.sh)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$REFPY" -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$work"
tar xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work" \
    --wildcards '*/vendor/llama.cpp/*.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
mkdir -p tests/fixtures/llama-cpp
(cd "$src" && PYTHONPATH="$src/gguf-py" "$REFPY" convert_hf_to_gguf.py "$MODELS/all-MiniLM-L6-v2" \
    --outtype q8_0 --outfile "$OLDPWD/tests/fixtures/llama-cpp/all-MiniLM-L6-v2.q8_0.gguf")
