#!/usr/bin/env bash
# ARM builds, tested (called by scripts/test.sh; needs gcc-aarch64-linux-gnu and qemu-user,
# which scripts/setup.sh installs):
#   1. the backend conformance suites and unit tests (NEON kernels included) for aarch64, run
#      under qemu-user;
#   2. the mobile static library for aarch64 and the C example linked against it, run under
#      qemu-user: on each architecture it must print the similarity that architecture's CLI
#      prints (to 1e-4), and the two architectures must agree within 5e-3;
#   3. the mobile static library for Android (aarch64-linux-android; no NDK needed, see there);
#   4. the stripped size of the CPU-only dynamic library on x86-64 and aarch64, built on its
#      own, and that it depends on neither tokio nor safetensors;
#   5. the wire codec for a no_std microcontroller target (thumbv7em-none-eabihf).
set -euo pipefail
cd "$(dirname "$0")/.."
for t in aarch64-unknown-linux-gnu aarch64-linux-android thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
ARM=aarch64-unknown-linux-gnu

echo "test-arm: kernel conformance on $ARM under qemu-user" >&2
# qemu-user emulates a CPU with dotprod: the dot-product kernels must be compared there.
EDGECUT_EXPECT_DOTPROD=1 cargo test --release --target $ARM -p edgecut-backends --lib --test conformance --test decoder_ops

echo "test-arm: the C example on x86-64 and on $ARM" >&2
cargo build --release -p edgecut-cli -p edgecut-mobile
cargo build --release --target $ARM -p edgecut-mobile -p edgecut-cli
MODELS="${EDGECUT_MODELS:-$HOME/.cache/edgecut/models}"
MODEL=target/test-arm-minilm.q8_0.gguf
[ -f "$MODEL" ] || target/release/edgecut convert "$MODELS/all-MiniLM-L6-v2" -o "$MODEL" >/dev/null
A="A man is eating food."
B="A man is riding a horse."
cc -O2 -Wall -Werror -I mobile/include mobile/examples/embed.c \
    target/release/libedgecut_mobile.a -lm -lpthread -ldl -o target/embed-x86_64
aarch64-linux-gnu-gcc -O2 -Wall -Werror -I mobile/include mobile/examples/embed.c \
    target/$ARM/release/libedgecut_mobile.a -lm -lpthread -ldl -o target/embed-aarch64
x86=$(target/embed-x86_64 "$MODEL" "$A" "$B" | sed -n 2p | cut -f1)
arm=$(qemu-aarch64 -L /usr/aarch64-linux-gnu target/embed-aarch64 "$MODEL" "$A" "$B" | sed -n 2p | cut -f1)
cli_x86=$(target/release/edgecut similarity -m "$MODEL" "$A" "$B" | cut -f1)
cli_arm=$(qemu-aarch64 -L /usr/aarch64-linux-gnu target/$ARM/release/edgecut similarity -m "$MODEL" "$A" "$B" | cut -f1)
echo "test-arm: similarity on x86-64: C $x86, CLI $cli_x86; on aarch64 (qemu): C $arm, CLI $cli_arm" >&2
python3 - "$x86" "$cli_x86" "$arm" "$cli_arm" <<'PY'
import sys
x86, cli_x86, arm, cli_arm = map(float, sys.argv[1:])
assert abs(x86 - cli_x86) <= 1e-4, ("x86-64", x86, cli_x86)
assert abs(arm - cli_arm) <= 1e-4, ("aarch64", arm, cli_arm)
# Across architectures the int8 kernels differ (AVX2/AVX-512 against NEON: activation
# quantization and summation order), so the cosine may move in its third decimal, not more.
assert abs(x86 - arm) <= 5e-3, ("x86-64 against aarch64", x86, arm)
print(f"test-arm: x86-64 and aarch64 agree within {abs(x86 - arm):.4f} (bound 5e-3)", file=sys.stderr)
PY

echo "test-arm: static library for aarch64-linux-android" >&2
# Cargo builds every crate type a dependency declares, and llguidance (constrained decoding)
# declares a cdylib, which for Android needs a linker. Without the NDK, the aarch64 cross
# linker links that unused .so against empty stand-ins for Android's libunwind and liblog; the
# product, the static library, links nothing. (An app's build with the NDK needs none of it.)
STUBS="$PWD/target/android-stubs"
mkdir -p "$STUBS"
for l in unwind log; do [ -f "$STUBS/lib$l.a" ] || ar rc "$STUBS/lib$l.a"; done
CARGO_TARGET_AARCH64_LINUX_ANDROID_LINKER=aarch64-linux-gnu-gcc \
CARGO_TARGET_AARCH64_LINUX_ANDROID_RUSTFLAGS="-C link-arg=-L$STUBS" \
    cargo rustc --release --target aarch64-linux-android -p edgecut-mobile --crate-type staticlib

# The library as an app links it: built on its own (built beside the CLI, cargo unifies the
# CLI's features into it, the converter among them), with neither an async runtime nor the
# converter's safetensors in its dependencies.
if cargo tree -p edgecut-mobile -e normal | grep -E 'tokio|safetensors'; then
    echo "test-arm: libedgecut_mobile depends on tokio or safetensors" >&2
    exit 1
fi
cargo build --release -p edgecut-mobile
cargo build --release --target $ARM -p edgecut-mobile
strip -o target/libedgecut_mobile-x86_64.so target/release/libedgecut_mobile.so
aarch64-linux-gnu-strip -o target/libedgecut_mobile-aarch64.so target/$ARM/release/libedgecut_mobile.so
echo "test-arm: stripped libedgecut_mobile.so: x86-64 $(stat -c %s target/libedgecut_mobile-x86_64.so) bytes, aarch64 $(stat -c %s target/libedgecut_mobile-aarch64.so) bytes" >&2

echo "test-arm: the wire codec, no_std, for thumbv7em-none-eabihf" >&2
cargo build --release --target thumbv7em-none-eabihf -p edgecut-wire
