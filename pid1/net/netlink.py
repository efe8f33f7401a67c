"""The network phase's netlink worker: `python -m pid1.net.netlink ...`.

A short-lived child of PID 1 (started through the reaper) that uses pyroute2
to bring `lo` and the machine's ethernet links up, applies what `--net`
(pid1.net's value, pid1.net.mode's parser) gives each interface (MTU, a
static address, the one default route), waits a bounded `--link-wait` for a
named interface that is not there yet, then watches netlink events (not
polling) until the interface that owns the default route has its IPv4
address (and that route, when one is to come), or a deadline passes.
It reports on stdout as JSON lines, one event each, and exits:

    {"event": "links", "managed": [{"index": 2, "name": "eth0", ...}], "skipped": [...]}
    {"event": "interface", "name": "eth1" | null, "link": "eth1", "method": "static",
     "address": "10.0.0.5/24", "gateway": null, "mtu": 9000, "default_route": false}
    {"event": "absent", "name": "eth7", "waited": 5.0, "primary": false}
    {"event": "ready", "link": "eth0", "address": "10.0.2.15", "prefixlen": 24,
     "gateway": "10.0.2.2", "valid_lft": 86400 | null, "waited": 1.93,
     "addresses": {"eth0": ["10.0.2.15/24"], "eth1": ["10.0.0.5/24"]}}
    {"event": "timeout", "seen": {...}, "why": "..."?}   (exit status 2)
    {"event": "error", "message": "..."}                  (exit status 1)

Why a child process and not a thread in PID 1: pyroute2 imported into PID 1
stays there for good (modules are never unloaded), more RSS than an idle
PID 1's budget has room for; the child pays a Python start
and the import before the links are known (both measured in
docs/benchmarks.md, "Network"). It also sidesteps the uvloop
trap: pyroute2 0.9's async API fails on uvloop ("invalid family 16") and its
sync IPRoute refuses to be created inside a running loop; the child runs
pyroute2's async API on a plain asyncio loop of its own.

Which links are "the machine's ethernet links": type ether (ARPHRD_ETHER),
not enslaved to a bridge or bond, and not a link Docker makes (bridges, and
the veth ends named veth* it creates for containers). Physical NICs have no
link kind at all; a veth with another name is accepted because a test (or a
VM host) may hand the machine one.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pid1.net.mode import Interface, Method, parse_net_mode

ARPHRD_ETHER = 1
# Link kinds that are never the machine's uplink: Docker makes bridges and
# vxlans; bonds/teams would be configured on purpose, not by DHCP on all links.
UNMANAGED_KINDS = frozenset({"bridge", "vxlan", "bond", "team", "macvlan", "ipvlan", "dummy", "tun", "tap"})
DOCKER_VETH_PREFIX = "veth"
MAIN_TABLE = 254


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: None for a physical NIC
    link_type: int  # ARPHRD_*
    master: int | None  # the bridge/bond it is enslaved to
    mac: str | None = None


def is_managed_link(link: Link) -> bool:
    """Is this one of the machine's own ethernet links (see the module doc)?"""
    if link.link_type != ARPHRD_ETHER or link.master:
        return False
    if link.kind is None:
        return True
    if link.kind in UNMANAGED_KINDS:
        return False
    if link.kind == "veth":
        return not link.name.startswith(DOCKER_VETH_PREFIX)
    return False


@dataclass
class View:
    """What netlink has told us so far: IPv4 addresses and default routes."""

    # ifindex -> {address: (prefixlen, valid_lft or None)}
    addresses: dict[int, dict[str, tuple[int, int | None]]] = field(default_factory=dict)
    # ifindex -> gateway ("" for a device route)
    default_routes: dict[int, str] = field(default_factory=dict)

    def ready_on(self, index: int) -> dict[str, Any] | None:
        addrs = self.addresses.get(index)
        if not addrs or index not in self.default_routes:
            return None
        address, (prefixlen, valid_lft) = next(iter(addrs.items()))
        return {
            "address": address,
            "prefixlen": prefixlen,
            "gateway": self.default_routes[index] or None,
            "valid_lft": valid_lft,
        }


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def link_from_msg(msg: Any) -> Link:
    return Link(
        index=msg["index"],
        name=msg.get("ifname") or f"if{msg['index']}",
        kind=msg.get(("linkinfo", "kind")),
        link_type=msg["ifi_type"],
        master=msg.get("master") or None,
        mac=msg.get("address"),
    )


INFINITY_LIFETIME = 0xFFFFFFFF


