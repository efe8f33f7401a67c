"""ntp: the clock. Needs `network` (the servers DHCP gave, and a route to
any server) and so the system-container supervisor.

Hands the `ntp` system container to the supervisor: pid1's own SNTP client
(pid1/sntp.py, which says why it is not busybox ntpd) on pid1's Python,
bound in read-only, in the bundled busybox image; `--net host`, its own PID
namespace, not privileged, and only CAP_SYS_TIME (it binds no privileged
port: it asks from an ephemeral one and serves nobody). `pid1.ntp=query`
drops even that and runs the client with --query-only: it measures the
offset and never sets the clock (the docker-tier tests, or a hypervisor
that keeps the clock itself); `pid1.ntp=off` runs no container.

The servers, the first of these that gives any: `pid1.ntp_servers` (command
line or the user-data's own section), the user-data's `ntp: servers`,
DHCP option 42 (the udhcpc script records it in the lease), `pool.ntp.org`.
They are chosen when the phase runs. When that left only `pool.ntp.org`
because the network phase went on offline (pid1.net_timeout), the
`ntp-late-lease` service waits for the lease; if it names servers, the
container is restarted with them.

The client writes `<state_dir>/ntp/status` and a word to the FIFO
`<state_dir>/ntp/events` after every round; the `ntp-status` service reads
them on the loop (hostile: a container wrote them; read bounded through
pid1.untrusted, checked field by field) into `state.clock`. The first
round that leaves the clock right is the milestone `clock synced`; a step
of more than a minute is a log line. `wait_for_clock(ctx, bound)` is what
anything that needs a right clock awaits (runcmd with
pid1.runcmd_wait_clock, the swarm join). The phase is done once the
container's first start was tried: it never waits for a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from pid1.container_spec import ContainerSpec
from pid1.linux.fifo import EventFifo
from pid1.net.dhcp import lease_file, network_dir, read_lease
from pid1.phases import Phase, PhaseContext
from pid1.state import uptime
from pid1.state_schema import ClockMeasurement, ClockStatus
from pid1.untrusted import read_untrusted
from pid1.wiring import Wiring

DEFAULT_SERVER = "pool.ntp.org"
STATUS_DIR_IN_CONTAINER = "/run/pid1-ntp"
PACKAGE_IN_CONTAINER = "/opt/pid1"  # PYTHONPATH: pid1's package is bound at /opt/pid1/pid1
STATUS_MAX = 4096  # the client writes ~400 bytes
TEXT_MAX = 256  # of one string field
ERROR_MAX = 1000
OFFSET_MAX = 1e10  # seconds; beyond is nonsense (the NTP era is 136 years)
RIGHT_WITHIN = 0.5  # seconds: a measured offset below this is a right clock (pid1.sntp's step threshold)
LOUD_STEP = 60.0  # seconds: a step (or, when only measuring, an offset) above this is said at notice level
EVENT_WORDS = ("sync", "unsync")
SERVICE = "ntp-status"
LATE_LEASE_SERVICE = "ntp-late-lease"


# --- which servers ------------------------------------------------------------------------------
def choose_servers(configured: list[str], userdata_servers: list[str], lease: dict[str, str]) -> tuple[list[str], str]:
    """(servers, where they came from), by precedence."""
    if configured:
        return list(configured), "pid1.ntp_servers"
    if userdata_servers:
        return list(userdata_servers), "user-data"
    dhcp = [word for word in lease.get("ntp", "").split() if word][:16]
    if dhcp:
        return dhcp, "DHCP option 42"
    return [DEFAULT_SERVER], "default"


# --- what the client says ---------------------------------------------------------------------------
@dataclass
class ClockReading(ClockMeasurement):
    """The status file, checked: every field of the expected type and bounds."""

    synced: bool = False
    mode: str = "set"
    stepped: float | None = None
    poll: float | None = None

    @property
    def right(self) -> bool:
        """The clock is right: set by the client, or measured close enough."""
        if not self.synced:
            return False
        return self.mode == "set" or (self.offset is not None and abs(self.offset) <= RIGHT_WITHIN)


def _text(value: Any, limit: int = TEXT_MAX) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value[: limit * 2])
    return cleaned[:limit] or None


def _number(value: Any, bound: float = OFFSET_MAX) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and abs(value) <= bound else None


def parse_status(raw: bytes) -> ClockReading:
    """The client's status file; ValueError when it is not a JSON object. A
    field of the wrong type or out of bounds is taken as absent."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON text: {str(exc)[:80]}") from None
    if not isinstance(document, dict):
        raise ValueError(f"a JSON {type(document).__name__}, not an object")
    stratum = _number(document.get("stratum"), 16)
    steps = _number(document.get("steps"), 2**31)
    mode = document.get("mode")
    return ClockReading(
        synced=document.get("synced") is True,
        mode=mode if mode in ("set", "query") else "set",
        server=_text(document.get("server")),
        address=_text(document.get("address")),
        offset=_number(document.get("offset")),
        delay=_number(document.get("delay"), 3600),
        stratum=int(stratum) if stratum is not None and stratum >= 0 else None,
        stepped=_number(document.get("stepped")),
        steps=int(steps) if steps is not None and steps >= 0 else 0,
        poll=_number(document.get("poll"), 86400),
        checked=_number(document.get("checked"), 2**40),
        error=_text(document.get("error"), ERROR_MAX),
    )


