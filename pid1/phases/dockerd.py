"""The phases `containerd` and `dockerd`: start the engine (pid1/engine/)
and publish it for the phases after them.

`containerd` (needs mounts, engine: its files) spawns containerd on its own socket
(pid1.containerd_socket), root and state in the exec root
(pid1/engine/containerd.py). `dockerd` (needs containerd, storage, modules:
overlay, userdata: daemon.json and proxies) seeds a data root dockerd never
used with the initrd's image store (pid1.docker_seed, pid1/docker_seed.py),
spawns dockerd with `--containerd` pointing at it (argv, storage driver,
DOCKER_RAMDISK and the TCP API: pid1/engine/dockerd_args.py), imports the
Docker client meanwhile, and waits until `/_ping` answers. Each daemon is a
service from then on (pid1/engine/daemon.py): spawned again when it exits,
and dockerd restarted too when containerd came back (dockerd 20.10 loses
container exits around a containerd restart: the die event never comes).

containerd fills `Wiring.containerd` (its Daemon); dockerd fills
`Wiring.docker` (the DockerClient on pid1.docker_socket), `Wiring.dockerd`
(its Daemon; `.up` is set while dockerd answers) and
`Wiring.system_containers` (pid1/engine/system_containers.py, whose event
loop resubscribes and reconciles each time dockerd answers again). They
register the restart actions "containerd" and "dockerd". The stop hook is
pid1/engine/stop.py's: the system containers, dockerd, containerd.

Owns: the two phases, the dockerd phase's view of daemon.json and the TCP
API (state.dockerd.tcp), and the stop hook's reading of the slots.
May use: pid1.engine (its modules), pid1.docker_seed, pid1.threads, the
phase API and the wiring.
"""

from __future__ import annotations

import os
import threading

from pid1.docker_seed import seed_data_root
from pid1.engine import containerd as containerd_files
from pid1.engine import dockerd_args
from pid1.engine.daemon import Daemon, daemon_env, socket_answers
from pid1.engine.stop import stop_engine as stop_the_engine
from pid1.phases import Phase, PhaseContext
from pid1.state_schema import TcpState
from pid1.threads import bounded
from pid1.wiring import Wiring


def make_daemon(ctx: PhaseContext, name: str, **how: object) -> Daemon:
    """A Daemon on the phase's log, reaper and state, its log in the state dir."""
    return Daemon(name=name, log=ctx.log, reaper=ctx.reaper, store=ctx.store, log_dir=ctx.config.state_dir, **how)


async def run_containerd(ctx: PhaseContext) -> str:
    config = ctx.config
    daemon = ctx.wiring.maybe(Wiring.containerd)
    if daemon is None or not daemon.alive():  # not a retry that finds it still starting
        os.makedirs(os.path.dirname(config.containerd_socket), exist_ok=True)
        config_path = containerd_files.write_config(config)
        daemon = make_daemon(
            ctx,
            "containerd",
            argv=lambda: containerd_files.containerd_argv(config_path),
            env=daemon_env(),
            probe=lambda: socket_answers(config.containerd_socket),
            before_spawn=lambda: containerd_files.clear_socket(config.containerd_socket),
        )
        ctx.wiring.containerd = daemon
        daemon.spawn()
    await daemon.wait_ready()
    if "containerd" not in ctx.restart_actions:  # once, however often the phase ran
        ctx.start_service("containerd", daemon.keep_alive)
        ctx.restart_actions.register("containerd", daemon.restart)
    return f"pid {daemon.child.pid}, answered after {daemon.ready_after * 1000:.0f} ms"


async def seed(ctx: PhaseContext, driver: str | None) -> str | None:
    """Seed the data root (pid1.docker_seed), bounded by pid1.io_timeout: a
    copy to a disk that hangs is given up (it stops at its next step and
    never puts a store in place) and the images phase puts the bundled
    images in instead; a stop does not wait for it either."""
    config = ctx.config
    stop = threading.Event()
    try:
        return await bounded(
            seed_data_root, config.docker_seed, config.docker_root, driver, stop,
            timeout=config.io_timeout, name="pid1-seed", abandon=stop,
        )  # fmt: skip
    except TimeoutError:
        ctx.log.warning(
            f"dockerd: seeding {config.docker_root} from {config.docker_seed} did not finish within "
            f"{config.io_timeout:.0f} s (pid1.io_timeout): going on without it; the images phase loads the images"
        )
    except Exception as exc:  # the images phase puts the bundled images in instead
        ctx.log.warning(f"dockerd: seeding {config.docker_root} from {config.docker_seed} failed: {exc}")
    return None


def config_file(ctx: PhaseContext) -> str | None:
    """The user-data's daemon.json, unless dockerd refused it on its last
    start: then dockerd starts on its defaults, and the log and VT2 say why.
    pid1.daemon_json checks the keys first; this catches what slips past."""
    applied = ctx.wiring.maybe(Wiring.userdata)
    path = getattr(applied, "daemon_json", None)
    if not path:
        return None
    reason = dockerd_args.refused_daemon_json(os.path.join(ctx.config.state_dir, "dockerd.log"), path)
    if reason is None:
        return path
    error = f"dockerd refused {path}: {reason}; starting it without the user-data's settings"
    ctx.log.error(f"userdata: {error}")
    ctx.state.userdata.errors.append(error)
    applied.daemon_json = None
    ctx.store.changed()
    return None


