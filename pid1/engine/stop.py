"""The engine's orderly stop: the system containers, then dockerd, then
containerd, then the client.

Owns `stop_engine` and its budget. The steps' worst cases together
(STOP_BUDGET) must fit in the supervisor's timeout for one stop hook
(pid1.shutdown.HOOK_TIMEOUT), or the hook is cancelled half-way and
containerd never gets its orderly stop (tests/unit/test_engine.py checks it).

May use: pid1.engine.daemon (KILLED_EXIT_TIMEOUT); the objects it is given.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pid1.engine.daemon import KILLED_EXIT_TIMEOUT

if TYPE_CHECKING:
    from pid1.engine.client import DockerClient
    from pid1.engine.daemon import Daemon
    from pid1.engine.system_containers import SystemContainers
    from pid1.log import Log

SYSTEM_CONTAINERS_STOP_TIMEOUT = 10.0
DOCKERD_STOP_TIMEOUT = 10.0
CONTAINERD_STOP_TIMEOUT = 4.0
STOP_BUDGET = SYSTEM_CONTAINERS_STOP_TIMEOUT + DOCKERD_STOP_TIMEOUT + CONTAINERD_STOP_TIMEOUT + 2 * KILLED_EXIT_TIMEOUT


async def stop_engine(
    log: Log,
    containers: SystemContainers | None,
    dockerd: Daemon | None,
    containerd: Daemon | None,
    client: DockerClient | None,
) -> None:
    """Stop what of the engine exists: no daemon restarts from the start,
    the system containers only while dockerd runs (bounded), dockerd
    (SIGTERM, SIGKILL after DOCKERD_STOP_TIMEOUT), containerd, the client."""
    for daemon in (dockerd, containerd):
        if daemon is not None:
            daemon.stopping = True  # no restarts from here on
    if containers is not None and dockerd is not None and dockerd.alive():
        try:
            await asyncio.wait_for(containers.stop_all(), SYSTEM_CONTAINERS_STOP_TIMEOUT)
        except Exception as exc:
            log.error(f"stopping the system containers failed: {exc!r}; stopping dockerd anyway")
    if dockerd is not None:
        await dockerd.stop(DOCKERD_STOP_TIMEOUT)
    if containerd is not None:
        await containerd.stop(CONTAINERD_STOP_TIMEOUT)
    if client is not None:
        try:
            await client.close()
        except Exception:
            pass
