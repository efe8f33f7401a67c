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
import time
from pathlib import Path

import pytest
from conftest import System, run_key

from devtools.harness import namespace_processes
from image import bundled_images
from pid1.state import State
from pid1.view.render import render
from pid1.view.statefile import decode

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


def booted(system: System) -> None:
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    system.run.wait_phase("dom0", timeout=30)


def test_a_console_image_dockerd_cannot_create_falls_back_to_busybox(start_system) -> None:
    """`docker import` without CMD: dockerd refuses to create a container from
    it ("No command specified"). Each refusal counts toward the fallback like a
    crash, so the console comes back on the bundled busybox within a bound, and
    the state (shown on VT2) and the log say why."""
    system = start_system()
    booted(system)
    before = system.wait_running("console")
    layer = bundled_images.rootfs_layer("/bin/busybox", {})
    system.docker("import", "-", "nocmd:1", input=layer)
    nocmd = system.docker("image", "inspect", "--format", "{{.Id}}", "nocmd:1").strip()
    system.docker("tag", "nocmd:1", "console-image:latest")
    killed = time.monotonic()
    system.docker("kill", "console")
    recorded = system.wait(
        "the console back on busybox, with the reason",
        lambda: (s := system.container_state("console")).get("fallback_reason") and s.get("status") == "running" and s,
        timeout=60,
    )
    print(f"the console was back on busybox {time.monotonic() - killed:.2f} s after the kill")
    after = system.wait_running("console", other_than=run_key(before))
    assert after["Image"] == system.docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip()
    reason = recorded["fallback_reason"]
    assert reason.startswith(f"console-image:latest ({nocmd[7:19]}) failed to start"), reason
    assert "No command specified" in reason and "5 times in a row" in reason, reason
    assert recorded["image"] == "busybox:latest", recorded
    shown = "\n".join(render(decode(State, system.run.state()), 40, 200, now=0))
    assert "fallback: console-image:latest" in shown and "No command specified" in shown, shown
    assert "console: start failed: No command specified" in system.run.log(), system.describe()


def test_a_users_container_named_console_is_kept_and_the_console_runs_under_another_name(start_system) -> None:
    """pid1 removes only containers with its own label: a user's container
    named `console`, with a file in its writable layer, outlives two boots on
    the same data root (a disk); the console runs as console-pid1 meanwhile,
    and the log and the state say why."""
    first = start_system(phases="images")
    first.run.wait_phase("images", timeout=BOOT_TIMEOUT)
    first.docker("run", "--name", "console", "busybox:latest", "sh", "-c", "echo precious > /data.txt")
    user = first.inspect("console")["Id"]
    first.run.stop()  # SIGKILL, as a power cut: the data root stays, as on a disk
    for boot in (1, 2):
        system = start_system(workdir=first.workdir)
        booted(system)
        theirs = system.inspect("console")
        assert theirs is not None and theirs["Id"] == user, (
            f"boot {boot}: the user's container is gone\n{system.describe()}"
        )
        mine = system.wait_running("console-pid1")
        assert mine["Config"]["Labels"]["pid1.role"] == "console", system.describe()
        assert "pid1.role" not in (theirs["Config"]["Labels"] or {}), theirs["Config"]["Labels"]
        kept = system.docker("cp", "console:/data.txt", "-")  # a tar stream of the one file
        assert "precious" in kept, f"boot {boot}: the writable layer lost its file\n{system.describe()}"
        recorded = system.container_state("console")
        assert recorded["name"] == "console-pid1" and recorded["status"] == "running", recorded
        conflict = recorded["name_conflict"]
        assert conflict.startswith(f"the name console is held by a container pid1 did not make ({user[:12]}"), conflict
        assert conflict.endswith("left alone, running as console-pid1"), conflict
        assert "console: the name console is held by a container pid1 did not make" in system.run.log()
        assert system.container_state("dom0")["name"] == "dom0", system.describe()
        shown = "\n".join(render(decode(State, system.run.state()), 40, 250, now=0))
        assert "name: the name console is held by a container pid1 did not make" in shown, shown
        # The event stream follows the console under its other name: a kill is a restart.
        system.docker("kill", "console-pid1")
        system.wait_running("console-pid1", other_than=run_key(mine))
        system.run.stop()
