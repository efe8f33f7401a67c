"""The logs of the last boots, kept in the host state (`logs/0` is this boot,
`logs/1` the one before, up to `logs/4`): pid1's log and the daemons' output,
each file capped, so a disk machine keeps what led to its last reboot.
Rotation renames directories (atomic each), so a crash mid-rotation loses at
most the oldest boot's logs.

The writes happen in a thread of their own (`BootLogWriter`): the disk is a
disk, and one that stalls or is pulled out (ext4 then waits on a journal that
cannot commit) must never block PID 1's loop. The loop only queues lines; a
full queue drops them.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading

KEEP = 5
FILE_CAP = 1024 * 1024
QUEUE_LINES = 4096  # lines waiting for the writer thread; more are dropped
CAPPED = "[log capped here: the rest of this boot's lines are in /run/pid1 and dmesg]\n"


def rotate(logs_dir: str, keep: int = KEEP) -> str:
    """Shift logs/N to logs/N+1 (dropping the oldest), make logs/0; returns it."""
    os.makedirs(logs_dir, mode=0o700, exist_ok=True)
    shutil.rmtree(os.path.join(logs_dir, str(keep - 1)), ignore_errors=True)
    for index in range(keep - 2, -1, -1):
        older = os.path.join(logs_dir, str(index))
        if os.path.isdir(older):
            os.replace(older, os.path.join(logs_dir, str(index + 1)))
    current = os.path.join(logs_dir, "0")
    os.makedirs(current, mode=0o700, exist_ok=True)
    return current


class CappedFile:
    """Appends lines to a file until it holds `cap` bytes, then one marker line."""

    def __init__(self, path: str, cap: int = FILE_CAP) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.left = cap - os.fstat(self.fd).st_size

    def write(self, line: str) -> None:
        if self.left <= 0:
            return
        data = line.encode(errors="replace")
        if len(data) > self.left:
            data = CAPPED.encode()
        try:
            os.write(self.fd, data)
        except OSError:
            self.left = 0  # a full or vanished disk: stop, never raise into the logger
            return
        self.left -= len(data) if data != CAPPED.encode() else self.left

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class BootLogWriter:
    """Lines for several CappedFiles, written by one daemon thread. `sink(name)`
    gives the loop a function that only queues; `stop()` ends the writing (a
    disk that went away) without waiting for the thread, which a stuck write
    may hold for ever."""

    def __init__(self, files: dict[str, CappedFile]) -> None:
        self.files = files
        self.queue: collections.deque[tuple[str, str]] = collections.deque()
        self.wake = threading.Event()
        self.stopped = False
        self.dropped = 0
        threading.Thread(target=self._run, name="pid1-boot-logs", daemon=True).start()

    def sink(self, name: str):
        def put(line: str) -> None:
            if self.stopped:
                return
            if len(self.queue) >= QUEUE_LINES:
                self.dropped += 1
                return
            self.queue.append((name, line))
            self.wake.set()

        return put

    def stop(self) -> None:
        self.stopped = True
        self.queue.clear()
        self.wake.set()

    def _run(self) -> None:
        while not self.stopped:
            self.wake.wait()
            self.wake.clear()
            while self.queue and not self.stopped:
                name, line = self.queue.popleft()
                self.files[name].write(line)
        for file in self.files.values():
            file.close()
