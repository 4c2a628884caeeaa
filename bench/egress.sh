#!/usr/bin/env bash
# The Web API egress against the same calls made straight to Slack (issue 19, "Performance"):
# a local fake Slack that answers at once, and in the same run, interleaved:
#   direct   wrk -> the fake: POST /api/chat.postMessage with `Authorization: Bearer xoxb-…`
#            (the team's own token), what an app holding its tokens does;
#   egress   wrk -> the gateway's egress -> the fake: the same call with `X-Slack-Team-Id` and
#            no token; the gateway finds the installation (a sled store seeded with
#            EGRESS_TEAMS installations by bench_seed --synthetic) and adds its bot token;
#   nginx    wrk -> nginx -> the fake: the same call, the token picked by a `map` from the team
#            header over the same installations, upstream keepalive: what a plain reverse
#            proxy costs in the same place (the floor for any proxy on this box).
# Every call's body is `{"channel":"C123","text":"hello"}` (application/json); the teams (or
# their tokens) cycle over all seeded installations. The fake (examples/fake_slack_api.rs,
# hyper, FAKE_THREADS runtime threads) answers every call 200 with a 339-byte
# chat.postMessage answer, and `not_authed` to a call without a token (the sanity check).
#
#   bash bench/egress.sh                                   # 3 reps x (16, 64 conns, paced), ~6 min
#   DURATION=10 REPS=3 CONNS="16 64" bash bench/egress.sh
#   EGRESS_LAYOUT=shared bash bench/egress.sh              # nothing pinned, one worker per core
#   GATEWAY_REV=HEAD bash bench/egress.sh                  # a commit, not the working tree
#
# Loads, measured in each rep, the targets' order rotating from rep to rep:
#   CONNS        closed loop: wrk keeps that many connections busy (saturating): throughput,
#                and p50/p99 under saturation (mostly queueing);
#   paced        PACED_CONNS connections, each pausing PACED_DELAY_MS after every answer
#                (wrk's delay()): an offered load far below saturation, so p50/p99 are the
#                latency of one call plus the hop's own cost, not a queue.
# Each (rep, load, target): WARMUP s of wrk (not kept), then DURATION s measured: req/s, wrk's
# p50 and p99, the CPU per request (user + kernel from /proc) of the target in front of the
# fake (the gateway; nginx's worker) and of the fake itself, and the cores used meanwhile by
# every other process (`foreign`: the machine's user, system and steal time from /proc/stat,
# less the fake's, the target's and wrk's; interrupts left out, see busy()); a run with more
# than MAX_FOREIGN foreign cores is measured again, up to RETRIES times (the last is kept, with
# a warning). Then per load the medians per target and the issue's check: egress / direct
# throughput (target >= 0.8) and egress p99 - direct p99 (target < 1 ms), each as of the
# medians and the median of the per-rep figures; and egress / nginx, nginx / direct.
#
# Layouts (EGRESS_LAYOUT): `pinned` (default, as ab.sh, cpusplit.sh, postgres.sh): the fake and
# the targets on CPU 0 (the gateway with server.workers = 1, nginx with 1 worker), wrk on CPU 1;
# `shared`: nothing pinned, the gateway with one worker per core (EGRESS_WORKERS).
#
# Environment (defaults in brackets):
#   REPS [3]  DURATION [10]  WARMUP [2]  CONNS ["16 64"]  EGRESS_TARGETS ["direct egress nginx"]
#   PACED_CONNS [4]  PACED_DELAY_MS [1]   (PACED_CONNS=0: no paced load)
#   EGRESS_LAYOUT [pinned]  EGRESS_WORKERS [1 pinned, 0 shared]  FAKE_THREADS [1]
#   MAX_FOREIGN [0.15]  RETRIES [2]
#   EGRESS_TEAMS [1000]     installations seeded (bench_seed --synthetic)
#   PORT_OFFSET [0]         ports 9060 (fake), 9061 (gateway), 9062 (egress), 9063 (nginx) + offset
#   RUST_LOG [warn]         the gateway's log level
#   FAKE_BIN                a fake already built (else built from the working tree)
#   and bench/lib.sh's GATEWAY_REV, BENCH_SKIP_BUILD (GATEWAY_BIN / BENCH_SEED), CARGO_TARGET_DIR.
# Needs: wrk (apt-get install -y wrk), nginx for the nginx target (apt-get install -y
# nginx-light), python3, curl. Not the harness.
# Output: the terminal and bench/results/<date>-egress.txt.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

