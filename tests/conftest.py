"""Shared fixtures: `pid1_ns` starts pid1 as PID 1 of a fresh namespace."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Pid1


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
