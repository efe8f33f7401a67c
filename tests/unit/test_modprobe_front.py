"""pid1.modprobe, the helper the kernel and dockerd run: plain requests for
modules the kernel has are answered without importing pid1.kmod, everything
else goes to the full resolver, and every request is logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pid1.modprobe import plain_request

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["-q", "--", "net-pf-16-proto-6"], ["net-pf-16-proto-6"]),  # the kernel's request_module
        (["-va", "nf_conntrack", "nf_nat"], ["nf_conntrack", "nf_nat"]),  # dockerd
        (["overlay"], ["overlay"]),
        (["-q", "-b", "--", "-odd-name"], ["-odd-name"]),  # after --, a name
    ],
)
def test_plain_requests_are_understood(argv: list[str], names: list[str]) -> None:
    assert plain_request(argv) == names


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-q"],
        ["-r", "overlay"],  # remove
        ["-n", "overlay"],  # dry run
        ["--show-depends", "overlay"],
        ["-S", "6.1.0", "overlay"],
        ["nf_conntrack", "hashsize=4096"],  # a parameter: the full modprobe applies it
    ],
)
def test_anything_else_goes_to_the_full_modprobe(argv: list[str]) -> None:
    assert plain_request(argv) is None


def run_front(argv: list[str], state_dir: Path) -> subprocess.CompletedProcess:
    """The helper's own start-up: -IS, then pid1.modprobe.main; prints
    whether pid1.kmod was imported."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from pid1.modprobe import main; "
        f"status = main({argv!r}, state_dir={str(state_dir)!r}); "
        "print('kmod imported' if 'pid1.kmod' in sys.modules else 'kmod not imported'); sys.exit(status)"
    )
    return subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True, timeout=60)


def test_a_module_the_kernel_has_is_answered_without_the_resolver(tmp_path: Path) -> None:
    # /sys/module/kernel exists on every Linux kernel (the built-in kernel's parameters).
    done = run_front(["-q", "--", "kernel"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kmod not imported"
    assert "modprobe -q -- kernel -> 0 (in the kernel already" in (tmp_path / "modprobe.log").read_text()


def test_a_name_not_found_is_resolved_once_then_refused_at_once(tmp_path: Path) -> None:
    """The kernel asks for binfmt-464c on every exec of a foreign binary:
    the first ask goes to the resolver (negative control for the fast
    path), the next is answered from modprobe.not-found."""
    modules = tmp_path / "lib/modules" / os.uname().release
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("kernel/fs/overlay.ko:\n")
    argv = ["-d", str(tmp_path), "-q", "--", "binfmt-464c"]
    first = run_front(argv, tmp_path)
    assert first.returncode == 1 and first.stdout.strip() == "kmod imported", first.stderr
    assert (tmp_path / "modprobe.not-found").read_text() == "binfmt-464c\n"
    # The plain form (what the kernel sends) is refused without the resolver.
    again = run_front(["-q", "--", "binfmt-464c"], tmp_path)
    assert again.returncode == 1 and again.stdout.strip() == "kmod not imported", again.stderr
    log = (tmp_path / "modprobe.log").read_text()
    assert "binfmt-464c -> 1 (resolved by pid1.kmod" in log and "binfmt-464c -> 1 (not found earlier" in log