read -r -a TARGETS <<<"${EGRESS_TARGETS:-direct egress nginx}"
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
for c in wrk python3 curl taskset; do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y wrk curl)" >&2; exit 1; }
done
if has nginx && ! command -v nginx >/dev/null; then
    echo "the nginx target needs nginx (apt-get install -y nginx-light), or EGRESS_TARGETS=\"direct egress\"" >&2
    exit 1
fi
GIVEN_BIN="${GATEWAY_BIN:-}"
bench_build
[[ -n "$GIVEN_BIN" ]] && GATEWAY_DESC="the binary given in GATEWAY_BIN"
# The fake comes from the working tree whatever GATEWAY_REV says (older commits lack it).
if [[ -z "${FAKE_BIN:-}" ]]; then
    FAKE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/fake_slack_api"
    [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] \
        || (cd "$REPO" && cargo build --release --quiet --locked --example fake_slack_api)
fi
[[ -x "$FAKE_BIN" ]] || { echo "missing $FAKE_BIN (cargo build --release --example fake_slack_api)" >&2; exit 1; }

REPS="${REPS:-3}"
SECS="${DURATION:-10}"
WARM="${WARMUP:-2}"
read -r -a CONN_LIST <<<"${CONNS:-16 64}"
PACED_CONNS="${PACED_CONNS:-4}"
PACED_DELAY="${PACED_DELAY_MS:-1}"
LAYOUT="${EGRESS_LAYOUT:-pinned}"
case "$LAYOUT" in
    pinned) PIN_SRV=(taskset -c 0); PIN_WRK=(taskset -c 1); WORKERS="${EGRESS_WORKERS:-1}" ;;
    shared) PIN_SRV=(); PIN_WRK=(); WORKERS="${EGRESS_WORKERS:-0}" ;;
    *) echo "EGRESS_LAYOUT must be pinned or shared, not $LAYOUT" >&2; exit 2 ;;
esac
TEAMS="${EGRESS_TEAMS:-1000}"
OFF="${PORT_OFFSET:-0}"
P() { echo $(($1 + OFF)); }
FAKE_PORT="$(P 9060)"
declare -A PORT PID
PORT[direct]="$FAKE_PORT"
PORT[egress]="$(P 9062)"
PORT[nginx]="$(P 9063)"

TMP="$(mktemp -d -t slack-gateway-egress.XXXXXX)"
PIDS=()
# Not lib.sh's cleanup: its bare `wait` would also wait for the `tee` below.
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
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

OUTFILE="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-egress.txt"
mkdir -p "$(dirname "$OUTFILE")"
exec > >(tee "$OUTFILE") 2>&1
echo "== the Web API egress against direct calls to a fake Slack ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC"
if [[ "$LAYOUT" == pinned ]]; then
    echo "layout: pinned: the fake (${FAKE_THREADS:-1} thread(s)) and the targets on CPU 0" \
        "(gateway server.workers = $WORKERS, nginx 1 worker), wrk -t1 on CPU 1"
else
    echo "layout: shared: nothing pinned (gateway server.workers = $WORKERS, 0 = one per core;" \
        "fake ${FAKE_THREADS:-1} thread(s); nginx 1 worker; wrk -t1)"
fi
echo "$REPS reps x loads (${CONN_LIST[*]} connections$( ((PACED_CONNS > 0)) && echo ", paced: $PACED_CONNS connections pausing $PACED_DELAY ms after each answer")):" \
    "${WARM} s warm-up + ${SECS} s each; $TEAMS installations; targets ${TARGETS[*]}"

