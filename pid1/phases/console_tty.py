"""console_tty: opens the console terminals and fills the slot
`Wiring.console_bridge` (for the console phase). Needs mounts (for /dev).
Optional: a machine whose terminals cannot be opened still boots.

The terminals are `pid1.console` (default ttyS0,tty1): a name means
<root>/dev/NAME, a full path (`/dev/pts/3`) is used as it is. Each is opened
with O_NOCTTY and put in raw mode with ISIG off, so Ctrl-C and friends reach
the console container's shell and never pid1. One that is missing or cannot be
opened is skipped with a warning. The stop hook puts every terminal back as
it was. The console phase puts the bridge in the console's ContainerSpec; the
system-container supervisor calls its attach() for each console container
and show_waiting() between them (see pid1/console/).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pid1.linux.terminal import terminal_path
from pid1.phases import Phase, PhaseContext
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.console.terminal import Terminal


def open_console_terminals(names: list[str], root: str, warn) -> list[Terminal]:
    """Open each named terminal once (duplicates by real path are skipped);
    `warn` gets one message per terminal that cannot be used."""
    from pid1.console.terminal import open_terminal

    terminals: list[Terminal] = []
    seen: set[str] = set()
    for name in names:
        path = terminal_path(name, root)
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        if not os.path.exists(path):
            warn(f"console terminal {path} does not exist: skipped")
            continue
        try:
            terminals.append(open_terminal(path))
        except OSError as exc:
            warn(f"console terminal {path} cannot be used ({exc.strerror or exc}): skipped")
    return terminals


async def run(ctx: PhaseContext) -> str:
    # The bridge and the cursor model are imported here, beside the engine
    # phase's mount, not with the phases, which every boot loads before its
    # first phase starts.
    from pid1.console.bridge import ConsoleBridge

    terminals = open_console_terminals(ctx.config.console, ctx.root, ctx.log.warning)
    bridge = ConsoleBridge(terminals, ctx.log)
    ctx.wiring.console_bridge = bridge
    ctx.add_stop_hook("console terminals", bridge.close)
    if not terminals:
        return "no console terminal could be opened"
    described = []
    for term in terminals:
        rows, columns = term.window_size()
        described.append(f"{term.path} ({rows}x{columns})" if rows and columns else f"{term.path} (size unknown)")
    return "raw mode on " + ", ".join(described)


PHASE = Phase(name="console_tty", run=run, needs=("mounts",), required=False, fills=(Wiring.console_bridge,))
