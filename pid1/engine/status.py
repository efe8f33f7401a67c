"""The statuses of what the engine keeps running, as the state shows them.

Owns `DaemonStatus` (containerd's and dockerd's, state.dockerd.NAME.status)
and `ContainerStatus` (a system container's, state.containers.ROLE.status).
Their values are the strings state.json has always carried, so the view, the
tests and anything reading the file see the same words. Standard library
only, so that pid1.state and the view can import it for nothing.
"""

from __future__ import annotations

from enum import StrEnum


class DaemonStatus(StrEnum):
    STARTING = "starting"  # spawned, not answering yet
    RUNNING = "running"  # answers (dockerd: /_ping; containerd: its socket)
    RESTARTING = "restarting"  # exited; spawned again after its backoff
    FAILED = "failed"  # did not answer in time, or could not be spawned (retried)
    STOPPED = "stopped"  # by the orderly stop


class ContainerStatus(StrEnum):
    """A system container's place in its keeper's state machine
    (pid1/engine/keeper.py has the transitions)."""

    PENDING = "pending"  # ensured, not started yet
    STARTING = "starting"  # a start attempt runs: resolve, create or reuse, start
    RUNNING = "running"
    EXITED = "exited"  # its end is booked (died, failed to start, restart asked); a start is due
    BACKOFF = "backoff"  # waiting before the next start (crash loop)
    STOPPED = "stopped"  # by the orderly stop: no more starts
