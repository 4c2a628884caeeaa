#!/usr/bin/env bash
# Installs what the test suite uses, if it is missing: system packages, and the Python venv
# of the Bolt for Python example. Idempotent, and quick when everything is there.
set -euo pipefail
need=()
# Headless Chromium drives the browser end-to-end tests (install and sign-in flows).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# A Python venv with the Bolt for Python example's requirements, for tests/example_python.rs.
# Rebuilt only when examples/python/requirements.txt changes (its copy is kept in the venv).
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SLACK_GATEWAY_EXAMPLE_VENV:-$root/target/example-venv}"
reqs="$root/examples/python/requirements.txt"
if ! cmp -s "$reqs" "$venv/requirements.txt" || ! "$venv/bin/python" -c 'import slack_bolt' 2>/dev/null; then
  echo "creating the example venv: $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! "${PYTHON:-python3}" -m venv "$venv"; then
    # Debian's python3 needs python3-venv for ensurepip.
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi
