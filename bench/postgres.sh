#!/usr/bin/env bash
# The gateway on PostgreSQL beside the gateway on sled and nginx (issue 18, "Performance"):
# same binary, same 1000 harness installations, same pinned layout, alternating rounds.
#
#   bash bench/postgres.sh                                  # 8 rounds of 5 s, ~6 min
#   PG_ROUNDS=10 PG_SECS=10 PG_CONNS=128 bash bench/postgres.sh
#   GATEWAY_REV=HEAD bash bench/postgres.sh                 # a commit, not the working tree
#
# Targets (PG_TARGETS), all started once and measured in every round, the order rotating from
# round to round so none always runs first:
#   sled       the gateway on a fresh sled store seeded with the harness's installations;
#   postgres   the same binary, storage.backend = "postgres", on a fresh database seeded with
#              the same installations (bench_seed --postgres, through InstallationStore::save);
#   pg_replay  postgres with server.replay_protection = true: every request is claimed in
#              the database (the cross-replica replay check), so every request must be new.
#              wrk cycles its request file, so before each of its runs a fresh file is written
#              with more requests than the run can send (estimated from its warm-up, x
#              PG_REPLAY_HEADROOM) by bench/signed_reqs.py: the harness's gen_signed bodies
#              (a new seed per file) and signatures; to keep generation quick, a file reuses
#              each of its (a few thousand) bodies under different timestamps, all within
#              the last 200 s, so every signature (MAC over timestamp and body) is unique.
#              A run that still sent more requests than its file holds (or got any non-2xx
#              answer; a replay is 401) is flagged in its row and left out of the medians;
#   nginx      the harness's nginx anchor (harness.py's nginx_conf reproduced: 1 worker,
#              upstream keepalive), a plain reverse proxy: the floor.
# Layout (as ab.sh and the harness's `pinned`): the harness's upstream and every target on
# CPU 0 (one worker each), wrk on CPU 1. PostgreSQL's own processes are not pinned (it is the
# machine's server): they run where the scheduler puts them, so pg_replay's database work
# competes with wrk or the gateway; its CPU is reported separately (db µs/req).
#
# Before the rounds every installation is requested on each gateway (their caches warm). Per
# round and target: a PG_WARMUP-second wrk warm-up, then PG_SECS seconds measured: req/s,
# the target's own CPU per request (user + kernel from /proc/PID/stat; nginx: its worker),
# for the postgres targets the CPU of the PostgreSQL backends serving that database (from
# /proc, pids from pg_stat_activity), wrk's p99. Then medians per target, and the ratios
# postgres/sled (throughput, p99; the issue's targets: >= 0.95 and <= 1.10) and
# pg_replay/postgres, each as the ratio of the medians and the median of the per-round ratios.
#
# Queries per forwarded request, once everything is warm (after the rounds). Each postgres
# target gets a database of its own (slack_gateway_bench_PID_postgres, _pg_replay), so that
# pg_stat_database counts that gateway's transactions and nothing else (the test suite and
# other clients use other databases). PostgreSQL counts in per-backend statistics that are
# flushed at most once a second, or after 10 s idle, so: wait PG_STATS_SETTLE s, snapshot
# every target, stay idle as long as a load window lasts (PG_QUERY_SECS + PG_STATS_SETTLE:
# the background, i.e. the watcher's 4 polls a second and its housekeeping every 5 s), then
# per target: snapshot, PG_QUERY_SECS of load, wait PG_STATS_SETTLE, snapshot. Per forwarded
# request: (delta over the load window - the idle rate x the window's length) / 2xx answers,
# for
#   transactions        xact_commit + xact_rollback of the database: every statement the
#                       gateway runs outside a transaction is one, a write is one. A snapshot
#                       (psql into that database) adds 2 to the window it opens (its
#                       connection's start and its query), subtracted;
#   installation reads  seq_scan + idx_scan of the schema's `installations` (a cache miss is
#                       one primary-key scan); expected 0 once warm;
#   replay rows         rows inserted or updated in `replay_signatures` (claims);
#   table operations    scans plus rows inserted, updated or deleted over all the schema's
#                       tables (an INSERT ... ON CONFLICT counts 2: its conflict check is an
#                       index scan).
# pg_stat_statements would give exact per-statement counts but needs shared_preload_libraries
# (a server restart): not used.
#
# Environment (defaults in brackets):
#   PG_ROUNDS [8]  PG_SECS [5]  PG_WARMUP [1]  PG_CONNS [32]  SHAPE [event]
#   PG_TARGETS [sled postgres pg_replay nginx]
#   PG_BENCH_URL [postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]  a URL
#       (not key=value) to a server where this user may CREATE DATABASE; the databases are
#       created there and dropped at exit
#   PG_POOL [16]         storage.pool_size of the postgres targets
#   PG_QUERY_SECS [=PG_SECS]  PG_STATS_SETTLE [11]  the query count (0 skips it)
#   PG_REPLAY_HEADROOM [1.5]  PG_REPLAY_MIN [5000]  PG_REPLAY_MAX [600000]  pg_replay's files
#   PORT_OFFSET [0]      ports 9080 (upstream), 9081 sled, 9082 postgres, 9083 pg_replay,
#                        9084 nginx, + offset
#   and bench/lib.sh's GATEWAY_REV, BENCH_SKIP_BUILD (GATEWAY_BIN / BENCH_SEED), CARGO_TARGET_DIR.
# Needs: wrk and nginx (apt-get install -y wrk nginx-light), psql, python3, the harness mirror
# and its upstream (built here if missing; the full bench/setup.sh is not needed).
# Output: the terminal and bench/results/<date>-postgres.txt.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
for c in wrk nginx psql python3; do
    command -v "$c" >/dev/null || { echo "needs $c (apt-get install -y wrk nginx-light postgresql-client)" >&2; exit 1; }
