# Sourced by the bench scripts: setup check, the gateway build, and (bench_local) the
# shared set-up of the scripts that start their own targets (cpusplit.sh, ab.sh).
#
#   GATEWAY_REV       build and measure this commit (any git revision: HEAD, a tag, a sha)
#                     from a clean `git archive` export instead of the working tree, so that
#                     uncommitted edits do not end up in the numbers; built in
#                     target/bench-rev/ (the commit must contain examples/bench_seed.rs)
#   BENCH_SKIP_BUILD [0]  1: use the binaries already built (GATEWAY_BIN / BENCH_SEED)
#   CARGO_TARGET_DIR  honoured for working-tree builds
# Sets and exports GATEWAY_BIN, BENCH_SEED, GATEWAY_DESC.

BENCH="${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
REPO="${REPO:-$(cd "$BENCH/.." && pwd)}"

bench_setup() {
    if "$BENCH/venv-py/bin/python" -c 'import slack_bolt, gunicorn, gevent, uvicorn, aiohttp, packaging, urllib3' 2>/dev/null \
        && [[ -x "$BENCH/harness/rust/target/release/upstream" ]] \
        && command -v wrk >/dev/null && command -v nginx >/dev/null; then
        MIRROR_ONLY=1 bash "$BENCH/setup.sh"
    else
        bash "$BENCH/setup.sh"
    fi
}

bench_build() {
    local src target
    if [[ -n "${GATEWAY_REV:-}" ]]; then
        local rev
        rev="$(git -C "$REPO" rev-parse --verify "${GATEWAY_REV}^{commit}")"
        src="$REPO/target/bench-rev/src-${rev:0:12}"
        target="$REPO/target/bench-rev/target"
        if [[ ! -f "$src/Cargo.toml" ]]; then
            rm -rf "$src" && mkdir -p "$src"
            git -C "$REPO" archive "$rev" | tar -x -C "$src"
        fi
        [[ -f "$src/examples/bench_seed.rs" ]] || { echo "$GATEWAY_REV has no examples/bench_seed.rs" >&2; return 1; }
        GATEWAY_DESC="commit ${rev:0:12} ($(git -C "$REPO" log -1 --format=%s "$rev" | cut -c1-70))"
    else
        src="$REPO"
        target="${CARGO_TARGET_DIR:-$REPO/target}"
        GATEWAY_DESC="working tree at $(git -C "$REPO" rev-parse --short HEAD)"
        git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock || GATEWAY_DESC+=" + uncommitted changes in src/"
    fi
    if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
        (cd "$src" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --locked \
            --bin slack-gateway --example bench_seed)
    fi
    export GATEWAY_BIN="${GATEWAY_BIN:-$target/release/slack-gateway}"
    export BENCH_SEED="${BENCH_SEED:-$target/release/examples/bench_seed}"
    export GATEWAY_DESC
    [[ -x "$GATEWAY_BIN" && -x "$BENCH_SEED" ]] || { echo "missing $GATEWAY_BIN or $BENCH_SEED" >&2; return 1; }
}

# For scripts that start their own upstream and targets in the pinned layout: sets H (the
# harness), P (a port shifted by PORT_OFFSET), SECRET, INST (the harness's 1000 installations,
# generated if missing), TMP (a temp folder named after $1) and PIDS (killed, with TMP removed,
# on exit), and defines wait_port PORT.
bench_local() {
    H="$BENCH/harness"
    OFF="${PORT_OFFSET:-0}"
    SECRET="${SLACK_SIGNING_SECRET:-$(cd "$H/gen" && python3 -c 'import gen_signed; print(gen_signed.DEFAULT_SECRET)')}"
    INST="$H/data/installations.json"
    [[ -f "$INST" ]] || python3 "$H/gen/gen_signed.py" installations --n 1000 --out "$INST"
    TMP="$(mktemp -d -t "slack-gateway-$1.XXXXXX")"
    PIDS=()
    trap bench_local_cleanup EXIT
}
P() { echo $(($1 + ${OFF:-0})); }
bench_local_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
wait_port() {
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
