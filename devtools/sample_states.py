"""Typical supervisor states, built with pid1's own State dataclasses and
serialised the way state.json is: for the view and plot tests, and the
frame cost bench/idle.py measures."""

from __future__ import annotations

import json
from typing import Any

from pid1 import state_schema as schema
from pid1.state import LogLine, State

# The real boot's phases, in DAG order, with (start, duration) in seconds of uptime.
BOOT = [
    ("devices", [], 4.10, 0.012),
    ("mounts", ["devices"], 4.12, 0.020),
    ("hostname", ["mounts"], 4.14, 0.002),
    ("modules", ["mounts"], 4.14, 0.760),
    ("vt2", ["mounts"], 4.14, 0.004),
    ("control", ["mounts"], 4.14, 0.001),
    ("console_tty", ["mounts"], 4.15, 0.003),
    ("storage", ["modules"], 4.90, 0.150),
    ("dockerd", ["storage"], 5.05, 4.150),
    ("images", ["dockerd"], 9.20, 2.000),
    ("network", ["dockerd"], 9.20, 2.500),
    ("dom0", ["images"], 11.20, 1.100),
    ("console", ["images", "network"], 11.70, 0.900),
]
NOW_RUNNING = 300.0
DISK = schema.StorageState(mode=schema.StorageMode.DISK, device="/dev/vda", fstype="ext4", label="DOCKER")
WALL_RUNNING = 1_800_000_000.0  # the wall clock at NOW_RUNNING (the DHCP lease is stamped with it)


def boot_state(upto: float | None) -> State:
    """The boot as it stood at uptime `upto` (None: finished)."""
    state = State(pid=1, booted_at=4.1)
    for name, needs, start, took in BOOT:
        record = schema.PhaseState(name=name, needs=needs, required=name not in ("vt2", "control", "console_tty"))
        if upto is None or start + took <= upto:
            record.status = schema.PhaseStatus.DONE
            record.started, record.ended, record.duration = start, start + took, took
            record.attempts = 1
        elif start <= upto:
            record.status, record.started, record.attempts = schema.PhaseStatus.RUNNING, start, 1
        state.phases[name] = record
    state.milestones = {"pid1 started": 4.10, "dockerd answering": 9.20, "console started": 12.60}
    for i in range(120):
        level = ("info", "notice", "warning", "error", "debug")[i % 5]
        state.log.append(LogLine(time=4.1 + i * 0.07, level=level, message=f"log line number {i} at level {level}"))
    return state


def booting() -> dict[str, Any]:
    state = boot_state(upto=7.0)
    state.mode = schema.Mode.BOOTING
    state.storage = DISK
    state.dockerd = schema.EngineState(
        containerd=schema.DaemonState(pid=230, status=schema.DaemonStatus.RUNNING, up_since=5.1),
        dockerd=schema.DaemonState(pid=231, status=schema.DaemonStatus.STARTING),
    )
    return roundtrip(state)


def running_state() -> State:
    state = boot_state(upto=None)
    state.mode = schema.Mode.RUNNING
    state.storage = DISK
    # what the network phase records (the lease stamps are `date +%s` in the dhcp container)
    obtained = int(WALL_RUNNING - (NOW_RUNNING - 11.7))
    state.network = schema.NetworkState(
        mode="dhcp",
        status=schema.NetworkStatus.UP,
        link="eth0",
        address="10.0.2.15",
        prefixlen=24,
        gateway="10.0.2.2",
        dns=["10.0.2.3"],
        lease_seconds=86400,
        lease_obtained=obtained,
        lease_expires=obtained + 86400,
    )
    state.dockerd = schema.EngineState(
        containerd=schema.DaemonState(pid=230, status=schema.DaemonStatus.RUNNING, up_since=5.1),
        dockerd=schema.DaemonState(pid=231, status=schema.DaemonStatus.RUNNING, up_since=9.2),
    )
    state.containers = {
        "dhcp": schema.ContainerState(
            role="dhcp",
            name="pid1-dhcp",
            image="dhcp:bundled",
            image_reason="bundled",
            status=schema.ContainerStatus.RUNNING,
            up_since=9.3,
        ),
        "dom0": schema.ContainerState(
            role="dom0",
            name="pid1-dom0",
            image="dom0-image:latest",
            image_reason="tag dom0-image:latest",
            container_id="4f1c2d3e4b5a69788796a5b4",
            status=schema.ContainerStatus.RUNNING,
            up_since=12.3,
        ),
        "console": schema.ContainerState(
            role="console",
            name="pid1-console",
            image="console-image:latest",
            image_reason="tag console-image:latest",
            container_id="9a8b7c6d5e4f30211203f4e5",
            status=schema.ContainerStatus.RUNNING,
            up_since=12.6,
        ),
    }
    return state


def running() -> dict[str, Any]:
    return roundtrip(running_state())


def crash_looping_console() -> dict[str, Any]:
    state = running_state()
    state.containers["console"].update(
        status=schema.ContainerStatus.BACKOFF,
        up_since=None,
        restarts=7,
        failures_in_row=7,
        next_retry=NOW_RUNNING + 16,
        last_exit=127,
        image="busybox:latest",
        image_reason="bundled fallback",
        fallback_reason="console-image:latest exited 127 seven times in a row",
    )
    return roundtrip(state)


def ram_mode() -> dict[str, Any]:
    state = running_state()
    # what the storage phase records when no disk is labelled DOCKER
    state.storage = schema.StorageState(
        mode=schema.StorageMode.RAM, device="tmpfs", fstype="tmpfs", target="/var/lib/docker", preexisting=False
    )
    why = "no disk labelled DOCKER (4 block devices checked, waited 1.0 s)"
    state.phases["storage"].detail = f"running from RAM ({why})"
    return roundtrip(state)


def offline() -> dict[str, Any]:
    state = running_state()
    state.network = schema.NetworkState(
        mode="dhcp",
        status=schema.NetworkStatus.OFFLINE,
        link="eth0",
        offline_reason="no lease within 15 s",
        waited=15.0,
    )
    state.containers.pop("dhcp")
    return roundtrip(state)


def roundtrip(state: State) -> dict[str, Any]:
    return json.loads(json.dumps(state.to_json(), default=str))


ALL = {
    "booting": (booting, 7.0),
    "running": (running, NOW_RUNNING),
    "crash_looping_console": (crash_looping_console, NOW_RUNNING),
    "ram_mode": (ram_mode, NOW_RUNNING),
    "offline": (offline, NOW_RUNNING),
}
