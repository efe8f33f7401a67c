"""The memory phase (pid1/phases/memory.py) against a temporary root whose
/sys and /proc files are plain files, the PID namespace link pointing at
this process's own: the mode it writes, what it reports, what it leaves
alone. The VM tests read the real kernel's answer
(tests/vm/test_cpu_models.py, in the minimum's -kernel boot)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from devtools.phase_context import phase_context
from pid1.config import Config
from pid1.kmod.helper import in_initial_pid_namespace
from pid1.phases import memory as phase


class Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, line: str) -> None:
        self.lines.append(line)


def make_root(tmp_path: Path, mode_line: str | None, namespace: str = "/proc/self/ns/pid") -> Path:
    root = tmp_path / "root"
    (root / "proc/self/ns").mkdir(parents=True)
    os.symlink(namespace, root / "proc/self/ns/pid")
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / phase.MIN_FREE_KBYTES).write_text("42140\n")
    if mode_line is not None:
        (root / phase.THP_ENABLED).parent.mkdir(parents=True)
        (root / phase.THP_ENABLED).write_text(mode_line)
    return root


def run_phase(root: Path, **config: str) -> tuple[str, Warnings]:
    log = Warnings()
    ctx = phase_context(phase.PHASE, config=Config(**config), log=log, root=str(root))  # type: ignore[arg-type]
    return asyncio.run(phase.PHASE.run(ctx)), log


@pytest.fixture
def initial_namespace() -> None:
    if not in_initial_pid_namespace():
        pytest.skip("these tests run in a child PID namespace: the phase leaves everything alone there")


def test_the_default_turns_them_off_and_says_what_the_reserve_became(tmp_path: Path, initial_namespace) -> None:
    root = make_root(tmp_path, "[always] madvise never\n")
    detail, log = run_phase(root)
    assert (root / phase.THP_ENABLED).read_text() == "never"
    assert detail == "transparent huge pages always -> never; vm.min_free_kbytes 42140 -> 42140", detail
    assert not log.lines


def test_already_off_is_not_written_again(tmp_path: Path, initial_namespace) -> None:
    root = make_root(tmp_path, "always madvise [never]\n")
    detail, _ = run_phase(root)
    assert (root / phase.THP_ENABLED).read_text() == "always madvise [never]\n"
    assert detail.startswith("transparent huge pages never already"), detail


def test_madvise_is_written_when_asked(tmp_path: Path, initial_namespace) -> None:
    root = make_root(tmp_path, "[always] madvise never\n")
    run_phase(root, transparent_hugepage="madvise")
    assert (root / phase.THP_ENABLED).read_text() == "madvise"


def test_kernel_leaves_the_kernels_setting(tmp_path: Path, initial_namespace) -> None:
    root = make_root(tmp_path, "[always] madvise never\n")
    detail, _ = run_phase(root, transparent_hugepage="kernel")
    assert (root / phase.THP_ENABLED).read_text() == "[always] madvise never\n"
    assert "kept" in detail


def test_a_kernel_without_them_is_nothing_to_do(tmp_path: Path, initial_namespace) -> None:
    detail, log = run_phase(make_root(tmp_path, None))
    assert "no transparent huge pages" in detail and not log.lines


def test_a_child_pid_namespace_leaves_the_machine_alone(tmp_path: Path) -> None:
    """Negative control: the namespace link is not the initial one's."""
    root = make_root(tmp_path, "[always] madvise never\n", namespace=str(tmp_path / "elsewhere"))
    detail, _ = run_phase(root)
    assert (root / phase.THP_ENABLED).read_text() == "[always] madvise never\n"
    assert detail.startswith("left alone"), detail


def test_the_selected_mode_is_the_bracketed_word() -> None:
    assert phase.selected_mode("always [madvise] never") == "madvise"
    assert phase.selected_mode("garbage") is None