def tcp_args(ctx: PhaseContext) -> list[str]:
    """pid1.docker_tcp's arguments, with the log and state.dockerd.tcp saying what it is."""
    config = ctx.config
    args, error = dockerd_args.docker_tcp_args(
        config.docker_tcp, getattr(ctx.wiring.maybe(Wiring.userdata), "tls_dir", None)
    )
    if error:
        ctx.log.error(f"dockerd: {error}")
        # "status": VT2's dockerd line shows it beside containerd's
        ctx.state.dockerd.tcp = TcpState(status="off (no TLS certificates)", address=config.docker_tcp,
                                         error=error)  # fmt: skip
    elif args:
        ctx.log.notice(f"dockerd: Docker's TCP API on {config.docker_tcp}, TLS with client certificates only")
        ctx.state.dockerd.tcp = TcpState(status=f"TLS on {config.docker_tcp}", address=config.docker_tcp,
                                         tls="verify")  # fmt: skip
    return args


async def spawn_dockerd(ctx: PhaseContext, notes: list[str]) -> Daemon:
    config = ctx.config
    env = daemon_env()
    env.update(getattr(ctx.wiring.maybe(Wiring.userdata), "env", {}))  # proxies for pulls
    ramdisk, why_ramdisk = dockerd_args.ramdisk_env()
    env.update(ramdisk)
    if why_ramdisk:
        notes.append(why_ramdisk)
    driver, why = dockerd_args.choose_storage_driver(config.docker_root, config.dockerd_args)
    if driver == "vfs":
        ctx.log.warning(f"dockerd: storage driver vfs, not overlay2: {why} (slow, uses more disk)")
    elif driver:
        ctx.log.info(f"dockerd: storage driver {driver} ({why})")
    notes.append(f"storage {driver or 'from pid1.dockerd_args'}")
    seeded = await seed(ctx, driver)
    if seeded:
        ctx.log.info(f"dockerd: {seeded}")
        notes.append(seeded)
    tcp = tcp_args(ctx)
    os.makedirs(config.docker_exec_root, exist_ok=True)
    os.makedirs(os.path.dirname(config.docker_socket), exist_ok=True)
    daemon = make_daemon(
        ctx,
        "dockerd",
        argv=lambda: dockerd_args.dockerd_argv(config, driver, tcp, config_file(ctx)),
        env=env,
        probe=lambda: ctx.wiring.docker.ping(),
        before_spawn=lambda: dockerd_args.clear_pidfile(config),
    )
    ctx.wiring.dockerd = daemon
    daemon.spawn()
    return daemon


async def run_dockerd(ctx: PhaseContext) -> str:
    notes: list[str] = []
    daemon = ctx.wiring.maybe(Wiring.dockerd)
    if daemon is None or not daemon.alive():  # not a retry that finds it still starting
        daemon = await spawn_dockerd(ctx, notes)
    client = ctx.wiring.maybe(Wiring.docker)
    if client is None:
        # The client (aiodocker, aiohttp) only now, while dockerd starts: its
        # import is slow under emulation, and runs in a thread meanwhile.
        from pid1.engine.client import DockerClient

        client = ctx.wiring.docker = await DockerClient.open(ctx.config.docker_socket)
    await daemon.wait_ready()
    if ctx.wiring.maybe(Wiring.system_containers) is None:  # once, however often the phase ran
        ctx.start_service("dockerd", daemon.keep_alive)
        ctx.restart_actions.register("dockerd", daemon.restart)
        ctx.add_stop_hook("dockerd", lambda: stop_engine(ctx))
        containerd = ctx.wiring.maybe(Wiring.containerd)
        if containerd is not None:
            containerd.after_restart.append(lambda: restart_after_containerd(ctx))
        from pid1.engine.system_containers import SystemContainers

        supervisor = SystemContainers(client, daemon.up, ctx.log, ctx.store, stable_run=ctx.config.restart_stable)
        ctx.wiring.system_containers = supervisor
        ctx.start_service("system containers", supervisor.watch_events)
    ctx.log.milestone("dockerd ready", f"pid {daemon.child.pid}")
    notes.insert(0, f"pid {daemon.child.pid}, /_ping after {daemon.ready_after * 1000:.0f} ms")
    return "; ".join(notes)


async def restart_after_containerd(ctx: PhaseContext) -> None:
    """containerd came back after a crash. dockerd 20.10 loses the exits that
    happen around a containerd restart (observed: a container killed then is
    never reported dead, so no die event ever comes), so its view of the
    containers cannot be trusted: restart dockerd, which rebuilds that view
    from containerd at start; the event loop then reconciles."""
    dockerd = ctx.wiring.maybe(Wiring.dockerd)
    if dockerd is None or dockerd.stopping or not dockerd.alive():
        return
    ctx.log.warning("containerd restarted: restarting dockerd so that its view of the containers is rebuilt")
    await dockerd.restart()


async def stop_engine(ctx: PhaseContext) -> None:
    """The stop hook, on the slots of `ctx` (the dockerd phase's, or a
    stand-in's that fills the same slots)."""
    wiring = ctx.wiring
    await stop_the_engine(
        ctx.log,
        wiring.maybe(Wiring.system_containers),
        wiring.maybe(Wiring.dockerd),
        wiring.maybe(Wiring.containerd),
        wiring.maybe(Wiring.docker),
    )


PHASES = [
    Phase(name="containerd", run=run_containerd, needs=("mounts", "engine"), fills=(Wiring.containerd,)),
    Phase(
        name="dockerd",
        run=run_dockerd,
        needs=("containerd", "storage", "modules", "userdata"),
        fills=(Wiring.docker, Wiring.dockerd, Wiring.system_containers),
        uses=(Wiring.containerd, Wiring.userdata),
    ),
]
