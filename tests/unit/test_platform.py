"""The platform layer (pid1/linux/): the one mountinfo parser, the /proc
readers, the event FIFO's line handling, the terminal modes."""

from __future__ import annotations

import asyncio
import os
import termios
from pathlib import Path

import uvloop

from pid1.linux import mountinfo, procfs
from pid1.linux.fifo import EVENT_LINE_MAX, EventFifo, LineReader
from pid1.linux.terminal import raw_mode, terminal_path, view_mode

TABLE = (
    "1 1 0:2 / / rw - rootfs rootfs rw\n"
    "22 1 0:21 / /var/lib/docker rw,relatime shared:1 - tmpfs tmpfs rw\n"
    "23 22 254:16 / /var/lib/docker rw,relatime - ext4 /dev/vdb rw\n"
    "24 1 0:30 / /mnt/with\\040space rw - tmpfs none\\011tab rw\n"
    "25 1 0:31 / /var rw - xfs /dev/vdc rw\n"
    "truncated line\n"
)


def test_mountinfo_parsing_and_the_last_mount_wins() -> None:
    entry = mountinfo.mount_at("/var/lib/docker", TABLE)
    assert entry == mountinfo.MountEntry("/var/lib/docker", "/dev/vdb", "ext4", 254, 16, 23, 22)
    assert mountinfo.mount_at("/mnt/with space", TABLE).source == "none\ttab"
    assert mountinfo.mount_at("/nowhere", TABLE) is None
    assert len(mountinfo.parse_mountinfo(TABLE)) == 5  # the truncated line is skipped


def test_the_mount_holding_a_path_is_the_longest_prefix() -> None:
    assert mountinfo.mount_holding("/var/lib/docker/overlay2", TABLE).source == "/dev/vdb"
    assert mountinfo.mount_holding("/var/lib", TABLE).fstype == "xfs"
    assert mountinfo.mount_holding("/variable", TABLE).fstype == "rootfs"  # not under /var
    assert mountinfo.mount_holding("/mnt/with space/x", TABLE).fstype == "tmpfs"


def test_root_is_initramfs_only_while_it_is_its_own_parent() -> None:
    assert mountinfo.root_is_initramfs(TABLE)
    moved = TABLE + "40 1 0:40 / / rw - tmpfs tmpfs rw\n"  # move_root(): its parent is hidden
    assert not mountinfo.root_is_initramfs(moved)
    assert not mountinfo.root_is_initramfs("30 1 254:1 / / rw - ext4 /dev/vda rw\n")
    assert not mountinfo.root_is_initramfs("")


def test_mountinfo_read_falls_back_and_says_nothing_when_nothing_is_readable(tmp_path: Path) -> None:
    there = tmp_path / "mountinfo"
    there.write_text(TABLE)
    assert mountinfo.read_mountinfo(str(tmp_path / "missing"), str(there)) == TABLE
    assert mountinfo.read_mountinfo(str(tmp_path / "missing")) == ""
    assert mountinfo.filesystem_type_of("/var/lib/docker", str(there)) == "ext4"
    assert mountinfo.filesystem_type_of("/", str(tmp_path / "missing")) is None


def test_procfs_readers_tolerate_what_is_not_there(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert procfs.read_cmdline(missing) == ""
    assert procfs.loaded_modules(missing) == set()
    assert procfs.kernel_filesystems(missing) == set()
    assert procfs.missing_capabilities(missing, missing) == []
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tsysfs\nnodev\toverlay\n\text4\n")
    assert procfs.kernel_filesystems(str(filesystems)) == {"sysfs", "overlay", "ext4"}


def test_missing_capabilities_names_the_bits_the_bounding_set_lacks(tmp_path: Path) -> None:
    status, last = tmp_path / "status", tmp_path / "cap_last_cap"
    last.write_text("40\n")
    everything_but = ((1 << 41) - 1) & ~(1 << 21) & ~(1 << 25)  # SYS_ADMIN, SYS_TIME
    status.write_text(f"Name:\tx\nCapBnd:\t{everything_but:016x}\n")
    assert procfs.missing_capabilities(str(status), str(last)) == ["SYS_ADMIN", "SYS_TIME"]
    last.write_text("42\n")  # a kernel newer than the table: numbers
    assert procfs.missing_capabilities(str(status), str(last))[-2:] == ["41", "42"]


def test_line_reader_drops_over_long_lines_without_keeping_them() -> None:
    reader = LineReader(max_line=8)
    assert reader.feed(b"one\ntw") == ([b"one"], 0)
    assert reader.feed(b"o\n" + b"x" * 20) == ([b"two"], 0)
    assert len(reader.buffer) == 0  # the long line is not kept
    assert reader.feed(b"y" * 20 + b"\nend") == ([], 1)
    assert reader.end() == ([b"end"], 0)


async def _events_from(path: str, writes: list[bytes]) -> list[str]:
    fifo = EventFifo(path, ("bound", "renew"))
    got: list[str] = []
    try:
        events = fifo.events()
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        for data in writes:
            os.write(writer, data)
        os.close(writer)
        while len(got) < 2:
            got.append(await asyncio.wait_for(anext(events), 5))
        await events.aclose()
    finally:
        fifo.close()
    return got


def test_event_fifo_yields_known_words_and_drops_the_rest(tmp_path: Path) -> None:
    path = str(tmp_path / "events")
    noise = b"z" * (EVENT_LINE_MAX + 10) + b"bound\n"  # an over-long line that ends in a word is no word
    got = uvloop.run(_events_from(path, [b"deconfig\n", noise, b"bou", b"nd\nhalf", b"\nrenew\n"]))
    assert got == ["bound", "renew"]


def test_terminal_modes_and_paths() -> None:
    attrs = [termios.ICRNL | termios.IXON, termios.OPOST, termios.CS7 | termios.PARENB,
             termios.ECHO | termios.ICANON | termios.ISIG, 9600, 9600, [b"\0"] * 32]  # fmt: skip
    raw = raw_mode(attrs)
    assert raw[0] == 0 and raw[1] == 0 and raw[3] == 0 and raw[2] & termios.CS8
    view = view_mode(attrs)
    assert view[3] == termios.ISIG and view[1] == termios.OPOST  # echo and editing off, output processing kept
    assert terminal_path("ttyS0", "/tmp/root/") == "/tmp/root/dev/ttyS0"
    assert terminal_path("/dev/pts/3", "/tmp/root") == "/dev/pts/3"


def test_the_platform_layer_imports_nothing_else_of_pid1() -> None:
    """pid1/linux/ sits under everything: an import of pid1.X from it (at any
    depth, even inside a function) would make the layers a circle."""
    import ast

    package = Path(__file__).resolve().parents[2] / "pid1" / "linux"
    outside = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            outside += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] == "pid1" and not n.startswith("pid1.linux")
            ]
    assert outside == []
