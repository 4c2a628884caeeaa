#!/usr/bin/env bash
# A PostgreSQL database for the test suite. Decides the URL and exports it, for `cargo test`,
# as SLACK_GATEWAY_TEST_DATABASE_URL:
#   1. SLACK_GATEWAY_TEST_DATABASE_URL, if it is already set (not empty): used as is;
#   2. else the server at 127.0.0.1:5432, if it answers as user `postgres` without a password
#      (trust auth): postgres://postgres@127.0.0.1:5432/postgres;
#   3. else a throwaway cluster started here: Debian's `postgresql` package is installed with
#      apt if no `initdb` is found (with sudo when not root); the cluster lives in a temp dir
#      (run as the `postgres` user when we are root, since initdb refuses root), trusts local
#      connections, listens only on 127.0.0.1 at a free port, and is stopped and removed when
#      the shell that sourced this script exits, even on failure.
# Prints one line naming the database the tests use (any password hidden).
#
# Environment:
#   SLACK_GATEWAY_TEST_DATABASE_URL  the database to use; set it to skip everything else.
#   SLACK_GATEWAY_TEST_POSTGRES      `auto` (the default: the order above) or `throwaway`
#                                    (always start a throwaway cluster, even when the URL is set
#                                    or 127.0.0.1:5432 answers; for testing this script).
#
# Usage: `source scripts/test-postgres.sh` (as scripts/test.sh does; it adds the cleanup to the
# shell's EXIT trap, after whatever the trap already ran), or
# `bash scripts/test-postgres.sh COMMAND [ARGS...]` to run one command with the database.

# Every name here starts with _tpg_ (or test_postgres_), not to clobber the sourcing shell's.
_tpg_dir=""      # the throwaway cluster's temp dir, while it exists
_tpg_bin=""      # the directory of its initdb and pg_ctl
_tpg_as_root=""  # 1 when the cluster is run as the postgres user because we are root

_tpg_say() { echo "test-postgres: $*" >&2; }

# The URL with any password replaced by ***.
_tpg_redact() { printf '%s\n' "$1" | sed -E 's#^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@#\1:***@#'; }

# Succeeds when a PostgreSQL server at HOST:PORT lets USER into database `postgres` without a
# password: a startup message, then AuthenticationOk and ReadyForQuery. Python 3 only, no psql.
_tpg_probe() {
  python3 - "$1" "$2" "$3" <<'PY'
import socket, struct, sys
host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data

ok = False
try:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(3)
        params = b"user\0" + user.encode() + b"\0database\0postgres\0\0"
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        while True:
            kind = read_exact(s, 1)
            (length,) = struct.unpack("!i", read_exact(s, 4))
            body = read_exact(s, length - 4)
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                break  # a password (or another method) is asked for
            if kind == b"E":
                break
            if kind == b"Z":
                ok = True
                s.sendall(b"X\0\0\0\4")  # Terminate
                break
except (OSError, ValueError, struct.error):
    pass
sys.exit(0 if ok else 1)
PY
}

