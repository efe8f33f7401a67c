"""The view's header: one line per state section, top of the screen.

Owns the lines for the machine (uptime, mode and why), the boot's storage,
the user-data, the network and its DHCP lease, the clock, the engine
(dockerd, containerd, Docker's TCP API) and dom0's SSH server. A section
nothing has filled in yet shows "—", or no line at all for the optional
ones (config, clock, ssh). Reads the state's dataclasses only; uses
pid1.view.text.
"""

from __future__ import annotations

import time

from pid1.state import State
from pid1.state_schema import (
    ClockState,
    ClockStatus,
    DaemonState,
    DaemonStatus,
    EngineState,
    Mode,
    NetworkState,
    NetworkStatus,
    SshState,
    SshStatus,
    StorageMode,
    UserdataState,
)
from pid1.view.text import MISSING, SEP, clean, duration, seconds_text

EPOCH_AFTER = 1e8  # a time above this is wall-clock (seconds since 1970), not uptime


def header_lines(state: State, now: float, wall: float | None = None) -> list[str]:
    first_line = f"only-docker pid1{SEP}up {duration(now)}{SEP}{clean(state.mode)}"
    if state.pid not in (0, 1):  # 0: a file that did not say
        first_line += f" (pid {state.pid})"
    if state.emergency_reason:
        first_line += f": {clean(state.emergency_reason)}"
    elif state.stop_reason and state.mode == Mode.STOPPING:
        first_line += f": {clean(state.stop_reason)}"
    wall = time.time() if wall is None else wall
    optional = (config_line(state.userdata), clock_line(state.clock))
    lines = [first_line, storage_line(state), optional[0], network_line(state.network, now, wall), optional[1]]
    lines += [dockerd_line(state.dockerd, now)]
    return [line for line in lines if line is not None] + ssh_lines(state.ssh)


def storage_line(state: State) -> str:
    st = state.storage
    if st.mode == StorageMode.RAM:
        text = "running from RAM (tmpfs, lost at power-off)"
        phase = state.phases.get("storage")
        why = ((phase.detail or "") if phase is not None else "").removeprefix("running from RAM").strip()
        if why.startswith("(") and why.endswith(")"):
            why = why[1:-1]
        if why and not st.error:
            text += f"{SEP}{clean(why)}"
    elif st.mode == StorageMode.DISK:
        text = f"disk {clean(st.device or '?')}"
        extras = [clean(v) for v in (st.fstype, st.label) if v]
        if extras:
            text += f" ({', '.join(extras)})"
        if st.preexisting:
            text += ", mounted before pid1"
    else:
        text = MISSING
    if st.error:
        text += f"{SEP}error: {clean(st.error)}"
    return f"boot:    {text}"


def config_line(ud: UserdataState) -> str | None:
    """Where the user-data came from and how it went; None without one."""
    if not ud.source and not ud.errors:
        return None
    text = f"user-data from {clean(ud.source or '?')}"
    if ud.errors:  # what needs the person's eye first, while the line has room
        return f"config:  {text}{SEP}error: {clean(ud.errors[-1])}"
    if ud.instance_id:
        text += f"{SEP}instance {clean(ud.instance_id)}"
    text += f"{SEP}{len(ud.applied)} applied"
    if ud.warnings:
        text += f", {len(ud.warnings)} warning{'s' if len(ud.warnings) > 1 else ''}"
    return f"config:  {text}"


def lease_left(net: NetworkState, lease: float, now: float, wall: float) -> float | None:
    """Seconds of lease left. The DHCP client stamps its lease with the wall
    clock (`date +%s`), which counts from 0 at boot on a machine without a
    real-time clock: a stamp that small is compared with the uptime."""
    expires = net.lease_expires
    if expires is None and net.lease_obtained is not None:
        expires = net.lease_obtained + lease
    if expires is None:
        return None
    return expires - (wall if expires > EPOCH_AFTER else now)


def network_line(net: NetworkState, now: float, wall: float) -> str:
    if net.mode is None and net.status is None:
        return f"net:     {MISSING}"
    parts = [clean(value) for value in (net.mode, net.link) if value]
    if net.address:
        prefix = f"/{net.prefixlen}" if net.prefixlen is not None and "/" not in net.address else ""
        parts.append(clean(net.address) + prefix)
    if net.status and net.status != NetworkStatus.UP:
        parts.append(clean(net.status) + (f": {clean(net.offline_reason)}" if net.offline_reason else ""))
    elif not net.address:
        parts.append("no address")
    if net.gateway:
        parts.append(f"gw {clean(net.gateway)}")
    text = " ".join(parts)
    lease = net.lease_seconds
    if lease is not None:
        left = lease_left(net, lease, now, wall)
        if left is not None and left < 0:
            text += f"{SEP}lease of {duration(lease)} expired {duration(-left)} ago"
        elif left is not None:
            text += f"{SEP}lease {duration(left)} left of {duration(lease)}"
        else:
            text += f"{SEP}lease {duration(lease)}"
    if net.dns:  # last: the least needed at a glance, the first to be cut
        text += f"{SEP}dns " + ",".join(clean(d) for d in net.dns)
    return f"net:     {text}"


