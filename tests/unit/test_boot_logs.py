"""The last boots' logs in the host state: rotation keeps five, files are capped."""

from __future__ import annotations

from pathlib import Path

from pid1.boot_logs import CAPPED, CappedFile, rotate


def test_rotation_keeps_the_last_five_boots(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for boot in range(7):
        current = Path(rotate(str(logs)))
        (current / "pid1.log").write_text(f"boot {boot}\n")
    assert sorted(p.name for p in logs.iterdir()) == ["0", "1", "2", "3", "4"]
    assert [(logs / str(i) / "pid1.log").read_text() for i in range(5)] == [f"boot {b}\n" for b in (6, 5, 4, 3, 2)]


def test_a_file_stops_at_its_cap_with_one_marker(tmp_path: Path) -> None:
    path = tmp_path / "dockerd.log"
    file = CappedFile(str(path), cap=100)
    for _ in range(50):
        file.write("0123456789\n")
    file.close()
    text = path.read_text()
    assert text.endswith(CAPPED) and text.count(CAPPED) == 1
    assert len(text) <= 100 + len(CAPPED)
    again = CappedFile(str(path), cap=100)  # reopened (a phase retried): still capped
    again.write("more\n")
    again.close()
    assert path.read_text() == text


def test_the_writer_thread_writes_what_the_loop_queues_and_stops_at_once(tmp_path: Path) -> None:
    import os
    import time

    from pid1.boot_logs import BootLogWriter

    writer = BootLogWriter({"pid1": CappedFile(str(tmp_path / "pid1.log"))})
    put = writer.sink("pid1")
    for n in range(100):
        put(f"line {n}\n")
    deadline = time.monotonic() + 5
    while (tmp_path / "pid1.log").read_text().count("\n") < 100:
        assert time.monotonic() < deadline, "the writer thread wrote nothing"
        time.sleep(0.01)
    writer.stop()
    put("after the stop\n")  # the disk went away: nothing more is queued
    assert not writer.queue and "after the stop" not in (tmp_path / "pid1.log").read_text()
    # A write that blocks (a FIFO nobody reads: a stand-in for a stuck disk) holds the thread, not the caller.
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    stuck = BootLogWriter({"pid1": CappedFile(str(fifo))})
    started = time.monotonic()
    for _ in range(10000):
        stuck.sink("pid1")("x" * 100 + "\n")
    assert time.monotonic() - started < 2, "queueing blocked"
    assert stuck.dropped > 0  # the queue is bounded
    stuck.stop()
    os.close(reader)
