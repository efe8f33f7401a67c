"""qemu/run --dry-run: the qemu command line it would run, for --cpu, the forwards, the media and the firmware."""

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


def media_argv(tmp_path: Path, *args: str) -> list[str]:
    for name in ("vmlinuz", "only-docker.iso", "only-docker.img"):
        (tmp_path / name).touch()
    result = subprocess.run(
        [str(REPO / "qemu/run"), "--accel", "tcg", "--dist", str(tmp_path), "--qmp", str(tmp_path / "q"), "--dry-run",
         *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_image_is_the_first_disk_and_first_in_the_boot_order(tmp_path: Path) -> None:
    argv = media_argv(tmp_path, "--image", "--disk", str(tmp_path / "vmlinuz"))
    drives = [argv[i + 1] for i, word in enumerate(argv) if word == "-drive"]
    assert drives[0] == f"file={tmp_path / 'only-docker.img'},format=raw,if=none,id=image", drives
    assert "virtio-blk-pci,drive=image,id=image0,bootindex=0" in argv
    assert "-kernel" not in argv and "-append" not in argv
    qcow2 = tmp_path / "copy.qcow2"
    qcow2.touch()
    assert f"file={qcow2},format=qcow2,if=none,id=image" in media_argv(tmp_path, "--image", str(qcow2))


@pytest.mark.skipif(not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists(), reason="no OVMF (apt-get install ovmf)")
def test_uefi_and_secure_boot_use_debians_ovmf(tmp_path: Path) -> None:
    bios = media_argv(tmp_path)
    assert not any("pflash" in word for word in bios) and "-machine" not in bios
    assert "ide-cd,drive=bootcd,bus=ide.1,unit=0,bootindex=0" in bios
    uefi = media_argv(tmp_path, "--uefi")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" in uefi
    assert any(w.startswith("if=pflash,format=raw,unit=1,file=/dev/fd/") for w in uefi), uefi  # a copy per run
    secure = media_argv(tmp_path, "--secure-boot")
    assert secure[secure.index("-machine") + 1] == "q35,smm=on"
    assert "driver=cfi.pflash01,property=secure,value=on" in secure
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" in secure
    assert "ide-cd,drive=bootcd,bus=ide.2,bootindex=0" in secure  # q35's AHCI port 2
    kept = tmp_path / "vars.fd"
    argv = media_argv(tmp_path, "--uefi-vars", str(kept))
    assert f"if=pflash,format=raw,unit=1,file={kept}" in argv
    assert kept.read_bytes() == Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes()


def test_the_media_take_no_append(tmp_path: Path) -> None:
    for name in ("only-docker.iso", "only-docker.img", "vmlinuz"):
        (tmp_path / name).touch()
    argv = [str(REPO / "qemu/run"), "--accel", "tcg", "--dist", str(tmp_path), "--dry-run", "--append", "quiet"]
    result = subprocess.run([*argv, "--image"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "image/esp words" in result.stderr, result
