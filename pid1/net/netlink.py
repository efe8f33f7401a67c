"""The network phase's netlink worker: `python -m pid1.net.netlink ...`.

A short-lived child of PID 1 (started through the reaper) that uses pyroute2
to bring `lo` and the machine's ethernet links up, optionally applies a static
address and default route, then watches netlink events (not polling) until a
link has an IPv4 address and a default route through it, or a deadline passes.
It reports on stdout as JSON lines, one event each, and exits:

    {"event": "links", "managed": [{"index": 2, "name": "eth0", ...}], "skipped": [...]}
    {"event": "static", "link": "eth0", "address": "10.0.2.15/24", "gateway": "10.0.2.2"}
    {"event": "ready", "link": "eth0", "address": "10.0.2.15", "prefixlen": 24,
     "gateway": "10.0.2.2", "valid_lft": 86400 | null, "waited": 1.93}
    {"event": "timeout", "seen": {...}}        (exit status 2)
    {"event": "error", "message": "..."}       (exit status 1)

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
    wait: bool = True
    only_lo: bool = False
    link: str | None = None  # wait on this link only
    static_address: str | None = None  # ADDR/PREFIX
    static_gateway: str | None = None


async def bring_up(ipr: Any, links: list[Link], request: Request) -> list[Link]:
    """lo and every managed link up; returns the managed links."""
    managed = [link for link in links if is_managed_link(link)]
    for link in links:
        if link.name == "lo" or (not request.only_lo and link in managed):
            await ipr.link("set", index=link.index, state="up")
    return managed


async def apply_static(ipr: Any, link: Link, address: str, gateway: str | None) -> None:
    interface = ipaddress.IPv4Interface(address)
    await ipr.addr("replace", index=link.index, address=str(interface.ip), prefixlen=interface.network.prefixlen)
    if gateway:
        await ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=link.index)


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
        if request.static_address:
            target = next((link for link in managed if link.name == request.link), managed[0] if managed else None)
            if target is None:
                emit("error", message="no ethernet link to put the static address on")
                return 1
            await apply_static(ipr, target, request.static_address, request.static_gateway)
            emit("static", link=target.name, address=request.static_address, gateway=request.static_gateway)
        if not request.wait:
            return 0
        view = View()
        async for msg in await ipr.addr("dump", family=2):
            apply_addr_msg(view, msg)
        async for msg in await ipr.route("dump", family=2):
            apply_route_msg(view, msg)
        by_index = {link.index: link for link in managed}

        def ready() -> dict[str, Any] | None:
            for index, link in by_index.items():
                if request.link and link.name != request.link:
                    continue
                found = view.ready_on(index)
                if found:
                    return {"link": link.name, **found}
            return None

        found = ready()
        try:
            async with asyncio.timeout(max(0.0, request.deadline - time.monotonic())):
                while not found:
                    async for msg in events.get():
                        kind = msg.get("event")
                        if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
                            apply_addr_msg(view, msg)
                        elif kind in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                            apply_route_msg(view, msg)
                        elif kind == "RTM_NEWLINK":
                            link = link_from_msg(msg)
                            if link.index not in by_index and is_managed_link(link):
                                # A NIC that appeared late (driver loaded after us).
                                await ipr.link("set", index=link.index, state="up")
                                by_index[link.index] = link
                                managed.append(link)
                                emit("links", managed=[asdict(x) for x in managed], skipped=[])
                    found = ready()
        except TimeoutError:
            emit(
                "timeout",
                waited=round(time.monotonic() - started, 3),
                seen={
                    "links": [link.name for link in by_index.values()],
                    "addresses": {str(k): list(v) for k, v in view.addresses.items()},
                    "default_routes": {str(k): v for k, v in view.default_routes.items()},
                },
            )
            return 2
        emit("ready", waited=round(time.monotonic() - started, 3), **found)
        return 0


def parse_args(argv: list[str]) -> Request:
    parser = argparse.ArgumentParser(prog="python -m pid1.net.netlink", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deadline", type=float, help="time.monotonic() value to give up at")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (when no --deadline)")
    parser.add_argument("--no-wait", action="store_true", help="bring links up (and apply --static), then exit")
    parser.add_argument("--only-lo", action="store_true", help="bring only lo up (pid1.net=none)")
    parser.add_argument("--link", help="wait for this link only (and put the static address on it)")
    parser.add_argument("--static", metavar="ADDR/PREFIX", help="apply this IPv4 address")
    parser.add_argument("--gateway", help="default route via this gateway (with --static)")
    args = parser.parse_args(argv)
    deadline = args.deadline if args.deadline is not None else time.monotonic() + args.timeout
    return Request(
        deadline=deadline,
        wait=not (args.no_wait or args.only_lo),
        only_lo=args.only_lo,
        link=args.link,
        static_address=args.static,
        static_gateway=args.gateway,
    )


def main(argv: list[str]) -> int:
    request = parse_args(argv)
    try:
        # A plain asyncio loop: pyroute2's async API does not work on uvloop.
        return asyncio.run(watch(request))
    except Exception as exc:  # report, do not traceback into pid1's log
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
