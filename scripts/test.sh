#!/usr/bin/env bash
# The test command: sets up what the tests need (scripts/setup.sh), then runs the house checks,
# every test of the workspace, and the ARM builds and tests under qemu-user (scripts/test-arm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
scripts/test-arm.sh
