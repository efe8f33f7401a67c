"""Test-only phases for the stop tests, added with
`pid1.extra_phases=tests.namespace.stop_phases` (beside scenario_phases for
its `spawner` and events file, PID1_TEST_OUT). PID1_TEST_STOP is a
comma-separated list of what to set up:
  hook_cancelled / hook_exit  a stop hook that raises CancelledError /
                              SystemExit, registered after one that records
                              `late-hook-ran` (hooks run last-registered first)
  mount                       a tmpfs on $PID1_TEST_MOUNT, in pid1's mount list
  crash                       after `mount` and `spawner`: SystemExit out of
                              the supervisor (emergency mode)
  crash_after_reboot          request a reboot, then crash the supervisor
  stubborn_engine             a dockerd and a containerd (real processes,
                              pid1's Daemon) that ignore SIGTERM, system
                              containers whose stop never ends, and the real
                              dockerd stop hook
"""

from __future__ import annotations

import asyncio
import os

from pid1.phases import Phase, PhaseContext
from pid1.phases import dockerd as engine
from pid1.wiring import Wiring

WANTED = set(filter(None, os.environ.get("PID1_TEST_STOP", "").split(",")))


def record(line: str) -> None:
    with open(os.environ["PID1_TEST_OUT"], "a") as f:
        f.write(line + "\n")


async def raising_hooks(ctx: PhaseContext) -> str:
    async def late() -> None:
        record("late-hook-ran")

    async def raiser() -> None:
        record("raiser-ran")
        if "hook_cancelled" in WANTED:
            raise asyncio.CancelledError()
        raise SystemExit("a stop hook called sys.exit()")

    ctx.add_stop_hook("late", late)
    ctx.add_stop_hook("raiser", raiser)
    return "hooks registered"


async def mount_tmpfs(ctx: PhaseContext) -> str:
    from pid1.linux import syscalls

    target = os.environ["PID1_TEST_MOUNT"]
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    ctx.mounts.add(target)
    return f"tmpfs on {target}"


async def crash(ctx: PhaseContext) -> str:
    raise SystemExit("stop_phases: supervisor crash")


async def crash_after_reboot(ctx: PhaseContext) -> str:
    ctx.request_stop("reboot", "stop_phases")
    raise SystemExit("stop_phases: supervisor crash after a reboot request")


class EndlessStop:
    """System containers whose stop never ends (a wedged dockerd API)."""

    async def stop_all(self) -> None:
        record("system-containers-stop-began")
        await asyncio.Event().wait()


async def stubborn_engine(ctx: PhaseContext) -> str:
    async def answers() -> bool:
        return True

    for name in ("containerd", "dockerd"):
        daemon = engine.make_daemon(
            ctx,
            name,
            argv=lambda name=name: ["sh", "-c", f'trap "" TERM; echo {name}-up >> "$OUT"; while :; do sleep 0.1; done'],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OUT": os.environ["PID1_TEST_OUT"]},
            probe=answers,
        )
        daemon.spawn()
        await daemon.wait_ready()
        if name == "containerd":
            ctx.wiring.containerd = daemon
        else:
            ctx.wiring.dockerd = daemon
    ctx.wiring.system_containers = EndlessStop()  # type: ignore[assignment]  # only stop_all is called
    ctx.add_stop_hook("dockerd", lambda: engine.stop_engine(ctx))
    return "stubborn dockerd and containerd"


PHASES = []
if WANTED & {"hook_cancelled", "hook_exit"}:
    PHASES.append(Phase(name="raising_hooks", run=raising_hooks))
if "mount" in WANTED:
    PHASES.append(Phase(name="tmpfs", run=mount_tmpfs))
if "crash" in WANTED:
    PHASES.append(Phase(name="crash", run=crash, needs=("spawner", "tmpfs")))
if "crash_after_reboot" in WANTED:
    PHASES.append(Phase(name="crash", run=crash_after_reboot, needs=("spawner",)))
if "stubborn_engine" in WANTED:
    PHASES.append(
        Phase(
            name="stubborn_engine",
            run=stubborn_engine,
            fills=(Wiring.containerd, Wiring.dockerd, Wiring.system_containers, Wiring.docker),
        )
    )
