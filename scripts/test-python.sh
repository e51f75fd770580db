#!/usr/bin/env bash
# The Python package's checks (python/): builds the wheel with maturin into the workspace's
# target/ (sharing the release build `cargo test --workspace --release` made: only the package
# itself and pyo3 compile), installs it into the test venv, and runs
#   - pytest (python/tests) against the real models and the `edgecut` CLI,
#   - stubtest (the .pyi stubs against the built module) and mypy --strict (the package, its
#     tests and the README's example),
#   - a fresh-machine check: a clean venv, `pip install` of the wheel alone, and the README's
#     Python example run as written, in a folder holding the files it names.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${EDGECUT_VENV:-$HOME/.cache/edgecut/venv}"
PY="$VENV/bin/python"
MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
export EDGECUT_BIN="${EDGECUT_BIN:-$PWD/target/release/edgecut}"
[ -x "$EDGECUT_BIN" ] || cargo build --release -p edgecut-cli

dist=$(mktemp -d)
fresh=$(mktemp -d)
trap 'rm -rf "$dist" "$fresh"' EXIT
"$VENV/bin/maturin" build --release -m python/Cargo.toml -o "$dist" --interpreter "$PY" 2>&1 |
    tee "$dist/build.log"
# After `cargo test --workspace --release` only pyo3 and the package itself compile here, as
# long as python/Cargo.toml asks for the features the other members turn on (see there).
compiled=$(grep -c "Compiling " "$dist/build.log" || true)
if [ -f target/release/edgecut ] && [ "$compiled" -gt 6 ]; then
    echo "test-python: WARNING: the wheel's build compiled $compiled crates: features in" \
        "python/Cargo.toml no longer match the workspace's (RUSTC_BOOTSTRAP=1 cargo build" \
        "--unit-graph -Z unstable-options shows which)" >&2
fi
wheel=$(ls "$dist"/edgecut-*.whl)
echo "test-python: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))" >&2
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"

# From python/tests, so `import edgecut` is the installed wheel, not the source folder.
(cd python/tests && "$PY" -m pytest -q -p no:cacheprovider .)

# The README's Python example, as the fresh-machine check runs it.
"$PY" - README.md "$fresh/example.py" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
section = text[text.index("## Python"):]
block = re.search(r"```python\n(.*?)```", section, re.S)
assert block and "import edgecut" in block.group(1), "README: no Python example under ## Python"
open(sys.argv[2], "w").write(block.group(1))
PY
# The stubs the wheel installed, against the module it installed (from outside the source tree).
(cd "$fresh" && "$PY" -m mypy.stubtest edgecut)
"$PY" -m mypy --strict --no-incremental python/edgecut python/tests "$fresh/example.py"

# A clean venv with nothing but the wheel (and what it depends on).
python3 -m venv "$fresh/venv"
"$fresh/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"
mkdir "$fresh/run"
"$EDGECUT_BIN" convert "$MODELS/all-MiniLM-L6-v2" -o "$fresh/run/all-MiniLM-L6-v2.q8_0.gguf" \
    --type q8_0 >/dev/null
ln -s "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$fresh/run/"
(cd "$fresh/run" && "$fresh/venv/bin/python" ../example.py)
echo "test-python: the README's example ran in a clean venv" >&2
