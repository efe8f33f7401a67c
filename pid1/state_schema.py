"""The state's schema: the typed records and sections of state.json and the
enums of their statuses.

Owns the shape of what pid1 publishes (pid1/state.py holds the root `State`
and writes it). A writer changes a record through its fields or `update()`,
which refuses a name that is not a field, so a misspelt key fails where it
is written instead of vanishing from VT2. Each enum's values are the strings
state.json has always carried (StrEnum: they compare equal to them and
serialise as them), so files and the tests that read them stay compatible.
The view reads these classes (pid1/view/statefile.py decodes a file into
them). Uses the standard library, and pid1.engine.status (the engine owns
the statuses of what it keeps running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pid1.engine.status import ContainerStatus, DaemonStatus  # the engine owns them; re-exported for the view


class Mode(StrEnum):
    """The machine's mode, the first thing the view says."""

    BOOTING = "booting"
    RUNNING = "running"
    STOPPING = "stopping"
    EMERGENCY = "emergency"


class PhaseStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # a required phase failed and waits to run again
    DONE = "done"
    FAILED = "failed"  # an optional phase that failed: the boot went on
    CANCELLED = "cancelled"  # the stop came first


class StorageMode(StrEnum):
    DISK = "disk"
    RAM = "ram"


class StorageStatus(StrEnum):
    GONE = "gone"  # the disk was removed while mounted


class NetworkStatus(StrEnum):
    CONFIGURING = "configuring"
    WAITING = "waiting for a lease"
    UP = "up"
    OFFLINE = "offline"  # the phase went on without a network (a lease may still come)
    NONE = "none"  # pid1.net=none: loopback only


class ClockStatus(StrEnum):
    OFF = "off"  # pid1.ntp=off
    STARTING = "starting"
    SYNCED = "synced"
    UNSYNCED = "unsynced"


class SshStatus(StrEnum):
    OFF = "off"  # no key for root: no server started
    NONE = "none"  # dom0's image has no SSH server
    ERROR = "error"  # the bundled server did not answer
    RUNNING = "running"


class Record:
    """A dataclass record of the state: `update(**changes)` sets fields by
    name and refuses a name that is not one of them."""

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
                raise AttributeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """Plain dicts, shallowly (lists are shared, nested records converted)."""
        return {key: value.to_json() if isinstance(value, Record) else value for key, value in vars(self).items()}


@dataclass
class PhaseState(Record):
    name: str
    needs: list[str]
    required: bool
    status: PhaseStatus = PhaseStatus.PENDING
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    attempts: int = 0
    error: str | None = None
    detail: str | None = None


@dataclass
class ContainerState(Record):
    role: str
    name: str
    image: str | None = None
    image_id: str | None = None
    image_reason: str | None = None
    container_id: str | None = None
    status: ContainerStatus = ContainerStatus.PENDING
    up_since: float | None = None
    restarts: int = 0
    failures_in_row: int = 0
    next_retry: float | None = None
    last_exit: int | None = None
    fallback_reason: str | None = None
    name_conflict: str | None = None  # a user's container holds the role's name: it runs as `name`


@dataclass
class StorageState(Record):
    """Where Docker's data lives (the storage phase) and the cgroup mode (mounts)."""

    mode: StorageMode | None = None
    device: str | None = None
    fstype: str | None = None
    label: str | None = None
    target: str | None = None
    preexisting: bool | None = None  # mounted before pid1 started
    status: StorageStatus | None = None
    error: str | None = None
    cgroups: str | None = None  # pid1.cgroups, or "already mounted"


@dataclass
class NetworkState(Record):
    """The network phase's link, address and DHCP lease (`lease_*` are the
    DHCP client's stamps: wall clock, `date +%s`)."""

    mode: str | None = None  # dhcp, static, none (pid1.net), host (a test stand-in)
    status: NetworkStatus | None = None
    link: str | None = None
    links: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    address: str | None = None
    prefixlen: int | None = None
    gateway: str | None = None
    dns: list[str] = field(default_factory=list)
    domain: str | None = None
    server: str | None = None  # the DHCP server that gave the lease
    lease_seconds: int | None = None
    lease_obtained: int | None = None
    lease_expires: int | None = None
    renewals: int = 0
    lease_event: str | None = None  # udhcpc's last event word (bound, renew, deconfig, leasefail...)
    offline_reason: str | None = None
    waited: float | None = None  # seconds the phase waited for the network


@dataclass
class DaemonState(Record):
    pid: int | None = None
    status: DaemonStatus | None = None
    argv: list[str] = field(default_factory=list)
    restarts: int = 0
    up_since: float | None = None
    ready_after: float | None = None  # seconds from spawn to answering
    last_exit: int | None = None
    stopped_in: float | None = None
    error: str | None = None


@dataclass
class TcpState(Record):
    """Docker's TCP API (pid1.docker_tcp)."""

    status: str  # what VT2 shows beside containerd ("TLS on ADDRESS", "off (no TLS certificates)")
    address: str
    tls: str | None = None  # "verify": client certificates only
    error: str | None = None


@dataclass
class EngineState(Record):
    """The engine: state.json's `dockerd` section."""

    containerd: DaemonState | None = None
    dockerd: DaemonState | None = None
    tcp: TcpState | None = None
    event_subscriptions: int = 0
    reconciles: int = 0

    def daemon(self, name: str) -> DaemonState:
        """The record of the daemon called `name` (containerd or dockerd), made on first use."""
        record = getattr(self, name)
        if record is None:
            record = DaemonState()
            setattr(self, name, record)
        return record


@dataclass
class RuncmdState(Record):
    instance: str
    ran: int
    failed: int


@dataclass
class UserdataState(Record):
    """Where the user-data came from and what applied."""

    source: str | None = None
    instance_id: str | None = None
    kind: str | None = None  # cloud-config, a script...
    applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    host_state: str | None = None  # its directory
    persistent: bool | None = None
    runcmd: RuncmdState | None = None


@dataclass
class ClockMeasurement:
    """What one round of the clock client measured: the fields its status
    file (pid1.phases.ntp.ClockReading) and the state share."""

    server: str | None = None
    address: str | None = None
    offset: float | None = None
    delay: float | None = None
    stratum: int | None = None
    steps: int = 0
    checked: float | None = None
    error: str | None = None


@dataclass
class ClockState(ClockMeasurement, Record):
    """The ntp container's last round (pid1.phases.ntp)."""

    status: ClockStatus | None = None
    mode: str | None = None  # "set" or "query"
    servers: list[str] = field(default_factory=list)
    source: str | None = None  # where the servers came from
    last_step: float | None = None
    updated: float | None = None


@dataclass
class SshState(Record):
    """dom0's SSH server, as the ssh phase found it."""

    status: SshStatus | None = None
    reason: str | None = None  # why it is not running
    listen: str | None = None
    image: str | None = None  # dom0's
    keys: int = 0  # authorized keys for root
    persistent: bool | None = None
    banner: str | None = None
    host_keys: list[str] = field(default_factory=list)  # fingerprints
    host_key_origin: str | None = None  # "new", "kept", "unknown"
    answered_in: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ReaperState(Record):
    orphans_reaped: int = 0
    children_reaped: int = 0
    children_running: int = 0
