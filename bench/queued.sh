#!/usr/bin/env bash
# Queued delivery on sled against direct forwarding (issue 21, "Performance"): the answer to
# Slack (throughput, p50/p99) with `delivery.mode = "queued"` beside direct mode, both to an
# upstream that answers at once, and queued to an upstream that takes 2 s; events delivered
# per second; and the store's growth per million events delivered.
#
#   bash bench/queued.sh                                      # 3 reps + growth, ~9 min
#   REPS=5 DURATION=10 bash bench/queued.sh
#   QUEUED_EVENTS=50000 QUEUED_BATCHES=1 QUEUED_SWEEP_CHECK=0 bash bench/queued.sh
#   GATEWAY_REV=HEAD bash bench/queued.sh                     # a commit, not the working tree
#
# Pieces (examples/, built in release from the working tree whatever GATEWAY_REV says):
#   event_load      the load: signed event_callback requests (~1.5 KB, the harness's message
#                   event, a seeded team in turn), every one with an event_id of its own. Not
#                   wrk with a file of pre-signed requests: queued delivery answers a repeated
#                   (api_app_id, event_id) 200 without storing it, so a cycled file would
#                   measure the duplicate path after its first pass, and a file of distinct
#                   requests for a run at these rates is hundreds of MB; event_load builds and
#                   signs each body as it sends it (a few µs). Closed loop on N keep-alive
#                   connections, or paced (PACED_RATE a second over PACED_CONNS connections);
#                   latency from writing the request to reading the whole answer;
#   bench_upstream  the app: hyper on one thread, reads the body and answers 200 {"ok":true},
#                   at once, or (the `slow` one) after BENCH_UPSTREAM_DELAY_MS = SLOW_MS
#                   (2000); counts requests and queued deliveries (X-Gateway-Delivery-Attempt);
#   sled_trees      counts each tree of the stopped gateway's sled store.
# The gateway: server.workers = Q_WORKERS (1), replay_protection = false (irrelevant: every
# request is new), a sled store seeded by bench_seed --synthetic Q_TEAMS (1000), copied afresh
# for every gateway started, upstream.timeout at its default (2.5 s), [delivery] at its
# defaults (concurrency 32, dedupe_window 1h) but `mode`.
#
# Part 0 (HANG_CONNS > 0): many events at once. A queued gateway gets HANG_CONNS connections
# in a closed loop for 3 s, then 3 events on one connection. Each accepted event awaits sled's
# Db::flush_async; sled 0.34.7's deadlocks when about 8 run at once (spacejam/sled#1308: every
# thread of sled's IO pool blocks in the flush, waiting for the log write that is queued behind
# them on the same pool), and from then on every new event is answered 503 after
# upstream.timeout. When the 3 events fail, the gateway's threads are listed with their kernel
# wait channel, and (with gdb) the sled frame each sled-io thread waits in.
#
# Part 1, the answer to Slack. Targets (Q_TARGETS), in each rep, their order rotating, each a
# fresh gateway on a fresh copy of the store:
#   direct       mode = "direct", the instant upstream: the anchor;
#   queued       mode = "queued", the instant upstream;
#   queued_slow  mode = "queued", the upstream taking SLOW_MS per request (the backlog grows:
#                32 deliveries in flight at 2 s each deliver 16 events a second).
# Per target: a WARMUP-s closed-loop warm-up on SAFE_CONNS connections (the installation
# cache), then loads, each WARMUP s not measured and DURATION s measured: `paced` (PACED_RATE
# requests a second over PACED_CONNS connections: far below saturation, one request's
# latency), and `closedN` for each N in CONNS (throughput; 4 stays below the deadlock above,
# 32 does not, so its queued rows show what Slack would get). A row: requests answered 2xx a
# second, p50, p99, max, the gateway's CPU per request (all its threads, user + kernel,
# /proc), for the queued targets the events accepted and delivered a second over the whole
# run (warm-up included; from the gateway's metrics
# `slack_gateway_delivery_accepted_total{result="queued"}` and
# `slack_gateway_delivery_attempts_total{result="delivered"}`) and the backlog after it
# (accepted - delivered, cumulative for that gateway), the cores used by other processes
# meanwhile (`foreign`; a run above MAX_FOREIGN is measured again, up to RETRIES times),
# errors (non-2xx answers, socket errors) and `late` (paced requests sent over 5 ms after
# their time). Summary: medians; queued / direct throughput and p99; queued_slow / queued
# p99 (the issue's target: unchanged).
#
# Part 2, delivery and growth (QUEUED_EVENTS > 0): a fresh queued gateway, the instant
# upstream; the store folder's size (du -sb) once idle; then QUEUED_BATCHES times:
# QUEUED_EVENTS events sent closed loop on SAFE_CONNS connections, the metrics sampled every
# second; the time to accept them, the time until all are delivered (delivered events a
# second), the folder's size when the load ended and once everything is delivered. Then the
# gateway is stopped (SIGTERM), the size taken again, and sled_trees counts what the store
# still holds: `deliveries` and `deliveries_due` must be empty (delivered entries pruned); the
# dedupe keys (`delivery_dedupe`, `delivery_dedupe_by_expiry`) stay for dedupe_window (1 h).
# Growth per million events = (size after - size idle) / events x 10^6.
#
# Part 3 (QUEUED_SWEEP_CHECK=1): the dedupe sweep's capacity. A gateway with
# dedupe_window = "1s" gets SWEEP_EVENTS (25,000) events, runs past its first sweep (60 s after
# start), is stopped, and sled_trees counts the dedupe keys left (the sweep forgets at most
# 10,000 keys a minute).
#
# Layout (as ab.sh, egress.sh): the gateway and the upstreams on CPU 0, event_load on CPU 1.
# The store is in TMPDIR (/tmp: ext4 on this box; a tmpfs would hide the cost of flushing).
#
# Environment (defaults in brackets):
#   REPS [3]  DURATION [10]  WARMUP [2]  CONNS ["4 32"]  PACED_RATE [1000]  PACED_CONNS [4]
#   SAFE_CONNS [4]  HANG_CONNS [32] (0: no part 0)
#   Q_TARGETS ["direct queued queued_slow"]  SLOW_MS [2000]  Q_TEAMS [1000]  Q_WORKERS [1]
#   QUEUED_EVENTS [100000] (0: no part 2)  QUEUED_BATCHES [2]  QUEUED_SWEEP_CHECK [1]
#   SWEEP_EVENTS [25000]  DRAIN_TIMEOUT [300] s  MAX_FOREIGN [0.15]  RETRIES [1]  RUST_LOG [warn]
#   PORT_OFFSET [0]   ports 9075 (instant upstream), 9076 (slow upstream), 9077 (gateway),
#                     9078 (its admin listener: metrics), + offset
#   and bench/lib.sh's GATEWAY_REV, BENCH_SKIP_BUILD (GATEWAY_BIN / BENCH_SEED), CARGO_TARGET_DIR.
# Needs: curl, python3, taskset; gdb optional (part 0's stacks). Not the harness, not wrk.
# Output: the terminal and bench/results/<date>-queued.txt.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
for c in curl python3 taskset du; do
    command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }
