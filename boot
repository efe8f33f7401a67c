#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (as root), install
# the host tools (qemu/setup), build dist/ from Debian packages (image/build:
# incremental, seconds when nothing changed) and boot it under qemu with the
# serial console on this terminal (qemu/run: the ISO; Ctrl-A X quits qemu).
# Arguments go to qemu/run, e.g. `./boot --kernel --disk docker.img`,
# `./boot --image disk.img`, `./boot --secure-boot`.
set -euo pipefail
cd "$(dirname "$0")"
./qemu/setup
./image/build
exec ./qemu/run "$@"
