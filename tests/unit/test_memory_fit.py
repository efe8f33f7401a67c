"""Issue 14's pure parts: the RAM check's line (pid1.ram), the loop_config
layout the engine's mount passes to LOOP_CONFIGURE (pid1.syscalls), and the
image build's move of the engine's files into the squashfs tree, leaving
symlinks that resolve once the tree is mounted at ENGINE_MOUNT. The VM tests
(tests/vm/test_memory_vm.py) boot the real thing."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from image import build
from pid1 import ram
from pid1.linux import syscalls


def test_below_the_minimum_the_line_names_it_and_what_the_machine_has() -> None:
    line = ram.too_small(219)
    assert line is not None and "\n" not in line
    assert f"at least {ram.MIN_RAM_MIB} MiB" in line and "219 MiB" in line and "halting" in line


def test_a_512_mib_vm_passes_the_check() -> None:
    """Negative control: MemTotal of a 512 MiB qemu VM (Debian's 6.1 kernel) is 455 MiB."""
    assert ram.too_small(455) is None
    assert ram.too_small(ram.MIN_MEMTOTAL_MIB) is None
    assert ram.too_small(ram.MIN_MEMTOTAL_MIB - 1) is not None


def test_the_line_goes_to_kmsg_at_the_critical_level(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    ram.say("too small", kmsg=str(kmsg))
    assert kmsg.read_text() == "<2>pid1: too small\n"


def test_memtotal_is_the_kernels() -> None:
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    assert ram.memtotal_mib() == total_kib // 1024


def test_loop_config_is_the_kernels_struct() -> None:
    raw = syscalls.loop_config(7, syscalls.LO_FLAGS_READ_ONLY | syscalls.LO_FLAGS_AUTOCLEAR, "/a/b.squashfs")
    assert len(raw) == 304  # sizeof(struct loop_config) on x86_64
    fd, block_size = struct.unpack_from("=II", raw, 0)
    assert (fd, block_size) == (7, 0)
    # loop_info64 from offset 8: lo_flags at +52, lo_file_name at +56
    assert struct.unpack_from("=I", raw, 8 + 52)[0] == 5
    assert raw[8 + 56 : 8 + 56 + 64].rstrip(b"\0") == b"/a/b.squashfs"
    assert raw[8 + 232 :] == bytes(64)


def test_the_engine_files_become_symlinks_into_the_mount(tmp_path: Path) -> None:
    stage, tree = tmp_path / "stage", tmp_path / "tree"
    moving = ["usr/sbin/dockerd", "usr/lib/pid1/docker-cli", "usr/lib/modules/6.1.0-1-amd64/kernel/fs/ext4/ext4.ko"]
    for relative in moving:
        path = stage / relative
        if relative.endswith("docker-cli"):
            (path / "docker").parent.mkdir(parents=True)
            (path / "docker").write_bytes(b"\x7fELF cli")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x7fELF " + relative.encode())
    staying = stage / "usr/lib/modules/6.1.0-1-amd64/kernel/fs/squashfs/squashfs.ko"
    staying.parent.mkdir(parents=True)
    staying.write_bytes(b"\x7fELF squashfs")
    moved = build.split_engine(stage, tree, moving)
    assert moved == sum(len(b"\x7fELF " + r.encode()) for r in moving if "docker-cli" not in r) + 8
    for relative in moving:
        assert (stage / relative).is_symlink() and not os.path.isabs(os.readlink(stage / relative))
        assert (tree / relative).exists()
    assert not staying.is_symlink() and not (tree / staying.relative_to(stage)).exists()
    # the mount, stood in for by a copy: every symlink reaches its file
    shutil.copytree(tree, stage / build.ENGINE_MOUNT, symlinks=True)
    assert (stage / "usr/sbin/dockerd").read_bytes() == b"\x7fELF usr/sbin/dockerd"
    assert (stage / "usr/lib/pid1/docker-cli/docker").read_bytes() == b"\x7fELF cli"
    assert (stage / moving[2]).read_bytes().endswith(b"ext4.ko")


def test_the_libraries_python_needs_stay_out_of_the_squashfs(tmp_path: Path) -> None:
    """library_closure, which decides what base keeps, on real ELF files: the
    host's python3.11 (Debian's: image/build runs on Debian 12) needs libc and libm (through each other too), and not
    libzstd, which lies beside them (a library only the engine needs)."""
    libraries = tmp_path / "lib"
    libraries.mkdir()
    for name in ("libc.so.6", "libm.so.6", "libzstd.so.1"):
        shutil.copy(f"/usr/lib/x86_64-linux-gnu/{name}", libraries / name)
    found = build.library_closure(libraries, [Path("/usr/bin/python3.11")])
    assert {"libc.so.6", "libm.so.6"} <= found and "libzstd.so.1" not in found
