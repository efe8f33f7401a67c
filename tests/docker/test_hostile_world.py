"""Faults and inputs from the user's world, with pid1 as PID 1 of a namespace
and its own dockerd (see conftest.py): daemons killed again and again, a
console image dockerd refuses to run, a user's container that has a system
container's name, a broken bundled tarball, a hostile lease file. Each test
says what the user sees and checks that nothing is lost and nothing stalls.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import tarfile
from pathlib import Path

import pytest
from conftest import System
from harness import namespace_processes

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

BOOT_TIMEOUT = 120


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def kill_dockerd_and_wait(system: System, restarts: int) -> None:
    dockerd = [p for p in namespace_processes(system.run.pid) if p["Name"] == "dockerd"]
    assert len(dockerd) == 1, f"{dockerd}\n{system.describe()}"
    os.kill(int(dockerd[0]["pid"]), signal.SIGKILL)
    system.run.wait_state(
        f"dockerd restarted ({restarts}) and answering",
        lambda s: (
            s["dockerd"]["dockerd"].get("restarts", 0) >= restarts and s["dockerd"]["dockerd"]["status"] == "running"
        ),
        timeout=60,
    )


def test_dockerd_killed_again_and_again_leaks_no_fd(start_system) -> None:
    """Each dockerd run has its output pipe and its log file; a restart must
    close both, or ~1000 restarts exhaust pid1's fds and dockerd never starts again."""
    system = start_system(phases="dockerd")
    system.run.wait_phase("dockerd", timeout=BOOT_TIMEOUT)
    kill_dockerd_and_wait(system, 1)  # the first restart opens what every later one reuses
    before = fd_count(system.run.pid)
    runs = 8
    for restarts in range(2, 2 + runs):
        kill_dockerd_and_wait(system, restarts)
    after = fd_count(system.run.pid)
    fds = sorted(os.readlink(f"/proc/{system.run.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{system.run.pid}/fd"))
    print(f"pid1's fds: {before} after the first dockerd restart, {after} after {runs} more")
    # A leak shows as one fd per restart; a connection aiodocker keeps or drops may come and go.
    assert after - before <= 2, f"{after - before} more fds after {runs} restarts: {fds}\n{system.describe()}"


def tarball(path: Path, manifest: object) -> None:
    with tarfile.open(path, "w") as tar:
        for name, content in (("manifest.json", json.dumps(manifest).encode()), ("c.json", b'{"config":{}}')):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_a_malformed_bundled_tarball_is_skipped_and_the_system_comes_up(
    start_system, bundled_images_dir: Path, tmp_path: Path
) -> None:
    """A manifest.json of the wrong shape is skipped with the reason (log and
    the images phase's detail); the required images phase does not fail and
    retry for ever, so the console and dom0 start."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(bundled_images_dir / "busybox.tar", images / "busybox.tar")
    tarball(images / "a-object.tar", {"a": 1})
    tarball(images / "b-layers.tar", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": 5}])
    system = start_system(f"pid1.images_dir={images}")
    system.run.wait_phase("console", timeout=60)
    system.wait_running("console")
    system.wait_running("dom0")
    detail = system.run.state()["phases"]["images"]["detail"]
    assert "loaded busybox:latest, pid1-dhcp:latest" in detail, system.describe()
    assert 'a-object.tar (manifest.json is {"a": 1}, not a list of images)' in detail, system.describe()
    assert "b-layers.tar (manifest.json: Layers is 5, not a list of strings)" in detail, system.describe()
    assert f"images: {images}/a-object.tar is not a docker save tarball" in system.run.log(), system.describe()
