#!/usr/bin/env bash
# The whole test suite: installs what the tests need (once), then runs every test: unit tests,
# the integration tests in tests/ (real sockets, fake Slack, the real binary, headless
# Chromium) and the Python example behind the gateway, against a PostgreSQL database (see
# scripts/test-postgres.sh: SLACK_GATEWAY_TEST_DATABASE_URL, else 127.0.0.1:5432, else a
# throwaway cluster, stopped when this script exits).
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Exports SLACK_GATEWAY_TEST_DATABASE_URL; a throwaway cluster's cleanup joins the EXIT trap.
source scripts/test-postgres.sh
status=0
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
