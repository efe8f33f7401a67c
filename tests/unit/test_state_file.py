"""The state's log ring and its file: bounded in lines and bytes, written
without following what a container may plant in the state dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pid1.log import Log
from pid1.state import (
    LOG_LINE_MAX,
    LOG_RING_BYTES,
    LOG_RING_SIZE,
    LogLine,
    LogRing,
    State,
    StateStore,
    write_atomically,
)


def test_the_ring_bounds_lines_and_bytes() -> None:
    ring = LogRing()
    for i in range(LOG_RING_SIZE + 50):
        ring.append(LogLine(time=i, level="info", message=f"line {i}"))
    assert len(ring) == LOG_RING_SIZE and ring[0].message == "line 50"
    assert ring.bytes == sum(len(line.message) for line in ring)
    for i in range(200):
        ring.append(LogLine(time=i, level="info", message="x" * 1000 + str(i)))
    assert ring.bytes == sum(len(line.message.encode()) for line in ring) <= LOG_RING_BYTES
    assert ring[-1].message.endswith("199") and len(ring) == LOG_RING_BYTES // 1003


def test_a_huge_log_line_is_cut_in_the_ring_and_state_file(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    log = Log(store=store, kmsg_path=str(tmp_path / "no-kmsg-here/kmsg"))
    log.open()
    log._to_stderr = False
    log.info("é" * 1_000_000)  # 2 MB of UTF-8 in one line (a daemon's, forwarded)
    log.info("next")
    store.flush()
    lines = json.loads((tmp_path / "state.json").read_text())["log"]
    assert [line["message"] for line in lines][-1] == "next"
    cut = lines[-2]["message"]
    assert len(cut.encode()) <= LOG_LINE_MAX and cut.endswith(" more bytes cut)"), cut[-60:]
    empty = len(json.dumps(State().to_json(), separators=(",", ":")))
    assert os.path.getsize(tmp_path / "state.json") < empty + 4 * LOG_LINE_MAX  # é is \u00e9 in JSON: 3x


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, tmp_path / "state.json.tmp")
    write_atomically(str(tmp_path / "state.json"), "{}\n")
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "state.json").read_text() == "{}\n" and not (tmp_path / "state.json").is_symlink()
