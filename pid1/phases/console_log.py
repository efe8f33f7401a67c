"""console_log: once the console runs, only errors reach the terminals. Needs console.

Boot milestones belong on the serial console while the machine boots; after
the console's first start the terminals are the user's. This phase lowers the
kernel's console log level (the first field of /proc/sys/kernel/printk) to
QUIET_LEVEL, as a `quiet` boot does: only KERN_ERR and more severe records
print. pid1 writes its lines to /dev/kmsg with their syslog level, so its own
info, notice and warning lines, the daemons' warnings it forwards, and the
kernel's bridge and veth lines stay off the serial console and VT1. They are
all still in `dmesg`, `/run/pid1/status` and VT2.

A stop request puts the level back first (the supervisor calls
the callbacks of `ctx.add_before_stop` before it logs the request), so the stop sequence
shows; so does emergency mode. `pid1.console_log=all` leaves the level alone.

The level is the machine's, not a namespace's: only the init of the first
PID namespace changes it, so pid1 under a test's PID namespace leaves the
host's alone. Optional: a failure leaves the console as chatty as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pid1.phases import Phase, PhaseContext

PRINTK = "/proc/sys/kernel/printk"
QUIET_LEVEL = 4  # records below 4 print: KERN_EMERG, ALERT, CRIT, ERR
# The inode number of the first PID namespace (PROC_PID_INIT_INO in the kernel).
INIT_PID_NS_INO = 0xEFFFFFFC


@dataclass
class ConsoleLevel:
    """The kernel's console log level: lowered once, put back on request."""

    path: str = PRINTK
    saved: int | None = None

    def read(self) -> int:
        with open(self.path) as f:
            return int(f.read().split()[0])

    def write(self, level: int) -> None:
        # Writing one number sets only the first field; the others stay.
        with open(self.path, "w") as f:
            f.write(f"{level}\n")

    def lower(self, level: int = QUIET_LEVEL) -> int:
        """Set the level to `level` if it is higher now; returns the level before."""
        before = self.read()
        if before > level:
            self.write(level)
            self.saved = before
        return before

    def restore(self) -> None:
        if self.saved is not None:
            self.write(self.saved)
            self.saved = None


NOTICE = 5  # pid1's notice lines (the SSH fingerprints among them): printed while the level is above this


def notices_reach_the_terminals(level: ConsoleLevel | None = None) -> bool:
    """Whether the kernel prints pid1's notice lines on the terminals now: not
    once this phase (or a `quiet` boot) lowered the level; False when unknown."""
    try:
        return (level or ConsoleLevel()).read() > NOTICE
    except (OSError, ValueError, IndexError):
        return False


def in_first_pid_namespace() -> bool:
    try:
        return os.stat("/proc/self/ns/pid").st_ino == INIT_PID_NS_INO
    except OSError:
        return False


async def run(ctx: PhaseContext) -> str:
    if ctx.config.console_log == "all":
        return "pid1.console_log=all: every line stays on the console"
    if not in_first_pid_namespace():
        return "not the machine's first PID namespace: the console log level is left alone"
    level = ConsoleLevel()
    before = level.lower()
    ctx.add_before_stop(level.restore)
    if level.saved is None:
        return f"console log level already {before}"
    return f"console log level {before} -> {QUIET_LEVEL}: only errors and the stop on the console"


PHASE = Phase(name="console_log", run=run, needs=("console",), required=False)
