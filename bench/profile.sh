#!/usr/bin/env bash
# CPU profile of the gateway under the harness's load, in the pinned layout (see bench/README.md).
#
#   bash bench/profile.sh                    # 20 s of signed events, 32 connections
#   PROF_SECS=30 PROF_CONNS=128 SHAPE=command bash bench/profile.sh
#
# Seeds a store from the harness's 1000 installations, starts the harness's upstream and the
# gateway on CPU 0 (server.workers = 1) and wrk on CPU 1, as run.sh's pinned layout does, then
# `perf record`s the gateway for PROF_SECS and prints the hottest symbols (self time) and, with
# PROF_CALLERS=1, a caller breakdown (DWARF unwinding; bigger, slower). Needs `perf`
# (apt-get install linux-perf). perf.data and the reports go to bench/results/<date>-profile/.
#
# Environment: PROF_SECS [20] PROF_CONNS [32] PROF_WORKERS [1] PROF_CALLERS [0] SHAPE [event]
#   PORT_OFFSET [0] (upstream 9020+offset, gateway 9920+offset), GATEWAY_REV, BENCH_SKIP_BUILD.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
command -v perf >/dev/null || { echo "need perf (apt-get install linux-perf)" >&2; exit 1; }
bench_setup
bench_build

H="$BENCH/harness"
OFF="${PORT_OFFSET:-0}"
UP_ADDR="127.0.0.1:$((9020 + OFF))"
export GATEWAY_ADDR="127.0.0.1:$((9920 + OFF))"
export UPSTREAM_URL="http://$UP_ADDR"
export SLACK_SIGNING_SECRET="${SLACK_SIGNING_SECRET:-$(cd "$H/gen" && python3 -c 'import gen_signed; print(gen_signed.DEFAULT_SECRET)')}"
export GATEWAY_THREADS="${PROF_WORKERS:-1}"
export BENCH_CLIENT_ID="${BENCH_CLIENT_ID:-bench-client}"
OUTDIR="$BENCH/results/$(date +%Y%m%d-%H%M%S)-profile"
mkdir -p "$OUTDIR"
BENCH_TMP="$(mktemp -d -t slack-gateway-prof.XXXXXX)"
export BENCH_TMP
UP_PID="" GW_PID=""
cleanup() {
    [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
    rm -rf "$BENCH_TMP"
    return 0
}
trap cleanup EXIT
wait_port() {
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

INST="$H/data/installations.json"
[[ -f "$INST" ]] || python3 "$H/gen/gen_signed.py" installations --n 1000 --out "$INST"
"$BENCH_SEED" --store "$BENCH_TMP/store" --client-id "$BENCH_CLIENT_ID" --installations "$INST"
UPSTREAM_ADDR="$UP_ADDR" UPSTREAM_THREADS=1 taskset -c 0 "$H/rust/target/release/upstream" >"$OUTDIR/upstream.log" 2>&1 &
UP_PID=$!
wait_port "$UP_ADDR" "$UP_PID"
taskset -c 0 bash "$BENCH/gateway.sh" >"$OUTDIR/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GATEWAY_ADDR" "$GW_PID"

python3 "$H/gen/gen_signed.py" requests --installations "$INST" --secret "$SLACK_SIGNING_SECRET" \
    --count 2000 --shape "${SHAPE:-event}" --lua "$BENCH_TMP/reqs.lua"
SECS="${PROF_SECS:-20}"
WRK_REQS="$BENCH_TMP/reqs.lua" taskset -c 1 wrk -t1 -c "${PROF_CONNS:-32}" -d "$((SECS + 4))s" \
    -s "$H/wrk/signed.lua" "http://$GATEWAY_ADDR/slack/events" >"$OUTDIR/wrk.txt" 2>&1 &
WRK_PID=$!
sleep 2
if [[ "${PROF_CALLERS:-0}" == 1 ]]; then
    perf record -q -F 499 --call-graph dwarf,16384 -p "$GW_PID" -o "$OUTDIR/perf.data" -- sleep "$SECS" 2>/dev/null
else
    perf record -q -F 1999 -p "$GW_PID" -o "$OUTDIR/perf.data" -- sleep "$SECS" 2>/dev/null
fi
wait "$WRK_PID" || true
grep -h WRKRESULT "$OUTDIR/wrk.txt" | awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
    printf "load: %.0f req/s, non-2xx %d, p99 %.2f ms\n", r["requests"] / (r["duration_us"] / 1e6), r["err_status"], r["p99_us"] / 1000 }'
perf report -i "$OUTDIR/perf.data" --no-children --sort dso,symbol --percent-limit 0.4 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-160 >"$OUTDIR/top-symbols.txt"
perf report -i "$OUTDIR/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' >"$OUTDIR/by-dso.txt"
echo "== by binary / library"; head -12 "$OUTDIR/by-dso.txt"
echo "== hottest symbols (self)"; head -60 "$OUTDIR/top-symbols.txt"
if [[ "${PROF_CALLERS:-0}" == 1 ]]; then
    perf report -i "$OUTDIR/perf.data" --children --sort symbol --percent-limit 2 --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | cut -c1-160 >"$OUTDIR/inclusive.txt"
    echo "== inclusive (children) >= 2%"; head -60 "$OUTDIR/inclusive.txt"
fi
echo "profile in $OUTDIR"
