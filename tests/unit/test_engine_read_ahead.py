"""The engine phase reads dockerd, the shim, runc, docker-init and
docker-proxy ahead from the engine's image (pid1.layout.ENGINE_READ_AHEAD),
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
    assert set(ENGINE_READ_AHEAD) <= set(build.ENGINE_FILES), set(ENGINE_READ_AHEAD) - set(build.ENGINE_FILES)


def test_read_ahead_reads_every_file_whole_at_idle_priority_and_skips_what_is_not_there(tmp_path: Path) -> None:
    sizes = {"dockerd": 3 * engine.READ_AHEAD_CHUNK + 5, "runc": 1, "empty": 0}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    paths = [str(tmp_path / "missing"), *(str(tmp_path / name) for name in sizes)]
    seen: dict[str, int] = {}

    def reader() -> None:
        seen["bytes"] = engine.read_ahead(paths)
        seen["policy"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(30)
    assert seen["bytes"] == sum(sizes.values())
    assert seen["policy"] == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # only the reading thread's priority changed