def read_status(path: str) -> ClockReading:
    """The status file, bounded; OSError or ValueError saying what is wrong."""
    return parse_status(read_untrusted(path, STATUS_MAX))


# --- waiting for a right clock -------------------------------------------------------------------------
@dataclass
class Clock:
    """What the ntp phase fills Wiring.clock with: `synced` is set once the
    clock is right (milestone `clock synced`); `watch` reads the client's
    status (one per boot: a retried phase reuses it)."""

    synced: asyncio.Event = field(default_factory=asyncio.Event)
    watch: ClockWatch | None = None
    follows_late_lease: bool = False


async def wait_for_clock(ctx: PhaseContext, bound: float) -> bool:
    """Wait until the clock is right, at most `bound` seconds: True when it
    is, False when the bound passed (or at once when nothing will set it:
    pid1.ntp=off, or the ntp phase failed). Callers go on either way and say
    so; they declare uses=(Wiring.clock,) and a need on ntp."""
    clock = ctx.wiring.maybe(Wiring.clock)
    if clock is None:
        return False
    if clock.synced.is_set():
        return True
    if ctx.config.ntp == "off" or bound <= 0:
        return False
    try:
        await asyncio.wait_for(clock.synced.wait(), bound)
    except TimeoutError:
        return False
    return True


# --- the container ---------------------------------------------------------------------------------
def python_binds() -> list[str]:
    """pid1's interpreter, its libraries and pid1's package, read-only, for
    a container whose image has no Python (the bundled busybox)."""
    binds = [f"{path}:{path}:ro" for path in ("/usr/lib", "/lib", "/lib64") if os.path.exists(path)]
    prefix = os.path.realpath(sys.base_prefix)
    executable = os.path.realpath(sys.executable)
    if not prefix.startswith("/usr"):  # an interpreter of its own tree (pyenv, a venv's base)
        binds.append(f"{prefix}:{prefix}:ro")
    if not executable.startswith(("/usr/lib/", prefix + "/")) or prefix == "/usr":
        binds.append(f"{executable}:{executable}:ro")
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binds.append(f"{package}:{PACKAGE_IN_CONTAINER}/pid1:ro")
    return binds


def ntp_spec(ctx: PhaseContext, servers: list[str], status_dir: str) -> ContainerSpec:
    query = ctx.config.ntp == "query"
    binds = [*python_binds(), f"{status_dir}:{STATUS_DIR_IN_CONTAINER}"]
    resolv = ctx.path("etc/resolv.conf")
    if os.path.exists(resolv):
        binds.append(f"{resolv}:/etc/resolv.conf:ro")
    return ContainerSpec(
        role="ntp",
        images=(ctx.config.fallback_image,),
        fallback_image=ctx.config.fallback_image,
        # -S: no site (nothing of it is needed); -B: no .pyc written into the read-only binds.
        cmd=(
            *(os.path.realpath(sys.executable), "-S", "-B", "-m", "pid1.sntp"),
            *("--status-dir", STATUS_DIR_IN_CONTAINER, *(["--query-only"] if query else []), *servers),
        ),
        env=(f"PYTHONPATH={PACKAGE_IN_CONTAINER}", "PYTHONUNBUFFERED=1"),
        binds=tuple(binds),
        privileged=False,
        cap_add=() if query else ("SYS_TIME",),
        net_host=True,
        pid_host=False,
        stop_timeout=1,
    )


