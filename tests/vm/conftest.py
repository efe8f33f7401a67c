"""VM test fixtures: the image (built once per session, incrementally), a
boot helper that retries a boot that hung once (and says so), the serial
log kept under artifacts/ when a test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.vm import REPO, VM, BootTimeout

BUILD_TIMEOUT = 1800  # first build downloads ~100 MB of packages and wheels
# Guest uptime to a console prompt is ~50 s under TCG on 2 busy cores; the
# bound leaves room for a slow CI machine, and a boot that hangs (runc
# spinning at the first container start, ~1 boot in 50) is retried once.
BOOT_TIMEOUT = float(os.environ.get("VM_BOOT_TIMEOUT", "300"))
PROMPT = r"console started|pid1: phase console done"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.session.vm_failed = True
        for vm in getattr(item.session, "vms", [])[-1:]:  # the boot the test was driving
            path = vm.save_log(f"failed-{item.name}")
            report.sections.append(("serial log", f"saved to {path}"))
    return report


@pytest.fixture(scope="session")
def image() -> Path:
    """dist/ built by image/build (incremental: seconds when nothing changed)."""
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (the image build unpacks packages into /var/cache)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 missing (tests/run installs qemu-system-x86)")
    began = time.monotonic()
    result = subprocess.run(
        [str(REPO / "image/build"), "--no-iso"], capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    print(result.stdout)
    if result.returncode != 0:
        pytest.fail(f"image/build failed:\n{result.stdout}\n{result.stderr}")
    print(f"image built in {time.monotonic() - began:.1f} s")
    return REPO / "dist"


@pytest.fixture(scope="session")
def iso_image(image: Path) -> Path:
    """dist/ with the boot media too: the ISO and the disk image (their zstd
    initrd: minutes of compression the first time, seconds after)."""
    began = time.monotonic()
    result = subprocess.run([str(REPO / "image/build")], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    print(result.stdout)
    if result.returncode != 0:
        pytest.fail(f"image/build failed:\n{result.stdout}\n{result.stderr}")
    print(f"boot media built in {time.monotonic() - began:.1f} s")
    return image


def keep_copies(paths: list[str]) -> dict[str, str]:
    """Sparse copies of the disk files a boot is given (path -> copy)."""
    copies = {}
    for path in paths:
        if os.path.isfile(path):
            copy = f"{path}.before-boot"
            subprocess.run(["cp", "--sparse=always", path, copy], check=True)
            copies[path] = copy
    return copies


def restore_copies(copies: dict[str, str]) -> None:
    for path, copy in copies.items():
        os.replace(copy, path)
    copies.clear()


def drop_copies(copies: dict[str, str]) -> None:
    for copy in copies.values():
        os.unlink(copy)
    copies.clear()


@pytest.fixture(scope="module")
def boot(image: Path, request: pytest.FixtureRequest) -> Iterator:
    """boot(name, append=[...], disk=PATH, until=REGEX, no_reboot=True, cpu=MODEL, ssh_port=PORT, mem=MIB,
    iso=True | image=PATH, firmware="bios"|"uefi"|"secure-boot")
    -> a VM whose serial output matched `until` (default: the console is up).
    A boot that does not get there is killed and started once more; the retry
    is printed. no_reboot=False: a guest reboot boots again instead of ending qemu."""
    dist = image  # the fixture's name; start()'s `image` is a disk image to boot
    started: list[VM] = []
    session = request.session
    session.vms = started

    def start(
        name: str,
        append: list[str] | None = None,
        disk: str | None = None,
        until: str = PROMPT,
        iso: bool = False,
        cdroms: list[str] | None = None,
        disks: list[str] | None = None,
        no_reboot: bool = True,
        cpu: str = "max",
        ssh_port: int | None = None,
        image: str | None = None,
        firmware: str = "bios",
        mem: int = 2048,
    ) -> VM:
        """iso: boot dist/only-docker.iso (the iso_image fixture builds it); image: boot this disk image
        (a copy of dist/only-docker.img); firmware: qemu/run --uefi or --secure-boot; cpu: qemu/run --cpu;
        mem: qemu/run --mem (MiB).
        disks: several disks (vda, vdb, ...) instead of `disk`; ssh_port: 127.0.0.1:PORT forwarded to the guest's 22."""
        if disks:
            disk, more = disks[0], disks[1:]
        else:
            more = []
        for earlier in started:  # a failed test may leave its VM up; its disk must be free
            if (disk is not None and earlier.disk == disk) or (image is not None and earlier.image == image):
                earlier.kill()
        # A hung first boot may have written its disks (formatted a blank one,
        # grown a partition): the retry starts from the same bytes.
        copies = keep_copies([p for p in (disk, *more, image) if p])
        for attempt in (1, 2):
            if attempt == 2:
                restore_copies(copies)
            vm = VM(name=name, append=append or [], disk=disk, dist=dist, iso=iso, no_reboot=no_reboot, cpu=cpu,
                    cdroms=cdroms or [], more_disks=more, ssh_port=ssh_port, image=image,
                    firmware=firmware, mem=mem)  # fmt: skip
            started.append(vm)
            vm.start()
            try:
                # firmware and GRUB first read the kernel and initrd from the medium
                vm.wait_for(until, BOOT_TIMEOUT + (60 if iso or image else 0))
                drop_copies(copies)
                return vm
            except BootTimeout as exc:
                vm.kill()
                path = vm.save_log(f"hung-attempt{attempt}")
                if attempt == 2:
                    raise
                print(f"RETRY: boot {name} did not reach /{until}/ ({str(exc).splitlines()[0]}); log {path}")
        raise AssertionError("unreachable")

    yield start
    for vm in started:
        vm.kill()
