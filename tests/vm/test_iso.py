"""The hybrid ISO, as `./boot` and `qemu/run` boot it by default: isolinux
from El Torito on BIOS; on UEFI with Secure Boot on (OVMF, Microsoft's keys),
Debian's signed shim, GRUB and kernel. The same kernel, initrd and command
line either way; the system comes up to the console, and Docker runs a
container under the kernel's lockdown (its modules are Debian's, signed).
The BIOS boot is in a VM of the minimum RAM (pid1.ram MIN_RAM_MIB, issue
14), where a container runs too. The ISO's initrd has no engine: both
boots read the engine's squashfs from the ISO through the CD-ROM (IDE on
BIOS, qemu's pc machine; SATA on the Secure Boot one, q35), and its
drivers, isofs, loop and squashfs load signed under lockdown."""

from __future__ import annotations

import re

import pytest
from test_boot import STEP, read_state, wait_running
from test_memory_vm import check_engine_mounted

from pid1 import ram

pytestmark = pytest.mark.vm

ISO_WORDS = "console=tty1 console=ttyS0 printk.devkmsg=on"
seen_cmdlines: dict[str, list[str]] = {}


def loaded(cmdline: str) -> list[str]:
    """The command line's words without those the boot loaders add (BOOT_IMAGE=, initrd=)."""
    return [w for w in cmdline.split() if not w.startswith(("BOOT_IMAGE=", "initrd="))]


def check_engine_from_the_cd(vm) -> None:
    """The engine's squashfs came from the CD, mounted read-only, and the
    initramfs holds no copy of it (the boot loader never read it)."""
    check_engine_mounted(vm)
    medium = vm.shell("grep ' /usr/lib/pid1/medium ' /proc/1/mounts", STEP)
    assert re.search(r"^/dev/sr\d+ /usr/lib/pid1/medium iso9660 ro", medium, re.M), medium
    engine = read_state(vm)["phases"]["engine"]
    assert engine["status"] == "done" and "engine.squashfs on /dev/sr" in engine["detail"], engine
    assert "sr_mod" in engine["detail"] and "isofs" in engine["detail"], engine
    copy = vm.shell("ls /usr/lib/pid1/engine.squashfs 2>&1; true", STEP)
    assert "No such file" in copy, copy


def test_iso_boots_to_the_console_in_the_minimum_and_runs_a_container(iso_image, boot) -> None:
    vm = boot("iso", iso=True, mem=ram.MIN_RAM_MIB)
    cmdline = vm.output("cat /proc/cmdline", STEP)[0]
    assert ISO_WORDS in cmdline and "pid1.grow" not in cmdline, cmdline
    seen_cmdlines["bios"] = loaded(cmdline)
    assert "efi: EFI v" not in vm.shell("dmesg | grep 'efi: EFI v'; true", STEP)  # BIOS, not UEFI
    wait_running(vm, {"dom0", "console"})
    check_engine_from_the_cd(vm)
    out = vm.shell("docker run --rm busybox echo o''k", 180)
    assert "ok" in [line.strip() for line in out.splitlines()], f"{out!r}\n{vm.tail()}"


def test_iso_boots_under_uefi_with_secure_boot(iso_image, boot) -> None:
    vm = boot("iso-sb", iso=True, firmware="secure-boot")
    cmdline = vm.output("cat /proc/cmdline", STEP)[0]
    assert ISO_WORDS in cmdline, cmdline
    if "bios" in seen_cmdlines:  # the same words as isolinux gave the kernel on BIOS
        assert loaded(cmdline) == seen_cmdlines["bios"], (cmdline, seen_cmdlines["bios"])
    kernel = vm.shell("dmesg | grep -iE 'efi: EFI v|secure ?boot|locked down|lockdown'", STEP)
    print(kernel)
    assert "efi: EFI v" in kernel, kernel
    assert "Secure boot enabled" in kernel, kernel
    assert "Kernel is locked down from EFI Secure Boot" in kernel, kernel
    check_engine_from_the_cd(vm)  # ahci, sr_mod, isofs, loop, squashfs loaded signed; mounted under lockdown
    # dockerd's modules (bridge, veth, netfilter) load signed under lockdown
    out = vm.output("docker run --rm busybox echo ran-under-lockdown", STEP)
    assert "ran-under-lockdown" in out, out
    wait_running(vm, {"dom0", "console", "dhcp"})
    # The kernel's own notice at start ("Lockdown: swapper/0: hibernation is
    # restricted") is no refusal of anything pid1 or the engine asked for
    refused = [line for line in vm.output("dmesg | grep 'Lockdown:'; true", STEP) if "swapper/" not in line]
    assert not refused, f"lockdown refused something during the boot: {refused}"
