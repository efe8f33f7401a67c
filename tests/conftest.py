"""Shared fixtures: `pid1_ns` starts pid1 as PID 1 of a fresh namespace."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import Pid1


@pytest.fixture
def pid1_ns(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """A factory: pid1_ns(cmdline, root=..., env=...) -> a started Pid1, stopped at teardown.
    On failure the log and state are printed (pytest shows captured stdout)."""
    if os.geteuid() != 0:
        pytest.skip("namespace tests need root")
    started: list[Pid1] = []

    def start(cmdline: str, **kwargs) -> Pid1:
        run = Pid1(workdir=tmp_path / f"pid1-{len(started)}", cmdline=cmdline, **kwargs)
        run.workdir.mkdir()
        started.append(run)
        return run.start()

    yield start
    for run in started:
        run.stop()
        print(run.describe())


def host_ipv4() -> str:
    """The host's IPv4 addresses and routes, as `ip` lists them (brief: no
    lease lifetimes counting down)."""
    try:
        return "\n".join(
            subprocess.run(["ip", "-4", *what], capture_output=True, text=True, timeout=10).stdout
            for what in (["-br", "addr", "show"], ["route", "show"])
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""


HOST_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def host_files() -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in HOST_FILES:
        try:
            with open(path, "rb") as f:
                found[path] = f.read()
        except OSError:
            found[path] = None
    return found


@pytest.fixture(autouse=True)
def host_network_untouched() -> Iterator[None]:
    """Tests run pid1 in the host's network namespace unless they make one,
    and the docker tier runs it over / : none may take the host's addresses
    or routes away (a DHCP client's deconfig there flushes them, and the
    machine loses its network), nor rewrite its name or resolver files."""
    before, files_before = host_ipv4(), host_files()
    yield
    after = host_ipv4()
    assert after == before, f"this test changed the host's IPv4 network:\nbefore:\n{before}\nafter:\n{after}"
    changed = [path for path, content in host_files().items() if content != files_before[path]]
    assert not changed, f"this test changed the host's {', '.join(changed)} (pid1 over / writes the real files)"
