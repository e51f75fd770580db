#!/usr/bin/env bash
# The test command: sets up what the tests need (scripts/setup.sh), then runs the house checks
# and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
