"""control: serves the control channel, the FIFO `<state_dir>/control`
(see pid1/control.py for the commands). Needs mounts (the state dir lives
on /run). Optional: without it the machine still boots and is stopped with
busybox `poweroff`/`reboot` (signals) instead.

Restart commands call the action registered as NAME in
`ctx.restart_actions`, which the dockerd and system-container phases fill
in; the stop hook closes the channel and removes the FIFO.
"""

from __future__ import annotations

import os

from pid1.control import ControlChannel
from pid1.phases import Phase, PhaseContext


async def run(ctx: PhaseContext) -> str:
    channel = ControlChannel(
        path=os.path.join(ctx.config.state_dir, "control"),
        log=ctx.log,
        request_stop=ctx.request_stop,
        restart_actions=ctx.restart_actions.snapshot,
        stopping=lambda: ctx.state.mode == "stopping",
    )
    channel.open()

    async def close() -> None:
        channel.close()

    ctx.add_stop_hook("control channel", close)
    return f"listening on {channel.path}"


PHASE = Phase(name="control", run=run, needs=("mounts",), required=False)
