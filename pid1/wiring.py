"""The wiring between phases: typed, named slots the core owns, and the
tables every phase may add to (mounts, restart actions).

A slot holds one thing a phase publishes for others: the docker client, the
system-container supervisor, the console bridge, the storage result... Each
slot names the built-in phase that fills it. A phase declares what it fills
and what it uses (`Phase(..., fills=(Wiring.docker,), uses=(Wiring.userdata,))`),
and `check_wiring` (called by select_phases, so at start-up) refuses a DAG
in which a phase uses a slot that no phase among its needs (directly or
through theirs) fills: an undeclared need cannot work by timing.

At run time each phase sees the slots through its own view
(`Wiring.view(phase)`): reading a slot it did not declare, or writing one it
does not fill, raises UndeclaredSlot; reading a slot nobody filled (yet)
raises UnfilledSlot naming the phase that fills it. `wiring.maybe(slot)` is
the explicit "None when unfilled" read, for what an optional phase may have
failed to provide.

Stdlib only, and the slot types under TYPE_CHECKING: importing this costs
nothing at boot.

Owns: Slot, Wiring, the mount table and the restart registry. May use: the
standard library (the slots' types are imported for annotations only).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from pid1.blockdev import LabelledDevice, Scan
    from pid1.console.bridge import ConsoleBridge
    from pid1.engine.client import DockerClient
    from pid1.engine.daemon import Daemon
    from pid1.engine.system_containers import SystemContainers
    from pid1.kmod import ModuleIndex
    from pid1.net.addresses import InterfaceAddresses
    from pid1.phases import Phase
    from pid1.phases.network import NetworkPhase
    from pid1.phases.ntp import Clock
    from pid1.phases.userdata import Applied
    from pid1.phases.userdata_volume import VolumeSource
    from pid1.state_schema import StorageMode

T = TypeVar("T")


class UndeclaredSlot(RuntimeError):
    """A phase read a slot it did not declare, or wrote one it does not fill."""


class UnfilledSlot(LookupError):
    """A slot was read before (or without) the phase that fills it."""


class Slot(Generic[T]):
    """One named, typed value of the wiring (a descriptor on Wiring)."""

    def __init__(self, filled_by: str, doc: str) -> None:
        self.filled_by = filled_by  # the built-in phase that fills it
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name}, filled by {self.filled_by})"

    @overload
    def __get__(self, obj: None, owner: type) -> Slot[T]: ...
    @overload
    def __get__(self, obj: Wiring, owner: type) -> T: ...
    def __get__(self, obj: Wiring | None, owner: type) -> Slot[T] | T:
        if obj is None:
            return self
        obj.check_read(self)
        try:
            return obj.values[self.name]
        except KeyError:
            raise UnfilledSlot(
                f"slot {self.name} is not filled: the {self.filled_by} phase fills it "
                f"(it failed, or has not run yet){obj.reader_note()}"
            ) from None

    def __set__(self, obj: Wiring, value: T) -> None:
        obj.check_write(self)
        obj.values[self.name] = value


@dataclass
class StorageResult:
    """What the storage phase found and did."""

    mode: StorageMode
    # The disk pid1 mounted, and where (None when it mounted a tmpfs, or
    # found the data root mounted already).
    device: LabelledDevice | None = None
    target: str | None = None
    # Called (on the loop) when the mounted DOCKER disk goes away, e.g. to
    # end the boot logs' writes to it.
    when_disk_gone: list[Callable[[], None]] = field(default_factory=list)


class Wiring:
    """The slots. One instance per boot, owned by the supervisor; each phase
    gets a view of it (`view(phase)`) that enforces its declarations."""

    # --- the engine -------------------------------------------------------------------
    containerd: Slot[Daemon] = Slot("containerd", "the containerd Daemon pid1 keeps running")
    dockerd: Slot[Daemon] = Slot("dockerd", "the dockerd Daemon (`.up` is set while it answers)")
    docker: Slot[DockerClient] = Slot("dockerd", "the Docker API client on pid1.docker_socket")
    system_containers: Slot[SystemContainers] = Slot("dockerd", "the system-container supervisor (ensure a spec)")
    # --- the console ----------------------------------------------------------------
    console_bridge: Slot[ConsoleBridge] = Slot("console_tty", "the console terminals' bridge to the console container")
    # --- published results ----------------------------------------------------------------
    module_index: Slot[ModuleIndex] = Slot("modules", "the modules.* index the modules phase read")
    disk_drivers_loaded_at: Slot[float] = Slot("modules", "time.monotonic() when the disk drivers were loaded")
    block_scan: Slot[Scan] = Slot("disks", "the one scan of the block devices' superblocks")
    volume_userdata: Slot[VolumeSource] = Slot("userdata_volume", "the user-data volume's files, read before storage")
    formatted_disks: Slot[list[LabelledDevice]] = Slot("autoformat", "the blank devices autoformat made DOCKER")
    boot2docker_files: Slot[dict[str, bytes]] = Slot("autoformat", "the files of a formatted disk's userdata.tar")
    storage: Slot[StorageResult] = Slot(
        "storage", "the storage mode, the disk mounted, and what to call when the disk goes away"
    )
    userdata: Slot[Applied] = Slot("userdata", "what the user-data gave the later phases")
    clock: Slot[Clock] = Slot("ntp", "the clock's state: `synced` is set once it is right (milestone clock synced)")
    network_up: Slot[asyncio.Event] = Slot("network", "set while the network is up, whenever that comes")
    interface_addresses: Slot[InterfaceAddresses] = Slot(
        "network", "each configured interface's IPv4 addresses, and a bounded wait for one to have any"
    )
    # --- a phase's own memory across its retries --------------------------------------------
    network_attempt: Slot[NetworkPhase] = Slot("network", "the network phase's latest attempt (lease events go to it)")

    def __init__(self, values: dict[str, Any] | None = None, reader: Phase | None = None) -> None:
        self.values: dict[str, Any] = {} if values is None else values
        self.reader = reader  # None: the core's own view, which may read everything and fill nothing

    def view(self, phase: Phase) -> Wiring:
        """The same slots, as `phase` may use them."""
        return Wiring(self.values, phase)

    def maybe(self, slot: Slot[T]) -> T | None:
        """The slot's value, or None when it is not filled (an optional phase
        failed, or found nothing to publish)."""
        self.check_read(slot)
        return self.values.get(slot.name)

    def check_read(self, slot: Slot[Any]) -> None:
        if self.reader is not None and slot not in self.reader.uses and slot not in self.reader.fills:
            raise UndeclaredSlot(
                f"phase {self.reader.name} reads slot {slot.name} but does not declare it: "
                f"add uses=(Wiring.{slot.name},) and a need on the phase that fills it ({slot.filled_by})"
            )

    def check_write(self, slot: Slot[Any]) -> None:
        if self.reader is None or slot not in self.reader.fills:
            who = f"phase {self.reader.name}" if self.reader is not None else "the core"
            raise UndeclaredSlot(f"{who} writes slot {slot.name} but does not fill it: add fills=(Wiring.{slot.name},)")

    def reader_note(self) -> str:
        return f"; read by phase {self.reader.name}" if self.reader is not None else ""


def slots() -> list[Slot[Any]]:
    """Every slot of the wiring, in the order Wiring lists them."""
    return [value for value in vars(Wiring).values() if isinstance(value, Slot)]


def check_wiring(phases: dict[str, Phase]) -> list[str]:
    """Problems with the phases' slot declarations: a used slot that no phase
    among the user's needs (transitively) fills. Empty when the DAG is sound."""
    problems: list[str] = []
    fillers: dict[Slot[Any], list[str]] = {}
    for phase in phases.values():
        for slot in phase.fills:
            fillers.setdefault(slot, []).append(phase.name)
    for phase in phases.values():
        upstream = needed_by(phase.name, phases)
        for slot in phase.uses:
            if slot in phase.fills:
                continue
            found = fillers.get(slot, [])
            if not any(name in upstream for name in found):
                filled = ", ".join(found) if found else f"nobody here (the built-in filler is {slot.filled_by})"
                problems.append(
                    f"phase {phase.name} uses slot {slot.name}, filled by {filled}, "
                    "but does not need that phase (directly or through its needs)"
                )
    return problems


