"""containerd and dockerd: spawn, wait until they answer, keep them alive, stop them.

Two phases. `containerd` (needs mounts, engine: its files) starts containerd with its own
socket (pid1.containerd_socket), its root and state under the exec root.
`dockerd` (needs containerd, storage, modules: overlay) starts
dockerd with `--containerd` pointing at it: a dockerd that starts its own
containerd takes over a second to stop (it polls its child once a second);
with containerd beside it the stop takes milliseconds.

Ready means containerd's socket accepts a connection and dockerd's `/_ping`
answers through aiodocker, both waited with a fast bounded backoff (5 ms
doubling to 100 ms), never a fixed sleep. Each daemon is a service: when it
exits it is spawned again with backoff, and once dockerd answers again the
system-container supervisor subscribes to events again and reconciles.

dockerd gets `--storage-driver overlay2` (vfs only when overlay cannot work
here, and the log says so) and DOCKER_RAMDISK=true when `/` is a ramfs or
tmpfs (runc cannot pivot_root out of an initramfs). Before dockerd's first
start, a data root it never used is seeded with the initrd's image store
(pid1.docker_seed, see pid1/docker_seed.py). Each daemon's output goes,
line by line, to `<state_dir>/<name>.log` (capped, one old generation kept);
its warnings and errors also go to pid1's log. Sending every line to
/dev/kmsg would hit the kernel's rate limit and drop pid1's own lines.

containerd fills `Wiring.containerd` (its Daemon); dockerd fills
`Wiring.docker` (an aiodocker.Docker on pid1.docker_socket), `Wiring.dockerd`
(the Daemon; `.up` is an asyncio.Event set while dockerd answers) and
`Wiring.system_containers`, and uses `Wiring.userdata` (daemon.json, proxies).
They register the restart actions "containerd" and "dockerd". The stop hook
stops the system containers (short timeouts), then dockerd (SIGTERM, SIGKILL
after DOCKERD_STOP_TIMEOUT), then containerd, within STOP_BUDGET seconds in all
(less than the supervisor's timeout for one stop hook).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pid1.docker_seed import seed_data_root
from pid1.layout import SYSTEM_PATH
from pid1.log import _stderr_is_console
from pid1.phases import Phase, PhaseContext
from pid1.rootfs import root_is_initramfs_mount
from pid1.state import uptime
from pid1.threads import bounded
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.reaper import Child

READY_FIRST_DELAY = 0.005
READY_MAX_DELAY = 0.1
READY_TIMEOUT = 60.0
RESTART_FIRST = 0.1
RESTART_CAP = 10.0
STABLE_RUN = 30.0  # a daemon up this long restarts at once next time it dies
# The stop hook's steps, worst case each. Together (STOP_BUDGET) they must fit
# in the supervisor's timeout for one hook (shutdown.HOOK_TIMEOUT), or the
# hook is cancelled half-way and containerd never gets its orderly stop.
SYSTEM_CONTAINERS_STOP_TIMEOUT = 10.0
DOCKERD_STOP_TIMEOUT = 10.0
CONTAINERD_STOP_TIMEOUT = 4.0
KILLED_EXIT_TIMEOUT = 1.0  # a SIGKILLed daemon still in the kernel (D state) is left to the final stop
STOP_BUDGET = SYSTEM_CONTAINERS_STOP_TIMEOUT + DOCKERD_STOP_TIMEOUT + CONTAINERD_STOP_TIMEOUT + 2 * KILLED_EXIT_TIMEOUT
DAEMON_LOG_MAX = 1 << 20  # bytes per generation of <state_dir>/<name>.log
RAM_FILESYSTEMS = ("rootfs", "ramfs", "tmpfs")
# dockerd (logrus) says level=...; containerd too. Lines at these levels also
# go to pid1's log (and so to /dev/kmsg); the rest only to the daemon's file.
LOUD_LEVEL = re.compile(r"\blevel=(warning|error|fatal|panic)\b")
# ...at most this many per window and daemon: a crash loop makes dockerd and
# containerd say "stream copy error" and "cleaning up after shim" on every
# exit, and /dev/kmsg's rate limit would then drop pid1's own lines.
LOUD_BURST = 5
LOUD_WINDOW = 10.0


# --- facts about the machine ------------------------------------------------------------------
def root_filesystem_type(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The filesystem type of the last mount on `/` (the one that is visible)."""
    found = None
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 7 and fields[4] == "/":
                    found = fields[fields.index("-") + 1]
    except OSError:
        return None
    return found


