"""The engine phase reads the docker seed, dockerd, the shim, runc,
docker-init and docker-proxy ahead from the engine's image (pid1.layout.ENGINE_READ_AHEAD),
at idle CPU priority: what it reads must be what the image build puts in
the image, and a file it cannot read must not stop it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from image import build
from pid1.layout import ENGINE_READ_AHEAD
from pid1.phases import engine


def test_every_file_read_ahead_is_one_the_build_puts_in_the_engines_image() -> None:
    image = {*build.ENGINE_FILES, *build.BUNDLED_FILES}
    assert set(ENGINE_READ_AHEAD) <= image, set(ENGINE_READ_AHEAD) - image


def test_read_ahead_reads_every_file_whole_at_idle_priority_and_skips_what_is_not_there(tmp_path: Path) -> None:
    sizes = {"dockerd": 3 * engine.READ_AHEAD_CHUNK + 5, "runc": 1, "empty": 0}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    seed = tmp_path / "seed" / "overlay2" / "layer"  # a folder: its files are read, its symlinks not followed
    seed.mkdir(parents=True)
    (seed / "busybox").write_bytes(os.urandom(7))
    (seed / "sh").symlink_to("busybox")
    (seed / "outside").symlink_to(tmp_path / "dockerd")
    paths = [str(tmp_path / "missing"), str(tmp_path / "seed"), *(str(tmp_path / name) for name in sizes)]
    seen: dict[str, int] = {}

    def reader() -> None:
        seen["bytes"] = engine.read_ahead(paths)
        seen["policy"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(30)
    assert seen["bytes"] == sum(sizes.values()) + 7
    assert seen["policy"] == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # only the reading thread's priority changed
