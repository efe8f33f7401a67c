"""What a supervised system container is, independent of how it is run.

Phases that want a container kept alive (dom0, console, the DHCP client)
describe it with a ContainerSpec and hand it to the system-container
supervisor (the slot `Wiring.system_containers`).
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
    # The console's: the bridge that starts the container attached to the
    # terminals (its first prompt is not lost) and shows a waiting line while
    # none runs. None: started plainly. Not part of what makes a spec "changed".
    bridge: ConsoleBridge | None = field(default=None, compare=False)
