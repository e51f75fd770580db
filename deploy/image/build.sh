#!/usr/bin/env bash
# Builds the edgecut image with daemonless tools (buildah): the CLI built static for
# x86_64-unknown-linux-musl, stripped, on an empty base (deploy/image/Containerfile).
#
#   deploy/image/build.sh [TAG]      (default localhost/edgecut:0.1.0)
#
# Needs rustup's x86_64-unknown-linux-musl target and Debian's musl-tools and buildah
# (scripts/setup.sh --deploy installs them). Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${1:-localhost/edgecut:0.1.0}"
TARGET=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
# ring's C and assembly build with musl's gcc wrapper.
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$TARGET" \
    -p edgecut-cli
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
cp "target/$TARGET/release/edgecut" "$CTX/edgecut"
strip "$CTX/edgecut"
if file "$CTX/edgecut" | grep -q 'dynamically linked'; then
    echo "build.sh: the binary is not static" >&2
    exit 1
fi
buildah bud --quiet --layers -t "$TAG" -f deploy/image/Containerfile "$CTX" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "image $TAG: $((size / 1024 / 1024)) MiB ($size bytes); binary $(stat -c %s "$CTX/edgecut") bytes"
