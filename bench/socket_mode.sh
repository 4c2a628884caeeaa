#!/usr/bin/env bash
# Socket Mode ingress against the upstream answering at once (issue 20, "Performance"):
# envelopes per second through the gateway to the upstream, and the ack latency, with a local
# fake Socket Mode server; in the same run, the same events POSTed straight to the upstream.
#
#   bash bench/socket_mode.sh                                  # 3 reps, ~5 min
#   REPS=5 DURATION=10 SM_CONNECTIONS="1 2" bash bench/socket_mode.sh
#   PACED_RATE=2000 CLOSED_N="16 64" bash bench/socket_mode.sh
#   GATEWAY_REV=HEAD bash bench/socket_mode.sh                 # a commit, not the working tree
#
# Pieces (examples/, built in release from the working tree whatever GATEWAY_REV says):
#   bench_upstream  the app: hyper on one thread, reads each body and answers 200 {"ok":true}
#                   at once; counts the requests that carried X-Slack-Bot-Token;
#   socket_bench    the fake Slack: POST /api/apps.connections.open hands out ws:// URLs; each
#                   WebSocket gets `hello`, then `events_api` envelopes (a ~1.5 KB message
#                   event_callback, the harness's shape, for a seeded team in turn, unique
#                   envelope and event ids), and the gateway's acks are read back; latency is
#                   from just before an envelope's frame is written to the moment its ack is
#                   read. Driven over HTTP (POST /bench/run) by this script;
#   event_load      the anchor: the same events POSTed straight to bench_upstream (signed; the
#                   upstream does not check), keep-alive, the same loads: the upstream's own
#                   time as a client on this box sees it.
# The gateway: `[socket_mode] enabled = true, app_token = "xapp-bench", connections = C`,
# slack.api_url = the fake, upstream = bench_upstream, server.workers = SM_WORKERS, a sled
# store seeded by bench_seed --synthetic SM_TEAMS. It is started afresh (same store) for each
# measurement, and served once every socket has said hello.
#
# Targets, in each rep, their order rotating: `direct` (event_load -> upstream) and `socketC`
# for each C in SM_CONNECTIONS (fake -> C WebSockets -> gateway -> upstream, acks back).
# Loads, each WARMUP s (not measured) then DURATION s:
#   paced     PACED_RATE envelopes (requests) a second in all, whatever the answers do: far
#             below saturation, so p50/p99 are one envelope's latency, not a queue's
#             (direct: over PACED_CONNS connections);
#   closedN   for each N in CLOSED_N: N envelopes outstanding, the next sent as an ack frees a
#             slot (direct: N keep-alive connections): throughput.
# A row: envelopes (requests) answered per second within the window, p50, p99, max of the
# envelopes sent within it, the CPU per envelope (user + kernel from /proc) of the gateway and
# of the upstream, and the cores used meanwhile by other processes (`foreign`: machine-wide
# user + system + steal time less the gateway's, the upstream's and the load tool's); a run with
# more than MAX_FOREIGN is measured again, up to RETRIES times. Then per load the medians, and
# the issue's figures: the added ack latency, socketC p99 - direct p99 (target < 5 ms; of the
# medians, and the median of the per-rep differences), and the throughput ratio socketC /
# direct.
#
# Layout (as ab.sh, egress.sh): the gateway and the upstream on CPU 0, the fake and event_load
# on CPU 1 (SM_LAYOUT=shared: nothing pinned).
#
# Environment (defaults in brackets):
#   REPS [3]  DURATION [10]  WARMUP [2]  SM_CONNECTIONS ["1 2"]  PACED_RATE [1000]
#   PACED_CONNS [8]  CLOSED_N ["64"]  SM_TEAMS [1000]  SM_WORKERS [1]  SM_LAYOUT [pinned]
#   MAX_FOREIGN [0.15]  RETRIES [1]  RUST_LOG [warn]
#   GATEWAY_WRAP [""]  a command the gateway runs under, words split on spaces (an experiment:
#                      e.g. "env LD_PRELOAD=/tmp/nodelay.so"; the pid measured is the wrapper's,
#                      so use a wrapper that execs, as env does)
#   PORT_OFFSET [0]  ports 9070 (upstream), 9071 (the gateway's HTTP listener), 9072 (the fake),
#                    9073 (the gateway's admin listener: metrics), + offset
#   and bench/lib.sh's GATEWAY_REV, BENCH_SKIP_BUILD (GATEWAY_BIN / BENCH_SEED), CARGO_TARGET_DIR.
# Needs: curl, python3, taskset. Not the harness, not wrk.
# Output: the terminal and bench/results/<date>-socket-mode.txt.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
for c in curl python3 taskset; do
    command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }
