#!/usr/bin/env bash
# Resident memory of the gateway with many installations; see bench/README.md.
#
#   bash bench/memory.sh                        # 100,000 installations, 5,000 signed requests
#   MEM_INSTALLS=1000000 MEM_REQUESTS=20000 bash bench/memory.sh
#
# Seeds a fresh sled store with MEM_INSTALLS synthetic installations (examples/bench_seed.rs,
# through SledStore::save), starts the shared harness's upstream and the gateway
# (bench/gateway.sh), reads VmRSS/VmHWM from /proc/PID/status once the gateway is up, sends
# MEM_REQUESTS distinct signed requests (teams drawn at random from all installations) with wrk
# for MEM_DURATION seconds, reads them again and prints them with the store folder's size.
# The output is also written to bench/results/<date>-memory.txt.
#
# Environment (defaults in brackets):
#   MEM_INSTALLS [100000]  MEM_REQUESTS [5000]  MEM_DURATION [10]  MEM_CONNS [64]
#   MEM_THREADS [0]   server.workers of the gateway (0: one per core)
#   SHAPE [event]     event | command | mixed
#   PORT_OFFSET [0]   upstream on 9010+offset, gateway on 9910+offset
#   SLACK_SIGNING_SECRET [the harness generator's default]
#   GATEWAY_REV, BENCH_SKIP_BUILD, BENCH_TMP, BENCH_CLIENT_ID as for bench/run.sh
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
bench_setup
bench_build

H="$BENCH/harness"
N="${MEM_INSTALLS:-100000}"
REQS="${MEM_REQUESTS:-5000}"
OFF="${PORT_OFFSET:-0}"
UP_ADDR="127.0.0.1:$((9010 + OFF))"
export GATEWAY_ADDR="127.0.0.1:$((9910 + OFF))"
export UPSTREAM_URL="http://$UP_ADDR"
export SLACK_SIGNING_SECRET="${SLACK_SIGNING_SECRET:-$(cd "$H/gen" && python3 -c 'import gen_signed; print(gen_signed.DEFAULT_SECRET)')}"
export GATEWAY_THREADS="${MEM_THREADS:-0}"
export BENCH_CLIENT_ID="${BENCH_CLIENT_ID:-bench-client}"
if [[ -z "${BENCH_TMP:-}" ]]; then
    BENCH_TMP="$(mktemp -d -t slack-gateway-mem.XXXXXX)"
    REMOVE_TMP=1
fi
export BENCH_TMP
UP_PID="" GW_PID=""
cleanup() {
    [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
    [[ "${REMOVE_TMP:-0}" == 1 ]] && rm -rf "$BENCH_TMP"
    return 0
}
trap cleanup EXIT

wait_port() {  # host:port, pid
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f MiB", kb / 1024 }'; }
snapshot() {  # label
    printf '%-34s VmRSS %10s  VmHWM %10s  (RssAnon %s, RssFile %s)\n' "$1" \
        "$(mib "$(status_kb "$GW_PID" VmRSS)")" "$(mib "$(status_kb "$GW_PID" VmHWM)")" \
        "$(mib "$(status_kb "$GW_PID" RssAnon)")" "$(mib "$(status_kb "$GW_PID" RssFile)")"
}

mkdir -p "$BENCH/results"
REPORT="$BENCH/results/$(date +%Y%m%d-%H%M%S)-memory.txt"
exec > >(tee "$REPORT") 2>&1
echo "== slack-gateway resident memory: $N installations ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC"

# 1. seed
t0=$(date +%s.%N)
"$BENCH_SEED" --store "$BENCH_TMP/store" --client-id "$BENCH_CLIENT_ID" --synthetic "$N" \
    --export-json "$BENCH_TMP/installations.json" 2>&1
t1=$(date +%s.%N)
printf 'seeded in %.1f s; sled folder %s (%s bytes)\n' "$(echo "$t1 - $t0" | bc)" \
    "$(du -sh "$BENCH_TMP/store" | cut -f1)" "$(du -sb "$BENCH_TMP/store" | cut -f1)"

# 2. upstream and gateway
UPSTREAM_ADDR="$UP_ADDR" UPSTREAM_THREADS=1 "$H/rust/target/release/upstream" >"$BENCH_TMP/upstream.log" 2>&1 &
UP_PID=$!
wait_port "$UP_ADDR" "$UP_PID" || { echo "upstream did not start"; cat "$BENCH_TMP/upstream.log"; exit 1; }
t0=$(date +%s.%N)
bash "$BENCH/gateway.sh" >"$BENCH_TMP/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GATEWAY_ADDR" "$GW_PID" || { echo "gateway did not start"; cat "$BENCH_TMP/gateway.log"; exit 1; }
t1=$(date +%s.%N)
printf 'gateway (pid %s, workers=%s) listening after %.2f s\n' "$GW_PID" "$GATEWAY_THREADS" "$(echo "$t1 - $t0" | bc)"
sleep 1
snapshot "after start (store opened):"

# 3. signed requests over many teams
python3 - "$BENCH_TMP/installations.json" "$BENCH_TMP/reqs.lua" <<EOF
import json, sys, urllib.parse, urllib.request
sys.path.insert(0, "$H/gen")
import gen_signed
insts = gen_signed.load_installations(sys.argv[1])
reqs = gen_signed.make_requests(insts, "$SLACK_SIGNING_SECRET", $REQS, "${SHAPE:-event}")
gen_signed.write_lua(reqs, sys.argv[2])
def team(r):
    if r["headers"]["Content-Type"] == "application/json":
        return json.loads(r["body"])["team_id"]
    return urllib.parse.parse_qs(r["body"].decode())["team_id"][0]
print("generated %d signed requests for %d distinct teams" % (len(reqs), len({team(r) for r in reqs})))
r = urllib.request.Request("http://$GATEWAY_ADDR/slack/events", data=reqs[0]["body"], headers=reqs[0]["headers"], method="POST")
body = urllib.request.urlopen(r, timeout=10).read().decode()
assert '"present"' in body, body
print("check: a signed request -> 200, the upstream saw the bot token")
EOF
echo "sending them with wrk for ${MEM_DURATION:-10} s, ${MEM_CONNS:-64} connections"
WRK_REQS="$BENCH_TMP/reqs.lua" wrk -t1 -c "${MEM_CONNS:-64}" -d "${MEM_DURATION:-10}s" --timeout 10s \
    -s "$H/wrk/signed.lua" "http://$GATEWAY_ADDR/slack/events" | awk '
    /^WRKRESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                   printf "wrk: %d requests, %.0f req/s, non-2xx %d, p99 %.2f ms (unpinned; not comparable to run.sh)\n",
                          r["requests"], r["requests"] / (r["duration_us"] / 1e6), r["err_status"], r["p99_us"] / 1000 }'
snapshot "after traffic:"
sleep 2
snapshot "2 s later (idle):"
kill -0 "$GW_PID" && echo "threads: $(ls "/proc/$GW_PID/task" | wc -l)"
printf 'sled folder after the run: %s\n' "$(du -sh "$BENCH_TMP/store" | cut -f1)"
echo "report: $REPORT"
