"""Fixtures for the system-container tests: pid1 as PID 1 of a namespace
starts its own containerd and Debian's dockerd (own --data-root, --exec-root,
pidfile, -H unix:// socket and containerd socket under a fresh directory,
`--bridge=none --iptables=false`), loads the bundled images that
image/bundled_images.py builds from Debian's busybox-static, and runs dom0 and
the console. The test drives scenarios with the docker CLI on that socket and
reads pid1's state.json.

The host phases (devices, mounts, hostname, modules, storage) are replaced by
no-ops (devtools/noop_host_phases.py): the namespace shares the host's /dev
and filesystem. The command line and the host check are devtools.engine's,
which the benchmarks use too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.engine import docker_available, engine_cmdline
from devtools.harness import Pid1, wait_for
from image import bundled_images, docker_seed


def skip_without_docker() -> None:
    why = docker_available()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def bundled_images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox.tar (busybox:latest and pid1-dhcp:latest) and dom0.tar (pid1-dom0:latest, with the
    host's dropbear), built without a daemon."""
    skip_without_docker()
    output = tmp_path_factory.mktemp("images")
    bundled_images.build(output)
    return output


@pytest.fixture(scope="session")
def docker_seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images as a docker data root (image/docker_seed.py)."""
    skip_without_docker()
    seed = tmp_path_factory.mktemp("seed") / "docker-seed"
    docker_seed.build_seed(seed, "/bin/busybox")
    return seed


@dataclass
class System:
    """One pid1 run with its own engine."""

    run: Pid1
    workdir: Path

    @property
    def socket(self) -> Path:
        return self.workdir / "d.sock"

    def docker(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 60) -> str:
        done = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args], input=input, capture_output=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed: {done.stderr.decode(errors='replace')}\n{self.describe()}"
            )
        return done.stdout.decode(errors="replace")

    def containers(self) -> list[dict[str, Any]]:
        """Every container with a pid1.role label (docker ps -a)."""
        out = self.docker("ps", "-a", "--no-trunc", "--filter", "label=pid1.role", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inspect(self, name: str) -> dict[str, Any] | None:
        out = self.docker("inspect", "--type", "container", name, check=False)
        try:
            found = json.loads(out)
        except ValueError:
            return None
        return found[0] if found else None

    def container_state(self, role: str) -> dict[str, Any]:
        state = self.run.state() or {}
        return (state.get("containers") or {}).get(role) or {}

    def describe(self) -> str:
        try:
            listed = subprocess.run(
                ["docker", "-H", f"unix://{self.socket}", "ps", "-a", "--no-trunc"],
                capture_output=True, text=True, timeout=20,
            ).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            listed = repr(exc)
        state = self.run.state() or {}
        return (
            f"{self.run.describe()}\n--- containers (state) ---\n"
            f"{json.dumps(state.get('containers'), indent=1)}\n--- dockerd (state) ---\n"
            f"{json.dumps(state.get('dockerd'), indent=1)}\n--- docker ps -a ---\n{listed}"
        )

    def wait_running(self, role: str, timeout: float = 30, other_than: str | None = None) -> dict[str, Any]:
        """Wait until the container named `role` runs (and is not `other_than`
        by id+start time); returns its inspect data."""

        def check() -> dict[str, Any] | None:
            info = self.inspect(role)
            if not info or not info["State"]["Running"]:
                return None
            if other_than is not None and f"{info['Id']}@{info['State']['StartedAt']}" == other_than:
                return None
            return info

        return wait_for(f"{role} running", check, timeout, self.describe)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        return wait_for(what, predicate, timeout, self.describe)


def run_key(info: dict[str, Any]) -> str:
    """Identifies one run of a container (a restarted container keeps its id)."""
    return f"{info['Id']}@{info['State']['StartedAt']}"


@pytest.fixture
def start_system(pid1_ns, bundled_images_dir: Path) -> Iterator[Callable[..., System]]:
    """start_system(extra_cmdline="", phases="console,dom0", env=None, workdir=None) -> System."""
    started: list[System] = []

    def start(
        extra_cmdline: str = "",
        phases: str = "console,dom0",
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> System:
        """workdir: an earlier run's, to boot again on its data root (a persistent disk)."""
        # Short paths: unix socket paths are limited to 108 bytes.
        workdir = workdir or Path(tempfile.mkdtemp(prefix="p1d-", dir="/var/tmp"))
        cmdline = engine_cmdline(phases, workdir, bundled_images_dir, extra_cmdline)
        system = System(run=None, workdir=workdir)  # type: ignore[arg-type]
        started.append(system)
        system.run = pid1_ns(cmdline, env=env or {})
        return system

    yield start
    bugs = []
    for system in started:
        if system.run is not None:
            system.run.stop()  # SIGKILL to the namespace's PID 1 ends every process in it
            # a system container's keeper moved against its state machine (pid1/engine/keeper.py)
            bugs += [line for line in system.run.log().splitlines() if "unexpected status change" in line]
    for workdir in {system.workdir for system in started}:
        shutil.rmtree(workdir, ignore_errors=True)
    assert not bugs, "\n".join(bugs)