done

REPS="${REPS:-3}"
SECS="${DURATION:-10}"
WARM="${WARMUP:-2}"
read -r -a CONN_LIST <<<"${CONNS:-4 32}"
read -r -a TARGETS <<<"${Q_TARGETS:-direct queued queued_slow}"
PACED_RATE="${PACED_RATE:-1000}"
PACED_CONNS="${PACED_CONNS:-4}"
SLOW_MS="${SLOW_MS:-2000}"
TEAMS="${Q_TEAMS:-1000}"
WORKERS="${Q_WORKERS:-1}"
EVENTS="${QUEUED_EVENTS:-100000}"
BATCHES="${QUEUED_BATCHES:-2}"
SWEEP_CHECK="${QUEUED_SWEEP_CHECK:-1}"
SWEEP_EVENTS="${SWEEP_EVENTS:-25000}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-300}"
MAX_FOREIGN="${MAX_FOREIGN:-0.15}"
RETRIES="${RETRIES:-1}"
SECRET=bench-signing-secret
PIN_SRV=(taskset -c 0)
PIN_LOAD=(taskset -c 1)
SAFE_CONNS="${SAFE_CONNS:-4}"
HANG_CONNS="${HANG_CONNS:-32}"

GIVEN_BIN="${GATEWAY_BIN:-}"
bench_build
[[ -n "$GIVEN_BIN" ]] && GATEWAY_DESC="the binary given in GATEWAY_BIN"
EX="${CARGO_TARGET_DIR:-$REPO/target}/release/examples"
[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || (cd "$REPO" && cargo build --release --quiet --locked \
    --example event_load --example bench_upstream --example sled_trees)
for b in event_load bench_upstream sled_trees; do
    [[ -x "$EX/$b" ]] || { echo "missing $EX/$b (cargo build --release --example $b)" >&2; exit 1; }
done

OFF="${PORT_OFFSET:-0}"
P() { echo $(($1 + OFF)); }
UP_FAST="$(P 9075)"
UP_SLOW="$(P 9076)"
GW_PORT="$(P 9077)"
ADMIN_PORT="$(P 9078)"

TMP="$(mktemp -d -t slack-gateway-queued.XXXXXX)"
PIDS=()
GW_PID=""
SAMPLER=""
cleanup() {
    local p
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
    [[ -n "$GW_PID" ]] && kill -9 "$GW_PID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}" $GW_PID $SAMPLER; do wait "$p" 2>/dev/null || true; done
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

OUTFILE="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-queued.txt"
mkdir -p "$(dirname "$OUTFILE")"
exec > >(tee "$OUTFILE") 2>&1
echo "== queued delivery on sled against direct forwarding ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC"
echo "layout: gateway (server.workers = $WORKERS) and upstreams (1 thread each) on CPU 0, event_load (1 thread) on CPU 1;" \
    "store in $(dirname "$TMP") ($(df -T "$TMP" | awk 'NR == 2 { print $2 }'))"
echo "$REPS reps x loads (paced $PACED_RATE/s over $PACED_CONNS connections$(for n in "${CONN_LIST[@]}"; do printf ', closed loop %s connections' "$n"; done)):" \
    "${WARM} s warm-up + ${SECS} s each; targets ${TARGETS[*]} (slow upstream: $SLOW_MS ms); $TEAMS installations"

# --- the store, the upstreams
"$BENCH_SEED" --store "$TMP/seed" --client-id bench-client --synthetic "$TEAMS" \
    --export-json "$TMP/installations.json" >"$TMP/seed.log" 2>&1 || { cat "$TMP/seed.log" >&2; exit 1; }
BENCH_UPSTREAM_ADDR="127.0.0.1:$UP_FAST" "${PIN_SRV[@]}" "$EX/bench_upstream" >"$TMP/up-fast.log" 2>&1 &
PIDS+=($!)
UP_FAST_PID=$!
BENCH_UPSTREAM_ADDR="127.0.0.1:$UP_SLOW" BENCH_UPSTREAM_DELAY_MS="$SLOW_MS" "${PIN_SRV[@]}" "$EX/bench_upstream" \
    >"$TMP/up-slow.log" 2>&1 &
PIDS+=($!)
UP_SLOW_PID=$!
wait_port "$UP_FAST" && wait_port "$UP_SLOW" || { echo "an upstream did not start" >&2; cat "$TMP"/up-*.log >&2; exit 1; }

RUN=0
# start_gateway MODE UPSTREAM_PORT [extra [delivery] lines]: a fresh process on a fresh copy of
# the seeded store ($STORE).
start_gateway() {
    stop_gateway
    RUN=$((RUN + 1))
    STORE="$TMP/run$RUN/store"
    mkdir -p "$TMP/run$RUN"
    cp -a "$TMP/seed" "$STORE"
    cat >"$TMP/run$RUN/gateway.toml" <<EOF
# written by bench/queued.sh
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
replay_protection = false
workers = $WORKERS

[slack]
client_id = "bench-client"
client_secret = "bench-client-secret"
signing_secret = "$SECRET"

[oauth]
scopes = ["chat:write"]

[upstream]
url = "http://127.0.0.1:$2"
slack_paths = ["/slack/events"]

[storage]
path = "$STORE"

[delivery]
mode = "$1"
${3:-}
EOF
    RUST_LOG="${RUST_LOG:-warn}" "${PIN_SRV[@]}" "$GATEWAY_BIN" --config "$TMP/run$RUN/gateway.toml" \
        >>"$TMP/gateway.log" 2>&1 &
    GW_PID=$!
    wait_port "$GW_PORT" && wait_port "$ADMIN_PORT" || { echo "the gateway did not start" >&2; tail -20 "$TMP/gateway.log" >&2; exit 1; }
}
stop_gateway() { # [KILL]: SIGKILL (the store is thrown away)
    [[ -n "$GW_PID" ]] || return 0
    kill "-${1:-TERM}" "$GW_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
    # The port is free again.
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null || return 0; sleep 0.05; done
}
# metrics: "accepted delivered depth" from the gateway's admin listener.
metrics() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^slack_gateway_delivery_accepted_total\{result="queued"\}/ { a = $2 }
        /^slack_gateway_delivery_attempts_total\{result="delivered"\}/ { d = $2 }
        /^slack_gateway_delivery_queue_depth / { q = $2 }
        END { printf "%d %d %d\n", a, d, q }'
}
field() { sed -n "s/.* $1=\\([0-9.]*\\).*/\\1/p" <<<" $2"; }
load() { # label conns rate warm secs [count]: event_load's RESULT line; its CPU in $TMP/tool.cpu
    (
        "${PIN_LOAD[@]}" "$EX/event_load" --url "http://127.0.0.1:$GW_PORT/slack/events" \
            --installations "$TMP/installations.json" --secret "$SECRET" --label "$1" \
            --conns "$2" --rate "$3" --warmup "$4" --duration "$5" --count "${6:-0}" >"$TMP/load.out" 2>"$TMP/load.err"
        awk '{ print $16 + $17 }' "/proc/$BASHPID/stat" >"$TMP/tool.cpu"
    )
    grep RESULT "$TMP/load.out" || { cat "$TMP/load.err" >&2; return 1; }
}
up_of() { [[ "$1" == queued_slow ]] && echo "$UP_SLOW" || echo "$UP_FAST"; }
mode_of() { [[ "$1" == direct ]] && echo direct || echo queued; }

# --- sanity: direct forwards with the token; queued answers 200 at once and delivers
for t in direct queued; do
    start_gateway "$(mode_of "$t")" "$UP_FAST"
    s0="$(curl -s "http://127.0.0.1:$UP_FAST/__stats")"
    out="$(load sanity 1 0 0 0 50)"
    sleep 0.5
    s1="$(curl -s "http://127.0.0.1:$UP_FAST/__stats")"
    read -r acc del _ <<<"$(metrics)"
    python3 - "$t" "$s0" "$s1" "$(field requests "$out")" "$acc" "$del" <<'EOF' || exit 1
import json, sys
t, s0, s1, n, acc, dl = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4] or 0), int(sys.argv[5]), int(sys.argv[6])
d = {k: s1[k] - s0[k] for k in s0}
ok = n == 50 and d["with_token"] == 50
if t == "queued":
    ok = ok and acc == 50 and dl == 50 and d["deliveries"] == 50
    note = f"accepted {acc}, delivered {dl}; the upstream saw {d['deliveries']} deliveries, {d['with_token']} with the bot token"
