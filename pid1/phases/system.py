"""dom0 and console: the two privileged system containers the user lives in.

Both need `images` (the bundled busybox fallback must be loaded). The
console, the way in at the machine, starts first, alone: dom0 (its SSH
server is the way in from outside) and the DHCP client also need `console`,
so they start after the console's first start attempt, which they would
otherwise slow, and SSH answers one container start later (measured:
docs/benchmarks.md; the why: docs/decisions.md, "The console first"). The
console also needs `console_tty` (its bridge). Each phase describes its container (a
ContainerSpec) and hands it to the system-container supervisor
(`Wiring.system_containers`, filled by the dockerd phase), which keeps it
running from then on; the phase is done after the first start attempt.
Both are privileged, `--net host`, `--pid host` (so `kill -TERM 1` from them
reaches pid1), `--uts host` (the machine's name, live), labelled `pid1.role=dom0|console`, with the docker
socket, /lib/modules (ro), pid1's state dir (as /run/pid1), the docker client
and /etc/resolv.conf mounted in. The image is resolved at every start:
for the console `pid1.console_image`, else `debian:latest` when storage is a
disk and the image is there; for dom0 `pid1.dom0_image`, else the bundled
pid1-dom0:latest (busybox and dropbear: SSH into dom0, pid1.phases.ssh, which
also gives dom0 the host state's ssh/ directory and pid1.ssh_listen); else
the bundled busybox.

The console runs with a TTY and open stdin (the console bridge,
`Wiring.console_bridge`, carries it to the VM's terminals; without one, as
when console_tty failed, it runs unbridged). It does not wait for DHCP:
/etc/resolv.conf is bound in from the start (the image ships it empty) and
the DHCP client rewrites it in place, so the console sees the servers once
the lease comes. dom0 gets a TTY and open stdin too, so the bundled busybox `sh` idles as dom0 the way `docker run -dit`
does, and `docker exec -it dom0 sh` feels like a host shell.

Registers restart actions "console" and "dom0" for the control channel.

Owns: the dom0 and console ContainerSpecs and their two phases. May use:
pid1.container_spec, pid1.phases.ssh (dom0's binds and env), the phase API
and the wiring (the system containers, storage, user-data, the bridge).
"""

from __future__ import annotations

import os

from pid1.container_spec import ContainerSpec
from pid1.phases import Phase, PhaseContext, ssh
from pid1.wiring import Wiring

DISK_IMAGE = "debian:latest"
CONSOLE_STOP_TIMEOUT = 1  # a console shell holds no state
DOM0_STOP_TIMEOUT = 5


def system_binds(ctx: PhaseContext) -> tuple[str, ...]:
    """What dom0 and the console get mounted in (only paths that exist: a
    missing bind source would be created by dockerd as an empty directory)."""
    config = ctx.config
    binds = [f"{config.docker_socket}:/var/run/docker.sock", f"{config.state_dir}:/run/pid1"]
    for source, target, mode in (
        ("/lib/modules", "/lib/modules", "ro"),
        ("/usr/bin/docker", "/usr/bin/docker", "ro"),
        # the image's docker client runs with its own loader and libc from here (any image, busybox too)
        ("/usr/lib/pid1/docker-cli", "/usr/lib/pid1/docker-cli", "ro"),
        ("/etc/resolv.conf", "/etc/resolv.conf", "rw"),
    ):
        if os.path.exists(source):
            binds.append(f"{source}:{target}:{mode}")
    binds += getattr(ctx.wiring.maybe(Wiring.userdata), "binds", [])  # write_files
    return tuple(binds)


def system_env(ctx: PhaseContext) -> tuple[str, ...]:
    """The user-data's proxies, so that pulls in dom0 and the console use them too."""
    env = getattr(ctx.wiring.maybe(Wiring.userdata), "env", {})
    return tuple(f"{name}={value}" for name, value in sorted(env.items()))


def candidates(ctx: PhaseContext, first: str) -> tuple[str, ...]:
    if ctx.wiring.storage.mode == "disk":
        return (first, DISK_IMAGE)
    return (first,)


def console_spec(ctx: PhaseContext) -> ContainerSpec:
    return ContainerSpec(
        role="console",
        images=candidates(ctx, ctx.config.console_image),
        fallback_image=ctx.config.fallback_image,
        binds=system_binds(ctx),
        env=system_env(ctx),
        tty=True,
        open_stdin=True,
        stop_timeout=CONSOLE_STOP_TIMEOUT,
        stop_signal="SIGHUP",  # a shell on a terminal ignores SIGTERM; a hang-up ends its session
        stop_rank=0,
        milestone="console started",
        bridge=ctx.wiring.maybe(Wiring.console_bridge),
    )


def dom0_spec(ctx: PhaseContext) -> ContainerSpec:
    return ContainerSpec(
        role="dom0",
        images=(ctx.config.dom0_image, ssh.DOM0_SSH_IMAGE),
        fallback_image=ctx.config.fallback_image,
        binds=system_binds(ctx) + ssh.dom0_binds(ctx),
        env=system_env(ctx) + ssh.dom0_env(ctx),
        tty=True,
        open_stdin=True,
        stop_timeout=DOM0_STOP_TIMEOUT,
        stop_rank=1,
    )


def describe(ctx: PhaseContext, role: str) -> str:
    state = ctx.state.containers[role]
    text = f"{state.status}: {state.image} ({state.image_reason})"
    if state.fallback_reason:
        text += f"; {state.fallback_reason}"
    return text


def register_restart(ctx: PhaseContext, role: str) -> None:
    supervisor = ctx.wiring.system_containers

    async def restart() -> None:
        await supervisor.restart(role)

    ctx.restart_actions.register(role, restart)


async def run_dom0(ctx: PhaseContext) -> str:
    register_restart(ctx, "dom0")
    await ctx.wiring.system_containers.ensure(dom0_spec(ctx))
    return describe(ctx, "dom0")


async def run_console(ctx: PhaseContext) -> str:
    register_restart(ctx, "console")
    await ctx.wiring.system_containers.ensure(console_spec(ctx))
    return describe(ctx, "console")


USES = (Wiring.system_containers, Wiring.storage, Wiring.userdata)
PHASES = [
    Phase(name="dom0", run=run_dom0, needs=("images", "console"), uses=USES),
    Phase(
        name="console",
        run=run_console,
        needs=("images", "console_tty"),
        uses=(*USES, Wiring.console_bridge),
    ),
]
