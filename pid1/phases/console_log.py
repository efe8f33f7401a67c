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

from pid1.linux.procfs import ConsoleLevel, in_first_pid_namespace
from pid1.phases import Phase, PhaseContext

QUIET_LEVEL = 4  # records below 4 print: KERN_EMERG, ALERT, CRIT, ERR


async def run(ctx: PhaseContext) -> str:
    if ctx.config.console_log == "all":
        return "pid1.console_log=all: every line stays on the console"
    if not in_first_pid_namespace():
        return "not the machine's first PID namespace: the console log level is left alone"
    level = ConsoleLevel()
    before = level.lower(QUIET_LEVEL)
    ctx.add_before_stop(level.restore)
    if level.saved is None:
        return f"console log level already {before}"
    return f"console log level {before} -> {QUIET_LEVEL}: only errors and the stop on the console"


PHASE = Phase(name="console_log", run=run, needs=("console",), required=False)
