#!/usr/bin/env bash
# The gateway side by side with the anchors of the shared harness; see bench/README.md.
#
#   bash bench/run.sh                                   # defaults below
#   DURATION=10 REPS=3 CONNS="32 128" bash bench/run.sh
#   TARGETS="direct nginx rust_min rust_min_ct gateway" LAYOUT=shared bash bench/run.sh
#
# Every knob of the harness (`bench/harness/run_anchors.sh --help`) passes through unchanged:
# LAYOUT, TARGETS, CONNS, DURATION, WARMUP, REPS, SHAPE, COUNT, NICE, MAX_FOREIGN, RETRIES,
# STRICT, SLACK_SIGNING_SECRET, INSTALLATIONS, OUT, PORT_OFFSET, GATEWAY_URL, GATEWAY_CMD,
# GATEWAY_SETUP_CMD, ... This script only sets defaults for:
#   TARGETS [direct nginx rust_min_ct bolt_py gateway]
#   OUT     [bench/results/<date>-<layout>]  (gitignored)
#   GATEWAY_SETUP_CMD  seed a fresh sled store in $BENCH_TMP/store from $INSTALLATIONS
#                      (examples/bench_seed.rs, the same 1000 installations the anchors use)
#   GATEWAY_CMD        bench/gateway.sh: writes the bench config (replay_protection = false,
#                      listen $GATEWAY_ADDR, upstream $UPSTREAM_URL, workers $GATEWAY_THREADS,
#                      storage in $BENCH_TMP) and execs target/release/slack-gateway
# and its own: BENCH_TMP [mktemp -d, removed at the end], BENCH_CLIENT_ID [bench-client],
# GATEWAY_REV (measure a commit, built from a clean export, not the working tree),
# BENCH_SKIP_BUILD [0] (1: use the binaries already built); see bench/lib.sh.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
bench_setup
bench_build

export BENCH_CLIENT_ID="${BENCH_CLIENT_ID:-bench-client}"
if [[ -z "${BENCH_TMP:-}" ]]; then
    BENCH_TMP="$(mktemp -d -t slack-gateway-bench.XXXXXX)"
    trap 'rm -rf "$BENCH_TMP"' EXIT
fi
export BENCH_TMP
export TARGETS="${TARGETS:-direct nginx rust_min_ct bolt_py gateway}"
export OUT="${OUT:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-${LAYOUT:-pinned}}"
export GATEWAY_SETUP_CMD="${GATEWAY_SETUP_CMD-rm -rf \"\$BENCH_TMP/store\" && \"\$BENCH_SEED\" --store \"\$BENCH_TMP/store\" --client-id \"\$BENCH_CLIENT_ID\" --installations \"\$INSTALLATIONS\"}"
export GATEWAY_CMD="${GATEWAY_CMD-bash \"$BENCH/gateway.sh\"}"

mkdir -p "$OUT"
{
    echo "gateway: $GATEWAY_DESC"
    echo "binary: $GATEWAY_BIN ($(stat -c %y "$GATEWAY_BIN" 2>/dev/null || echo missing))"
    echo "GATEWAY_CMD: $GATEWAY_CMD"
    echo "GATEWAY_SETUP_CMD: $GATEWAY_SETUP_CMD"
} >"$OUT/gateway-build.txt"
echo "results -> $OUT"
"$BENCH/harness/run_anchors.sh" "$@"