# --- the store, the fake, the gateway, nginx
"$BENCH_SEED" --store "$TMP/store" --client-id bench-client --synthetic "$TEAMS" \
    --export-json "$TMP/installations.json" >"$TMP/seed.log" 2>&1 || { cat "$TMP/seed.log" >&2; exit 1; }
FAKE_SLACK_ADDR="127.0.0.1:$FAKE_PORT" FAKE_SLACK_THREADS="${FAKE_THREADS:-1}" \
    "${PIN_SRV[@]}" "$FAKE_BIN" >"$TMP/fake.log" 2>&1 &
PIDS+=($!)
PID[direct]=$!
PID[fake]=$!

if has egress; then
    cat >"$TMP/gateway.toml" <<EOF
# written by bench/egress.sh
[server]
listen = "127.0.0.1:$(P 9061)"
admin_listen = "127.0.0.1:0"
workers = $WORKERS

[slack]
client_id = "bench-client"
client_secret = "bench-client-secret"
signing_secret = "bench-signing-secret"
api_url = "http://127.0.0.1:$FAKE_PORT/api"

[oauth]
scopes = ["chat:write"]

[upstream]
url = "http://127.0.0.1:$FAKE_PORT"

[storage]
path = "$TMP/store"

[egress]
enabled = true
listen = "127.0.0.1:${PORT[egress]}"
EOF
    RUST_LOG="${RUST_LOG:-warn}" "${PIN_SRV[@]}" "$GATEWAY_BIN" --config "$TMP/gateway.toml" \
        >"$TMP/gateway.log" 2>&1 &
    PIDS+=($!)
    PID[egress]=$!
fi

# The teams and their tokens: wrk's request lists, and nginx's map.
python3 - "$TMP/installations.json" "$TMP" <<'EOF'
import json, sys
insts = json.load(open(sys.argv[1]))
out = sys.argv[2]
def lua(name, key, fmt):
    with open(f"{out}/{name}.lua", "w") as f:
        f.write("return {\n")
        for i in insts:
            f.write(f'  {{"{key}", "{fmt.format(i)}"}},\n')
        f.write("}\n")
lua("direct", "Authorization", "Bearer {0[bot_token]}")
lua("team", "X-Slack-Team-Id", "{0[team_id]}")
with open(f"{out}/tokens.map", "w") as f:
    for i in insts:
        f.write(f'{i["team_id"]} "{i["bot_token"]}";\n')
with open(f"{out}/first", "w") as f:
    f.write(f'{insts[0]["team_id"]} {insts[0]["bot_token"]}\n')
EOF
read -r TEAM0 TOKEN0 <"$TMP/first"

if has nginx; then
    mkdir -p "$TMP/ng"
    cat >"$TMP/ng/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $TMP/ng/nginx.pid;
error_log $TMP/ng/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/ng/body; proxy_temp_path $TMP/ng/proxy; fastcgi_temp_path $TMP/ng/fcgi;
  uwsgi_temp_path $TMP/ng/uwsgi; scgi_temp_path $TMP/ng/scgi;
  client_body_buffer_size 64k;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  map_hash_max_size 262144;
  map \$http_x_slack_team_id \$slack_token {
    default "";
    include $TMP/tokens.map;
  }
  upstream fake { server 127.0.0.1:$FAKE_PORT; keepalive 1024; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location /api/ {
      if (\$slack_token = "") { return 404 '{"ok":false,"error":"not_installed"}'; }
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer \$slack_token";
      proxy_set_header X-Slack-Team-Id "";
    }
  }
}
EOF
    "${PIN_SRV[@]}" nginx -c "$TMP/ng/nginx.conf" -p "$TMP/ng" >"$TMP/ng/out.log" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=($NGINX_MASTER)
fi

