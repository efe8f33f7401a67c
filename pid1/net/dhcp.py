"""The dhcp container and what it leaves for pid1: busybox `udhcpc -f`
with pid1's script (udhcpc.script, bound in), the lease file the script
writes, and /etc/resolv.conf, which is always rewritten in place (containers
bind-mount it: a bind pins the inode, a rename would break it).

Owns: dhcp_spec, where its files live (network_dir, lease_file), the link it runs on when sysfs tells it at once
(sysfs_dhcp_link), read_lease (bounded: the container is not trusted),
lease_values, resolv.conf text and writes.
May use: pid1.container_spec, pid1.untrusted, pid1.net.netlink (which links
are the machine's; it imports pyroute2 only inside the worker's functions);
the phase's context only for its config and root.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pid1.container_spec import ContainerSpec
from pid1.untrusted import read_untrusted

if TYPE_CHECKING:
    from pid1.phases import PhaseContext

DHCP_IMAGE = "pid1-dhcp:latest"
DHCP_SCRIPT = "/etc/udhcpc/default.script"
# The script ships with pid1 (it is pid1's side of the lease protocol) and is
# bound into the container: the image is plain bundled busybox.
DHCP_SCRIPT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udhcpc.script")
NET_DIR_IN_CONTAINER = "/run/pid1-net"  # the script's PID1_NET_DIR
LEASE_MAX = 16384  # a lease is a few hundred bytes
LEASE_EVENTS = ("deconfig", "bound", "renew", "leasefail", "nak")


def resolv_conf_text(dns: tuple[str, ...], domain: str = "") -> str:
    lines = [f"search {domain}"] if domain else []
    return "\n".join([*lines, *(f"nameserver {server}" for server in dns)]) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Rewrite a file keeping its inode (containers bind-mount it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def ensure_file(path: str) -> None:
    """A bind source must exist, or dockerd makes an empty directory there."""
    if not os.path.exists(path):
        write_in_place(path, "")


def network_dir(state_dir: str) -> str:
    """Where the network phase keeps the dhcp container's files (the lease,
    the events FIFO), under pid1's state directory."""
    return os.path.join(state_dir, "network")


def lease_file(net_dir: str) -> str:
    """The lease the udhcpc script writes in `net_dir` (network_dir): the
    network phase and the ntp phase (option 42) read it."""
    return os.path.join(net_dir, "lease")


def read_lease(path: str, log: Any = None) -> dict[str, str]:
    """The KEY=VALUE lease file the udhcpc script writes; {} when absent, or
    when the (unprivileged, hostile until shown otherwise) dhcp container has
    put something else there: a FIFO, a link, a huge file (said in the log)."""
    try:
        text = read_untrusted(path, LEASE_MAX).decode(errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if log is not None:
            log.warning(f"network: {path} ignored: {exc.strerror}")
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def dhcp_spec(ctx: PhaseContext, link: str, net_dir: str) -> ContainerSpec:
    return ContainerSpec(
        role="dhcp",
        images=(DHCP_IMAGE,),
        fallback_image=DHCP_IMAGE,
        # -f: foreground (the container lives as long as the lease is kept);
        # -T 1 -t 3: three discovers a second apart, then -A 3 s pause, forever.
        cmd=(
            *("udhcpc", "-f", "-i", link, "-s", DHCP_SCRIPT),
            *("-T", "1", "-t", "3", "-A", "3", "-x", f"hostname:{ctx.config.hostname}"),
        ),
        env=(f"PID1_NET_DIR={NET_DIR_IN_CONTAINER}",),
        binds=(
            f"{ctx.path('etc/resolv.conf')}:/etc/resolv.conf",
            f"{net_dir}:{NET_DIR_IN_CONTAINER}",
            f"{DHCP_SCRIPT_SOURCE}:{DHCP_SCRIPT}:ro",
        ),
        privileged=False,
        cap_add=("NET_ADMIN", "NET_RAW"),
        net_host=True,
        pid_host=False,
        uts_host=False,
        stop_timeout=2,
    )


def lease_values(lease: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """The lease file's facts for the state, when it is the lease netlink shows."""
    values: dict[str, Any] = {"lease_seconds": event.get("valid_lft")}
    if lease.get("ip") != event["address"]:
        return values
    seconds = int(lease["lease"]) if lease.get("lease", "").isdigit() else event.get("valid_lft")
    obtained = int(lease["obtained"]) if lease.get("obtained", "").isdigit() else None
    values.update(
        lease_seconds=seconds,
        lease_obtained=obtained,
        lease_expires=obtained + seconds if obtained and seconds else None,
        dns=lease.get("dns", "").split(),
        domain=lease.get("domain") or None,
        server=lease.get("serverid") or None,
        renewals=int(lease["renewals"]) if lease.get("renewals", "").isdigit() else 0,
    )
    return values


def sysfs_dhcp_link(sys_class_net: str, ours: list[tuple[int, str]]) -> str | None:
    """The machine's first physical ethernet link (lowest ifindex) as sysfs
    shows it, for the DHCP client to start without waiting for the netlink
    worker's "links" event: under emulation the worker's pyroute2 import takes
    10-15 s at nice 10 while the console and dom0 start, and udhcpc needs only
    the name (the script's deconfig brings the link up). `ours`: this network
    namespace's (ifindex, name) pairs (socket.if_nameindex()). None when
    sysfs lists other links (it is another namespace's: a test's namespace
    under the host's /sys), or has no such link: the worker's event decides.
    Only links with a device behind them are taken: a physical NIC is the
    one kind sysfs tells apart from the virtual ones without netlink."""
    from pid1.net.netlink import Link, is_managed_link

    def number(path: str) -> int:
        with open(path, "rb") as f:
            return int(f.read(32))

    try:
        names = os.listdir(sys_class_net)
        listed = {number(os.path.join(sys_class_net, name, "ifindex")): name for name in names}
    except (OSError, ValueError):
        return None
    if listed != dict(ours):
        return None
    for index, name in sorted(listed.items()):
        directory = os.path.join(sys_class_net, name)
        if not os.path.exists(os.path.join(directory, "device")):
            continue
        try:
            link_type = number(os.path.join(directory, "type"))
        except (OSError, ValueError):
            continue
        master = 1 if os.path.exists(os.path.join(directory, "master")) else None
        if is_managed_link(Link(index=index, name=name, kind=None, link_type=link_type, master=master)):
            return name
    return None
