"""qemu/run --dry-run: the qemu command line it would run, for --cpu."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devtools.harness import REPO


def qemu_argv(tmp_path: Path, *args: str) -> list[str]:
    for name in ("vmlinuz", "initrd.img"):
        (tmp_path / name).touch()
    result = subprocess.run(
        [str(REPO / "qemu/run"), "--kernel", "--accel", "tcg", "--dist", str(tmp_path), "--qmp", str(tmp_path / "q"),
         "--dry-run", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize(
    ("args", "model"), [((), "max"), (("--cpu", "qemu64"), "qemu64"), (("--cpu=Nehalem",), "Nehalem")]
)
def test_the_cpu_model_is_passed_to_qemu(tmp_path: Path, args: tuple[str, ...], model: str) -> None:
    argv = qemu_argv(tmp_path, *args)
    assert argv.count("-cpu") == 1 and argv[argv.index("-cpu") + 1] == model, argv


def test_cpu_default_passes_no_cpu_option(tmp_path: Path) -> None:
    """qemu's own default model, as a plain qemu command line gets it."""
    assert "-cpu" not in qemu_argv(tmp_path, "--cpu", "default")


def test_forwards_listen_on_loopback_only(tmp_path: Path) -> None:
    argv = qemu_argv(tmp_path, "--ssh-port", "2222", "--hostfwd", "8080:80")
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev == "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22", netdev


def test_a_bad_forward_is_refused_with_the_reason(tmp_path: Path) -> None:
    for name in ("vmlinuz", "initrd.img"):
        (tmp_path / name).touch()
    argv = [str(REPO / "qemu/run"), "--kernel", "--accel", "tcg", "--dist", str(tmp_path), "--dry-run"]
    result = subprocess.run([*argv, "--hostfwd", "0.0.0.0:80"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "expected HOSTPORT:GUESTPORT" in result.stderr, result
