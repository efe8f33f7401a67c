#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (as root), install
# the host tools, build dist/ from Debian packages (image/build: incremental,
# seconds when nothing changed) and boot it under qemu with the serial
# console on this terminal (qemu/run: the ISO; Ctrl-A X quits qemu).
# Arguments go to qemu/run, e.g. `./boot --kernel --disk docker.img`,
# `./boot --image disk.img`, `./boot --secure-boot`.
set -euo pipefail
cd "$(dirname "$0")"
PKGS=(
    python3 python3-venv          # image/build; the venv's pip fetches the guest's wheels
    binutils patchelf kmod cpio zstd  # strip, patchelf, depmod; zstd packs the ISO's initrd
    squashfs-tools                # mksquashfs: the engine's read-only image
    xorriso mtools dosfstools fdisk qemu-utils  # the boot media: ISO, FAT, GPT, qcow2
    libdevmapper1.02.1            # grub-mkimage (run from Debian's grub-common, unpacked) links it
    qemu-system-x86 ovmf e2fsprogs  # qemu/run (UEFI: OVMF), qemu/mkdisk
)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    echo "boot: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e .
fi
./image/build
exec ./qemu/run "$@"
