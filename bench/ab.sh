#!/usr/bin/env bash
# A/B: two gateway builds in the same pinned layout, measured in alternating rounds, so slow
# drift of a shared host (the usual noise here) hits both alike. Reports each round and the
# median CPU per request (the process's own user + kernel time from /proc) and wrk's p99 of
# each build, and of rust_min_ct as a control.
#
#   cp target/release/slack-gateway /tmp/gw-before      # then change, rebuild, and:
#   AB_A=/tmp/gw-before bash bench/ab.sh                # B defaults to target/release
#   AB_ROUNDS=10 AB_SECS=5 AB_CONNS=128 bash bench/ab.sh
#
# Environment: AB_A (required), AB_B [target/release/slack-gateway], AB_ROUNDS [8],
#   AB_SECS [5], AB_CONNS [32], SHAPE [event], PORT_OFFSET [0] (ports 9060..9063 + offset).
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
: "${AB_A:?set AB_A to the gateway binary to compare against}"
AB_B="${AB_B:-$REPO/target/release/slack-gateway}"
export BENCH_SKIP_BUILD=1
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
bench_setup
bench_build

bench_local ab

UP="$(P 9060)"
UPSTREAM_ADDR="127.0.0.1:$UP" UPSTREAM_THREADS=1 taskset -c 0 "$H/rust/target/release/upstream" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
start_gateway() { # name port binary
    mkdir -p "$TMP/$1"
    "$BENCH_SEED" --store "$TMP/$1/store" --client-id bench-client --installations "$INST" >/dev/null 2>&1
    BENCH_TMP="$TMP/$1" BENCH_CLIENT_ID=bench-client GATEWAY_ADDR="127.0.0.1:$2" UPSTREAM_URL="http://127.0.0.1:$UP" \
        SLACK_SIGNING_SECRET="$SECRET" GATEWAY_THREADS=1 GATEWAY_BIN="$3" taskset -c 0 bash "$BENCH/gateway.sh" \
        >"$TMP/$1.log" 2>&1 &
    PIDS+=($!)
}
start_gateway A "$(P 9061)" "$AB_A"; A=$!
start_gateway B "$(P 9062)" "$AB_B"; B=$!
PROXY_ADDR="127.0.0.1:$(P 9063)" UPSTREAM_URL="http://127.0.0.1:$UP" SLACK_SIGNING_SECRET="$SECRET" INSTALLATIONS="$INST" \
    PROXY_THREADS=1 PROXY_RT=current taskset -c 0 "$H/rust/target/release/proxy" >"$TMP/proxy.log" 2>&1 &
CT=$!; PIDS+=($CT)
for p in "$UP" "$(P 9061)" "$(P 9062)" "$(P 9063)"; do wait_port "$p" || { echo "port $p did not open" >&2; exit 1; }; done

python3 "$H/gen/gen_signed.py" requests --installations "$INST" --secret "$SECRET" --count 2000 \
    --shape "${SHAPE:-event}" --lua "$TMP/reqs.lua" 2>/dev/null
T="$(getconf CLK_TCK)"
echo "A = $AB_A"
echo "B = $AB_B"
printf '%-5s %-12s %9s %12s %12s %12s %8s\n' round target "req/s" "user µs/req" "sys µs/req" "total µs/req" "p99 ms" | tee "$TMP/rows"
for round in $(seq 1 "${AB_ROUNDS:-8}"); do
    # Alternate the order too, so neither build always runs first.
    order=("A:$(P 9061):$A" "B:$(P 9062):$B" "rust_min_ct:$(P 9063):$CT")
    ((round % 2 == 0)) && order=("B:$(P 9062):$B" "A:$(P 9061):$A" "rust_min_ct:$(P 9063):$CT")
    for t in "${order[@]}"; do
        IFS=: read -r name port pid <<<"$t"
        url="http://127.0.0.1:$port/slack/events"
        WRK_REQS="$TMP/reqs.lua" taskset -c 1 wrk -t1 -c "${AB_CONNS:-32}" -d1s -s "$H/wrk/signed.lua" "$url" >/dev/null
        read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        out="$(WRK_REQS="$TMP/reqs.lua" taskset -c 1 wrk -t1 -c "${AB_CONNS:-32}" -d "${AB_SECS:-5}s" \
            -s "$H/wrk/signed.lua" "$url" | grep WRKRESULT)"
        read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        n="$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$out")"; d="$(sed 's/.*duration_us=\([0-9]*\).*/\1/' <<<"$out")"
        e="$(sed 's/.*err_status=\([0-9]*\).*/\1/' <<<"$out")"
        p99="$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$out")"
        [[ "$e" == 0 ]] || echo "warning: $name answered $e non-2xx" >&2
        awk -v r="$round" -v n="$n" -v d="$d" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v T="$T" -v name="$name" -v p99="$p99" 'BEGIN {
            printf "%-5s %-12s %9.0f %12.2f %12.2f %12.2f %8.2f\n", r, name, n / (d / 1e6), u / T * 1e6 / n, s / T * 1e6 / n, (u + s) / T * 1e6 / n, p99 / 1000 }'
    done
done | tee -a "$TMP/rows"
echo "medians:"
python3 - "$TMP/rows" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
for name in ("A", "B", "rust_min_ct"):
    r = [x for x in rows if x[1] == name]
    med = lambda i: statistics.median(float(x[i]) for x in r)
    print(f"  {name:12} req/s {med(2):8.0f}   user {med(3):6.2f}   sys {med(4):6.2f}   total {med(5):6.2f} µs/req   p99 {med(6):5.2f} ms")
a = {x[0]: float(x[5]) for x in rows if x[1] == "A"}
b = {x[0]: float(x[5]) for x in rows if x[1] == "B"}
d = [b[k] - a[k] for k in a if k in b]
print(f"  B - A, total µs/req per round: median {statistics.median(d):+.2f} (rounds: {' '.join(f'{x:+.1f}' for x in d)})")
a = {x[0]: float(x[6]) for x in rows if x[1] == "A"}
b = {x[0]: float(x[6]) for x in rows if x[1] == "B"}
d = [b[k] - a[k] for k in a if k in b]
print(f"  B - A, p99 ms per round: median {statistics.median(d):+.3f} (rounds: {' '.join(f'{x:+.2f}' for x in d)})")
EOF
