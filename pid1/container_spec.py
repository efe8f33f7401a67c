"""What a supervised system container is, independent of how it is run.

Phases that want a container kept alive (dom0, console, the DHCP client,
the clock client) describe it with a ContainerSpec and hand it to the
system-container supervisor (the slot `Wiring.system_containers`,
pid1/engine/system_containers.py). What sets one role apart (the console's
bridge, stop signal, stop rank, milestone) is a field here, never a test of
the role's name in the engine. Standard library only.

Owns: ContainerSpec and the role label. May use: nothing of pid1 at run
time (the console bridge's type only for annotations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pid1.console.bridge import ConsoleBridge

ROLE_LABEL = "pid1.role"


@dataclass(frozen=True)
class ContainerSpec:
    role: str  # the pid1.role label value and the container name: "dom0", "console", "dhcp"
    # Image tags tried in order at every start; the first present locally wins.
    images: tuple[str, ...]
    # The bundled image used when no candidate is present, or when the chosen
    # one keeps crashing (so no tag can lock the user out).
    fallback_image: str
    cmd: tuple[str, ...] | None = None  # None: the image's own command
    env: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()  # "host:container[:ro]"
    privileged: bool = True
    net_host: bool = True
    pid_host: bool = True
    # The machine's own name, live: a user-data that renames the machine after
    # the container started (a URL's, fetched once the network is up) is seen
    # at once, as on a host, not at the container's next start.
    uts_host: bool = True
    cap_add: tuple[str, ...] = ()
    tty: bool = False
    open_stdin: bool = False
    stop_timeout: int = 2  # seconds docker waits between SIGTERM and SIGKILL at stop
    # The signal `docker stop` sends. None: the image's own (SIGHUP when the
    # bundled fallback runs on a TTY: its shell ignores SIGTERM).
    stop_signal: str | None = None
    # pid1's stop stops lower ranks first (the console, then dom0, so the
    # user sees the stop begin); equal ranks in the order they were ensured.
    stop_rank: int = 10
    # A boot milestone logged (and recorded the first time) at each start.
    milestone: str | None = None
    # The console's: the bridge that starts the container attached to the
    # terminals (its first prompt is not lost) and shows a waiting line while
    # none runs. None: started plainly. Not part of what makes a spec "changed".
    bridge: ConsoleBridge | None = field(default=None, compare=False)