else:
    ok = ok and d["deliveries"] == 0
    note = f"the upstream saw {d['requests']}, {d['with_token']} with the bot token"
print(f"check {t}: 50 events answered 2xx; {note}")
if not ok:
    sys.exit(f"sanity check failed ({t}): {d}, accepted {acc}, delivered {dl}")
EOF
done
stop_gateway

# --- part 0: many events at once (sled's flush_async from every request at the same time)
if ((HANG_CONNS > 0)); then
    echo
    echo "part 0: queued, $HANG_CONNS connections in a closed loop for 3 s, then 20 events on one connection"
    start_gateway queued "$UP_FAST"
    out="$(load burst "$HANG_CONNS" 0 0 3)"
    echo "  burst: $(field requests "$out") answered 2xx, $(field err_status "$out") non-2xx, $(field err_sock "$out") socket errors"
    out="$(load after 1 0 0 0 3)"
    read -r acc del _ <<<"$(metrics)"
    ok="$(field requests "$out")"
    echo "  after it: $ok of 3 answered 2xx; accepted $acc (answered 200), delivered $del (metrics)"
    if [[ "$ok" != 3 ]]; then
        echo "  HUNG: the gateway answers events 503 since the burst (\"the event was not stored within upstream.timeout\")"
        echo "  its threads (name: kernel wait channel):"
        for task in /proc/"$GW_PID"/task/*; do
            printf '    %s: %s\n' "$(cat "$task/comm")" "$(cat "$task/wchan" 2>/dev/null)"
        done | sort | uniq -c
        if command -v gdb >/dev/null; then
            echo "  where the sled-io threads wait (gdb):"
            timeout 60 gdb -p "$GW_PID" -batch -ex 'thread apply all bt 8' 2>/dev/null \
                | awk '/^Thread/ { match($0, /"[^"]*"/); name = substr($0, RSTART + 1, RLENGTH - 2); sub(/-[0-9]+$/, "-N", name); seen = 0; next }
                       /^#/ && !seen { for (i = 1; i <= NF; i++) if ($i ~ /::/) { f = $i; sub(/::h[0-9a-f]+$/, "", f); if (f ~ /^sled::/) { print "      " name ": " f; seen = 1 }; break } }' \
                | sort | uniq -c
        fi
    fi
    stop_gateway KILL
fi

# --- part 1: the answer to Slack
T="$(getconf CLK_TCK)"
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat; }

# measure TARGET LOAD REP: prints the row (measured again while the host was busy).
measure() {
    local t="$1" ld="$2" rep="$3" try out g0 g1 u0 u1 b0 b1 m0 m1 row fx conns rate=0
    if [[ "$ld" == paced ]]; then conns="$PACED_CONNS"; rate="$PACED_RATE"; else conns="${ld#closed}"; fi
    for try in $(seq 0 "$RETRIES"); do
        g0="$(cpu_of "$GW_PID")"; u0=$(($(cpu_of "$UP_FAST_PID") + $(cpu_of "$UP_SLOW_PID"))); b0="$(busy)"; m0="$(metrics)"
        out="$(load "$t" "$conns" "$rate" "$WARM" "$SECS")"
        b1="$(busy)"; u1=$(($(cpu_of "$UP_FAST_PID") + $(cpu_of "$UP_SLOW_PID"))); g1="$(cpu_of "$GW_PID")"; m1="$(metrics)"
        row="$(awk -v r="$rep" -v l="$ld" -v name="$t" -v n="$(field requests "$out")" -v secs="$SECS" -v warm="$WARM" \
            -v p50="$(field p50_us "$out")" -v p99="$(field p99_us "$out")" -v mx="$(field max_us "$out")" \
            -v e=$(($(field err_status "$out") + $(field err_sock "$out"))) -v late="$(field late "$out")" \
            -v g=$((g1 - g0)) -v u=$((u1 - u0)) -v w="$(cat "$TMP/tool.cpu")" -v b=$((b1 - b0)) -v T="$T" \
            -v m0="$m0" -v m1="$m1" 'BEGIN {
            split(m0, a); split(m1, z)
            rate = n / secs; all = secs + warm
            q = name != "direct"
            acc = q ? sprintf("%.0f", (z[1] - a[1]) / all) : "-"
            del = q ? sprintf("%.0f", (z[2] - a[2]) / all) : "-"
            backlog = q ? sprintf("%d", z[1] - z[2]) : "-"
            foreign = (b - g - u - w) / T / all; if (foreign < 0) foreign = 0
            cpu = rate > 0 ? sprintf("%.1f", g / T * 1e6 / (rate * all)) : "-"
            printf "%-4s %-9s %-12s %9.0f %8.3f %8.3f %8.2f %9s %9s %9s %9s %8.2f %5d %5d\n", r, l, name, rate,
                p50 / 1000, p99 / 1000, mx / 1000, cpu, acc, del, backlog, foreign, e, late }')"
        fx="$(awk '{ print $12 }' <<<"$row")"
        if awk -v x="$fx" -v m="$MAX_FOREIGN" 'BEGIN { exit !(x <= m) }'; then
            echo "$row"
            return
        elif ((try == RETRIES)); then
            ((RETRIES == 0)) || echo "warning: busy host: $t $ld kept with $fx foreign cores (rep $rep)" >&2
            echo "$row"
            return
        fi
        echo "  (rep $rep, $ld, $t: $fx foreign cores; measured again)" >&2
    done
}

LOADS=(paced)
for n in "${CONN_LIST[@]}"; do LOADS+=("closed$n"); done
echo
echo "part 1: the answer to Slack (req/s, latency and gateway CPU of the answers; accepted/s and delivered/s over the whole run, warm-up included; backlog = accepted - delivered after it)"
printf '%-4s %-9s %-12s %9s %8s %8s %8s %9s %9s %9s %9s %8s %5s %5s\n' rep load target "req/s" "p50 ms" "p99 ms" \
    "max ms" "gw µs/req" "accept/s" "deliv/s" backlog foreign errs late | tee "$TMP/rows"
for rep in $(seq 1 "$REPS"); do
    k=$(((rep - 1) % ${#TARGETS[@]}))
    for t in "${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}"; do
        start_gateway "$(mode_of "$t")" "$(up_of "$t")"
        load warm "$SAFE_CONNS" 0 0 "$WARM" >/dev/null
        for ld in "${LOADS[@]}"; do
            measure "$t" "$ld" "$rep" >"$TMP/row"
            tee -a "$TMP/rows" <"$TMP/row"
        done
        stop_gateway KILL
    done
done

echo
echo "medians over $REPS reps:"
python3 - "$TMP/rows" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = [r for r in rows if len(r) == 14]
by = {}
for r in rows:
    by.setdefault(r[1], {}).setdefault(r[2], {})[r[0]] = r
med = lambda xs: st.median(xs) if xs else float("nan")
RATE, P50, P99, MAX, GW, ACC, DEL, BACK, FOREIGN, ERRS, LATE = 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
num = lambda x: float(x) if x not in ("-", "nan") else float("nan")
for ld, targets in by.items():
    paced = ld == "paced"
    print(f"load {ld} ({'paced' if paced else ld[6:] + ' connections, closed loop'}):")
    for name in ("direct", "queued", "queued_slow"):
        if name not in targets:
            continue
        v = list(targets[name].values())
        extra = ""
        if name != "direct":
            extra = (f"   accepted {med([float(x[ACC]) for x in v]):7.0f}/s   delivered {med([float(x[DEL]) for x in v]):7.0f}/s"
                     f"   backlog {med([float(x[BACK]) for x in v]):7.0f}")
        print(f"  {name:11} req/s {med([float(x[RATE]) for x in v]):8.0f}   p50 {med([float(x[P50]) for x in v]):6.3f} ms"
              f"   p99 {med([float(x[P99]) for x in v]):7.3f} ms   max {max(float(x[MAX]) for x in v):7.2f} ms"
              f"   gateway CPU {med([num(x[GW]) for x in v]):6.1f} µs/req{extra}"
              f"   errors {sum(int(x[ERRS]) for x in v)}   late {sum(int(x[LATE]) for x in v)}"
              f"   foreign {max(float(x[FOREIGN]) for x in v):4.2f} max   ({len(v)} reps)")
    def cmp(a, b, what):
        if a not in targets or b not in targets:
            return
        A, B = targets[a], targets[b]
        reps = [k for k in A if k in B]
        t = med([float(x[RATE]) for x in A.values()]) / med([float(x[RATE]) for x in B.values()])
        t_r = med([float(A[k][RATE]) / float(B[k][RATE]) for k in reps])
        p = med([float(x[P99]) for x in A.values()]) / med([float(x[P99]) for x in B.values()])
        p_r = med([float(A[k][P99]) / float(B[k][P99]) for k in reps])
        d = med([float(A[k][P99]) - float(B[k][P99]) for k in reps])
        print(f"  {a}/{b}: throughput {t:6.3f} (median of per-rep ratios {t_r:6.3f});"
              f" p99 {p:6.3f}x (per rep {p_r:6.3f}x, {d:+.3f} ms){what}")
    cmp("queued", "direct", "")
    cmp("queued_slow", "queued", "   [target: p99 unchanged]")
EOF

# --- part 2: delivery and the store's growth
size() { du -sb "$1" | cut -f1; }
if ((EVENTS > 0)); then
    echo
    echo "part 2: $BATCHES x $EVENTS events, queued, the instant upstream, closed loop on $SAFE_CONNS connections"
    start_gateway queued "$UP_FAST"
    sleep 2
    s_idle="$(size "$STORE")"
    echo "store idle: $s_idle bytes"
    printf '%-6s %9s %9s %10s %10s %10s %12s %12s %12s\n' batch "accept s" "accept/s" "p99 ms" "drain s" "deliv/s" \
        "size at end" "delivered" "growth/1M"
    prev="$s_idle"
    for b in $(seq 1 "$BATCHES"); do
        read -r a0 d0 _ <<<"$(metrics)"
        ( while :; do echo "$(date +%s.%N) $(metrics)"; sleep 1; done ) >"$TMP/samples.$b" &
        SAMPLER=$!
        t0="$(date +%s.%N)"
        out="$(load "batch$b" "$SAFE_CONNS" 0 0 0 "$EVENTS")"
        t1="$(date +%s.%N)"
        s_end="$(size "$STORE")"
        while :; do
            read -r a d _ <<<"$(metrics)"
            ((d - d0 >= a - a0 && a - a0 >= EVENTS)) && break
            if awk -v t0="$t1" -v now="$(date +%s.%N)" -v m="$DRAIN_TIMEOUT" 'BEGIN { exit !(now - t0 > m) }'; then
                echo "warning: batch $b: $((a - a0 - (d - d0))) events still pending after ${DRAIN_TIMEOUT} s" >&2
                break
            fi
            sleep 0.2
        done
        t2="$(date +%s.%N)"
        kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
        sleep 1  # sled's own flush (every 500 ms) writes the removals
        s_del="$(size "$STORE")"
        awk -v b="$b" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v n="$(field requests "$out")" -v p99="$(field p99_us "$out")" \
            -v e="$EVENTS" -v se="$s_end" -v sd="$s_del" -v prev="$prev" -v d=$((d - d0)) 'BEGIN {
            printf "%-6s %9.1f %9.0f %10.3f %10.1f %10.0f %12d %12d %12.0f\n", b, t1 - t0, n / (t1 - t0), p99 / 1000,
                t2 - t0, d / (t2 - t0), se, sd, (sd - prev) / e * 1e6 }'
        echo "  (metrics every second, accepted/delivered/depth: $(awk 'NR > 1 { printf "%s/%s/%s ", $2 - a, $3 - d, $4 } { a = $2; d = $3 }' "$TMP/samples.$b" | cut -c1-400))"
        prev="$s_del"
    done
    stop_gateway
    s_stop="$(size "$STORE")"
    total=$((EVENTS * BATCHES))
    echo "store after a graceful stop: $s_stop bytes; growth over $total events: $((s_stop - s_idle)) bytes" \
        "= $(awk -v g=$((s_stop - s_idle)) -v n="$total" 'BEGIN { printf "%.0f", g / n * 1e6 }') bytes per million events"
    echo "what the store holds (sled_trees):"
    "$EX/sled_trees" "$STORE" | sed 's/^/  /'
    # The store as sled would compact it: the live data alone.
    live="$("$EX/sled_trees" "$STORE" | awk '/^TREE/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /bytes/) s += kv[2] } } END { print s + 0 }')"
    echo "live keys and values: $live bytes in all"
fi

# --- part 3: how many dedupe keys a sweep forgets
if [[ "$SWEEP_CHECK" == 1 ]]; then
    echo
    echo "part 3: dedupe_window = \"1s\", $SWEEP_EVENTS events, then past the first sweep (60 s after start)"
    start_gateway queued "$UP_FAST" 'dedupe_window = "1s"'
    started="$(date +%s)"
    out="$(load sweep "$SAFE_CONNS" 0 0 0 "$SWEEP_EVENTS")"
    echo "  sent: $(field requests "$out") events in $(field secs "$out") s"
    left=$((started + 68 - $(date +%s)))
    ((left > 0)) && sleep "$left"
    stop_gateway
    "$EX/sled_trees" "$STORE" | grep -E 'delivery_dedupe|deliveries' | sed 's/^/  /'
    echo "  (the sweep runs every 60 s and forgets at most 10,000 keys a run: keys whose window ended stay when more than that arrive a minute)"
fi
echo "gateway log: $(wc -l <"$TMP/gateway.log") lines"
grep -m5 -i 'warn\|error' "$TMP/gateway.log" || true
echo "report: $OUTFILE"
