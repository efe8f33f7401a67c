"""The engine phase when the engine's image is a file of the boot medium (the
ISO's initrd has pid1.layout.ENGINE_MEDIUM instead of the image): the
marker's parsing, and the phase against a temporary root and the real
block devices, failing with the reason when the volume never comes or comes
and cannot be read. The VM tests (tests/vm/test_iso.py) boot the real ISO,
whose engine is read through the CD-ROM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from devtools.phase_context import phase_context
from pid1.config import Config
from pid1.layout import ENGINE_MEDIUM, EngineMedium
from pid1.log import Log
from pid1.phases import engine
from pid1.state import StateStore


def test_the_marker_round_trips() -> None:
    medium = EngineMedium("ONLY_DOCKER", "only-docker/0123abcd/engine.squashfs", 70_000_000)
    assert EngineMedium.parse(medium.to_json().encode()) == medium


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"volume": "", "path": "a", "size": 1}', "non-empty"),
        (b'{"volume": "V", "path": "/abs/engine.squashfs", "size": 1}', "relative"),
        (b'{"volume": "V", "path": "a/../../etc", "size": 1}', "relative"),
        (b'{"volume": "V", "path": "a", "size": true}', "positive integer"),
        (b'{"volume": "V", "path": "a", "size": -5}', "positive integer"),
        (b'{"volume": "V", "path": "a"}', "positive integer"),
    ],
)
def test_a_bad_marker_says_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        EngineMedium.parse(raw)


def medium_root(tmp_path: Path, medium: EngineMedium, sys_root: str) -> Path:
    """A root as the ISO's initramfs has it for this phase: the marker, /dev
    without nodes (the scan makes them), /sys, no kernel modules (the test
    host's kernel has what it has)."""
    root = tmp_path / "root"
    (root / ENGINE_MEDIUM).parent.mkdir(parents=True)
    (root / ENGINE_MEDIUM).write_text(medium.to_json())
    (root / "dev").mkdir()
    os.symlink(sys_root, root / "sys")
    return root


def run_phase(tmp_path: Path, root: Path, io_timeout: float) -> str:
    store = StateStore(str(tmp_path / "state"))
    log = Log(store=store, kmsg_path=str(tmp_path / "no-kmsg"))
    ctx = phase_context(engine.PHASE, config=Config(io_timeout=io_timeout), root=str(root), log=log, store=store)
    return asyncio.run(engine.run(ctx))


def test_a_medium_that_never_comes_fails_the_phase_with_the_reason(tmp_path: Path) -> None:
    empty_sys = tmp_path / "sys"
    (empty_sys / "class/block").mkdir(parents=True)
    medium = EngineMedium(f"T{uuid.uuid4().hex[:10]}", "only-docker/r/engine.squashfs", 4096)
    root = medium_root(tmp_path, medium, str(empty_sys))
    began = time.monotonic()
    with pytest.raises(RuntimeError) as failed:
        run_phase(tmp_path, root, io_timeout=1.0)
    spent = time.monotonic() - began
    message = str(failed.value)
    assert medium.volume in message and "none with that volume" in message, message
    assert "attach the ISO" in message and "within 1 s" in message, message
    assert 1.0 <= spent < 10, spent  # it waited its bound, and no longer


def iso_superblock(path: Path, volume: str) -> Path:
    """A file whose sector 16 is an ISO 9660 primary volume descriptor
    naming `volume`: what the label scan reads (pid1.blockdev)."""
    pvd = bytearray(2048)
    pvd[0:6] = b"\x01CD001"
    pvd[40:72] = volume.encode().ljust(32)
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        f.seek(16 * 2048)
        f.write(pvd)
    return path


def test_a_late_volume_is_seen_when_it_comes_and_one_that_does_not_mount_is_named(tmp_path: Path) -> None:
    """The volume appears during the wait (a loop device attached 0.5 s in)
    and is read when its uevent comes; it is no real ISO, so its mount
    fails, and the phase waits on to its bound (another volume may still
    come) and names the device and why in its reason."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    medium = EngineMedium(f"T{uuid.uuid4().hex[:10]}", "only-docker/r/engine.squashfs", 4096)
    image = iso_superblock(tmp_path / "medium.iso", medium.volume)
    root = medium_root(tmp_path, medium, "/sys")
    attached: list[str] = []

    def attach_late() -> None:
        time.sleep(0.5)
        out = subprocess.run(["losetup", "--find", "--show", "-r", str(image)], capture_output=True, text=True)
        attached.append(out.stdout.strip())

    late = threading.Thread(target=attach_late)
    late.start()
    try:
        began = time.monotonic()
        with pytest.raises(RuntimeError) as failed:
            run_phase(tmp_path, root, io_timeout=8.0)
        spent = time.monotonic() - began
    finally:
        late.join()
        for device in attached:
            if device:
                subprocess.run(["losetup", "-d", device], check=False)
    assert attached and attached[0].startswith("/dev/loop"), attached
    message = str(failed.value)
    name = os.path.basename(attached[0])
    assert f"{root}/dev/{name}: cannot mount it" in message, message
    assert spent >= 8.0, f"the phase gave up after {spent:.1f} s, before its bound"