def apply_addr_msg(view: View, msg: Any) -> None:
    if msg.get("family") != 2:  # AF_INET
        return
    # Host-scope (127.0.0.1) and link-scope addresses are no uplink.
    if msg.get("scope", 0) != 0:
        return
    index = msg["index"]
    address = msg.get("address")
    if address is None:
        return
    addrs = view.addresses.setdefault(index, {})
    if msg["event"] == "RTM_DELADDR":
        addrs.pop(address, None)
        return
    cache = msg.get("cacheinfo") or {}
    valid = cache.get("ifa_valid")
    addrs[address] = (msg["prefixlen"], None if valid in (None, INFINITY_LIFETIME) else valid)


def apply_route_msg(view: View, msg: Any) -> None:
    if msg.get("family") != 2 or msg.get("dst_len") != 0:
        return
    if msg.get("table") not in (None, MAIN_TABLE):
        return
    index = msg.get("oif")
    if index is None:
        return
    if msg["event"] == "RTM_DELROUTE":
        view.default_routes.pop(index, None)
    else:
        view.default_routes[index] = msg.get("gateway") or ""


@dataclass
class Request:
    deadline: float  # time.monotonic() value (one clock for the whole machine)
    only_lo: bool = False
    interfaces: list[Interface] = field(default_factory=list)  # pid1.net's, in order
    link_wait: float = 5.0  # seconds a named interface may take to appear before it is "absent"


async def bring_up(ipr: Any, links: list[Link], request: Request) -> list[Link]:
    """lo and every managed link up; returns the managed links."""
    managed = [link for link in links if is_managed_link(link)]
    for link in links:
        if link.name == "lo" or (not request.only_lo and link in managed):
            await ipr.link("set", index=link.index, state="up")
    return managed


async def configure(ipr: Any, link: Link, interface: Interface) -> dict[str, Any]:
    """One interface's settings onto its link (up, MTU, a static address and
    its default route); the "interface" event's fields."""
    await ipr.link("set", index=link.index, state="up")
    if interface.mtu is not None:
        await ipr.link("set", index=link.index, mtu=interface.mtu)
    if interface.method == Method.STATIC and interface.address:
        address = ipaddress.IPv4Interface(interface.address)
        await ipr.addr("replace", index=link.index, address=str(address.ip), prefixlen=address.network.prefixlen)
        if interface.gateway and interface.default_route:
            await ipr.route("replace", dst="0.0.0.0/0", gateway=interface.gateway, oif=link.index)
    return {
        "name": interface.name,
        "link": link.name,
        "method": interface.method.value,
        "address": interface.address,
        "gateway": interface.gateway if interface.default_route else None,
        "mtu": interface.mtu,
        "default_route": interface.default_route,
    }


@dataclass
class Plan:
    """Which link each configured interface is, as links are seen."""

    interfaces: list[Interface]
    links: dict[int, Link] = field(default_factory=dict)  # index -> link, every link seen
    resolved: dict[int, Link] = field(default_factory=dict)  # position in interfaces -> its link
    absent: set[int] = field(default_factory=set)  # positions declared absent

    def unresolved(self) -> list[int]:
        return [n for n in range(len(self.interfaces)) if n not in self.resolved and n not in self.absent]

    def match(self, managed: list[Link]) -> list[int]:
        """Resolve what the links seen allow; the positions newly resolved."""
        named = {i.name for i in self.interfaces if i.name}
        taken = {link.index for link in self.resolved.values()}
        found = []
        for n in self.unresolved():
            wanted = self.interfaces[n].name
            if wanted is None:  # the first ethernet link no other entry names
                link = next((x for x in managed if x.name not in named and x.index not in taken), None)
            else:
                link = next((x for x in self.links.values() if x.name == wanted), None)
            if link is not None:
                self.resolved[n] = link
                taken.add(link.index)
                found.append(n)
        return found


def link_addresses(view: View, links: dict[int, Link]) -> dict[str, list[str]]:
    return {links[i].name: [f"{a}/{p}" for a, (p, _) in addrs.items()] for i, addrs in view.addresses.items()
            if i in links and addrs}  # fmt: skip