# A TCP port free on 127.0.0.1 right now.
_tpg_free_port() {
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the cluster's owner: the postgres user when we are root, else ourselves.
_tpg_run() {
  if [ -z "$_tpg_as_root" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
  fi
}

# The newest PostgreSQL's bin directory with initdb and pg_ctl, or nothing.
_tpg_find_bin() {
  local d
  while IFS= read -r d; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

# Stops the throwaway cluster, if any, and removes its temp dir. Safe to call more than once.
test_postgres_stop() {
  [ -n "$_tpg_dir" ] || return 0
  if [ -f "$_tpg_dir/data/postmaster.pid" ]; then
    if ! (cd "$_tpg_dir" && _tpg_run "$_tpg_bin/pg_ctl" -D "$_tpg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1); then
      local pid
      pid=$(head -n 1 "$_tpg_dir/data/postmaster.pid" 2>/dev/null || true)
      if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  fi
  rm -rf "$_tpg_dir"
  _tpg_dir=""
}

# Starts the throwaway cluster and exports its URL.
_tpg_throwaway() {
  _tpg_bin=$(_tpg_find_bin)
  if [ -z "$_tpg_bin" ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    _tpg_say "installing: postgresql"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
    _tpg_bin=$(_tpg_find_bin)
    [ -n "$_tpg_bin" ] || { _tpg_say "no initdb after installing postgresql"; return 1; }
  fi

  local tmp_parent="${TMPDIR:-/tmp}"
  if [ "$(id -u)" = 0 ]; then
    _tpg_as_root=1
    tmp_parent=/tmp  # the postgres user must reach it
    if ! id postgres >/dev/null 2>&1; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres || return 1
    fi
  fi
  _tpg_dir=$(mktemp -d "$tmp_parent/slack-gateway-pg.XXXXXX") || return 1
  # From here on the EXIT trap removes the dir and stops the server, however this ends.
  _tpg_chain_exit_trap
  if [ -n "$_tpg_as_root" ]; then chown postgres: "$_tpg_dir" || return 1; fi

  # The role is `postgres` whoever runs it; trust auth; no fsync, this data is thrown away.
  if ! (cd "$_tpg_dir" && _tpg_run "$_tpg_bin/initdb" -D "$_tpg_dir/data" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync >"$_tpg_dir/initdb.log" 2>&1); then
    _tpg_say "initdb failed:"; cat "$_tpg_dir/initdb.log" >&2; return 1
  fi

  local attempt port
  for attempt in 1 2 3; do
    port=$(_tpg_free_port) || return 1
    # Appended, so these win over initdb's; a later line for the same setting wins.
    _tpg_run tee -a "$_tpg_dir/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$_tpg_dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
dynamic_shared_memory_type = mmap
EOF
    if (cd "$_tpg_dir" && _tpg_run "$_tpg_bin/pg_ctl" -D "$_tpg_dir/data" -l "$_tpg_dir/server.log" -w -t 60 start >/dev/null 2>&1); then
      export SLACK_GATEWAY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      echo "tests use PostgreSQL at $SLACK_GATEWAY_TEST_DATABASE_URL (a throwaway cluster in $_tpg_dir)"
      return 0
    fi
    _tpg_say "the cluster did not start on port $port (attempt $attempt):"
    tail -n 5 "$_tpg_dir/server.log" >&2 2>/dev/null || true
  done
  return 1
}

# Adds test_postgres_stop to the shell's EXIT trap, before what the trap already runs; and
# makes INT and TERM exit through it.
_tpg_chain_exit_trap() {
  local previous=() cmd=""
  eval "previous=($(trap -p EXIT))"
  if [ ${#previous[@]} -ge 3 ]; then cmd=${previous[2]}; fi
  case "$cmd" in *test_postgres_stop*) return 0 ;; esac
  # shellcheck disable=SC2064  # the previous command is meant to be expanded now
  trap "test_postgres_stop; ${cmd:-:}" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

test_postgres_start() {
  case "${SLACK_GATEWAY_TEST_POSTGRES:-auto}" in
    auto)
      if [ -n "${SLACK_GATEWAY_TEST_DATABASE_URL:-}" ]; then
        export SLACK_GATEWAY_TEST_DATABASE_URL
        echo "tests use PostgreSQL at $(_tpg_redact "$SLACK_GATEWAY_TEST_DATABASE_URL") (from SLACK_GATEWAY_TEST_DATABASE_URL)"
        return 0
      fi
      if _tpg_probe 127.0.0.1 5432 postgres; then
        export SLACK_GATEWAY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
        echo "tests use PostgreSQL at $SLACK_GATEWAY_TEST_DATABASE_URL (the server already running)"
        return 0
      fi
      ;;
    throwaway) ;;
    *) _tpg_say "SLACK_GATEWAY_TEST_POSTGRES must be auto or throwaway, not '$SLACK_GATEWAY_TEST_POSTGRES'"; return 1 ;;
  esac
  if ! _tpg_throwaway; then
    _tpg_say "could not start a throwaway PostgreSQL"
    test_postgres_stop
    return 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run, not sourced: one command with the database.
  set -euo pipefail
  if [ $# -eq 0 ]; then
    echo "usage: source $0, or bash $0 COMMAND [ARGS...]" >&2
    exit 2
  fi
  test_postgres_start
  "$@"
else
  test_postgres_start || return 1
fi