done

REPS="${REPS:-3}"
SECS="${DURATION:-10}"
WARM="${WARMUP:-2}"
read -r -a CONN_LIST <<<"${SM_CONNECTIONS:-1 2}"
read -r -a CLOSED_LIST <<<"${CLOSED_N:-64}"
PACED_RATE="${PACED_RATE:-1000}"
PACED_CONNS="${PACED_CONNS:-8}"
TEAMS="${SM_TEAMS:-1000}"
WORKERS="${SM_WORKERS:-1}"
MAX_FOREIGN="${MAX_FOREIGN:-0.15}"
RETRIES="${RETRIES:-1}"
case "${SM_LAYOUT:-pinned}" in
    pinned) PIN_SRV=(taskset -c 0); PIN_LOAD=(taskset -c 1) ;;
    shared) PIN_SRV=(); PIN_LOAD=() ;;
    *) echo "SM_LAYOUT must be pinned or shared" >&2; exit 2 ;;
esac

read -r -a WRAP <<<"${GATEWAY_WRAP:-}"
GIVEN_BIN="${GATEWAY_BIN:-}"
bench_build
[[ -n "$GIVEN_BIN" ]] && GATEWAY_DESC="the binary given in GATEWAY_BIN"
EX="${CARGO_TARGET_DIR:-$REPO/target}/release/examples"
[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet --locked \
    --example socket_bench --example event_load --example bench_upstream)
for b in socket_bench event_load bench_upstream; do
    [[ -x "$EX/$b" ]] || { echo "missing $EX/$b (cargo build --release --example $b)" >&2; exit 1; }
done

OFF="${PORT_OFFSET:-0}"
P() { echo $(($1 + OFF)); }
UP_PORT="$(P 9070)"
GW_PORT="$(P 9071)"
FAKE_PORT="$(P 9072)"
ADMIN_PORT="$(P 9073)"
FAKE="http://127.0.0.1:$FAKE_PORT"