def clock_line(clock: ClockState) -> str | None:
    """The clock (the ntp container's last round); None without an ntp phase."""
    if clock.status is None:
        return None
    query = clock.mode == "query"
    if clock.status == ClockStatus.SYNCED:
        server = clean(clock.server or "?")
        if clock.address and clock.address != clock.server:
            server += f" ({clean(clock.address)})"
        # query mode first: the part that must not be cut at 80 columns
        text = f"query only, not set{SEP}{server}" if query else f"synced to {server}"
        text += f"{SEP}offset {seconds_text(clock.offset)}"
        if clock.stratum is not None:
            text += f", stratum {clock.stratum}"
        if not query and clock.last_step is not None:
            text += f"{SEP}stepped {seconds_text(clock.last_step)}"
    elif clock.status == ClockStatus.UNSYNCED:
        text = "not synced" + (f": {clean(clock.error)}" if clock.error else "")
    elif clock.status == ClockStatus.STARTING:
        shown = ",".join(clean(s) for s in clock.servers) or MISSING
        text = f"asking {shown}" + (f" ({clean(clock.source)})" if clock.source else "")
    else:
        text = clean(clock.status)
    return f"clock:   {text}"


def daemon_text(d: DaemonState, now: float) -> str:
    """pid, up since or what it is doing, restarts, error: one daemon."""
    parts = [f"pid {d.pid}"] if d.pid else []
    if d.up_since is not None and d.status in (None, DaemonStatus.RUNNING):
        parts.append(f"up {duration(now - d.up_since)} (since {d.up_since:.2f})")
    elif d.status == DaemonStatus.STARTING or (d.status is None and d.pid):
        parts.append("starting, not answering yet")
    elif d.status:
        parts.append(clean(d.status) + (f" (last exit {d.last_exit})" if d.last_exit is not None else ""))
    else:
        parts.append("not running")
    parts.append(f"{d.restarts} restart{'' if d.restarts == 1 else 's'}")
    text = ", ".join(parts)
    if d.error:
        text += f"{SEP}error: {clean(d.error)}"
    return text


def dockerd_line(engine: EngineState, now: float) -> str:
    """dockerd's line, then containerd's status and Docker's TCP API beside it."""
    if engine.dockerd is None and engine.containerd is None and engine.tcp is None:
        return f"dockerd: {MISSING}"
    text = daemon_text(engine.dockerd, now) if engine.dockerd is not None else MISSING
    if engine.containerd is not None:
        restarts = engine.containerd.restarts
        text += f"{SEP}containerd {clean(engine.containerd.status or '?')}"
        text += f", {restarts} restarts" if restarts else ""
    if engine.tcp is not None:
        text += f"{SEP}tcp {clean(engine.tcp.status)}"
    return f"dockerd: {text}"


MAX_HOST_KEYS_SHOWN = 4


def fingerprint_text(line: str) -> str:
    """`256 SHA256:... root@dom0 (ED25519)` without its comment: whole within
    80 columns (a clipped fingerprint could not be checked)."""
    words = clean(line).split()
    if len(words) > 3 and words[-1].startswith("("):
        words = [*words[:2], words[-1]]
    return " ".join(words)


def ssh_lines(ssh: SshState) -> list[str]:
    """dom0's SSH server: where it listens, then each host key's fingerprint
    on a line of its own; or why there is none. [] before the ssh phase looked."""
    if ssh.status is None:
        return []
    if ssh.status != SshStatus.RUNNING:
        return [f"ssh:     {clean(ssh.reason or ssh.status)}"]
    origin = "new this boot" if ssh.host_key_origin == "new" else "kept"
    first = (f"ssh:     port {clean(ssh.listen or '?')}{SEP}{ssh.keys} key{'s' if ssh.keys != 1 else ''}"
             f"{SEP}host key {origin if ssh.host_keys else 'unknown'}")  # fmt: skip
    return [first, *(f"         {fingerprint_text(key)}" for key in ssh.host_keys[:MAX_HOST_KEYS_SHOWN])]
