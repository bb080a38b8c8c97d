#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine, then run lint, types and
# every test. Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES="curl lftp tnftp locales ca-certificates prometheus"

missing=""
command -v curl >/dev/null || missing="$missing curl"
command -v lftp >/dev/null || missing="$missing lftp"
command -v tnftp >/dev/null || missing="$missing tnftp"
command -v promtool >/dev/null || missing="$missing prometheus"  # promtool checks the /metrics exposition
command -v localedef >/dev/null || missing="$missing locales"
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || missing="$missing python3-venv"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# podman, the CI base image (cached by tag on the machine) and what the image tests need
echo "== podman"
bash tests/image/setup.sh

echo "== ruff"
.venv/bin/ruff check app tests bench docker
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
# The appliance runs on uvloop, whose transports differ from asyncio's: run the real-client
# server tests a second time with every test server on uvloop.
echo "== pytest, servers on uvloop"
FSFTPD_TEST_LOOP=uvloop .venv/bin/pytest -p no:cacheprovider "$@" tests/server tests/s3/test_s3_ftp.py \
    tests/appliance/test_metrics.py tests/appliance/test_metrics_health.py
