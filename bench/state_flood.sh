#!/usr/bin/env bash
# Slack's latency while an anonymous client floods the gateway: pipelined `GET /slack/install`
# (the OAuth-state flood, defect 4 of issue 16) against an equal flood of 404s.
#
#   bash bench/state_flood.sh
#   FLOOD_ROUNDS=3 FLOOD_SECS=5 bash bench/state_flood.sh
#   GATEWAY_REV=<commit> bash bench/state_flood.sh     # measure a commit (e.g. before a fix)
#
# Layout (2 cores, like ab.sh and cpusplit.sh): the gateway (server.workers = FLOOD_WORKERS)
# and the harness's upstream share CPU 0; both load generators run on CPU 1.
# - Slack: wrk with SLACK_CONNS connections, each sending a pre-signed event (replay
#   protection off: wrk cycles them) and then pausing SLACK_DELAY_MS: a steady, moderate load.
#   Its latency percentiles are what this script is about.
# - Flood: wrk with FLOOD_CONNS connections, each writing FLOOD_PIPELINE requests at a time:
#   `GET /slack/install` (state) or `GET /bench-not-found` (404, answered by the gateway).
# Rounds: one without a flood, then FLOOD_ROUNDS of each flood, alternating. In each, the flood
# starts first, the Slack client runs FLOOD_SECS seconds inside it, and the flood stops after.
# Printed per round: flood req/s, Slack req/s and p50/p99/max, the store folder's size; then
# the median Slack p99 under each flood and their ratio (state / 404), and the ratio within
# each round with its median (less sensitive to a host whose load drifts). Also written to
# bench/results/<date>-state-flood.txt.
#
# Environment: FLOOD_ROUNDS [5], FLOOD_SECS [10], FLOOD_CONNS [16], FLOOD_PIPELINE [8],
#   SLACK_CONNS [4], SLACK_DELAY_MS [5], FLOOD_WORKERS [1], PORT_OFFSET [0] (ports 9070..9071),
#   and bench/lib.sh's GATEWAY_REV, BENCH_SKIP_BUILD (with GATEWAY_BIN / BENCH_SEED: measure
#   binaries built elsewhere), CARGO_TARGET_DIR.
# Needs: wrk (apt-get install -y wrk), python3, the harness mirror and its upstream (built here
# if missing; the full bench/setup.sh is not needed).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
[[ -e "$BENCH/harness/gen" ]] || MIRROR_ONLY=1 bash "$BENCH/setup.sh"
[[ -x "$BENCH/harness/rust/target/release/upstream" ]] \
    || (cd "$BENCH/harness/rust" && cargo build --release --quiet --bin upstream)
GIVEN_BIN="${GATEWAY_BIN:-}"
bench_build
[[ -n "$GIVEN_BIN" ]] && GATEWAY_DESC="the binary given in GATEWAY_BIN"
bench_local state-flood

ROUNDS="${FLOOD_ROUNDS:-5}"
SECS="${FLOOD_SECS:-10}"
UP="$(P 9070)"
GW="$(P 9071)"
OUTFILE="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-state-flood.txt"
mkdir -p "$(dirname "$OUTFILE")"

UPSTREAM_ADDR="127.0.0.1:$UP" UPSTREAM_THREADS=1 taskset -c 0 "$H/rust/target/release/upstream" \
    >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
"$BENCH_SEED" --store "$TMP/store" --client-id bench-client --installations "$INST" >/dev/null 2>&1
BENCH_TMP="$TMP" BENCH_CLIENT_ID=bench-client GATEWAY_ADDR="127.0.0.1:$GW" UPSTREAM_URL="http://127.0.0.1:$UP" \
    SLACK_SIGNING_SECRET="$SECRET" GATEWAY_THREADS="${FLOOD_WORKERS:-1}" RUST_LOG=warn \
    taskset -c 0 bash "$BENCH/gateway.sh" >"$TMP/gateway.log" 2>&1 &
GPID=$!
PIDS+=($GPID)
for p in "$UP" "$GW"; do wait_port "$p" || { echo "port $p did not open" >&2; cat "$TMP/gateway.log" >&2; exit 1; }; done

# The Slack client: the harness's pre-signed requests, with a pause after each answer.
cat >"$TMP/slack.lua" <<EOF
dofile("$H/wrk/signed.lua")
local pause = tonumber(os.getenv("SLACK_DELAY_MS") or "5")
function delay() return pause end
EOF
# The flood: FLOOD_PIPELINE GETs of FLOOD_PATH per write.
cat >"$TMP/flood.lua" <<'EOF'
local path = os.getenv("FLOOD_PATH")
local depth = tonumber(os.getenv("FLOOD_PIPELINE") or "8")
local batch
function init(args)
  local r = {}
  for i = 1, depth do r[i] = wrk.format("GET", path) end
  batch = table.concat(r)
end
function request() return batch end
function done(summary, latency, requests)
  io.write(string.format("WRKRESULT requests=%d duration_us=%d status_errors=%d\n",
    summary.requests, summary.duration, summary.errors.status))
