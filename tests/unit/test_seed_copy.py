"""pid1/docker_seed.py against temporary directories: which data roots are
seeded, what the copy keeps, a copy cut short, and a copy that hangs."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from pid1.docker_seed import PARTIAL, seed_data_root
from pid1.threads import bounded


def make_seed(root: Path) -> Path:
    seed = root / "seed"
    (seed / "image/overlay2/layerdb").mkdir(parents=True)
    (seed / "image/overlay2/repositories.json").write_text("{}")
    (seed / "overlay2/abc/diff/bin").mkdir(parents=True)
    (seed / "overlay2/abc/diff/bin/busybox").write_text("#!")
    os.chmod(seed / "overlay2/abc/diff/bin/busybox", 0o755)
    os.chmod(seed / "overlay2/abc", 0o710)
    (seed / "overlay2/l").mkdir()
    os.symlink("../abc/diff", seed / "overlay2/l/LINK")
    return seed


def test_an_empty_data_root_gets_the_seed(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o710)
    assert seed_data_root(str(seed), str(data), "overlay2") == f"data root seeded from {seed}"
    assert (data / "image/overlay2/repositories.json").read_text() == "{}"
    assert os.readlink(data / "overlay2/l/LINK") == "../abc/diff"
    assert (data / "overlay2/l/LINK/bin/busybox").read_text() == "#!"
    assert os.stat(data / "overlay2/abc/diff/bin/busybox").st_mode & 0o777 == 0o755
    assert os.stat(data / "overlay2/abc").st_mode & 0o777 == 0o710
    assert os.stat(data).st_mode & 0o777 == 0o710, "the data root's own mode is dockerd's business"
    assert not (data / PARTIAL).exists()


def test_a_used_data_root_another_driver_or_no_seed_is_left_alone(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    used = tmp_path / "used"
    (used / "image").mkdir(parents=True)
    assert seed_data_root(str(seed), str(used), "overlay2") is None
    assert os.listdir(used) == ["image"]
    fresh = tmp_path / "fresh"
    assert seed_data_root(str(seed), str(fresh), "vfs") is None
    assert seed_data_root(str(seed), str(fresh), None) is None, "driver chosen by pid1.dockerd_args"
    assert seed_data_root("", str(fresh), "overlay2") is None
    assert seed_data_root(str(tmp_path / "missing"), str(fresh), "overlay2") is None
    assert not fresh.exists()


def test_a_copy_cut_short_is_seeded_again(tmp_path: Path) -> None:
    """A crash mid-copy leaves the layer files and a partial store under
    another name, never `image`: the next boot seeds over them."""
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    (data / PARTIAL / "half").mkdir(parents=True)
    (data / "overlay2/abc/diff").mkdir(parents=True)
    assert seed_data_root(str(seed), str(data), "overlay2") is not None
    assert sorted(os.listdir(data)) == ["image", "overlay2"]
    assert not (data / "image/half").exists()


def test_a_copy_cut_short_after_the_links_is_completed(tmp_path: Path) -> None:
    """What a crash after `overlay2/l` leaves (the links made, a layer half
    copied, a partial store) is completed by the next copy, not an error that
    skips the seed for good."""
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    (data / "overlay2/l").mkdir(parents=True)
    os.symlink("../abc/diff", data / "overlay2/l/LINK")
    (data / "overlay2/abc/diff/bin").mkdir(parents=True)
    (data / "overlay2/abc/diff/bin/busybox").write_text("#")  # cut short mid-file
    (data / PARTIAL / "overlay2").mkdir(parents=True)
    assert seed_data_root(str(seed), str(data), "overlay2") == f"data root seeded from {seed}"
    assert os.readlink(data / "overlay2/l/LINK") == "../abc/diff"
    assert (data / "overlay2/l/LINK/bin/busybox").read_text() == "#!"
    assert (data / "image/overlay2/repositories.json").read_text() == "{}"
    assert not (data / PARTIAL).exists()


def test_leftovers_of_another_kind_are_replaced(tmp_path: Path) -> None:
    """A file where the seed has a link or a directory, a link where it has a
    file: the seed's entry wins, and nothing is written through a link."""
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    (data / "overlay2/l").mkdir(parents=True)
    (data / "overlay2/l/LINK").write_text("a file, not the link")
    (data / "overlay2/abc/diff/bin").mkdir(parents=True)
    os.symlink(outside, data / "overlay2/abc/diff/bin/busybox")
    assert seed_data_root(str(seed), str(data), "overlay2") is not None
    assert os.readlink(data / "overlay2/l/LINK") == "../abc/diff"
    assert not os.path.islink(data / "overlay2/abc/diff/bin/busybox")
    assert (data / "overlay2/abc/diff/bin/busybox").read_text() == "#!"
    assert outside.read_text() == "untouched"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_copy_that_hangs_is_given_up_and_never_puts_the_store_in_place(tmp_path: Path, how: str) -> None:
    """The copy blocks on a real FIFO (a disk that hangs): the bound gives up
    on it at once, a stop (cancellation) does not wait for it, and once the
    FIFO lets it go on, the abandoned copy stops without renaming the store
    into place under a dockerd that may have started meanwhile."""
    seed = make_seed(tmp_path)
    fifo = tmp_path / "hang"
    os.mkfifo(fifo)
    blocked = threading.Event()
    thread_name = f"pid1-seed-test-{how}"

    def hanging_copy(source: str, target: str) -> object:
        if source.endswith("repositories.json"):  # in the store, the last part copied
            blocked.set()
            with open(fifo, "rb") as f:  # blocks until a writer opens the FIFO
                f.read()
        return shutil.copy2(source, target)

    data = tmp_path / "data"
    stop = threading.Event()

    async def seed_with_a_bound() -> float:
        work = bounded(
            seed_data_root, str(seed), str(data), "overlay2", stop, hanging_copy,
            timeout=0.3 if how == "timeout" else 30, name=thread_name, abandon=stop,
        )  # fmt: skip
        task = asyncio.ensure_future(work)
        await asyncio.to_thread(blocked.wait, 10)
        began = time.monotonic()
        if how == "cancel":
            task.cancel()
        with pytest.raises(TimeoutError if how == "timeout" else asyncio.CancelledError):
            await task
        return time.monotonic() - began

    gave_up_in = asyncio.run(seed_with_a_bound())
    assert stop.is_set()
    assert gave_up_in < 2, f"the caller waited {gave_up_in:.1f} s for a hanging copy"
    assert not (data / "image").exists()
    threads = [t for t in threading.enumerate() if t.name == thread_name]
    assert threads, "no copy thread blocked on the FIFO"
    with open(fifo, "wb"):
        pass  # the disk answers again: the copy goes on, sees the stop, ends
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "the copy thread did not end"
    assert not (data / "image").exists(), "the abandoned copy put the store in place"
    assert seed_data_root(str(seed), str(data), "overlay2") is not None, "the next boot seeds again"
    assert (data / "image/overlay2/repositories.json").read_text() == "{}"
