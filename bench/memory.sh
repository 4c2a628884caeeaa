#!/usr/bin/env bash
# Resident memory of the gateway with many installations; see bench/README.md.
#
#   bash bench/memory.sh                        # 100,000 installations, 5,000 signed requests
#   MEM_INSTALLS=1000000 MEM_REQUESTS=20000 bash bench/memory.sh
#   MEM_STORAGE=postgres bash bench/memory.sh   # the same on PostgreSQL
#   MEM_COVER=1 bash bench/memory.sh            # one request for every installation
#
# Seeds a fresh store with MEM_INSTALLS synthetic installations (examples/bench_seed.rs,
# through InstallationStore::save): a sled folder, or with MEM_STORAGE=postgres a database of
# its own (slack_gateway_mem_PID, schema slack_gateway, dropped at exit) on MEM_PG_URL's
# server. Starts the shared harness's upstream and the gateway (bench/gateway.sh), reads
# VmRSS/VmHWM from /proc/PID/status once the gateway is up, sends MEM_REQUESTS distinct signed
# requests (teams drawn at random from all installations; MEM_COVER=1: one for each
# installation instead, so that the postgres backend's read cache, filled on first use, ends
# up holding all of them) with wrk for MEM_DURATION seconds, reads them again and prints them
# with the store's size on disk. With postgres, each line also gives the private memory
# (RssAnon) of the PostgreSQL backends serving the gateway's database: the server's shared
# buffers are not counted, nor anywhere here. The output is also written to
# bench/results/<date>-memory.txt.
#
# Environment (defaults in brackets):
#   MEM_INSTALLS [100000]  MEM_REQUESTS [5000]  MEM_DURATION [10]  MEM_CONNS [64]
#   MEM_THREADS [0]   server.workers of the gateway (0: one per core)
#   SHAPE [event]     event | command | mixed
#   MEM_STORAGE [sled]  sled | postgres
#   MEM_PG_URL [postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]  a URL (not
#                     key=value) to a server where this user may CREATE DATABASE
#   MEM_COVER [0]     1: one request per installation (MEM_REQUESTS is then ignored)
#   MEM_SEED_CONCURRENCY [4]  saves in flight while seeding PostgreSQL
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
STORAGE="${MEM_STORAGE:-sled}"
case "$STORAGE" in sled | postgres) ;; *) echo "MEM_STORAGE must be sled or postgres" >&2; exit 2 ;; esac
PG_URL="${MEM_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
PG_DB="" PG_SCHEMA=slack_gateway
UP_PID="" GW_PID=""
cleanup() {
    set +e  # a killed process's status must not end the cleanup half way
    [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
    [[ "${REMOVE_TMP:-0}" == 1 ]] && rm -rf "$BENCH_TMP"
    [[ -n "$PG_DB" ]] && { psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
        || echo "could not drop database $PG_DB" >&2; }
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ "$STORAGE" == postgres ]]; then
    command -v psql >/dev/null || { echo "needs psql (apt-get install -y postgresql-client)" >&2; exit 1; }
    PG_DB="slack_gateway_mem_$$"
    psql "$PG_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
    export GATEWAY_STORAGE=postgres GATEWAY_PG_SCHEMA="$PG_SCHEMA"
    GATEWAY_PG_URL="$(python3 -c 'import sys, urllib.parse as u; s = u.urlsplit(sys.argv[1]); print(u.urlunsplit(s._replace(path="/" + sys.argv[2])))' "$PG_URL" "$PG_DB")"
    export GATEWAY_PG_URL
fi

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
# The PostgreSQL backends of the gateway's database: "N backends, RssAnon X MiB".
pg_backends() {
    local n=0 kb=0 p
    for p in $(psql "$PG_URL" -qAtc "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DB'"); do
        n=$((n + 1)); kb=$((kb + $(status_kb "$p" RssAnon 2>/dev/null || echo 0)))
    done
    echo "$n PostgreSQL backends, RssAnon $(mib "$kb")"
}
snapshot() {  # label
    printf '%-34s VmRSS %10s  VmHWM %10s  (RssAnon %s, RssFile %s)%s\n' "$1" \
        "$(mib "$(status_kb "$GW_PID" VmRSS)")" "$(mib "$(status_kb "$GW_PID" VmHWM)")" \
        "$(mib "$(status_kb "$GW_PID" RssAnon)")" "$(mib "$(status_kb "$GW_PID" RssFile)")" \
        "$([[ "$STORAGE" == postgres ]] && echo "; $(pg_backends)")"
}
store_size() {
    if [[ "$STORAGE" == sled ]]; then
        echo "sled folder $(du -sh "$BENCH_TMP/store" | cut -f1) ($(du -sb "$BENCH_TMP/store" | cut -f1) bytes)"
    else
        psql "$GATEWAY_PG_URL" -qAtc "SELECT 'database ' || pg_size_pretty(pg_database_size(current_database()))
            || ', installations table with its indexes ' || pg_size_pretty(pg_total_relation_size('$PG_SCHEMA.installations'))
            || ' (' || pg_total_relation_size('$PG_SCHEMA.installations') || ' bytes)'"
    fi
}

mkdir -p "$BENCH/results"
REPORT="$BENCH/results/$(date +%Y%m%d-%H%M%S)-memory.txt"
exec > >(tee "$REPORT") 2>&1
echo "== slack-gateway resident memory: $N installations in $STORAGE ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC"

# 1. seed
t0=$(date +%s.%N)
if [[ "$STORAGE" == sled ]]; then
    STORE_ARGS=(--store "$BENCH_TMP/store")
else
    # Each save is a transaction that recounts the bots: on 2 cores more saves in flight only
    # wait longer, inside the store's 2 s per-call timeout.
    STORE_ARGS=(--postgres "$GATEWAY_PG_URL" --schema "$PG_SCHEMA" --concurrency "${MEM_SEED_CONCURRENCY:-4}")
fi
"$BENCH_SEED" "${STORE_ARGS[@]}" --client-id "$BENCH_CLIENT_ID" --synthetic "$N" \
    --export-json "$BENCH_TMP/installations.json" 2>&1
t1=$(date +%s.%N)
printf 'seeded in %.1f s; %s\n' "$(echo "$t1 - $t0" | bc)" "$(store_size)"

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
sys.path.insert(0, "$BENCH")
import gen_signed, signed_reqs
insts = gen_signed.load_installations(sys.argv[1])
if "${MEM_COVER:-0}" == "1":
    reqs = signed_reqs.cover(gen_signed, insts, "$SLACK_SIGNING_SECRET", "${SHAPE:-event}", 7)
else:
    reqs = gen_signed.make_requests(insts, "$SLACK_SIGNING_SECRET", $REQS, "${SHAPE:-event}")
signed_reqs.write_lua(reqs, sys.argv[2])  # gen_signed.write_lua's format, in chunks (Lua's limits)
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
printf 'after the run: %s\n' "$(store_size)"
echo "report: $REPORT"