done
[[ -e "$BENCH/harness/gen" ]] || MIRROR_ONLY=1 bash "$BENCH/setup.sh"
[[ -x "$BENCH/harness/rust/target/release/upstream" ]] \
    || (cd "$BENCH/harness/rust" && cargo build --release --quiet --bin upstream)
GIVEN_BIN="${GATEWAY_BIN:-}"
bench_build
[[ -n "$GIVEN_BIN" ]] && GATEWAY_DESC="the binary given in GATEWAY_BIN"

ROUNDS="${PG_ROUNDS:-8}"
SECS="${PG_SECS:-5}"
WARM="${PG_WARMUP:-1}"
CONNS="${PG_CONNS:-32}"
QSECS="${PG_QUERY_SECS:-$SECS}"
SETTLE="${PG_STATS_SETTLE:-11}"
read -r -a TARGETS <<<"${PG_TARGETS:-sled postgres pg_replay nginx}"
PG_URL="${PG_BENCH_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
SCHEMA=slack_gateway
DB_PREFIX="slack_gateway_bench_$$"
DBS=()

bench_local postgres
# Not bench_local_cleanup: its bare `wait` would also wait for the `tee` below, which ends
# only when this script does.
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
    for db in "${DBS[@]}"; do
        psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
            || echo "could not drop database $db" >&2
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
# The URL with its database replaced.
db_url() {
    python3 -c 'import sys, urllib.parse as u; s = u.urlsplit(sys.argv[1]); print(u.urlunsplit(s._replace(path="/" + sys.argv[2])))' "$PG_URL" "$1"
}

OUTFILE="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-postgres.txt"
mkdir -p "$(dirname "$OUTFILE")"
exec > >(tee "$OUTFILE") 2>&1
echo "== the gateway on PostgreSQL beside sled and nginx ($(date '+%Y-%m-%d %H:%M'))"
echo "gateway: $GATEWAY_DESC"
echo "PostgreSQL: $(psql "$PG_URL" -qAtc 'SHOW server_version')," \
    "database per postgres target, storage.pool_size = ${PG_POOL:-16}"
echo "layout: upstream and targets on CPU 0 (1 worker each), wrk on CPU 1 ($CONNS connections);" \
    "$ROUNDS rounds of ${WARM} s warm-up + ${SECS} s; shape ${SHAPE:-event}"

