"""The ISO, as `./boot` and `qemu/run` boot it by default: isolinux on BIOS
loads the kernel and the zstd initrd, and the system comes up to the console
with the ISO's fixed command line."""

from __future__ import annotations

import pytest
from conftest import BOOT_TIMEOUT, PROMPT
from test_boot import STEP, wait_running
from vm import VM

pytestmark = pytest.mark.vm


def test_iso_boots_to_the_console(iso_image, request: pytest.FixtureRequest) -> None:
    vm = VM(name="iso", iso=True, dist=iso_image)
    request.session.vms = [*getattr(request.session, "vms", []), vm]  # the serial log is kept on failure
    vm.start()
    try:
        # isolinux reads the ISO through the BIOS first (~15 s under TCG)
        vm.wait_for(PROMPT, BOOT_TIMEOUT + 60)
        cmdline = vm.shell("cat /proc/cmdline", STEP)
        assert "console=tty1 console=ttyS0 printk.devkmsg=on" in cmdline, cmdline
        wait_running(vm, {"dom0", "console"})
    finally:
        vm.kill()