def filesystem_type_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The filesystem type of the mount that holds `path` (longest mount point prefix)."""
    path = os.path.realpath(path)
    best, found = -1, None
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                target = fields[4].replace("\\040", " ")
                inside = path == target or path.startswith(target.rstrip("/") + "/")
                if inside and len(target) >= best:
                    best, found = len(target), fields[fields.index("-") + 1]
    except OSError:
        return None
    return found


def choose_storage_driver(docker_root: str, extra_args: list[str]) -> tuple[str | None, str]:
    """overlay2 unless it cannot work here; (None, why) when the user chose one."""
    if any(a.startswith(("--storage-driver", "-s")) for a in extra_args):
        return None, "set by pid1.dockerd_args"
    try:
        with open("/proc/filesystems") as f:
            has_overlay = any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        has_overlay = False
    if not has_overlay:
        return "vfs", "the kernel has no overlay filesystem (module not loaded?)"
    fstype = filesystem_type_of(docker_root)
    if fstype in ("overlay", "aufs"):
        return "vfs", f"{docker_root} is on {fstype}, which overlay cannot use as its upper layer"
    return "overlay2", f"{docker_root} is on {fstype or 'an unknown filesystem'}"


# --- a daemon's output -------------------------------------------------------------------------
@dataclass
class DaemonLog:
    """Lines from a daemon's stdout/stderr pipe, read on the loop."""

    name: str
    path: str
    log: Any  # pid1.log.Log
    fd: int = -1
    echo: bool = field(default_factory=lambda: not _stderr_is_console())
    _partial: bytes = b""
    _file: int = -1
    _window_start: float = 0.0
    _window_count: int = 0
    _held_back: int = 0

    def open_pipe(self) -> int:
        """A pipe for the daemon's stdout+stderr; returns the write end (the
        caller hands it to spawn and closes it)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        self.fd = read_end
        asyncio.get_running_loop().add_reader(read_end, self._readable)
        return write_end

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the daemon (and everything holding the pipe) is gone
            self.close()
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > 16384:  # a runaway line without a newline
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._line(line.decode(errors="replace").rstrip())

    def _line(self, text: str) -> None:
        if not text:
            return
        self._to_file(text)
        self.log.copy(self.name, text)
        if LOUD_LEVEL.search(text) and self._may_forward():
            self.log.warning(f"{self.name}: {text}")
        elif self.echo:
            try:
                os.write(2, f"[{uptime():9.3f}] {self.name}: {text}\n".encode(errors="replace"))
            except OSError:
                pass

    def _may_forward(self) -> bool:
        now = uptime()
        if now - self._window_start >= LOUD_WINDOW:
            if self._held_back:
                self.log.info(f"{self.name}: {self._held_back} more warnings and errors in {self.path}")
            self._window_start, self._window_count, self._held_back = now, 0, 0
        self._window_count += 1
        if self._window_count <= LOUD_BURST:
            return True
        self._held_back += 1
        return False

    def _to_file(self, text: str) -> None:
        try:
            if self._file < 0:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            os.write(self._file, f"[{uptime():9.3f}] {text}\n".encode(errors="replace"))
            if os.fstat(self._file).st_size > DAEMON_LOG_MAX:
                os.close(self._file)
                self._file = -1
                os.replace(self.path, self.path + ".1")
        except OSError:
            pass  # the state dir may be gone (tests); the warnings still reach pid1's log

    def close(self) -> None:
        """Stop reading the pipe and close it and the log file."""
        if self.fd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self.fd)
            except RuntimeError:
                pass
            os.close(self.fd)
            self.fd = -1
        if self._partial:
            self._line(self._partial.decode(errors="replace"))
            self._partial = b""
        if self._file >= 0:  # one per daemon run: left open, a restart loop runs out of fds
            os.close(self._file)
            self._file = -1


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


# --- a supervised daemon --------------------------------------------------------------------------
async def wait_until(probe: Callable[[], Awaitable[bool]], timeout: float, alive: Callable[[], bool]) -> bool:
    """Call probe with a fast bounded backoff until it says yes; False on
    timeout or as soon as `alive()` says the daemon died."""
    deadline = uptime() + timeout
    delay = READY_FIRST_DELAY
    while True:
        if await probe():
            return True
        if not alive() or uptime() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, READY_MAX_DELAY)


@dataclass
class Daemon:
    """One daemon pid1 keeps running: spawn, readiness, restart, stop."""

    name: str
    ctx: PhaseContext
    argv: Callable[[], list[str]]
    env: dict[str, str]
    probe: Callable[[], Awaitable[bool]]
    before_spawn: Callable[[], None] = lambda: None
    # Called each time it is back after an exit (not at the first start).
    after_restart: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    child: Child | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    restarts: int = 0
    spawned_at: float = 0.0
    ready_after: float | None = None

    def record(self, **changes: Any) -> None:
        entry = self.ctx.state.dockerd.setdefault(self.name, {})
        entry.update(changes)
        self.ctx.store.changed()

    def alive(self) -> bool:
        return self.child is not None and self.child.returncode is None

    def spawn(self) -> None:
        self.before_spawn()
        argv = self.argv()
        output = DaemonLog(self.name, os.path.join(self.ctx.config.state_dir, f"{self.name}.log"), self.ctx.log)
        write_end = output.open_pipe()
        try:
            self.child = self.ctx.reaper.spawn(argv, env=self.env, stdout=write_end, stderr=write_end)
        except OSError:
            output.close()
            raise
        finally:
            os.close(write_end)
        self.spawned_at = uptime()
        self.ctx.log.info(f"{self.name} started (pid {self.child.pid}): {' '.join(argv)}")
        self.record(pid=self.child.pid, status="starting", argv=argv, restarts=self.restarts)

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not await wait_until(self.probe, timeout, self.alive):
            code = self.child.returncode if self.child else None
            why = f"exited with status {code}" if code is not None else f"did not answer within {timeout:.0f} s"
            self.record(status="failed", error=why)
            raise RuntimeError(f"{self.name} {why} (see {self.ctx.config.state_dir}/{self.name}.log)")
        self.ready_after = round(uptime() - self.spawned_at, 3)
        self.record(status="running", up_since=round(uptime(), 3), ready_after=self.ready_after, error=None)
        self.up.set()

    async def keep_alive(self) -> None:
        """The service: wait for the daemon to exit, spawn it again with backoff."""
        delay = 0.0
        while not self.stopping:
            assert self.child is not None
            code = await self.child.wait()
            self.up.clear()
            if self.stopping:
                return
            ran = uptime() - self.spawned_at
            delay = 0.0 if ran >= STABLE_RUN else (RESTART_FIRST if delay == 0 else min(delay * 2, RESTART_CAP))
            self.restarts += 1
            self.ctx.log.error(f"{self.name} exited with status {code} after {ran:.1f} s; restarting in {delay:.1f} s")
            self.record(status="restarting", last_exit=code, restarts=self.restarts, up_since=None)
            while True:  # until a spawn works (a missing binary must not end the service)
                await asyncio.sleep(delay)
                if self.stopping:
                    return
                try:
                    self.spawn()
                    break
                except OSError as exc:
                    delay = min(max(delay * 2, RESTART_FIRST), RESTART_CAP)
                    self.ctx.log.error(f"{self.name} cannot be started: {exc}; trying again in {delay:.1f} s")
                    self.record(status="failed", error=str(exc))
            try:
                await self.wait_ready()
                self.ctx.log.notice(f"{self.name} is back after {self.ready_after * 1000:.0f} ms")
                for callback in self.after_restart:
                    try:
                        await callback()
                    except Exception as exc:
                        self.ctx.log.error(f"{self.name}: after-restart step failed: {exc!r}")
            except RuntimeError as exc:  # it died or hung while starting: the next round handles it
                self.ctx.log.error(f"{self.name} restart failed: {exc}")
                if self.alive():
                    self.child.signal(signal.SIGKILL)

    async def restart(self) -> None:
        """Restart on request (the control channel): SIGTERM; keep_alive spawns it again."""
        if self.alive():
            self.ctx.log.notice(f"{self.name}: restart requested")
            self.child.signal(signal.SIGTERM)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, SIGKILL after `timeout`; returns once it has exited."""
        self.stopping = True
        self.up.clear()
        if not self.alive():
            return
        assert self.child is not None
        began = uptime()
        self.child.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.child.wait(), timeout)
        except TimeoutError:
            self.ctx.log.warning(f"{self.name} still running {timeout:.0f} s after SIGTERM: SIGKILL")
            self.child.signal(signal.SIGKILL)
            try:
                await asyncio.wait_for(self.child.wait(), KILLED_EXIT_TIMEOUT)
            except TimeoutError:
                self.ctx.log.error(f"{self.name} survived SIGKILL for {KILLED_EXIT_TIMEOUT:.0f} s; going on")
                return
        self.ctx.log.info(f"{self.name} stopped in {(uptime() - began) * 1000:.0f} ms")
        self.record(status="stopped", stopped_in=round(uptime() - began, 3))


