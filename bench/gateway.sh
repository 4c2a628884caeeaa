#!/usr/bin/env bash
# Starts the gateway as a benchmark target (the harness's GATEWAY_CMD; also used by ab.sh,
# cpusplit.sh, memory.sh, postgres.sh, profile.sh, state_flood.sh).
#
# Reads what the harness gives every target: GATEWAY_ADDR, UPSTREAM_URL, SLACK_SIGNING_SECRET,
# GATEWAY_THREADS; and from run.sh / memory.sh: BENCH_TMP (where the store and config live),
# BENCH_CLIENT_ID, GATEWAY_BIN. Writes $BENCH_TMP/gateway.toml, then execs the gateway (same
# process, so the harness's CPU pinning, niceness and CPU accounting apply to it).
#
# Knobs: GATEWAY_ADMIN_ADDR [127.0.0.1:0] admin listener (metrics); GATEWAY_REPLAY [false]
# server.replay_protection (the load generator cycles pre-signed requests, so it must be off);
# GATEWAY_UPSTREAM_TIMEOUT [2500ms]; RUST_LOG [info, the gateway's default];
# GATEWAY_STORAGE [sled]: `sled` (the store in $BENCH_TMP/store) or `postgres`, which writes
# storage.backend = "postgres" with storage.url = GATEWAY_PG_URL (required, e.g.
# postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), storage.schema =
# GATEWAY_PG_SCHEMA [slack_gateway] and storage.pool_size = GATEWAY_PG_POOL [16] (seed the
# schema first: bench_seed --postgres URL --schema NAME).
set -euo pipefail
: "${BENCH_TMP:?set BENCH_TMP (the folder holding the config, and the sled store)}"
: "${GATEWAY_ADDR:?}" "${UPSTREAM_URL:?}" "${SLACK_SIGNING_SECRET:?}"
case "${GATEWAY_STORAGE:-sled}" in
    sled) STORAGE="path = \"$BENCH_TMP/store\"" ;;
    postgres)
        : "${GATEWAY_PG_URL:?set GATEWAY_PG_URL with GATEWAY_STORAGE=postgres}"
        STORAGE="backend = \"postgres\"
url = \"$GATEWAY_PG_URL\"
schema = \"${GATEWAY_PG_SCHEMA:-slack_gateway}\"
pool_size = ${GATEWAY_PG_POOL:-16}" ;;
    *) echo "GATEWAY_STORAGE must be sled or postgres, not ${GATEWAY_STORAGE}" >&2; exit 2 ;;
esac
BIN="${GATEWAY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/slack-gateway}"
CONF="$BENCH_TMP/gateway.toml"
cat >"$CONF" <<EOF
# written by bench/gateway.sh
[server]
listen = "$GATEWAY_ADDR"
admin_listen = "${GATEWAY_ADMIN_ADDR:-127.0.0.1:0}"
replay_protection = ${GATEWAY_REPLAY:-false}
workers = ${GATEWAY_THREADS:-0}

[slack]
client_id = "${BENCH_CLIENT_ID:-bench-client}"
client_secret = "bench-client-secret"
signing_secret = "\${SLACK_SIGNING_SECRET}"

[oauth]
scopes = ["chat:write", "commands"]

[upstream]
url = "$UPSTREAM_URL"
timeout = "${GATEWAY_UPSTREAM_TIMEOUT:-2500ms}"
slack_paths = ["/slack/events"]

[storage]
$STORAGE
EOF
export RUST_LOG="${RUST_LOG:-info}"
exec "$BIN" --config "$CONF"