# --- upstream and targets
UP="$(P 9080)"
UPSTREAM_ADDR="127.0.0.1:$UP" UPSTREAM_THREADS=1 taskset -c 0 "$H/rust/target/release/upstream" \
    >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
declare -A PORT PID DBNAME
start_gateway() { # name port [env assignments...]
    local name="$1" port="$2"
    shift 2
    mkdir -p "$TMP/$name"
    env "$@" BENCH_TMP="$TMP/$name" BENCH_CLIENT_ID=bench-client GATEWAY_ADDR="127.0.0.1:$port" \
        UPSTREAM_URL="http://127.0.0.1:$UP" SLACK_SIGNING_SECRET="$SECRET" GATEWAY_THREADS=1 \
        GATEWAY_PG_POOL="${PG_POOL:-16}" taskset -c 0 bash "$BENCH/gateway.sh" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    PORT[$name]="$port"
    PID[$name]=$!
}
seed_pg() { # target: a fresh database, seeded
    local db="${DB_PREFIX}_$1"
    psql "$PG_URL" -qAtc "CREATE DATABASE $db" >/dev/null
    DBS+=("$db")
    DBNAME[$1]="$db"
    "$BENCH_SEED" --postgres "$(db_url "$db")" --schema "$SCHEMA" --pool-size "${PG_POOL:-16}" \
        --client-id bench-client --installations "$INST" 2>&1 | sed "s/^/$1: /"
}
if has sled; then
    mkdir -p "$TMP/sled"
    "$BENCH_SEED" --store "$TMP/sled/store" --client-id bench-client --installations "$INST" 2>&1 | sed 's/^/sled: /'
    start_gateway sled "$(P 9081)"
fi
if has postgres; then
    seed_pg postgres
    start_gateway postgres "$(P 9082)" GATEWAY_STORAGE=postgres \
        GATEWAY_PG_URL="$(db_url "${DBNAME[postgres]}")" GATEWAY_PG_SCHEMA="$SCHEMA"
fi
if has pg_replay; then
    seed_pg pg_replay
    start_gateway pg_replay "$(P 9083)" GATEWAY_STORAGE=postgres GATEWAY_REPLAY=true \
        GATEWAY_PG_URL="$(db_url "${DBNAME[pg_replay]}")" GATEWAY_PG_SCHEMA="$SCHEMA"
