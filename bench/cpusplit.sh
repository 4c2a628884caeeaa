#!/usr/bin/env bash
# User vs kernel CPU per request, context switches per request: the gateway beside rust_min_ct,
# rust_min (multi-thread runtime) and nginx, in run.sh's pinned layout (targets and upstream on
# CPU 0, one worker each; wrk on CPU 1). Quicker than run.sh and less sensitive to foreign load,
# because it reads each target's own utime/stime from /proc instead of relying on req/s alone.
#
#   bash bench/cpusplit.sh
#   SPLIT_SECS=8 SPLIT_CONNS=128 SPLIT_REPS=2 SHAPE=command bash bench/cpusplit.sh
#
# Environment: SPLIT_SECS [8] SPLIT_CONNS [32] SPLIT_REPS [2] SHAPE [event]
#   PORT_OFFSET [0] (ports 9040..9044 + offset), GATEWAY_REV, BENCH_SKIP_BUILD.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
bench_setup
bench_build

bench_local split

UP="$(P 9040)"
UPSTREAM_ADDR="127.0.0.1:$UP" UPSTREAM_THREADS=1 taskset -c 0 "$H/rust/target/release/upstream" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
"$BENCH_SEED" --store "$TMP/store" --client-id bench-client --installations "$INST" 2>/dev/null
BENCH_TMP="$TMP" BENCH_CLIENT_ID=bench-client GATEWAY_ADDR="127.0.0.1:$(P 9041)" UPSTREAM_URL="http://127.0.0.1:$UP" \
    SLACK_SIGNING_SECRET="$SECRET" GATEWAY_THREADS=1 taskset -c 0 bash "$BENCH/gateway.sh" >"$TMP/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
for rt in current multi; do
    port=$([[ $rt == current ]] && P 9042 || P 9043)
    PROXY_ADDR="127.0.0.1:$port" UPSTREAM_URL="http://127.0.0.1:$UP" SLACK_SIGNING_SECRET="$SECRET" INSTALLATIONS="$INST" \
        PROXY_THREADS=1 PROXY_RT=$rt taskset -c 0 "$H/rust/target/release/proxy" >"$TMP/proxy-$rt.log" 2>&1 &
    PIDS+=($!)
    [[ $rt == current ]] && CT=$! || MT=$!
done
mkdir -p "$TMP/ng"
cat >"$TMP/ng/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $TMP/ng/nginx.pid; error_log $TMP/ng/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off; client_body_buffer_size 64k; keepalive_requests 10000000; keepalive_timeout 120s;
  client_body_temp_path $TMP/ng/b; proxy_temp_path $TMP/ng/p; fastcgi_temp_path $TMP/ng/f;
  uwsgi_temp_path $TMP/ng/u; scgi_temp_path $TMP/ng/s;
  upstream app { server 127.0.0.1:$UP; keepalive 1024; keepalive_requests 10000000; }
  server { listen 127.0.0.1:$(P 9044) backlog=4096;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF
taskset -c 0 nginx -c "$TMP/ng/nginx.conf" -p "$TMP/ng" >"$TMP/ng/out.log" 2>&1 &
NG=$!; PIDS+=($NG)
for p in "$UP" "$(P 9041)" "$(P 9042)" "$(P 9043)" "$(P 9044)"; do wait_port "$p" || { echo "port $p did not open" >&2; exit 1; }; done
NGW="$(pgrep -P "$NG" | head -1)"

T="$(getconf CLK_TCK)"
ctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
printf '%-15s %9s %12s %12s %12s %10s\n' target "req/s" "user µs/req" "sys µs/req" "total µs/req" "ctxsw/req"
for rep in $(seq 1 "${SPLIT_REPS:-2}"); do
    for t in "gateway:$(P 9041):$GW" "rust_min_ct:$(P 9042):$CT" "rust_min:$(P 9043):$MT" "nginx:$(P 9044):$NGW"; do
        IFS=: read -r name port pid <<<"$t"
        python3 "$H/gen/gen_signed.py" requests --installations "$INST" --secret "$SECRET" --count 2000 \
            --shape "${SHAPE:-event}" --lua "$TMP/reqs.lua" 2>/dev/null
        url="http://127.0.0.1:$port/slack/events"
        WRK_REQS="$TMP/reqs.lua" taskset -c 1 wrk -t1 -c "${SPLIT_CONNS:-32}" -d2s -s "$H/wrk/signed.lua" "$url" >/dev/null
        read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$pid/stat"); c0="$(ctx "$pid")"
        out="$(WRK_REQS="$TMP/reqs.lua" taskset -c 1 wrk -t1 -c "${SPLIT_CONNS:-32}" -d "${SPLIT_SECS:-8}s" \
            -s "$H/wrk/signed.lua" "$url" | grep WRKRESULT)"
        read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$pid/stat"); c1="$(ctx "$pid")"
        n="$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$out")"; d="$(sed 's/.*duration_us=\([0-9]*\).*/\1/' <<<"$out")"
        e="$(sed 's/.*err_status=\([0-9]*\).*/\1/' <<<"$out")"
        [[ "$e" == 0 ]] || echo "warning: $name answered $e non-2xx" >&2
        awk -v n="$n" -v d="$d" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v T="$T" -v c=$((c1 - c0)) -v name="$name" 'BEGIN {
            printf "%-15s %9.0f %12.1f %12.1f %12.1f %10.2f\n", name, n / (d / 1e6), u / T * 1e6 / n, s / T * 1e6 / n, (u + s) / T * 1e6 / n, c / n }'
    done
done