# --- containerd ----------------------------------------------------------------------------------------
def daemon_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NOTIFY_SOCKET", "LISTEN_"))}
    env.setdefault("PATH", SYSTEM_PATH)
    return env


# Snapshotters dockerd 20.10 never uses (its images and container layers are
# its own graph driver's): each would probe at start (overlayfs test-mounts,
# devmapper and zfs warn), which costs a boot time and says nothing.
UNUSED_CONTAINERD_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
)


def containerd_config(ctx: PhaseContext) -> str:
    """containerd's config file (in the exec root): sockets, root, state,
    only the plugins dockerd uses.

    Its root is in the exec root (RAM) too, not under the docker data root:
    with dockerd 20.10 it holds only the records of running containers,
    which no boot outlives, so containerd needs neither storage nor a module
    and starts at once, beside the module loading."""
    config = ctx.config
    root = os.path.join(config.docker_exec_root, "containerd", "root")
    state = os.path.join(config.docker_exec_root, "containerd", "daemon")
    path = os.path.join(config.docker_exec_root, "containerd", "containerd.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    disabled = ", ".join(f'"{name}"' for name in UNUSED_CONTAINERD_PLUGINS)
    text = (
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f'  address = "{config.containerd_socket}"\n'
    )
    with open(path, "w") as f:
        f.write(text)
    return path


async def socket_answers(path: str) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True


async def run_containerd(ctx: PhaseContext) -> str:
    config = ctx.config
    daemon = ctx.wiring.maybe(Wiring.containerd)
    if daemon is None or not daemon.alive():  # not a retry that finds it still starting
        os.makedirs(os.path.dirname(config.containerd_socket), exist_ok=True)
        config_path = containerd_config(ctx)

        def clear_socket() -> None:
            try:
                os.unlink(config.containerd_socket)  # a stale socket file answers nobody
            except FileNotFoundError:
                pass

        daemon = Daemon(
            name="containerd",
            ctx=ctx,
            argv=lambda: ["containerd", "--config", config_path, "--log-level", "warn"],
            env=daemon_env(),
            probe=lambda: socket_answers(config.containerd_socket),
            before_spawn=clear_socket,
        )
        ctx.wiring.containerd = daemon
        daemon.spawn()
    await daemon.wait_ready()
    if "containerd" not in ctx.restart_actions:  # once, however often the phase ran
        ctx.start_service("containerd", daemon.keep_alive)
        ctx.restart_actions.register("containerd", daemon.restart)
    return f"pid {daemon.child.pid}, answered after {daemon.ready_after * 1000:.0f} ms"


# --- dockerd --------------------------------------------------------------------------------------------
TLS_FLAGS = ("--tlsverify", "--tlscacert", "--tlscert", "--tlskey")  # what pid1.docker_tcp adds


def docker_tcp_args(address: str, tls_dir: str | None) -> tuple[list[str], str | None]:
    """pid1.docker_tcp's dockerd arguments, or ([], why not). Never plain TCP:
    without the three certificates nothing listens. --tlsverify: clients
    need a certificate signed by the user-data's CA."""
    if not address:
        return [], None
    files = {name: os.path.join(tls_dir, f"{name}.pem") for name in ("ca", "cert", "key")} if tls_dir else {}
    missing = [name for name, path in files.items() if not os.path.isfile(path)] if files else ["ca", "cert", "key"]
    if missing:
        return [], (
            f"pid1.docker_tcp={address}: Docker's TCP API stays off: no TLS {', '.join(missing)} "
            "(only_docker.docker_tls in the user-data: ca, cert, key); pid1 never listens on plain TCP"
        )
    return [
        f"--host=tcp://{address}", "--tlsverify", f"--tlscacert={files['ca']}", f"--tlscert={files['cert']}",
        f"--tlskey={files['key']}",
    ], None  # fmt: skip


def dockerd_argv(
    ctx: PhaseContext, storage_driver: str | None, tcp_args: tuple[str, ...] | list[str] = ()
) -> list[str]:
    config = ctx.config
    argv = [
        "dockerd",
        f"--containerd={config.containerd_socket}",
        f"--data-root={config.docker_root}",
        f"--exec-root={config.docker_exec_root}",
        f"--pidfile={os.path.join(config.docker_exec_root, 'dockerd.pid')}",
        f"--host=unix://{config.docker_socket}",
        *tcp_args,
    ]
    if storage_driver:
        argv.append(f"--storage-driver={storage_driver}")
    daemon_json = config_file(ctx)
    if daemon_json:
        argv.append(f"--config-file={daemon_json}")
    return argv + list(config.dockerd_args)


# What dockerd 20.10 prints when it refuses its daemon.json (and exits at once).
CONFIG_REFUSED = b"unable to configure the Docker daemon with file"


def config_file(ctx: PhaseContext) -> str | None:
    """The user-data's daemon.json, unless dockerd refused it on its last
    start: then dockerd starts on its defaults, and the log and VT2 say why.
    pid1.daemon_json checks the keys first; this catches what slips past."""
    applied = ctx.wiring.maybe(Wiring.userdata)
    path = getattr(applied, "daemon_json", None)
    if not path:
        return None
    try:
        with open(os.path.join(ctx.config.state_dir, "dockerd.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 16384, 0))
            tail = f.read()
    except OSError:
        tail = b""
    if CONFIG_REFUSED in tail and path.encode() in tail.rpartition(CONFIG_REFUSED)[2][:4096]:
        reason = tail.rpartition(CONFIG_REFUSED)[2].split(b"\n", 1)[0].decode(errors="replace").strip(" :")
        error = f"dockerd refused {path}: {reason[:300]}; starting it without the user-data's settings"
        ctx.log.error(f"userdata: {error}")
        ctx.state.userdata.setdefault("errors", []).append(error)
        applied.daemon_json = None
        ctx.store.changed()
        return None
    return path


async def ping(docker: Any) -> bool:
    """Whether /_ping answers. The answer also pins aiodocker to the daemon's
    API version (its API-Version header): left on "auto", aiodocker asks
    /version on first use, once per request already in flight, and each
    /version makes dockerd exec runc and docker-init (measured: three at
    once right after boot, under TCG a second of dockerd's CPU)."""
    try:
        async with docker._query("_ping", versioned_api=False) as response:
            version = response.headers.get("API-Version")
            if response.status == 200 and version and docker.api_version == "auto":
                docker.api_version = f"v{version}"
            return response.status == 200
    except Exception:  # not listening yet, or half up: try again
        return False


async def run_dockerd(ctx: PhaseContext) -> str:
    config = ctx.config
    notes = []
    daemon = ctx.wiring.maybe(Wiring.dockerd)
    if daemon is None or not daemon.alive():  # not a retry that finds it still starting
        env = daemon_env()
        env.update(getattr(ctx.wiring.maybe(Wiring.userdata), "env", {}))  # proxies for pulls
        root_fs = root_filesystem_type()
        # After rootfs.move_root() `/` is still a ramfs/tmpfs, but no longer
        # the rootfs mount itself, so runc can pivot_root: keep it that way.
        if root_fs in RAM_FILESYSTEMS and root_is_initramfs_mount():
            env["DOCKER_RAMDISK"] = "true"  # runc cannot pivot_root out of a ramfs/tmpfs root
            notes.append(f"/ is {root_fs}: DOCKER_RAMDISK=true")
        driver, why = choose_storage_driver(config.docker_root, config.dockerd_args)
        if driver == "vfs":
            ctx.log.warning(f"dockerd: storage driver vfs, not overlay2: {why} (slow, uses more disk)")
        elif driver:
            ctx.log.info(f"dockerd: storage driver {driver} ({why})")
        notes.append(f"storage {driver or 'from pid1.dockerd_args'}")
        seeded = await seed(ctx, driver)
        if seeded:
            ctx.log.info(f"dockerd: {seeded}")
            notes.append(seeded)
        tcp_args, tcp_error = docker_tcp_args(
            config.docker_tcp, getattr(ctx.wiring.maybe(Wiring.userdata), "tls_dir", None)
        )
        if tcp_error:
            ctx.log.error(f"dockerd: {tcp_error}")
            # "status": VT2's dockerd line shows it beside containerd's
            ctx.state.dockerd["tcp"] = {"status": "off (no TLS certificates)", "address": config.docker_tcp,
                                        "error": tcp_error}  # fmt: skip
        elif tcp_args:
            ctx.log.notice(f"dockerd: Docker's TCP API on {config.docker_tcp}, TLS with client certificates only")
            ctx.state.dockerd["tcp"] = {"status": f"TLS on {config.docker_tcp}", "address": config.docker_tcp,
                                        "tls": "verify"}  # fmt: skip
        pidfile = os.path.join(config.docker_exec_root, "dockerd.pid")

        def clear_pidfile() -> None:
            # A pidfile left by a killed dockerd names a pid that may be reused
            # by now; dockerd would refuse to start. No other dockerd of ours runs.
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass

        os.makedirs(config.docker_exec_root, exist_ok=True)
        os.makedirs(os.path.dirname(config.docker_socket), exist_ok=True)
        daemon = Daemon(
            name="dockerd",
            ctx=ctx,
            argv=lambda: dockerd_argv(ctx, driver, tcp_args),
            env=env,
            probe=lambda: ping(ctx.wiring.docker),
            before_spawn=clear_pidfile,
        )
        ctx.wiring.dockerd = daemon
        daemon.spawn()
    docker = ctx.wiring.maybe(Wiring.docker)
    if docker is None:
        # aiodocker (and aiohttp under it) only now, while dockerd starts: the
        # import takes seconds under emulation. In a thread, so the loop (the
        # reaper, the console, the daemons' output) keeps going meanwhile.
        aiodocker = await asyncio.to_thread(importlib.import_module, "aiodocker")
        docker = ctx.wiring.docker = aiodocker.Docker(url=f"unix://{config.docker_socket}")
    await daemon.wait_ready()
    if ctx.wiring.maybe(Wiring.system_containers) is None:  # once, however often the phase ran
        ctx.start_service("dockerd", daemon.keep_alive)
        ctx.restart_actions.register("dockerd", daemon.restart)
        ctx.add_stop_hook("dockerd", lambda: stop_engine(ctx))
        containerd = ctx.wiring.maybe(Wiring.containerd)
        if containerd is not None:
            containerd.after_restart.append(lambda: restart_after_containerd(ctx))
        # The system-container supervisor: its event loop resubscribes and
        # reconciles each time dockerd answers again.
        from pid1.system_containers import SystemContainers

        supervisor = SystemContainers(ctx, docker, daemon.up)
        ctx.wiring.system_containers = supervisor
        ctx.start_service("system containers", supervisor.watch_events)
    ctx.log.milestone("dockerd ready", f"pid {daemon.child.pid}")
    notes.insert(0, f"pid {daemon.child.pid}, /_ping after {daemon.ready_after * 1000:.0f} ms")
    return "; ".join(notes)


async def restart_after_containerd(ctx: PhaseContext) -> None:
    """containerd came back after a crash. dockerd 20.10 loses the exits that
    happen around a containerd restart (measured: a container killed then is
    never reported dead, so no die event ever comes), so its view of the
    containers cannot be trusted: restart dockerd, which rebuilds that view
    from containerd at start; the event loop then reconciles."""
    dockerd = ctx.wiring.maybe(Wiring.dockerd)
    if dockerd is None or dockerd.stopping or not dockerd.alive():
        return
    ctx.log.warning("containerd restarted: restarting dockerd so that its view of the containers is rebuilt")
    await dockerd.restart()


async def stop_engine(ctx: PhaseContext) -> None:
    """The stop hook: system containers, then dockerd, then containerd.
    `ctx` is the dockerd phase's (or a stand-in's that fills the same slots)."""
    supervisor = ctx.wiring.maybe(Wiring.system_containers)
    dockerd = ctx.wiring.maybe(Wiring.dockerd)
    containerd = ctx.wiring.maybe(Wiring.containerd)
    for daemon in (dockerd, containerd):
        if daemon is not None:
            daemon.stopping = True  # no restarts from here on
    if supervisor is not None and dockerd is not None and dockerd.alive():
        try:
            await asyncio.wait_for(supervisor.stop_all(), SYSTEM_CONTAINERS_STOP_TIMEOUT)
        except Exception as exc:
            ctx.log.error(f"stopping the system containers failed: {exc!r}; stopping dockerd anyway")
    if dockerd is not None:
        await dockerd.stop(DOCKERD_STOP_TIMEOUT)
    if containerd is not None:
        await containerd.stop(CONTAINERD_STOP_TIMEOUT)
    docker = ctx.wiring.maybe(Wiring.docker)
    if docker is not None:
        try:
            await docker.close()
        except Exception:
            pass


PHASES = [
    Phase(
        name="containerd", run=run_containerd, needs=("mounts", "engine"), fills=(Wiring.containerd,), doc=__doc__ or ""
    ),
    Phase(
        name="dockerd",
        run=run_dockerd,
        needs=("containerd", "storage", "modules", "userdata"),
        fills=(Wiring.docker, Wiring.dockerd, Wiring.system_containers),
        uses=(Wiring.containerd, Wiring.userdata),
        doc=__doc__ or "",
    ),
]