TMP="$(mktemp -d -t slack-gateway-socket-mode.XXXXXX)"
PIDS=()
GW_PID=""
cleanup() {
    local p
    [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}" $GW_PID; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_port() {
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

OUTFILE="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-socket-mode.txt"
mkdir -p "$(dirname "$OUTFILE")"
exec > >(tee "$OUTFILE") 2>&1
echo "== Socket Mode ingress against the upstream answering at once ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC${WRAP[*]:+, run under: ${WRAP[*]}}"
echo "layout: ${SM_LAYOUT:-pinned}$([[ "${SM_LAYOUT:-pinned}" == pinned ]] && echo ": gateway (server.workers = $WORKERS) and upstream (1 thread) on CPU 0, fake Slack / event_load (1 thread) on CPU 1")"
echo "$REPS reps x loads (paced $PACED_RATE/s$(for n in "${CLOSED_LIST[@]}"; do printf ', closed %s outstanding' "$n"; done)):" \
    "${WARM} s warm-up + ${SECS} s each; targets direct$(for c in "${CONN_LIST[@]}"; do printf ' socket%s' "$c"; done); $TEAMS installations"

# --- the store, the upstream, the fake
"$BENCH_SEED" --store "$TMP/store" --client-id bench-client --synthetic "$TEAMS" \
    --export-json "$TMP/installations.json" >"$TMP/seed.log" 2>&1 || { cat "$TMP/seed.log" >&2; exit 1; }
BENCH_UPSTREAM_ADDR="127.0.0.1:$UP_PORT" "${PIN_SRV[@]}" "$EX/bench_upstream" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
UP_PID=$!
"${PIN_LOAD[@]}" "$EX/socket_bench" --addr "127.0.0.1:$FAKE_PORT" --installations "$TMP/installations.json" \
    >"$TMP/fake.log" 2>&1 &
PIDS+=($!)
FAKE_PID=$!
wait_port "$UP_PORT" || { echo "the upstream did not start" >&2; cat "$TMP/upstream.log" >&2; exit 1; }
wait_port "$FAKE_PORT" || { echo "the fake did not start" >&2; cat "$TMP/fake.log" >&2; exit 1; }

stat_of() { # url field
    curl -s "$1" | python3 -c "import json, sys; print(json.load(sys.stdin)[\"$2\"])"
}
# start_gateway CONNECTIONS: a fresh process on the seeded store, served once every socket
# said hello.
start_gateway() {
    stop_gateway
    cat >"$TMP/gateway.toml" <<EOF
# written by bench/socket_mode.sh
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
replay_protection = false
workers = $WORKERS

[slack]
client_id = "bench-client"
client_secret = "bench-client-secret"
signing_secret = "bench-signing-secret"
api_url = "$FAKE/api"

[oauth]
scopes = ["chat:write"]

[upstream]
url = "http://127.0.0.1:$UP_PORT"
slack_paths = ["/slack/events"]

[storage]
path = "$TMP/store"

[socket_mode]
enabled = true
app_token = "xapp-bench"
connections = $1
EOF
    local before
    before="$(stat_of "$FAKE/bench/status" opened)"
    RUST_LOG="${RUST_LOG:-warn}" "${PIN_SRV[@]}" "${WRAP[@]}" "$GATEWAY_BIN" --config "$TMP/gateway.toml" \
        >>"$TMP/gateway.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 1 200); do
        if (($(stat_of "$FAKE/bench/status" serving) >= $1)) \
            && (($(stat_of "$FAKE/bench/status" opened) >= before + $1)); then
            return 0
        fi
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the gateway did not open $1 Socket Mode connection(s)" >&2
    tail -20 "$TMP/gateway.log" >&2
    exit 1
}
stop_gateway() {
    [[ -n "$GW_PID" ]] || return 0
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
    # The fake sees the sockets close.
    for _ in $(seq 1 100); do
        (($(stat_of "$FAKE/bench/status" serving) == 0)) && return 0
        sleep 0.05
    done
}
field() { sed -n "s/.* $1=\\([0-9.]*\\).*/\\1/p" <<<" $2"; }

# --- sanity: an envelope reaches the upstream with the bot token and is acked
start_gateway "${CONN_LIST[0]}"
tok0="$(stat_of "http://127.0.0.1:$UP_PORT/__stats" with_token)"
out="$(curl -s -X POST "$FAKE/bench/run?mode=rate&rate=200&warmup=0&secs=1&label=sanity")"
tok1="$(stat_of "http://127.0.0.1:$UP_PORT/__stats" with_token)"
sent="$(field sent "$out")"; acked="$(field acked "$out")"
if [[ -z "$sent" || "$sent" == 0 || "$sent" != "$acked" || $((tok1 - tok0)) -lt "$sent" ]]; then
    echo "sanity check failed: $out; the upstream saw $((tok1 - tok0)) requests with a bot token" >&2
    tail -20 "$TMP/gateway.log" >&2
    exit 1
fi
echo "check: $sent envelopes over Socket Mode, $acked acked, the upstream saw $((tok1 - tok0)) with the team's bot token"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^slack_gateway_socket_mode_envelopes_total' | sed 's/^/  /'
out="$("${PIN_LOAD[@]}" "$EX/event_load" --url "http://127.0.0.1:$UP_PORT/slack/events" \
    --installations "$TMP/installations.json" --secret bench-signing-secret --conns 1 --count 100 --label sanity 2>/dev/null)"
[[ "$(field requests "$out")" == 100 ]] || { echo "sanity check failed: direct: $out" >&2; exit 1; }
echo "check: 100 events straight to the upstream, answered 2xx"

