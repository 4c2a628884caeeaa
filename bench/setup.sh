#!/usr/bin/env bash
# One-time (idempotent) setup for the side-by-side benchmark; see bench/README.md.
#
#   bash bench/setup.sh
#
# The shared harness (../shared/bench, read-only) writes next to itself: its venv, the Rust
# anchors' target/, Bolt-JS's node_modules, data/, run/ and results/. So this script builds a
# writable mirror of it in bench/harness/ (gitignored): symlinks to the shared scripts, copies
# of the few files that get written next to, and bench/venv-py linked in as its venv-py.
# run_anchors.sh has no knob for the venv (it always uses $HERE/venv-py), hence the mirror.
#
# Environment:
#   BENCH_HARNESS_SRC [<repo>/../shared/bench]  the shared harness
#   SKIP_APT [0]       1: do not apt-get install wrk and nginx-light (must already be there)
#   PYTHON [python3]   interpreter the venv is made from
#   MIRROR_ONLY [0]    1: only refresh the mirror (no installs, no builds)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
SRC="${BENCH_HARNESS_SRC:-$REPO/../shared/bench}"
SRC="$(cd "$SRC" && pwd)"
MIRROR="$BENCH/harness"
[[ -f "$SRC/run_anchors.sh" && -f "$SRC/harness.py" ]] || { echo "no harness at $SRC (set BENCH_HARNESS_SRC)" >&2; exit 1; }

# --- the writable mirror
mkdir -p "$MIRROR/rust" "$MIRROR/node_bolt" "$MIRROR/data" "$MIRROR/run" "$MIRROR/results"
for f in run_anchors.sh harness.py cpu.sh README.md gen wrk bolt_py; do
    [[ -e "$SRC/$f" ]] && ln -sfn "$SRC/$f" "$MIRROR/$f"
done
ln -sfn "$SRC/rust/src" "$MIRROR/rust/src"
for f in Cargo.toml Cargo.lock; do
    cmp -s "$SRC/rust/$f" "$MIRROR/rust/$f" || install -m 0644 "$SRC/rust/$f" "$MIRROR/rust/$f"
done
# app.js is copied (not linked) so that node resolves @slack/bolt from the mirror's node_modules.
cmp -s "$SRC/node_bolt/app.js" "$MIRROR/node_bolt/app.js" || install -m 0644 "$SRC/node_bolt/app.js" "$MIRROR/node_bolt/app.js"
[[ -f "$MIRROR/node_bolt/package.json" ]] || install -m 0644 "$SRC/node_bolt/package.json" "$MIRROR/node_bolt/package.json"
ln -sfn ../venv-py "$MIRROR/venv-py"
[[ "${MIRROR_ONLY:-0}" == 1 ]] && exit 0

# --- system packages: the load generator and the nginx anchor
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    if [[ "${SKIP_APT:-0}" == 1 ]]; then
        echo "need wrk and nginx (apt-get install -y wrk nginx-light)" >&2; exit 1
    fi
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nginx-light
fi

# --- Bolt for Python (the bolt_py* anchors); the harness runs under this venv's python too
# (`packaging` is not declared by gunicorn but its gevent worker imports it; bolt_py_fwd
# forwards with urllib3.)
if ! "$BENCH/venv-py/bin/python" -c 'import slack_bolt, gunicorn, gevent, uvicorn, aiohttp, packaging, urllib3' 2>/dev/null; then
    [[ -x "$BENCH/venv-py/bin/python" ]] || "${PYTHON:-python3}" -m venv "$BENCH/venv-py"
    "$BENCH/venv-py/bin/pip" install -q --upgrade pip
    "$BENCH/venv-py/bin/pip" install -q slack-bolt slack-sdk gunicorn gevent 'uvicorn[standard]' aiohttp packaging urllib3
fi

# --- Bolt for JS (the bolt_js anchor; run_anchors.sh would otherwise install it on first run)
if [[ ! -d "$MIRROR/node_bolt/node_modules/@slack/bolt" ]]; then
    if command -v npm >/dev/null; then
        (cd "$MIRROR/node_bolt" && npm install --no-audit --no-fund --silent @slack/bolt@4.7.3)
    else
        echo "warning: npm not found; the bolt_js anchor will not run" >&2
    fi
fi

# --- the Rust anchors (upstream, rust_min*) and the gateway with its seeding tool
(cd "$MIRROR/rust" && cargo build --release --quiet)
(cd "$REPO" && cargo build --release --quiet --bin slack-gateway --example bench_seed)
echo "bench setup done: harness mirror in $MIRROR, venv in $BENCH/venv-py"
