#!/usr/bin/env bash
# The whole test suite: installs what the tests need (once), then runs every test.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
cargo test --locked --all-targets "$@"