# --- measuring
T="$(getconf CLK_TCK)"
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat; }

# run_load TARGET LOAD SECS WARM: one run; prints the RESULT line; the load tool's CPU ticks
# in $TMP/tool.cpu.
run_load() {
    local t="$1" load="$2" secs="$3" warm="$4"
    if [[ "$t" == direct ]]; then
        local conns rate=0
        if [[ "$load" == paced ]]; then conns="$PACED_CONNS"; rate="$PACED_RATE"; else conns="${load#closed}"; fi
        (
            "${PIN_LOAD[@]}" "$EX/event_load" --url "http://127.0.0.1:$UP_PORT/slack/events" \
                --installations "$TMP/installations.json" --secret bench-signing-secret \
                --conns "$conns" --rate "$rate" --warmup "$warm" --duration "$secs" --label "$t" \
                >"$TMP/load.out" 2>/dev/null
            awk '{ print $16 + $17 }' "/proc/$BASHPID/stat" >"$TMP/tool.cpu"
        )
        grep RESULT "$TMP/load.out"
    else
        local f0 q
        f0="$(cpu_of "$FAKE_PID")"
        if [[ "$load" == paced ]]; then q="mode=rate&rate=$PACED_RATE"; else q="mode=closed&n=${load#closed}"; fi
        curl -s -X POST "$FAKE/bench/run?$q&warmup=$warm&secs=$secs&label=$t"
        echo $(($(cpu_of "$FAKE_PID") - f0)) >"$TMP/tool.cpu"
    fi
}

# measure TARGET LOAD REP: prints the row (retried while the host was busy).
measure() {
    local t="$1" load="$2" rep="$3" try out g0 g1 u0 u1 b0 b1 n row fx lost
    for try in $(seq 0 "$RETRIES"); do
        g0=0; [[ "$t" == direct ]] || g0="$(cpu_of "$GW_PID")"
        u0="$(cpu_of "$UP_PID")"; b0="$(busy)"
        out="$(run_load "$t" "$load" "$SECS" "$WARM")"
        b1="$(busy)"; u1="$(cpu_of "$UP_PID")"
        g1=0; [[ "$t" == direct ]] || g1="$(cpu_of "$GW_PID")"
        if [[ "$t" == direct ]]; then
            n="$(field requests "$out")"
            lost="$(( $(field err_status "$out") + $(field err_sock "$out") ))"
        else
            n="$(awk -v r="$(field env_rate "$out")" -v s="$SECS" 'BEGIN { printf "%d", r * s }')"
            lost="$(field unacked "$out")"
        fi
        [[ -n "$n" && "$n" != 0 ]] || { echo "no result: $t $load: $out" >&2; tail -5 "$TMP/gateway.log" >&2; exit 1; }
        # CPU per envelope over the whole run (warm-up included): divide by all it sent.
        row="$(awk -v r="$rep" -v l="$load" -v name="$t" -v n="$n" -v secs="$SECS" -v warm="$WARM" \
            -v p50="$(field p50_us "$out")" -v p99="$(field p99_us "$out")" -v mx="$(field max_us "$out")" \
            -v g=$((g1 - g0)) -v u=$((u1 - u0)) -v w="$(cat "$TMP/tool.cpu")" -v b=$((b1 - b0)) \
            -v T="$T" -v lost="$lost" 'BEGIN {
            rate = n / secs; total = rate * (secs + warm)
            gw = name == "direct" ? "-" : sprintf("%.1f", g / T * 1e6 / total)
            foreign = (b - g - u - w) / T / (secs + warm); if (foreign < 0) foreign = 0
            printf "%-4s %-9s %-8s %9.0f %8.3f %8.3f %8.2f %10s %10.1f %8.2f %6d\n", r, l, name, rate,
                p50 / 1000, p99 / 1000, mx / 1000, gw, u / T * 1e6 / total, foreign, lost }')"
        fx="$(awk '{ print $10 }' <<<"$row")"
        if awk -v x="$fx" -v m="$MAX_FOREIGN" 'BEGIN { exit !(x <= m) }'; then
            echo "$row"
            return
        elif ((try == RETRIES)); then
            ((RETRIES == 0)) || echo "warning: busy host: $t $load kept with $fx foreign cores (rep $rep)" >&2
            echo "$row"
            return
        fi
        echo "  (rep $rep, $load, $t: $fx foreign cores; measured again)" >&2
    done
}