wait_port "$FAKE_PORT" || { echo "the fake did not open $FAKE_PORT" >&2; cat "$TMP/fake.log" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
    [[ -n "${PORT[$t]:-}" ]] || { echo "unknown target $t (direct egress nginx)" >&2; exit 2; }
    wait_port "${PORT[$t]}" || {
        echo "$t: port ${PORT[$t]} did not open" >&2
        cat "$TMP/gateway.log" "$TMP/ng/error.log" >&2 2>/dev/null
        exit 1
    }
done
if has nginx; then  # its CPU is its worker's
    for _ in $(seq 1 50); do
        PID[nginx]="$(pgrep -P "$NGINX_MASTER" | head -1 || true)"
        [[ -n "${PID[nginx]}" ]] && break
        sleep 0.1
    done
    [[ -n "${PID[nginx]}" ]] || { echo "nginx started no worker" >&2; cat "$TMP/ng/error.log" >&2; exit 1; }
fi

# --- sanity: the fake wants a token; the egress and nginx add the team's; an unknown team is refused
BODY='{"channel":"C123","text":"hello"}'
post() { # port [header...] -> "status body"
    local port="$1"
    shift
    local args=()
    for h in "$@"; do args+=(-H "$h"); done
    curl -s -o "$TMP/answer" -w '%{http_code}' -X POST -H 'Content-Type: application/json' "${args[@]}" \
        --data "$BODY" "http://127.0.0.1:$port/api/chat.postMessage"
    echo " $(head -c 120 "$TMP/answer")"
}
check() { # label expected-status expected-body-fragment port [header...]
    local label="$1" st="$2" frag="$3"
    shift 3
    local got
    got="$(post "$@")"
    if [[ "$got" == "$st "* && "$got" == *"$frag"* ]]; then
        echo "check $label: ${got:0:3} ${frag}"
    else
        echo "sanity check failed: $label: expected $st with $frag, got: $got" >&2
        cat "$TMP/gateway.log" >&2 2>/dev/null || true
        exit 1
    fi
}
check "fake without a token" 200 '"error":"not_authed"' "$FAKE_PORT"
check "fake with the team's token (direct)" 200 '"ok":true' "$FAKE_PORT" "Authorization: Bearer $TOKEN0"
if has egress; then
    check "egress, X-Slack-Team-Id only (the gateway added the token)" 200 '"ok":true' "${PORT[egress]}" "X-Slack-Team-Id: $TEAM0"
    check "egress, an unknown team" 404 '"error":"not_installed"' "${PORT[egress]}" "X-Slack-Team-Id: TNOTSEEDED"
fi
if has nginx; then
    check "nginx, X-Slack-Team-Id only (its map added the token)" 200 '"ok":true' "${PORT[nginx]}" "X-Slack-Team-Id: $TEAM0"
fi

# --- wrk
cat >"$TMP/calls.lua" <<'EOF'
-- POST /api/chat.postMessage, one header cycling over a list ({name, value} pairs in WRK_REQS):
-- the team (egress, nginx) or its token (direct). WRK_DELAY_MS > 0: each connection pauses
-- that long after every answer.
local list = dofile(os.getenv("WRK_REQS"))
local body = '{"channel":"C123","text":"hello"}'
local reqs, n, idx = {}, 0, 0
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
function init(args)
  for i, h in ipairs(list) do
    reqs[i] = wrk.format("POST", "/api/chat.postMessage",
      { [h[1]] = h[2], ["Content-Type"] = "application/json" }, body)
  end
  n = #reqs
end
function request()
  idx = idx % n + 1
  return reqs[idx]
end
if pause > 0 then
  function delay() return pause end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d err_status=%d err_sock=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
EOF
reqs_of() { [[ "$1" == direct ]] && echo "$TMP/direct.lua" || echo "$TMP/team.lua"; }
# wrk_run TARGET CONNS DELAY SECS: wrk's WRKRESULT line; wrk's own CPU ticks (user + kernel)
# in $TMP/wrk.cpu (the subshell's reaped children, i.e. wrk).
wrk_run() {
    (
        WRK_REQS="$(reqs_of "$1")" WRK_DELAY_MS="$3" "${PIN_WRK[@]}" wrk -t1 -c "$2" -d "${4}s" \
            --timeout 10s -s "$TMP/calls.lua" "http://127.0.0.1:${PORT[$1]}" >"$TMP/wrk.out"
        awk '{ print $16 + $17 }' "/proc/$BASHPID/stat" >"$TMP/wrk.cpu"
    )
    grep WRKRESULT "$TMP/wrk.out"
}
field() { sed "s/.*$1=\\([0-9]*\\).*/\\1/" <<<"$2"; }
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Busy ticks of the whole machine: user nice system steal. Not irq and softirq: loopback
# networking runs mostly there, for our own processes as much as for anyone's, and is not
# in any process's own time.
busy() { awk '/^cpu / { print $2 + $3 + $4 + $9 }' /proc/stat; }
T="$(getconf CLK_TCK)"
MAX_FOREIGN="${MAX_FOREIGN:-0.15}"
RETRIES="${RETRIES:-2}"

# Every installation once through the egress (its cache warm), and every target warmed.
for t in "${TARGETS[@]}"; do wrk_run "$t" 16 0 2 >/dev/null; done

# measure TARGET CONNS DELAY LABEL REP: a warm-up, then the measured run, again (up to RETRIES
# times) while other processes used more than MAX_FOREIGN cores; prints the row.
measure() {
    local t="$1" conns="$2" pause="$3" label="$4" rep="$5" try out f0 f1 h0 h1 b0 b1 n d e s flag row fx
    for try in $(seq 0 "$RETRIES"); do
        wrk_run "$t" "$conns" "$pause" "$WARM" >/dev/null
        f0="$(cpu_of "${PID[fake]}")"; h0=0; [[ "$t" == direct ]] || h0="$(cpu_of "${PID[$t]}")"
        b0="$(busy)"
        out="$(wrk_run "$t" "$conns" "$pause" "$SECS")"
        b1="$(busy)"
        f1="$(cpu_of "${PID[fake]}")"; h1=0; [[ "$t" == direct ]] || h1="$(cpu_of "${PID[$t]}")"
        n="$(field requests "$out")"; d="$(field duration_us "$out")"
        e="$(field err_status "$out")"; s="$(field err_sock "$out")"
        flag=""
        [[ "$e" == 0 ]] || { flag+=" non2xx=$e"; echo "warning: $t answered $e non-2xx (rep $rep, $label)" >&2; }
        [[ "$s" == 0 ]] || { flag+=" sockerr=$s"; echo "warning: $t: $s socket errors (rep $rep, $label)" >&2; }
        row="$(awk -v r="$rep" -v l="$label" -v name="$t" -v n="$n" -v d="$d" -v p50="$(field p50_us "$out")" \
            -v p99="$(field p99_us "$out")" -v mx="$(field max_us "$out")" -v h=$((h1 - h0)) \
            -v f=$((f1 - f0)) -v w="$(cat "$TMP/wrk.cpu")" -v b=$((b1 - b0)) -v T="$T" -v flag="$flag" 'BEGIN {
            hop = name == "direct" ? "-" : sprintf("%.1f", h / T * 1e6 / n)
            foreign = (b - h - f - w) / T / (d / 1e6); if (foreign < 0) foreign = 0
            printf "%-4s %-7s %-7s %9.0f %8.3f %8.3f %8.2f %12s %12.1f %8.2f%s\n", r, l, name, n / (d / 1e6),
                p50 / 1000, p99 / 1000, mx / 1000, hop, f / T * 1e6 / n, foreign, flag }')"
        fx="$(awk '{ print $10 }' <<<"$row")"
        if awk -v x="$fx" -v m="$MAX_FOREIGN" 'BEGIN { exit !(x <= m) }'; then
            echo "$row"
            return
        elif ((try == RETRIES)); then
            ((RETRIES == 0)) || echo "warning: busy host: $t kept with $fx foreign cores after $RETRIES retries (rep $rep, $label)" >&2
            echo "$row"
            return
        fi
        echo "  (rep $rep, $label, $t: $(awk '{ print $10 }' <<<"$row") foreign cores; measured again)" >&2
    done
}

