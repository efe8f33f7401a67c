"""runcmd: the user-data's runcmd commands, then its script, in dom0, once
per instance (meta-data's instance-id; without one, per distinct user-data).
Needs userdata and userdata_url (what to run, the host state) and dom0
(where it runs). With pid1.runcmd_wait_clock=SECONDS it first waits, at most
that long, for the clock synced milestone (pid1.phases.ntp.wait_for_clock).

Each command runs with `docker exec` in dom0, one after the other, as
cloud-init runs them in order; its output goes to the log (bounded) and to
the host state's `runcmd/<instance>.log`. A command that fails is an error in
the log and the next one still runs. The done-mark is written once all have
run, so a machine that crashes midway runs them again at the next boot;
a reboot with the same instance-id on a disk does not.

Owns: the runcmd phase and its done-marks. May use: the Docker client and
the system containers (dom0's container), pid1.phases.ntp (the clock wait),
the phase API and the wiring.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

from pid1.phases import Phase, PhaseContext
from pid1.state_schema import RuncmdState
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.engine.client import Container
    from pid1.phases.userdata import Applied

COMMAND_TIMEOUT = 600.0
DOM0_WAIT = 60.0
OUTPUT_LIMIT = 64 * 1024  # per command, in the host state's log
LOG_LINES = 5  # per command, in pid1's log
# A script goes in as an argument (no stdin to close with the exec API): run
# it as a file, so that its own #! line picks the interpreter.
SCRIPT_RUNNER = 'f=$(mktemp) && echo "$0" | base64 -d > "$f" && chmod 700 "$f" && "$f"; rc=$?; rm -f "$f"; exit $rc'


def commands(applied: Applied) -> list[list[str]]:
    if applied.data is None:
        return []
    planned = list(applied.data.runcmd)
    if applied.data.script is not None:
        planned.append(["sh", "-c", SCRIPT_RUNNER, base64.b64encode(applied.data.script).decode()])
    return planned


async def wait_for_dom0(ctx: PhaseContext) -> Container:
    """dom0's container once it runs (the supervisor says when), bounded."""
    try:
        container_id = await ctx.wiring.system_containers.wait_running("dom0", DOM0_WAIT)
    except TimeoutError:
        raise RuntimeError(f"dom0 is not running after {DOM0_WAIT:.0f} s") from None
    return ctx.wiring.docker.container(container_id)


async def wait_clock(ctx: PhaseContext) -> None:
    """pid1.runcmd_wait_clock: commands that need a right clock (TLS, tokens)
    wait for it, with that bound; then they run either way."""
    from pid1.phases.ntp import wait_for_clock

    bound = ctx.config.runcmd_wait_clock
    if await wait_for_clock(ctx, bound):
        ctx.log.info("runcmd: the clock is synced")
    else:
        ctx.log.warning(f"runcmd: the clock is not synced after {bound:g} s (pid1.runcmd_wait_clock); running anyway")


async def run(ctx: PhaseContext) -> str:
    applied = ctx.wiring.maybe(Wiring.userdata)
    if applied is None or applied.host_state is None or not commands(applied):
        return "nothing to run"
    mark = f"runcmd/{applied.instance_key}.done"
    if applied.host_state.marked(mark):
        return f"ran already for instance {applied.instance_key}"
    if ctx.config.runcmd_wait_clock > 0:
        await wait_clock(ctx)
    container = await wait_for_dom0(ctx)
    log = bytearray()
    failed = 0
    planned = commands(applied)
    for index, argv in enumerate(planned):
        shown = "the user-data's script" if argv[2:3] == [SCRIPT_RUNNER] else " ".join(argv)[:120]
        try:
            code, output = await asyncio.wait_for(container.exec(argv, OUTPUT_LIMIT), COMMAND_TIMEOUT)
        except Exception as exc:  # a timeout, or dom0 went away: the next boot tries again
            ctx.log.error(f"runcmd: {shown}: {exc!r}; not marked done, it runs again at the next boot")
            applied.host_state.write(f"runcmd/{applied.instance_key}.log", bytes(log))
            raise
        log += f"$ {shown}\n".encode() + output + f"[exit {code}]\n".encode()
        level = ctx.log.info if code == 0 else ctx.log.error
        level(f"runcmd ({index + 1}/{len(planned)}): {shown}: exit {code}")
        for line in output.decode(errors="replace").splitlines()[:LOG_LINES]:
            ctx.log.info(f"runcmd:   {line[:200]}")
        failed += code != 0
    applied.host_state.write(f"runcmd/{applied.instance_key}.log", bytes(log))
    applied.host_state.write(mark, b"")
    ctx.state.userdata.runcmd = RuncmdState(instance=applied.instance_key, ran=len(planned), failed=failed)
    ctx.store.changed()
    return f"ran {len(planned)} for instance {applied.instance_key}, {failed} failed"


PHASE = Phase(
    name="runcmd",
    run=run,
    needs=("userdata", "userdata_url", "dom0", "ntp"),
    required=False,
    uses=(Wiring.userdata, Wiring.docker, Wiring.system_containers, Wiring.clock),
)
