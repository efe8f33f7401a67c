"""The ISO, as `./boot` and `qemu/run` boot it by default: isolinux on BIOS
loads the kernel and the zstd initrd, and the system comes up to the console
with the ISO's fixed command line. In a VM of the minimum RAM (pid1.ram
MIN_RAM_MIB, issue 14), where a container runs too."""

from __future__ import annotations

import pytest
from test_boot import STEP, wait_running
from test_memory_vm import check_engine_mounted

from pid1 import ram

pytestmark = pytest.mark.vm


def test_iso_boots_to_the_console_in_the_minimum_and_runs_a_container(iso_image, boot) -> None:
    vm = boot("iso", iso=True, mem=ram.MIN_RAM_MIB)
    cmdline = vm.shell("cat /proc/cmdline", STEP)
    assert "console=tty1 console=ttyS0 printk.devkmsg=on" in cmdline, cmdline
    wait_running(vm, {"dom0", "console"})
    check_engine_mounted(vm)
    out = vm.shell("docker run --rm busybox echo o''k", 180)
    assert "ok" in [line.strip() for line in out.splitlines()], f"{out!r}\n{vm.tail()}"
