"""pid1's log: every line to /dev/kmsg (dmesg and the serial console) with a
syslog level, into the state's ring buffer, and to stderr when stderr is not
the console already (development and tests).

Owns: Log and `stderr_is_console` (whether fd 2 is the console: the engine's
log pump echoes daemon lines to stderr only when it is not). May use:
pid1.kmsg (the record format), pid1.state (the ring and uptime).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from pid1.kmsg import record
from pid1.state import LogLine, StateStore, cut_line, uptime


def stderr_is_console() -> bool:
    """Whether fd 2 is /dev/console (char 5:1), where pid1's lines already
    show through /dev/kmsg; elsewhere (development, tests) pid1 and the
    daemons' output also go to stderr. True when fd 2 is closed."""
    try:
        st = os.fstat(2)
    except OSError:
        return True
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 5 and os.minor(st.st_rdev) == 1


@dataclass
class Log:
    store: StateStore | None = None
    kmsg_path: str = "/dev/kmsg"
    _kmsg: int = field(default=-1, repr=False)
    _to_stderr: bool = field(default_factory=lambda: not stderr_is_console(), repr=False)
    # Copies of the log and of the daemons' lines, by name ("pid1", "dockerd"):
    # the boot's logs in the host state (pid1.boot_logs), once it is known.
    copies: dict[str, Callable[[str], None]] = field(default_factory=dict, repr=False)

    def copy(self, name: str, text: str) -> None:
        """A daemon's line, for the boot's log of `name` (when there is one)."""
        sink = self.copies.get(name)
        if sink is not None:
            sink(f"[{uptime():9.3f}] {text}\n")

    def open(self) -> None:
        try:
            self._kmsg = os.open(self.kmsg_path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            self._kmsg = -1
            self._to_stderr = True
            return
        # at boot /dev/kmsg appears with devtmpfs: from then on the console gets each line once
        self._to_stderr = not stderr_is_console()

    def milestone(self, name: str, detail: str = "") -> float:
        """A boot milestone: recorded in state.milestones[name] (uptime, first
        time only) and logged as one `NAME DETAIL (uptime T s)` line."""
        now = round(uptime(), 3)
        if self.store is not None:
            self.store.state.milestones.setdefault(name, now)
        self.notice(f"{name}{' ' + detail if detail else ''} (uptime {now:.2f} s)")
        return now

    def write(self, level: str, message: str) -> None:
        now = uptime()
        for line in message.splitlines() or [""]:
            line = cut_line(line)
            if self._kmsg >= 0:
                try:
                    os.write(self._kmsg, record(level, "pid1", line))
                except OSError:
                    pass  # kmsg rate limiting or a full buffer must never stop pid1
            if self._to_stderr:
                try:
                    os.write(2, f"[{now:9.3f}] pid1: {level}: {line}\n".encode(errors="replace"))
                except OSError:
                    pass
            if "pid1" in self.copies:
                self.copies["pid1"](f"[{now:9.3f}] {level}: {line}\n")
            if self.store is not None:
                self.store.state.log.append(LogLine(time=round(now, 3), level=level, message=line))
        if self.store is not None:
            self.store.changed()

    def info(self, message: str) -> None:
        self.write("info", message)

    def notice(self, message: str) -> None:
        self.write("notice", message)

    def warning(self, message: str) -> None:
        self.write("warning", message)

    def error(self, message: str) -> None:
        self.write("error", message)

    def debug(self, message: str) -> None:
        self.write("debug", message)
