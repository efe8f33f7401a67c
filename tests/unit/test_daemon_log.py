"""pid1.engine.log_pump.DaemonLog on a real pipe and log file: each daemon run
(one DaemonLog) leaves no file descriptor behind once its pipe has ended."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pid1.engine.log_pump import DaemonLog
from pid1.log import Log

RUNS = 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one_run(path: Path) -> DaemonLog:
    """What a daemon's life does to its DaemonLog: lines (the file is opened),
    then the end of the pipe (the daemon exited)."""
    output = DaemonLog("testd", str(path), Log())
    write_end = output.open_pipe()
    os.write(write_end, b"level=info msg=started\nlevel=info msg=partial line")
    os.close(write_end)
    for _ in range(200):  # the loop reads the lines, then the end of the pipe
        if output.fd < 0:
            break
        await asyncio.sleep(0.01)
    return output


def test_a_daemon_log_closes_its_pipe_and_its_file(tmp_path: Path) -> None:
    path = tmp_path / "testd.log"

    async def runs() -> tuple[int, int]:
        await one_run(path)  # the loop's own fds exist from here on
        before = open_fds()
        for _ in range(RUNS):
            output = await one_run(path)
            assert output.fd < 0, "the end of the pipe was not seen"
        return before, open_fds()

    before, after = asyncio.run(runs())
    assert after == before, f"{after - before} fds left open after {RUNS} daemon runs"
    lines = path.read_text().splitlines()
    assert len(lines) == 2 * (RUNS + 1), lines[:4]
    assert lines[1].endswith("level=info msg=partial line"), "the last line without a newline is kept"
