"""Issue 14: the system fits the VM a user gives it. Below the minimum
(pid1.ram MIN_RAM_MIB, 512 MiB), a 256 MiB VM says why in one line on the
serial console and halts, where it used to end in a bare kernel panic: a
short boot, killed once that line is there.

The minimum itself is booted by boots that were there already: the ISO
boot (tests/vm/test_iso.py) and the -kernel boot on qemu's default CPU
(tests/vm/test_cpu_models.py) run at 512 MiB, and check there with
check_engine_mounted and a `docker run`."""

from __future__ import annotations

import re

import pytest
from test_boot import STEP

from pid1 import ram

pytestmark = pytest.mark.vm

REFUSAL = r"pid1: only-docker needs a machine with at least (\d+) MiB of RAM; this one has (\d+) MiB[^\n]*"


def check_engine_mounted(vm) -> None:
    """The engine's squashfs is mounted where pid1 put it, read-only, and
    the kernel modules on it were loaded from it (the modules phase needs it)."""
    mounts = vm.shell("grep ' /usr/lib/pid1/engine ' /proc/1/mounts", STEP)
    assert "squashfs ro" in mounts, mounts
    loaded = vm.shell("grep -c -E '^(virtio_net|overlay|bridge) ' /proc/modules", STEP)
    assert loaded.split()[-1:] == ["3"], f"{loaded!r}\n{vm.tail()}"
    assert not re.search(REFUSAL, vm.text())


def test_below_the_minimum_the_serial_console_says_why(boot) -> None:
    vm = boot("mem-256", mem=256, until=REFUSAL)
    found = re.search(REFUSAL, vm.text())
    assert found and int(found.group(1)) == ram.MIN_RAM_MIB and int(found.group(2)) < ram.MIN_MEMTOTAL_MIB, vm.tail()
    assert "Kernel panic" not in vm.text(), vm.tail()
    vm.kill()
