"""The ISO, as `./boot` and `qemu/run` boot it by default: isolinux on BIOS
loads the kernel and the zstd initrd, and the system comes up to the console
with the ISO's fixed command line."""

from __future__ import annotations

import pytest
from test_boot import STEP, wait_running

pytestmark = pytest.mark.vm


def test_iso_boots_to_the_console(iso_image, boot) -> None:
    vm = boot("iso", iso=True)
    cmdline = vm.shell("cat /proc/cmdline", STEP)
    assert "console=tty1 console=ttyS0 printk.devkmsg=on" in cmdline, cmdline
    wait_running(vm, {"dom0", "console"})