def needed_by(name: str, phases: dict[str, Phase]) -> set[str]:
    """Every phase `name` needs, directly or through its needs."""
    seen: set[str] = set()
    stack = list(phases[name].needs)
    while stack:
        need = stack.pop()
        if need in seen or need not in phases:
            continue
        seen.add(need)
        stack.extend(phases[need].needs)
    return seen


# --- the core's tables ----------------------------------------------------------------------
class MountTable:
    """What pid1 mounted, in order: the stop unmounts it last first. Phases
    add to it from worker threads (a disk mount runs off the loop), hence
    the lock."""

    def __init__(self, targets: Iterable[str] = ()) -> None:
        self._targets = list(targets)
        self._lock = threading.Lock()

    def add(self, target: str) -> None:
        with self._lock:
            self._targets.append(target)

    def targets(self) -> list[str]:
        """A copy, in mount order."""
        with self._lock:
            return list(self._targets)


RestartAction = Callable[[], Awaitable[None]]


class RestartRegistry:
    """The restart actions phases register (`restart dockerd` on the control
    channel calls the one named "dockerd"); looked up when a command comes,
    so a phase may register after the channel opened."""

    def __init__(self) -> None:
        self._actions: dict[str, RestartAction] = {}

    def register(self, name: str, action: RestartAction) -> None:
        self._actions[name] = action

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def snapshot(self) -> dict[str, RestartAction]:
        return dict(self._actions)
