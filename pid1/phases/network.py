"""network: lo and the ethernet links up, then DHCP, a static address, or
nothing, on each interface pid1.net names (docs/network.md says what each
value does). Needs `images` (the pid1-dhcp image, the system containers)
and `console`, which a DHCP client beside it would slow (docs/decisions.md).

The netlink work (links up, MTUs, static addresses, the default route on its
owner, the wait for an IPv4 address and that route) runs in a short-lived
child, `python -m pid1.net.netlink` (see that module for why it is not a
thread), whose JSON-line events this phase reads (pid1.net.worker). A DHCP
interface gets a system container running busybox udhcpc (pid1.net.dhcp):
`dhcp` for the route owner, started as soon as its link is known (from
sysfs at once), `dhcp-LINK` for another, whose script leaves the route and
DNS alone. The `network-lease` service reads the scripts' events FIFO and
keeps the state's lease current after the phase: renewals, a lease that
comes after the phase went on offline ("network up" then), a lost one.

The phase succeeds when the child reports the route owner's address (an
event, not a poll), or after `pid1.net_timeout` seconds, offline: the DHCP
client keeps trying, and a child too slow for the deadline is followed, not
killed, so its late settings still apply. /etc/resolv.conf, bound into the
dhcp container, dom0 and the console, is rewritten in place (a bind pins the inode).

Owns: NetworkPhase (the state's `network` section, the `network-lease`
service), the slots network_up, network_attempt and interface_addresses.
May use: pid1.net, pid1.linux.fifo, the system-container supervisor's slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pid1.linux.fifo import EventFifo, ensure_fifo
from pid1.net.addresses import InterfaceAddresses
from pid1.net.dhcp import (
    LEASE_EVENTS,
    dhcp_spec,
    ensure_file,
    lease_file,
    lease_values,
    network_dir,
    read_lease,
    resolv_conf_text,
    sysfs_dhcp_link,
    write_in_place,
)
from pid1.net.mode import Method, NetMode, parse_net_mode
from pid1.net.worker import TIMED_OUT, WORKER_GRACE, WORKER_LATE_LIMIT, Worker, worker_args
from pid1.phases import Phase, PhaseContext
from pid1.state import uptime
from pid1.state_schema import InterfaceState, InterfaceStatus, NetworkState, NetworkStatus
from pid1.wiring import Wiring

LEASE_SERVICE = "network-lease"


@dataclass
class NetworkPhase:
    ctx: PhaseContext
    mode: NetMode
    net_dir: str
    started: float = 0.0
    dhcp_task: asyncio.Task | None = None
    dhcp_link: str | None = None
    extra_tasks: list[asyncio.Task] = field(default_factory=list)  # other DHCP interfaces' containers, a late worker
    finished: bool = False  # the phase has returned (up or offline)
    # Set while the network is up (an address and a default route), whenever
    # that comes: a lease after the phase went on offline sets it too.
    up: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def network(self) -> NetworkState:
        return self.ctx.state.network

    def publish(self, **values: Any) -> None:
        self.network.update(**values)
        if "address" in values:
            self.follow_primary()
        self.interfaces_changed()
        if "status" in values:
            (self.up.set if values["status"] == NetworkStatus.UP else self.up.clear)()
        self.ctx.store.changed()

    def interfaces_changed(self) -> None:
        addresses = self.ctx.wiring.maybe(Wiring.interface_addresses)
        if addresses is not None:
            addresses.changed()

    def follow_primary(self) -> None:
        """The default route's interface in `interfaces` follows the lease."""
        network = self.network
        interface = network.interfaces.get(network.link or "")
        if interface is None or not interface.default_route:
            return
        if network.address:
            interface.update(addresses=[f"{network.address}/{network.prefixlen}"], status=InterfaceStatus.UP)
        else:
            interface.update(addresses=[], status=InterfaceStatus.WAITING)

    def on_interface(self, event: dict[str, Any]) -> None:
        """One configured interface found and its settings applied (the child's event)."""
        link, method = event["link"], event.get("method")
        self.network.interfaces[link] = InterfaceState(
            name=link,
            method=method,
            status=InterfaceStatus.WAITING if method == Method.DHCP else InterfaceStatus.CONFIGURED,
            addresses=[event["address"]] if event.get("address") else [],
            mtu=event.get("mtu"),
            gateway=event.get("gateway"),
            default_route=bool(event.get("default_route")),
        )
        mtu = f", mtu {event['mtu']}" if event.get("mtu") else ""
        self.ctx.log.info(f"network: {link}: {method} {event.get('address') or ''}{mtu}"
                          + (" (default route)" if event.get("default_route") else ""))  # fmt: skip
        if method == Method.DHCP and event.get("default_route"):
            if self.dhcp_task is None:
                self.start_dhcp(link)
        elif method == Method.DHCP:
            self.start_extra_dhcp(link)
        elif event.get("default_route"):
            self.publish(link=link)
        else:
            self.interfaces_changed()
            self.ctx.store.changed()

    def on_absent(self, event: dict[str, Any]) -> None:
        name = str(event.get("name"))
        warning = f"{name} is absent (not there after {event.get('waited')} s): its settings are not applied"
        self.network.interfaces[name] = InterfaceState(name=name, status=InterfaceStatus.ABSENT, warning=warning)
        self.network.warnings.append(warning)
        self.ctx.log.warning(f"network: {warning}")
        self.interfaces_changed()
        self.ctx.store.changed()

    def start_dhcp_container(self, link: str, default_route: bool) -> asyncio.Task | None:
        """udhcpc on `link` in its system container, handed to the supervisor in
        the background (the worker's events keep coming meanwhile); the route
        owner's is `dhcp`, another's `dhcp-LINK`, whose script leaves the
        route and DNS alone. None when there is no supervisor."""
        ctx = self.ctx
        supervisor = ctx.wiring.maybe(Wiring.system_containers)
        if supervisor is None:
            ctx.log.error(f"network: no system-container supervisor (dockerd phase missing): no DHCP client on {link}")
            return None
        ensure_file(ctx.path("etc/resolv.conf"))
        os.makedirs(self.net_dir, exist_ok=True)
        self.watch_lease_events()
        spec = dhcp_spec(ctx, link, self.net_dir, default_route=default_route)
        ctx.log.info(f"network: DHCP on {link} (udhcpc in the {spec.role} container"
                     + ("" if default_route else ", no default route") + ")")  # fmt: skip
        task = asyncio.get_running_loop().create_task(supervisor.ensure(spec))

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                ctx.log.error(f"network: the {spec.role} container could not be started: {task.exception()!r}")

        task.add_done_callback(done)
        return task

    def start_extra_dhcp(self, link: str) -> None:
        if (task := self.start_dhcp_container(link, default_route=False)) is not None:
            self.extra_tasks.append(task)

    def start_dhcp(self, link: str) -> None:
        self.dhcp_link = link
        if (task := self.start_dhcp_container(link, default_route=True)) is not None:
            self.publish(link=link, status=NetworkStatus.WAITING)
            self.dhcp_task = task

    def watch_lease_events(self) -> None:
        """Start the network-lease service (once: a retried phase reuses it)."""
        first = self.ctx.wiring.maybe(Wiring.network_attempt) is None
        self.ctx.wiring.network_attempt = self  # the service reports to the latest attempt
        if not first:
            return
        path = os.path.join(self.net_dir, "events")
        ensure_fifo(path)  # now: the dhcp container's script may write to it soon

        async def service() -> None:
            fifo = EventFifo(path, LEASE_EVENTS)
            try:
                async with contextlib.aclosing(fifo.events()) as events:
                    async for word in events:
                        self.ctx.wiring.network_attempt.on_lease_event(word)
            finally:
                fifo.close()

        self.ctx.start_service(LEASE_SERVICE, service)

    def on_extra_lease(self) -> None:
        """Another DHCP interface's lease changed: each one's state from its lease file."""
        for name, interface in self.network.interfaces.items():
            if interface.method != Method.DHCP or interface.default_route:
                continue
            lease = read_lease(lease_file(self.net_dir, name), self.ctx.log)
            prefix = lease.get("prefixlen", "")
            addresses = [f"{lease['ip']}/{prefix}"] if lease.get("ip") and prefix.isdigit() else []
            if addresses != interface.addresses:
                self.ctx.log.info(
                    f"network: {name}: {addresses[0] if addresses else 'lease lost'} (DHCP, no default route)"
                )
                interface.update(
                    addresses=addresses, status=InterfaceStatus.UP if addresses else InterfaceStatus.WAITING
                )
        self.interfaces_changed()
        self.ctx.store.changed()

    def on_lease_event(self, word: str) -> None:
        """A udhcpc event, after the script has applied it."""
        network, log = self.network, self.ctx.log
        if word == "interface":
            self.on_extra_lease()
        elif word in ("bound", "renew"):
            lease = read_lease(lease_file(self.net_dir), self.ctx.log)
            if not lease.get("ip"):
                return
            values = lease_values(lease, {"address": lease["ip"], "valid_lft": None})
            values.update(address=lease["ip"], gateway=lease.get("router") or None)
            if lease.get("prefixlen", "").isdigit():
                values["prefixlen"] = int(lease["prefixlen"])
            if network.status == NetworkStatus.UP:
                changed = network.address != lease["ip"]
                self.publish(**values)
                if changed:
                    log.notice(f"network up {lease['ip']} (a new address)")
                elif word == "renew":
                    log.info(f"network: lease renewed ({values.get('renewals')}), {values.get('lease_seconds')} s")
            elif self.finished:
                # The phase went on offline, or the lease was lost: the script
                # has applied this lease (address, route, DNS) before writing the event.
                self.publish(status=NetworkStatus.UP, lease_event=word, **values)
                self.ctx.state.milestones.setdefault("network up", round(uptime(), 3))
                log.notice(f"network up {lease['ip']}")
            else:
                self.publish(lease_event=word, **values)  # the phase decides "up" on the netlink event
        elif word == "deconfig":
            if network.status == NetworkStatus.UP:
                log.warning(f"network: lease on {network.link} lost (udhcpc deconfigured it)")
                self.publish(status=NetworkStatus.WAITING, address=None, gateway=None, lease_event=word)
        elif network.lease_event != word:
            log.info(f"network: DHCP {word} on {network.link}")  # once per streak, not every retry
            self.publish(lease_event=word)

    def on_links(self, event: dict[str, Any]) -> None:
        if self.mode.kind == "none":
            return
        names = [link["name"] for link in event.get("managed", [])]
        self.publish(links=names, skipped_links=event.get("skipped", []))
        # The DHCP client starts on the child's "interface" event, which names its link.
        if not names:
            self.ctx.log.warning("network: no ethernet link yet; waiting for one to appear")

    def on_ready(self, event: dict[str, Any]) -> str:
        address = event["address"]
        values: dict[str, Any] = {
            "status": NetworkStatus.UP,
            "link": event["link"],
            "address": address,
            "prefixlen": event["prefixlen"],
            "gateway": event.get("gateway"),
            "waited": round(uptime() - self.started, 3),
        }
        if self.mode.kind == "static":
            values["dns"] = list(self.mode.dns)
        else:
            values.update(lease_values(read_lease(lease_file(self.net_dir), self.ctx.log), event))
        for link, addresses in (event.get("addresses") or {}).items():
            interface = self.network.interfaces.get(link)
            if interface is not None and addresses:
                interface.update(addresses=list(addresses), status=InterfaceStatus.UP)
        self.publish(**values)
        self.ctx.log.milestone("network up", str(address))
        lease = f", lease {values['lease_seconds']} s" if values.get("lease_seconds") else ""
        via = f"via {event['gateway']}" if event.get("gateway") else "(no gateway)"
        more = f", {len(self.network.interfaces) - 1} more interface(s)" if len(self.network.interfaces) > 1 else ""
        return f"{self.mode.kind}: {address}/{event['prefixlen']} on {event['link']} {via}{lease}{more}"

    def offline(self, why: str) -> str:
        network = self.network
        if network.address and network.lease_event in ("bound", "renew"):
            # The lease came and its script applied it (address, route, DNS),
            # but the netlink child did not say so in time (a slow machine):
            # the lease is the answer, or the state would stay offline until
            # the next renewal.
            self.publish(status=NetworkStatus.UP, waited=round(uptime() - self.started, 3))
            self.ctx.log.milestone("network up", str(network.address))
            self.ctx.log.info(f"network: up from the lease on {network.link} ({why})")
            return f"dhcp: {network.address} on {network.link} (the lease; {why})"
        self.publish(status=NetworkStatus.OFFLINE, offline_reason=why, waited=round(uptime() - self.started, 3))
        later = " (the DHCP client keeps trying)" if self.dhcp_task is not None else ""
        self.ctx.log.warning(f"network: {why}; going on offline{later}")
        return f"offline: {why}"

    def handle(self, event: dict[str, Any]) -> str | None:
        """One worker event; returns the phase's result when it is decided."""
        kind = event.get("event")
        if kind == "links":
            self.on_links(event)
        elif kind == "interface":
            self.on_interface(event)
        elif kind == "absent":
            self.on_absent(event)
        elif kind == "ready":
            return self.on_ready(event)
        elif kind == "timeout":
            if event.get("why"):
                return self.offline(str(event["why"]))
            self.ctx.log.info(f"network: netlink saw {json.dumps(event.get('seen'))}")
            if self.mode.kind == "dhcp" and self.dhcp_link is None:
                return self.offline(f"no ethernet link after {self.ctx.config.net_timeout:g} s")
            return self.offline(f"no IPv4 address and default route after {self.ctx.config.net_timeout:g} s")
        elif kind == "error":
            return self.offline(f"netlink worker: {event.get('message')}")
        return None

    async def follow_late_worker(self, worker: Worker) -> None:
        """A worker too slow for the phase (a loaded machine) still applies
        the interfaces' settings when it gets to them: what it reports then
        reaches the state, and a late `ready` brings the network up."""
        async with contextlib.aclosing(worker.events(time.monotonic() + WORKER_LATE_LIMIT)) as events:
            async for event in events:
                kind = event.get("event")
                if kind in ("links", "interface", "absent"):
                    self.handle(event)
                elif kind == "ready" and self.network.status != NetworkStatus.UP:
                    self.ctx.log.info(f"network: {self.on_ready(event)} (the netlink worker, late)")
        await worker.finish()

    async def run(self) -> str:
        ctx, mode = self.ctx, self.mode
        self.started = uptime()
        ctx.state.network = NetworkState(mode=mode.kind, status=NetworkStatus.CONFIGURING)
        ctx.store.changed()
        if mode.dns:
            write_in_place(ctx.path("etc/resolv.conf"), resolv_conf_text(mode.dns))
        deadline = time.monotonic() + ctx.config.net_timeout
        worker = Worker(ctx.reaper, worker_args(mode, deadline))
        primary = mode.primary
        if primary is not None and primary.method == Method.DHCP:
            # udhcpc needs only the name: a named link that is there now, or
            # the first physical one sysfs shows; else the worker's event decides.
            present = socket.if_nameindex()
            if primary.name is not None:
                link = primary.name if primary.name in (name for _, name in present) else None
            else:
                link = sysfs_dhcp_link(ctx.path("sys/class/net"), present)
            if link is not None:
                self.start_dhcp(link)  # the worker's interface event, later, finds it started
        result: str | None = None
        status: int | None = None
        timed_out = False
        try:
            async with contextlib.aclosing(worker.events(deadline + WORKER_GRACE)) as events:
                async for event in events:
                    timed_out = event == TIMED_OUT
                    result = self.handle(event)
                    if result is not None:
                        break  # done now: the worker's interpreter teardown need not delay the boot
        finally:
            if result is None:
                status = await worker.finish()
            elif timed_out:
                self.extra_tasks.append(asyncio.get_running_loop().create_task(self.follow_late_worker(worker)))
            else:
                asyncio.get_running_loop().create_task(worker.finish())
        if result is not None:
            return result
        if mode.kind == "none":
            self.publish(status=NetworkStatus.NONE)
            return "none: lo only"
        return self.offline(f"the netlink worker ended with status {status}")


async def run(ctx: PhaseContext) -> str:
    net_dir = network_dir(ctx.config.state_dir)
    up = ctx.wiring.maybe(Wiring.network_up)
    if up is None:  # one for the boot: a retried phase keeps it
        up = ctx.wiring.network_up = asyncio.Event()
    if ctx.wiring.maybe(Wiring.interface_addresses) is None:
        ctx.wiring.interface_addresses = InterfaceAddresses(lambda: ctx.state.network)
    phase = NetworkPhase(ctx=ctx, mode=parse_net_mode(ctx.config.net), net_dir=net_dir, up=up)
    try:
        return await phase.run()
    finally:
        phase.finished = True


PHASE = Phase(
    name="network",
    run=run,
    needs=("images", "console"),
    fills=(Wiring.network_attempt, Wiring.network_up, Wiring.interface_addresses),
    uses=(Wiring.system_containers,),
)
