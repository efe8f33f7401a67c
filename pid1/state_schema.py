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


class InterfaceStatus(StrEnum):
    CONFIGURED = "configured"  # its settings applied (a static address, an MTU)
    WAITING = "waiting for a lease"
    UP = "up"  # it has its address
    ABSENT = "absent"  # named in pid1.net but not there (after a bounded wait)


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


class SwarmStatus(StrEnum):
    NONE = "none"  # no swarm section in the user-data
    INVALID = "invalid"  # the section was refused (its error says why)
    WAITING = "waiting"  # for dockerd, the network or the clock
    JOINING = "joining"  # init or join asked of dockerd
    RETRYING = "retrying"  # the managers did not answer: the next try after a backoff
    REFUSED = "refused"  # dockerd or the managers said no for good (a wrong token): not retried
    PENDING = "pending"  # dockerd says pending (reconnecting to the managers)
    ACTIVE = "active"
    ERROR = "error"  # dockerd's own LocalNodeState error or locked


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
class InterfaceState(Record):
    """One interface pid1.net (or the user-data's network) names: its
    settings and the IPv4 addresses it was seen with."""

    name: str
    method: str | None = None  # dhcp, static
    status: InterfaceStatus | None = None
    addresses: list[str] = field(default_factory=list)  # "ADDR/PREFIX"
    mtu: int | None = None
    gateway: str | None = None
    default_route: bool = False  # this interface owns the default route
    warning: str | None = None


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
    # Every configured interface by name (a phase asks addresses_of(name)).
    interfaces: dict[str, InterfaceState] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # an interface absent, say

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["interfaces"] = {name: interface.to_json() for name, interface in self.interfaces.items()}
        return data

    def addresses_of(self, name: str) -> list[str]:
        """The IPv4 addresses ("ADDR/PREFIX") interface `name` has, as the
        network phase last saw them; [] for an absent or unknown one."""
        interface = self.interfaces.get(name)
        return list(interface.addresses) if interface is not None else []


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

    # the answer taken: the server as configured, and the address it answered from
    server: str | None = None
    address: str | None = None
    # seconds to add to the local clock, and the round trip that measured it
    offset: float | None = None
    delay: float | None = None
    stratum: int | None = None
    # times the client stepped the clock; when it last asked (wall clock, seconds)
    steps: int = 0
    checked: float | None = None
    error: str | None = None  # why the last round did not sync


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
class SwarmState(Record):
    """The node's place in Docker's swarm (pid1.phases.swarm)."""

    status: SwarmStatus | None = None
    wanted: str | None = None  # "init" or "join"
    node_id: str | None = None
    role: str | None = None  # "manager" or "worker"
    local_state: str | None = None  # dockerd's LocalNodeState: inactive, pending, active, error, locked
    node_addr: str | None = None
    managers: str | None = None  # reachability: a manager's own ("reachable", leader), a worker's known managers
    nodes: int | None = None  # in the cluster, as a manager sees it
    labels: str | None = None  # "applied", or why not
    replaced: int = 0  # down nodes of the same host name this node (the leader) removed
    attempts: int = 0  # init/join requests since the last success
    next_retry: float | None = None  # uptime of the next try
    error: str | None = None  # the last one, dockerd's words
    updated: float | None = None


@dataclass
class ReaperState(Record):
    orphans_reaped: int = 0
    children_reaped: int = 0
    children_running: int = 0