end
EOF
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }

{
    echo "state flood vs 404 flood, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "gateway: $GATEWAY_DESC"
    echo "binary: $GATEWAY_BIN ($(stat -c %y "$GATEWAY_BIN" 2>/dev/null || echo missing)); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "gateway workers: ${FLOOD_WORKERS:-1}; slack: ${SLACK_CONNS:-4} conns, ${SLACK_DELAY_MS:-5} ms pause;" \
        "flood: ${FLOOD_CONNS:-16} conns x ${FLOOD_PIPELINE:-8} pipelined; ${SECS} s per round"
    printf '%-5s %-6s %11s %9s %9s %9s %9s %10s\n' round flood "flood req/s" "slack r/s" "p50 ms" "p99 ms" "max ms" "store KiB"
} | tee "$OUTFILE"

run_round() { # round flood(none|state|404)
    python3 "$H/gen/gen_signed.py" requests --installations "$INST" --secret "$SECRET" --count 2000 \
        --shape event --lua "$TMP/reqs.lua" 2>/dev/null
    local fpid="" fout=""
    if [[ "$2" != none ]]; then
        local path=/bench-not-found
        [[ "$2" == state ]] && path=/slack/install
        FLOOD_PATH="$path" FLOOD_PIPELINE="${FLOOD_PIPELINE:-8}" taskset -c 1 \
            wrk -t1 -c "${FLOOD_CONNS:-16}" -d "$((SECS + 2))s" -s "$TMP/flood.lua" "http://127.0.0.1:$GW" \
            >"$TMP/flood.out" 2>&1 &
        fpid=$!
        sleep 1
    fi
    local out
    # Ahead of the flood client on CPU 1 (nice -10), so Slack's numbers are the gateway's
    # latency rather than the wait for its own client to be scheduled.
    out="$(WRK_REQS="$TMP/reqs.lua" SLACK_DELAY_MS="${SLACK_DELAY_MS:-5}" taskset -c 1 nice -n -10 \
        wrk -t1 -c "${SLACK_CONNS:-4}" -d "${SECS}s" --latency -s "$TMP/slack.lua" \
        "http://127.0.0.1:$GW/slack/events" | grep WRKRESULT)"
    local frate=0
    if [[ -n "$fpid" ]]; then
        wait "$fpid" || true
        fout="$(grep WRKRESULT "$TMP/flood.out" || true)"
        [[ -n "$fout" ]] && frate=$(($(field requests "$fout") * 1000000 / $(field duration_us "$fout")))
    fi
    local n d e kib
    n="$(field requests "$out")"; d="$(field duration_us "$out")"; e="$(field err_status "$out")"
    [[ "$e" == 0 ]] || echo "warning: round $1: Slack got $e non-2xx answers" >&2
    kib="$(du -sk "$TMP/store" | cut -f1)"
    awk -v r="$1" -v f="$2" -v fr="$frate" -v n="$n" -v d="$d" -v p50="$(field p50_us "$out")" \
        -v p99="$(field p99_us "$out")" -v mx="$(field max_us "$out")" -v kib="$kib" 'BEGIN {
        printf "%-5s %-6s %11d %9.0f %9.2f %9.2f %9.2f %10d\n", r, f, fr, n / (d / 1e6), p50 / 1000, p99 / 1000, mx / 1000, kib }'
}

{
    run_round 0 none
    for round in $(seq 1 "$ROUNDS"); do
        if ((round % 2)); then
            run_round "$round" state
            run_round "$round" 404
        else
            run_round "$round" 404
            run_round "$round" state
        fi
    done
} | tee "$TMP/rows" | tee -a "$OUTFILE"

python3 - "$TMP/rows" <<'EOF' | tee -a "$OUTFILE"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
p99 = {f: [float(r[5]) for r in rows if r[1] == f] for f in ("state", "404")}
mx = {f: [float(r[6]) for r in rows if r[1] == f] for f in ("state", "404")}
s, n = statistics.median(p99["state"]), statistics.median(p99["404"])
print(f"median Slack p99: state flood {s:.2f} ms, 404 flood {n:.2f} ms; ratio {s / n:.2f}"
      f" (worst max: state {max(mx['state']):.1f} ms, 404 {max(mx['404']):.1f} ms)")
# The two floods of a round ran back to back, so the host's drift hits both alike.
pairs = {}
for r in rows:
    pairs.setdefault(r[0], {})[r[1]] = float(r[5])
ratios = [p["state"] / p["404"] for p in pairs.values() if "state" in p and "404" in p]
print(f"per-round p99 ratios (state / 404): {' '.join(f'{x:.2f}' for x in ratios)};"
      f" median {statistics.median(ratios):.2f}")
EOF
kill -0 "$GPID" 2>/dev/null || { echo "the gateway died:" >&2; tail -20 "$TMP/gateway.log" >&2; exit 1; }
echo "-> $OUTFILE"
