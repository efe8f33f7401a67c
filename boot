#!/usr/bin/env bash
# Sets up and boots only-docker. Until the image build lands, this runs pid1 as
# PID 1 of a fresh PID + mount namespace on this machine (a demo): Ctrl-C or
# `kill -TERM <pid>` stops it in order.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    dpkg -s python3-venv >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q python3-venv; }
    python3 -m venv .venv
    .venv/bin/pip install -q -e .
fi
state=$(mktemp -d /var/tmp/pid1-demo.XXXXXX)
echo "pid1 demo: state in $state/state.json"
exec unshare --pid --mount --uts --ipc --fork --mount-proc \
    .venv/bin/python -m pid1 --cmdline "pid1.phases=hostname pid1.state_dir=$state ${*:-}"
