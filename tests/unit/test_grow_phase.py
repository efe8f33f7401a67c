"""The grow phase's decisions before it opens any disk: no pid1.grow word,
a data root in RAM or mounted before pid1, a filesystem that is not ext4, a
DOCKER that is a whole disk. Each is said (or, for no word, nothing is
done) and no device is opened: the disk's path here does not exist, so any
open would fail the test. The growth itself runs in
tests/namespace/test_grow.py, on a loop device."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devtools.phase_context import phase_context
from pid1.blockdev import BlockDevice, LabelledDevice
from pid1.config import Config
from pid1.log import Log
from pid1.phases.grow import PHASE, grow_disk
from pid1.state import StateStore
from pid1.wiring import StorageResult, Wiring

WORD = "1a2b3c4d"


def disk(fstype: str = "ext4", name: str = "vda3", partition: bool = True) -> LabelledDevice:
    return LabelledDevice(BlockDevice(name, name, 254, 3, 131072, partition), f"/nonexistent/dev/{name}", fstype,
                          "DOCKER")  # fmt: skip


def run(tmp_path: Path, storage: StorageResult, word: str = WORD) -> tuple[str, list[tuple[str, str]]]:
    store = StateStore(str(tmp_path))
    log = Log(store=store, kmsg_path=str(tmp_path / "no-kmsg"))
    ctx = phase_context(PHASE, config=Config(grow=word), root=str(tmp_path / "root"), log=log, store=store,
                        wiring=Wiring({"storage": storage}))  # fmt: skip
    detail = asyncio.run(PHASE.run(ctx))
    return detail, [(line.level, line.message) for line in store.state.log]


def test_without_the_word_nothing_is_read(tmp_path: Path) -> None:
    detail, log = run(tmp_path, StorageResult(mode="disk", device=disk(), target="/var/lib/docker"), word="")
    assert (detail, log) == ("off (no pid1.grow word)", [])


@pytest.mark.parametrize(
    "storage, said",
    [
        (StorageResult(mode="ram"), "nothing to grow: running from RAM"),
        (StorageResult(mode="disk"), "nothing to grow: mounted before pid1"),
    ],
    ids=["ram", "mounted-before-pid1"],
)
def test_no_disk_pid1_mounted_means_nothing_to_grow(tmp_path: Path, storage: StorageResult, said: str) -> None:
    assert run(tmp_path, storage) == (said, [])


@pytest.mark.parametrize("fstype", ["xfs", "btrfs", "ext3"])
def test_a_filesystem_that_is_not_ext4_is_said_and_not_grown(tmp_path: Path, fstype: str) -> None:
    detail, log = run(tmp_path, StorageResult(mode="disk", device=disk(fstype), target="/var/lib/docker"))
    assert detail == f"{fstype}, not ext4: not grown"
    assert log == [("warning", f"grow: /nonexistent/dev/vda3 (DOCKER) is {fstype}, not ext4: not grown "
                               "(pid1 grows ext4 only)")]  # fmt: skip


def test_a_whole_disk_is_not_a_partition_to_grow(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    (sys_root / "class/block/vdb").mkdir(parents=True)  # a disk: no `partition` file
    outcome = grow_disk(disk(name="vdb", partition=False), "/var/lib/docker", 0x1A2B3C4D, str(sys_root), "/nonexistent")
    assert (outcome.detail, outcome.level) == ("not a partition: left as it is", "warning")