TARGETS=(direct)
for c in "${CONN_LIST[@]}"; do TARGETS+=("socket$c"); done
LOADS=(paced)
for n in "${CLOSED_LIST[@]}"; do LOADS+=("closed$n"); done

echo
printf '%-4s %-9s %-8s %9s %8s %8s %8s %10s %10s %8s %6s\n' rep load target "env/s" "p50 ms" "p99 ms" \
    "max ms" "gw µs/env" "up µs/env" foreign lost | tee "$TMP/rows"
for rep in $(seq 1 "$REPS"); do
    k=$(((rep - 1) % ${#TARGETS[@]}))
    for t in "${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}"; do
        if [[ "$t" == direct ]]; then
            stop_gateway
        else
            start_gateway "${t#socket}"
        fi
        for load in "${LOADS[@]}"; do
            measure "$t" "$load" "$rep" >"$TMP/row"
            tee -a "$TMP/rows" <"$TMP/row"
        done
    done
done
stop_gateway

echo
echo "medians over $REPS reps:"
python3 - "$TMP/rows" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = [r for r in rows if len(r) == 11]
by = {}  # load -> target -> rep -> row
for r in rows:
    by.setdefault(r[1], {}).setdefault(r[2], {})[r[0]] = r
med = lambda xs: st.median(xs) if xs else float("nan")
RATE, P50, P99, MAX, GW, UP, FOREIGN, LOST = 3, 4, 5, 6, 7, 8, 9, 10
for load, targets in by.items():
    paced = load == "paced"
    print(f"load {load} ({'paced' if paced else load[6:] + ' outstanding, closed loop'}):")
    for name in sorted(targets, key=lambda n: (n != "direct", n)):
        v = list(targets[name].values())
        gw = [float(x[GW]) for x in v if x[GW] != "-"]
        gws = f"{med(gw):6.1f}" if gw else "     -"
        print(f"  {name:8} env/s {med([float(x[RATE]) for x in v]):8.0f}   p50 {med([float(x[P50]) for x in v]):6.3f} ms"
              f"   p99 {med([float(x[P99]) for x in v]):6.3f} ms   max {max(float(x[MAX]) for x in v):7.2f} ms"
              f"   gateway CPU {gws} µs/env   upstream CPU {med([float(x[UP]) for x in v]):5.1f} µs/env"
              f"   lost {sum(int(x[LOST]) for x in v)}   foreign {max(float(x[FOREIGN]) for x in v):4.2f} max   ({len(v)} reps)")
    if "direct" not in targets:
        continue
    D = targets["direct"]
    for name in sorted(t for t in targets if t != "direct"):
        S = targets[name]
        reps = [k for k in S if k in D]
        d99 = med([float(x[P99]) for x in S.values()]) - med([float(x[P99]) for x in D.values()])
        d99_r = med([float(S[k][P99]) - float(D[k][P99]) for k in reps])
        d50 = med([float(S[k][P50]) - float(D[k][P50]) for k in reps])
        ratio = med([float(x[RATE]) for x in S.values()]) / med([float(x[RATE]) for x in D.values()])
        verdict = f"   target < 5 ms: {'met' if d99 < 5.0 and d99_r < 5.0 else 'NOT met'}" if paced else ""
        print(f"  {name}: ack p99 - upstream p99 {d99:+7.3f} ms (median of per-rep differences {d99_r:+7.3f}; p50 {d50:+7.3f}){verdict}")
        if not paced:
            print(f"  {name}/direct throughput {ratio:6.3f}")
EOF
echo "gateway log: $(wc -l <"$TMP/gateway.log") lines"
grep -m5 -i 'warn\|error' "$TMP/gateway.log" || true
echo "report: $OUTFILE"