fi
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
  upstream app { server 127.0.0.1:$UP; keepalive 1024; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$(P 9084) backlog=4096;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
    taskset -c 0 nginx -c "$TMP/ng/nginx.conf" -p "$TMP/ng" >"$TMP/ng/out.log" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=($NGINX_MASTER)
    PORT[nginx]="$(P 9084)"
fi
for t in upstream "${TARGETS[@]}"; do
    p="$UP"; [[ "$t" == upstream ]] || p="${PORT[$t]:?unknown target $t (sled postgres pg_replay nginx)}"
    wait_port "$p" || { echo "$t: port $p did not open" >&2; cat "$TMP/$t.log" >&2 2>/dev/null; exit 1; }
done
if has nginx; then  # its CPU is its worker's
    for _ in $(seq 1 50); do
        PID[nginx]="$(pgrep -P "$NGINX_MASTER" | head -1 || true)"
        [[ -n "${PID[nginx]}" ]] && break
        sleep 0.1
    done
    [[ -n "${PID[nginx]}" ]] || { echo "nginx started no worker" >&2; cat "$TMP/ng/error.log" >&2; exit 1; }
fi

# --- request files
# gen FILE COUNT SEED: COUNT signed requests, every signature unique; gen FILE 0 SEED cover:
# one request for each installation (bench/signed_reqs.py).
gen() { python3 "$BENCH/signed_reqs.py" "$H/gen" "$INST" "$SECRET" "${SHAPE:-event}" "$@"; }
SEED=1000
next_seed() { SEED=$((SEED + 1)); }

# Sanity: each gateway forwards a signed request with the bot token; pg_replay refuses the
# same request a second time; nginx answers 200.
python3 - "$H/gen" "$INST" "$SECRET" "$(for t in "${TARGETS[@]}"; do printf '%s=%s ' "$t" "${PORT[$t]}"; done)" <<'EOF'
import sys, urllib.error, urllib.request
sys.path.insert(0, sys.argv[1])
import gen_signed
req = gen_signed.make_requests(gen_signed.load_installations(sys.argv[2]), sys.argv[3], 1, "event", seed=999)[0]
def send(port):
    r = urllib.request.Request(f"http://127.0.0.1:{port}/slack/events", data=req["body"], headers=req["headers"], method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as a:
            return a.status, a.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
bad = []
for t in sys.argv[4].split():
    name, port = t.split("=")
    st, b = send(port)
    ok = st == 200 and (name == "nginx" or '"present"' in b)
    note = "" if name == "nginx" else ", the upstream saw the bot token" if ok else ""
    if name == "pg_replay":
        st2, _ = send(port)
        ok = ok and st2 == 401
        note += f"; the same request again: {st2} (a replay)"
    print(f"check {name}: {st}{note}")
    if not ok:
        bad.append(f"{name}: {st} {b[:200]}")
if bad:
    sys.exit("sanity check failed: " + "; ".join(bad))
EOF

# Every installation requested on each gateway, so that its cache holds all of them (a round's
# 2000 requests draw teams at random and miss some). pg_replay answers the repeats 401.
next_seed; gen "$TMP/cover.lua" 0 "$SEED" cover
for t in "${TARGETS[@]}"; do
    [[ "$t" == nginx ]] || WRK_REQS="$TMP/cover.lua" taskset -c 1 wrk -t1 -c "$CONNS" -d 1s \
        -s "$H/wrk/signed.lua" "http://127.0.0.1:${PORT[$t]}/slack/events" >/dev/null
done
echo "every installation requested once or more on each gateway (their caches are warm)"

# --- measuring
T="$(getconf CLK_TCK)"
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The PostgreSQL backends of a target's database: "pid ticks" lines.
db_pids() { psql "$PG_URL" -qAtc "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"; }
db_ticks() { # database -> "pid:ticks ..."
    local out="" p
    for p in $(db_pids "$1"); do out+="$p:$(cpu_of "$p") "; done
    echo "$out"
}
db_delta() { # before after -> ticks used by the pids of `after` since `before`
    python3 -c 'import sys
b = dict(x.split(":") for x in sys.argv[1].split())
print(sum(int(t) - int(b.get(p, 0)) for p, t in (x.split(":") for x in sys.argv[2].split())))' "$1" "$2"
}
field() { sed "s/.*$1=\\([0-9]*\\).*/\\1/" <<<"$2"; }
wrk_run() { # url secs file
    WRK_REQS="$3" taskset -c 1 wrk -t1 -c "$CONNS" -d "${2}s" --timeout 10s -s "$H/wrk/signed.lua" "$1" | grep WRKRESULT
}
# measure TARGET ROUND: one warm-up and one measured run; prints the row.
measure() {
    local name="$1" round="$2" url="http://127.0.0.1:${PORT[$1]}/slack/events" file="$TMP/reqs.lua"
    local count=0 flag="" out n d e p99 u0 u1 db0="" db1="" dbt=-1
    if [[ "$name" == pg_replay ]]; then
        next_seed; gen "$TMP/warm.lua" $((WARM * 20000)) "$SEED"
        out="$(wrk_run "$url" "$WARM" "$TMP/warm.lua")"
        count="$(awk -v n="$(field requests "$out")" -v d="$(field duration_us "$out")" -v s="$SECS" \
            -v h="${PG_REPLAY_HEADROOM:-1.5}" -v lo="${PG_REPLAY_MIN:-5000}" -v hi="${PG_REPLAY_MAX:-600000}" \
            'BEGIN { c = int(n / (d / 1e6) * s * h) + 1; c = c < lo ? lo : c; print (c > hi ? hi : c) }')"
        next_seed; file="$TMP/replay.lua"; gen "$file" "$count" "$SEED"
    else
        wrk_run "$url" "$WARM" "$file" >/dev/null
    fi
    [[ -n "${DBNAME[$name]:-}" ]] && db0="$(db_ticks "${DBNAME[$name]}")"
    u0="$(cpu_of "${PID[$name]}")"
    out="$(wrk_run "$url" "$SECS" "$file")"
    u1="$(cpu_of "${PID[$name]}")"
    [[ -n "${DBNAME[$name]:-}" ]] && { db1="$(db_ticks "${DBNAME[$name]}")"; dbt="$(db_delta "$db0" "$db1")"; }
    n="$(field requests "$out")"; d="$(field duration_us "$out")"; e="$(field err_status "$out")"
    p99="$(field p99_us "$out")"
    [[ "$e" == 0 ]] || { flag+=" non2xx=$e"; echo "warning: $name answered $e non-2xx in round $round" >&2; }
    if ((count > 0 && n > count)); then
        flag+=" cycled"
        echo "warning: pg_replay sent $n requests from a file of $count: some were replays (raise PG_REPLAY_HEADROOM)" >&2
    fi
    awk -v r="$round" -v n="$n" -v d="$d" -v u=$((u1 - u0)) -v db="$dbt" -v T="$T" -v name="$name" \
        -v p99="$p99" -v flag="$flag" 'BEGIN {
        dbs = db < 0 ? "-" : sprintf("%.2f", db / T * 1e6 / n)
        printf "%-5s %-10s %9.0f %10.2f %10s %8.2f%s\n", r, name, n / (d / 1e6), u / T * 1e6 / n, dbs, p99 / 1000, flag }'
}

echo
printf '%-5s %-10s %9s %10s %10s %8s\n' round target "req/s" "µs CPU/req" "db µs/req" "p99 ms" | tee "$TMP/rows"
for round in $(seq 1 "$ROUNDS"); do
    next_seed; gen "$TMP/reqs.lua" 2000 "$SEED"   # fresh timestamps every round (Slack's 5 min)
    k=$(((round - 1) % ${#TARGETS[@]}))
    for t in "${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}"; do
        measure "$t" "$round" >"$TMP/row"   # not in a pipe: SEED must advance here
        tee -a "$TMP/rows" <"$TMP/row"
    done
done

echo
echo "medians over $ROUNDS rounds (rows flagged non2xx or cycled excluded):"
python3 - "$TMP/rows" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = [r for r in rows if len(r) == 6]  # flagged rows have extra fields
by = {}
for r in rows:
    by.setdefault(r[1], {})[r[0]] = r
med = lambda xs: st.median(xs) if xs else float("nan")
for name in ("sled", "postgres", "pg_replay", "nginx"):
    if name not in by:
        continue
    v = list(by[name].values())
    db = [float(x[4]) for x in v if x[4] != "-"]
    dbs = f"{med(db):6.2f}" if db else "     -"
    print(f"  {name:10} req/s {med([float(x[2]) for x in v]):8.0f}   CPU {med([float(x[3]) for x in v]):6.2f} µs/req"
          f"   db {dbs} µs/req   p99 {med([float(x[5]) for x in v]):6.2f} ms   ({len(v)} rounds)")
def ratio(a, b, i, label, goal=None, higher=True):
    if a not in by or b not in by:
        return
    A, B = by[a], by[b]
    of_medians = med([float(x[i]) for x in A.values()]) / med([float(x[i]) for x in B.values()])
    paired = [float(A[k][i]) / float(B[k][i]) for k in A if k in B and float(B[k][i]) > 0]
    verdict = ""
    if goal is not None:
        ok = of_medians >= goal if higher else of_medians <= goal
        verdict = f"   target {'>=' if higher else '<='} {goal:.2f}: {'met' if ok else 'NOT met'}"
    print(f"  {a}/{b} {label:11} {of_medians:6.3f} (median of per-round ratios {med(paired):6.3f}){verdict}")
print("ratios (of the medians):")
ratio("postgres", "sled", 2, "throughput", 0.95, True)
ratio("postgres", "sled", 5, "p99", 1.10, False)
ratio("postgres", "sled", 3, "CPU/req")
ratio("pg_replay", "postgres", 2, "throughput")
ratio("pg_replay", "postgres", 5, "p99")
ratio("pg_replay", "postgres", 3, "CPU/req")
ratio("sled", "nginx", 2, "throughput")
ratio("postgres", "nginx", 2, "throughput")
EOF

# --- queries per forwarded request, warm
((QSECS > 0)) || exit 0
QT=()
has postgres && QT+=(postgres)
has pg_replay && QT+=(pg_replay)
((${#QT[@]} > 0)) || exit 0
snap() { # target -> "time xacts installation_scans replay_rows table_ops"
    local now
    now="$(date +%s.%N)"
    echo "$now $(psql "$(db_url "${DBNAME[$1]}")" -qAt -F ' ' -c "
        SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
               coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)) FILTER (WHERE relname = 'installations'), 0),
               coalesce(sum(n_tup_ins + n_tup_upd) FILTER (WHERE relname = 'replay_signatures'), 0),
               coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0) + n_tup_ins + n_tup_upd + n_tup_del), 0)
        FROM pg_stat_user_tables WHERE schemaname = '$SCHEMA'")"
}
echo
echo "queries per forwarded request, warm (each postgres target has a database of its own):"
echo "  ${SETTLE} s for PostgreSQL to flush its statistics; an idle reference of $((QSECS + SETTLE)) s; then per target: ${QSECS} s of load + ${SETTLE} s"
sleep "$SETTLE"
declare -A S0 S1 S2 SENT
for t in "${QT[@]}"; do S0[$t]="$(snap "$t")"; done
sleep $((QSECS + SETTLE))   # as long as a load window: the snapshots' own cost cancels
for t in "${QT[@]}"; do
    file="$TMP/reqs.lua"
    next_seed
    count=0
    if [[ "$t" == pg_replay ]]; then
        file="$TMP/replay.lua"
        count="$(awk -v s="$QSECS" -v h="${PG_REPLAY_HEADROOM:-1.5}" -v hi="${PG_REPLAY_MAX:-600000}" \
            '$2 == "pg_replay" && NF == 6 && $3 > m { m = $3 } END { c = int(m * s * h) + 5000; print (c > hi ? hi : c) }' "$TMP/rows")"
        gen "$file" "$count" "$SEED"
    else
        gen "$file" 2000 "$SEED"
    fi
    S1[$t]="$(snap "$t")"   # the idle reference of this target ends here
    out="$(wrk_run "http://127.0.0.1:${PORT[$t]}/slack/events" "$QSECS" "$file")"
    n="$(field requests "$out")"; e="$(field err_status "$out")"
    ((count == 0 || n <= count)) || echo "warning: pg_replay sent $n requests from a file of $count: some were replays" >&2
    SENT[$t]="$((n - e)) $e"
    sleep "$SETTLE"
    S2[$t]="$(snap "$t")"
done
for t in "${QT[@]}"; do
    python3 - "$t" "${S0[$t]}" "${S1[$t]}" "${S2[$t]}" "${SENT[$t]}" <<'EOF'
import sys
name = sys.argv[1]
a, b, c = ([float(x) for x in s.split()] for s in sys.argv[2:5])
ok, errs = (int(x) for x in sys.argv[5].split())
idle_len, load_len = b[0] - a[0], c[0] - b[0]
names = ["transactions", "installation reads", "replay rows", "table operations"]
print(f"  {name}: {ok} requests forwarded ({errs} non-2xx); window {load_len:.1f} s, idle reference {idle_len:.1f} s")
for i, label in enumerate(names, start=1):
    # Each window holds one snapshot's psql: 2 transactions (its connection's start, its query).
    own = 2 if i == 1 else 0
    idle_rate = (b[i] - a[i] - own) / idle_len
    load = c[i] - b[i] - own
    net = load - idle_rate * load_len
    print(f"    {label:19} {net / max(ok, 1):8.4f} per request   (net {net:.0f}: window {load:.0f} - background {idle_rate:.2f}/s x {load_len:.1f} s)")
EOF
done
echo "report: $OUTFILE"