# --- the state ---------------------------------------------------------------------------------------
@dataclass
class ClockWatch:
    """Turns the client's status into state.clock, log lines and the milestone."""

    ctx: PhaseContext
    status_path: str
    clock: Clock
    last: ClockReading | None = None

    def update(self) -> None:
        ctx, record = self.ctx, self.ctx.state.clock
        try:
            reading = read_status(self.status_path)
        except (OSError, ValueError) as exc:
            ctx.log.warning(f"clock: {self.status_path} ignored: {getattr(exc, 'strerror', None) or exc}")
            return
        previous, self.last = self.last, reading
        measured = {f.name: getattr(reading, f.name) for f in fields(ClockMeasurement)}
        status = ClockStatus.SYNCED if reading.synced else ClockStatus.UNSYNCED
        record.update(
            **measured, status=status, mode=reading.mode, last_step=reading.stepped, updated=round(uptime(), 3)
        )
        ctx.store.changed()
        self.say(reading, previous)
        clock = self.clock
        if reading.right and not clock.synced.is_set():
            clock.synced.set()
            how = "set" if reading.mode == "set" else "checked, not set"
            ctx.log.milestone("clock synced", f"to {reading.server} ({reading.address}), {how}")

    def say(self, reading: ClockReading, previous: ClockReading | None) -> None:
        log = self.ctx.log
        if reading.steps > (previous.steps if previous else 0) and reading.stepped is not None:
            level = log.notice if abs(reading.stepped) > LOUD_STEP else log.info
            level(f"clock: stepped by {reading.stepped:+.3f} s to {reading.server} ({reading.address})")
        if reading.mode == "query" and reading.synced and (previous is None or not previous.synced):
            off = reading.offset or 0.0
            level = log.warning if abs(off) > LOUD_STEP else log.info
            level(f"clock: {off:+.3f} s off {reading.server} ({reading.address}); pid1.ntp=query: not set")
        if not reading.synced and (previous is None or previous.synced):
            log.warning(f"clock: not synced: {reading.error}")
        elif reading.synced and previous is not None and not previous.synced:
            log.info(f"clock: synced again to {reading.server} ({reading.address})")


def watch_status(ctx: PhaseContext, clock: Clock, status_dir: str) -> None:
    """Start the ntp-status service (once: a retried phase reuses it)."""
    if clock.watch is not None:
        return
    watch = clock.watch = ClockWatch(ctx, os.path.join(status_dir, "status"), clock)
    fifo = EventFifo(os.path.join(status_dir, "events"), EVENT_WORDS)  # now: the client may write soon

    async def service() -> None:
        try:
            async with contextlib.aclosing(fifo.events()) as events:
                async for _word in events:
                    watch.update()
        finally:
            fifo.close()

    ctx.start_service(SERVICE, service)


def follow_late_lease(ctx: PhaseContext, clock: Clock, status_dir: str) -> None:
    """Start the ntp-late-lease service (once): when the network comes up, a
    lease with option 42 replaces pool.ntp.org, and the container restarts
    with it (a running container keeps the servers it started with)."""
    up = ctx.wiring.maybe(Wiring.network_up)
    if clock.follows_late_lease or up is None:
        return
    clock.follows_late_lease = True
    supervisor = ctx.wiring.system_containers

    async def service() -> None:
        await up.wait()
        servers, source = choose_servers([], [], read_lease(lease_file(network_dir(ctx.config.state_dir)), ctx.log))
        if source == "default" or servers == ctx.state.clock.servers:
            return
        ctx.log.info(f"ntp: the lease came after the ntp phase: {', '.join(servers)} ({source}); restarting ntp")
        ctx.state.clock.update(servers=servers, source=source)
        ctx.store.changed()
        await supervisor.ensure(ntp_spec(ctx, servers, status_dir))  # the spec for its next start: now
        await supervisor.restart("ntp")

    ctx.start_service(LATE_LEASE_SERVICE, service)


async def run(ctx: PhaseContext) -> str:
    clock = ctx.wiring.maybe(Wiring.clock)
    if clock is None:
        clock = ctx.wiring.clock = Clock()
    if ctx.config.ntp == "off":
        ctx.state.clock.update(status=ClockStatus.OFF)
        ctx.store.changed()
        return "off (pid1.ntp=off): nothing sets the clock"
    supervisor = ctx.wiring.system_containers
    applied = ctx.wiring.maybe(Wiring.userdata)
    userdata_servers = applied.data.ntp_servers if applied is not None and applied.data is not None else []
    up = ctx.wiring.maybe(Wiring.network_up)
    offline = up is not None and not up.is_set()  # before the lease is read: one that comes between is followed
    servers, source = choose_servers(
        ctx.config.ntp_servers, userdata_servers, read_lease(lease_file(network_dir(ctx.config.state_dir)), ctx.log)
    )
    status_dir = os.path.join(ctx.config.state_dir, "ntp")
    os.makedirs(status_dir, exist_ok=True)
    ctx.state.clock.update(status=ClockStatus.STARTING, mode="query" if ctx.config.ntp == "query" else "set",
                           servers=servers, source=source)  # fmt: skip
    ctx.store.changed()
    watch_status(ctx, clock, status_dir)
    await supervisor.ensure(ntp_spec(ctx, servers, status_dir))
    if offline and source == "default":
        follow_late_lease(ctx, clock, status_dir)
    return f"{ctx.config.ntp}: {', '.join(servers)} ({source}); {ctx.state.containers['ntp'].status}"


PHASE = Phase(name="ntp", run=run, needs=("network",), required=False,
              fills=(Wiring.clock,), uses=(Wiring.system_containers, Wiring.userdata, Wiring.network_up))  # fmt: skip