LOADS=()
for c in "${CONN_LIST[@]}"; do LOADS+=("$c:0"); done
((PACED_CONNS > 0)) && LOADS+=("$PACED_CONNS:$PACED_DELAY")
label_of() { [[ "${1#*:}" == 0 ]] && echo "${1%:*}" || echo "${1%:*}p${1#*:}ms"; }

echo
printf '%-4s %-7s %-7s %9s %8s %8s %8s %12s %12s %8s\n' rep load target "req/s" "p50 ms" "p99 ms" "max ms" \
    "hop µs/req" "fake µs/req" foreign | tee "$TMP/rows"
for rep in $(seq 1 "$REPS"); do
    k=$(((rep - 1) % ${#TARGETS[@]}))
    for load in "${LOADS[@]}"; do
        for t in "${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}"; do
            measure "$t" "${load%:*}" "${load#*:}" "$(label_of "$load")" "$rep" >"$TMP/row"
            tee -a "$TMP/rows" <"$TMP/row"
        done
    done
done

echo
echo "medians over $REPS reps (rows flagged non2xx or sockerr left out):"
python3 - "$TMP/rows" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = [r for r in rows if len(r) == 10]
by = {}  # load -> target -> rep -> row
for r in rows:
    by.setdefault(r[1], {}).setdefault(r[2], {})[r[0]] = r
med = lambda xs: st.median(xs) if xs else float("nan")
REQS, P50, P99, HOP, FAKE, FOREIGN = 3, 4, 5, 7, 8, 9
for load, targets in by.items():
    paced = "p" in load
    print(f"load {load} ({'paced: ' + load.replace('p', ' connections, pause ', 1) if paced else load + ' connections, closed loop'}):")
    for name in ("direct", "egress", "nginx"):
        if name not in targets:
            continue
        v = list(targets[name].values())
        hop = [float(x[HOP]) for x in v if x[HOP] != "-"]
        hops = f"{med(hop):6.1f}" if hop else "     -"
        print(f"  {name:7} req/s {med([float(x[REQS]) for x in v]):8.0f}   p50 {med([float(x[P50]) for x in v]):6.3f} ms"
              f"   p99 {med([float(x[P99]) for x in v]):6.3f} ms   hop CPU {hops} µs/req"
              f"   fake CPU {med([float(x[FAKE]) for x in v]):5.1f} µs/req"
              f"   foreign {max(float(x[FOREIGN]) for x in v):4.2f} max   ({len(v)} reps)")
    def compare(a, b, goals):
        if a not in targets or b not in targets:
            return
        A, B = targets[a], targets[b]
        reps = [k for k in A if k in B]
        tput = med([float(x[REQS]) for x in A.values()]) / med([float(x[REQS]) for x in B.values()])
        tput_r = med([float(A[k][REQS]) / float(B[k][REQS]) for k in reps])
        d99 = med([float(x[P99]) for x in A.values()]) - med([float(x[P99]) for x in B.values()])
        d99_r = med([float(A[k][P99]) - float(B[k][P99]) for k in reps])
        d50 = med([float(A[k][P50]) - float(B[k][P50]) for k in reps])
        vt = vp = ""
        if goals:
            vt = f"   target >= 0.80: {'met' if tput >= 0.8 else 'NOT met'}"
            vp = f"   target < 1 ms: {'met' if d99 < 1.0 else 'NOT met'}"
        if not paced:
            print(f"  {a}/{b} throughput {tput:6.3f} (median of per-rep ratios {tput_r:6.3f}){vt}")
        print(f"  {a} - {b} p99 {d99:+7.3f} ms (median of per-rep differences {d99_r:+7.3f}; p50 {d50:+7.3f}){vp}")
    compare("egress", "direct", True)
    compare("egress", "nginx", False)
    compare("nginx", "direct", False)
EOF
echo "gateway log: $(wc -l <"$TMP/gateway.log" 2>/dev/null || echo 0) lines"
grep -m5 -i 'warn\|error' "$TMP/gateway.log" 2>/dev/null || true
echo "report: $OUTFILE"
