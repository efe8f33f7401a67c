"""Emergency mode: what PID 1 does after an unexpected error in the supervisor.

It never returns. It keeps the reaper running, says why on the log and in the
state, and keeps a shell on each console terminal (respawned when it exits), so
the machine stays reachable. A stop signal still stops the machine.
"""

from __future__ import annotations

import asyncio
import os

from pid1.config import Config
from pid1.log import Log
from pid1.reaper import Child, Reaper
from pid1.state import StateStore
from pid1.state_schema import Mode

SHELLS = ("/bin/sh", "/usr/bin/sh", "/bin/busybox")
RESPAWN_DELAY = 1.0


def find_shell(root: str = "/") -> list[str] | None:
    for shell in SHELLS:
        if os.access(os.path.join(root, shell.lstrip("/")), os.X_OK):
            return [shell, "sh"] if shell.endswith("busybox") else [shell]
    return None


async def keep_shell(reaper: Reaper, log: Log, shell: list[str], tty: str) -> None:
    while True:
        try:
            child: Child = reaper.spawn(
                shell,
                tty=tty,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TERM": "linux", "HOME": "/root"},
            )
        except OSError as exc:
            log.error(f"emergency shell on {tty} failed to start: {exc}")
            return
        status = await child.wait()
        log.warning(f"emergency shell on {tty} exited ({status}); starting another")
        await asyncio.sleep(RESPAWN_DELAY)


async def run(config: Config, log: Log, store: StateStore, reaper: Reaper, reason: str, stop: asyncio.Event) -> None:
    store.state.mode = Mode.EMERGENCY
    store.state.emergency_reason = reason
    log.error(f"EMERGENCY MODE: {reason}")
    shell = find_shell()
    ttys = [f"/dev/{name}" for name in config.console if os.path.exists(f"/dev/{name}")]
    if shell and ttys and os.getpid() == 1:
        log.error(f"emergency shell on {', '.join(ttys)}")
        for tty in ttys:
            asyncio.get_running_loop().create_task(keep_shell(reaper, log, shell, tty))
    else:
        log.error("no emergency shell (no shell, no console terminal, or not PID 1); still reaping")
    store.changed()
    await stop.wait()