async def watch(request: Request) -> int:
    # pyroute2 is imported here, in the child, never in PID 1 (see the module doc).
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK

    started = time.monotonic()
    async with AsyncIPRoute() as events, AsyncIPRoute() as ipr:
        # Subscribe before the first dump: nothing can happen unseen in between.
        await events.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
        links = [link_from_msg(m) async for m in await ipr.link("dump")]
        managed = await bring_up(ipr, links, request)
        emit(
            "links",
            managed=[asdict(link) for link in managed],
            skipped=[link.name for link in links if link not in managed and link.name != "lo"],
        )
        if request.only_lo:
            return 0
        plan = Plan(request.interfaces, links={link.index: link for link in links})
        primary = next((n for n, i in enumerate(plan.interfaces) if i.default_route), 0)

        async def resolve() -> None:
            for n in plan.match(managed):
                emit("interface", **await configure(ipr, plan.resolved[n], plan.interfaces[n]))

        await resolve()
        view = View()
        async for msg in await ipr.addr("dump", family=2):
            apply_addr_msg(view, msg)
        async for msg in await ipr.route("dump", family=2):
            apply_route_msg(view, msg)

        def ready() -> dict[str, Any] | None:
            """The primary's address (and default route, when one is to come)."""
            if primary not in plan.resolved or plan.unresolved():
                return None
            interface, link = plan.interfaces[primary], plan.resolved[primary]
            if interface.method == Method.STATIC and not interface.gateway:
                address = ipaddress.IPv4Interface(interface.address or "")
                return {"link": link.name, "address": str(address.ip), "prefixlen": address.network.prefixlen,
                        "gateway": None, "valid_lft": None}  # fmt: skip
            # Unnamed DHCP: whichever managed link gets the lease (as before names).
            candidates = managed if interface.name is None and interface.method == Method.DHCP else [link]
            for candidate in candidates:
                found = view.ready_on(candidate.index)
                if found:
                    return {"link": candidate.name, **found}
            return None

        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def read_events() -> None:
            while True:
                async for msg in events.get():
                    queue.put_nowait(msg)

        reader = asyncio.create_task(read_events())
        link_deadline = min(request.deadline, started + request.link_wait)
        try:
            while (found := ready()) is None:
                now = time.monotonic()
                if now >= request.deadline:
                    emit("timeout", waited=round(now - started, 3), seen={
                        "links": [link.name for link in managed],
                        "addresses": {str(k): list(v) for k, v in view.addresses.items()},
                        "default_routes": {str(k): v for k, v in view.default_routes.items()},
                    })  # fmt: skip
                    return 2
                # A named interface gets the link wait; the unnamed first link, the whole deadline.
                missing = [n for n in plan.unresolved() if plan.interfaces[n].name]
                if missing and now >= link_deadline:
                    for n in missing:
                        plan.absent.add(n)
                        emit("absent", name=plan.interfaces[n].label(), waited=round(now - started, 3),
                             primary=n == primary)  # fmt: skip
                    if primary in plan.absent:
                        emit("timeout", waited=round(now - started, 3),
                             why=f"{plan.interfaces[primary].label()} is absent")  # fmt: skip
                        return 2
                    continue
                wake = link_deadline if missing else request.deadline
                try:
                    msg = await asyncio.wait_for(queue.get(), max(0.0, wake - now))
                except TimeoutError:
                    continue
                kind = msg.get("event")
                if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
                    apply_addr_msg(view, msg)
                elif kind in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    apply_route_msg(view, msg)
                elif kind == "RTM_NEWLINK":
                    link = link_from_msg(msg)
                    new = link.index not in plan.links
                    plan.links[link.index] = link
                    if new and is_managed_link(link):
                        # A NIC that appeared late (driver loaded after us).
                        await ipr.link("set", index=link.index, state="up")
                        managed.append(link)
                        emit("links", managed=[asdict(x) for x in managed], skipped=[])
                    if plan.unresolved():  # a new link, or one renamed (udev) to a name we wait for
                        await resolve()
        finally:
            reader.cancel()
        emit("ready", waited=round(time.monotonic() - started, 3), addresses=link_addresses(view, plan.links),
             **found)  # fmt: skip
        return 0


def parse_args(argv: list[str]) -> Request:
    parser = argparse.ArgumentParser(prog="python -m pid1.net.netlink", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deadline", type=float, help="time.monotonic() value to give up at")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (when no --deadline)")
    parser.add_argument("--only-lo", action="store_true", help="bring only lo up (pid1.net=none)")
    parser.add_argument("--net", default="dhcp", help="pid1.net's value (pid1.net.mode): what each interface gets")
    parser.add_argument("--link-wait", type=float, default=5.0, help="seconds a named interface may take to appear")
    args = parser.parse_args(argv)
    deadline = args.deadline if args.deadline is not None else time.monotonic() + args.timeout
    mode = parse_net_mode(args.net)
    return Request(
        deadline=deadline,
        only_lo=args.only_lo or mode.kind == "none",
        interfaces=list(mode.interfaces),
        link_wait=args.link_wait,
    )


def main(argv: list[str]) -> int:
    try:
        request = parse_args(argv)
        # A plain asyncio loop: pyroute2's async API does not work on uvloop.
        return asyncio.run(watch(request))
    except Exception as exc:  # report, do not traceback into pid1's log
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
