"""network: lo and the ethernet links up, then DHCP, a static address, or nothing.

Needs `images` (the pid1-dhcp image, a second tag of the bundled busybox,
is loaded; the system-container
supervisor exists). The netlink work (links up, the static address, watching
for an IPv4 address and a default route) runs in a short-lived child,
`python -m pid1.net.netlink` (see that module for why it is not a thread), whose
JSON-line events this phase reads from a pipe.

- `pid1.net=dhcp` (default): as soon as the machine's first physical
  ethernet link is known (from sysfs at the phase's start, else when the
  child reports the links, which under emulation takes 10-15 s), the DHCP
  client is handed to the system-container supervisor as the `dhcp` container
  (busybox `udhcpc -f` in the foreground, `--net host`, NET_ADMIN + NET_RAW,
  not privileged), so the lease renews for as long as the machine runs and a
  dead client is restarted. Its script (pid1/net/udhcpc.script, bound in) applies the
  address (with the lease as its lifetime), the default route and DNS,
  records the lease in `<state_dir>/network/lease` and writes each event
  (bound, renew, deconfig, leasefail) to the FIFO `<state_dir>/network/events`.
  The `network-lease` service reads that FIFO on the loop (like the control
  channel: pid1 holds both ends) and keeps the state's lease current after the
  phase: renewals, a lease that arrives after the phase went on offline
  ("network up" then), a lost one.
- `pid1.net=static:ADDR/PREFIX,GATEWAY[,DNS...]`: applied by the child through
  pyroute2; DNS servers are written to /etc/resolv.conf. A malformed value is
  named in pid1.config's warning and DHCP is used instead (a typo never
  stops a boot; the one parser is pid1.net.mode).
- `pid1.net=none`: only `lo` is brought up.

The phase is done when netlink reports an IPv4 address and a default route on
a link (an event, not a poll), or after `pid1.net_timeout` seconds: then the
machine goes on offline, says so, and the DHCP client keeps trying. Either way
the phase succeeds. /etc/resolv.conf is the machine's file, bind-mounted into
the dhcp container (and by the system phase into dom0 and the console) and
always rewritten in place: a bind pins the inode, a rename would break it.

Owns: NetworkPhase (the attempt, the state's `network` section, the
`network-lease` service), the slots network_up and network_attempt.
May use: pid1.net (mode, worker, dhcp), pid1.linux.fifo (the events FIFO),
the system-container supervisor through its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pid1.linux.fifo import EventFifo, ensure_fifo
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
from pid1.net.mode import NetMode, parse_net_mode
from pid1.net.worker import WORKER_GRACE, Worker, worker_args
from pid1.phases import Phase, PhaseContext
from pid1.state import uptime
from pid1.state_schema import NetworkState, NetworkStatus
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
    finished: bool = False  # the phase has returned (up or offline)
    # Set while the network is up (an address and a default route), whenever
    # that comes: a lease after the phase went on offline sets it too.
    up: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def network(self) -> NetworkState:
        return self.ctx.state.network

    def publish(self, **values: Any) -> None:
        self.network.update(**values)
        if "status" in values:
            (self.up.set if values["status"] == NetworkStatus.UP else self.up.clear)()
        self.ctx.store.changed()

    def start_dhcp(self, link: str) -> None:
        """Hand the DHCP client to the system-container supervisor (in the
        background: the worker's events keep coming meanwhile)."""
        ctx = self.ctx
        self.dhcp_link = link
        supervisor = ctx.wiring.maybe(Wiring.system_containers)
        if supervisor is None:
            ctx.log.error("network: no system-container supervisor (dockerd phase missing): no DHCP client")
            return
        ensure_file(ctx.path("etc/resolv.conf"))
        os.makedirs(self.net_dir, exist_ok=True)
        self.watch_lease_events()
        self.publish(link=link, status=NetworkStatus.WAITING)
        ctx.log.info(f"network: DHCP on {link} (udhcpc in the dhcp container)")

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                ctx.log.error(f"network: the dhcp container could not be started: {task.exception()!r}")

        self.dhcp_task = asyncio.get_running_loop().create_task(supervisor.ensure(dhcp_spec(ctx, link, self.net_dir)))
        self.dhcp_task.add_done_callback(done)

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

    def on_lease_event(self, word: str) -> None:
        """A udhcpc event, after the script has applied it."""
        network, log = self.network, self.ctx.log
        if word in ("bound", "renew"):
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
        if self.mode.kind == "dhcp" and self.dhcp_task is None:
            if names:
                self.start_dhcp(names[0])
            else:
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
        self.publish(**values)
        self.ctx.log.milestone("network up", str(address))
        lease = f", lease {values['lease_seconds']} s" if values.get("lease_seconds") else ""
        return f"{self.mode.kind}: {address}/{event['prefixlen']} on {event['link']} via {event.get('gateway')}{lease}"

    def offline(self, why: str) -> str:
        self.publish(status=NetworkStatus.OFFLINE, offline_reason=why, waited=round(uptime() - self.started, 3))
        later = " (the DHCP client keeps trying)" if self.dhcp_task is not None else ""
        self.ctx.log.warning(f"network: {why}; going on offline{later}")
        return f"offline: {why}"

    def handle(self, event: dict[str, Any]) -> str | None:
        """One worker event; returns the phase's result when it is decided."""
        kind = event.get("event")
        if kind == "links":
            self.on_links(event)
        elif kind == "static":
            self.ctx.log.info(f"network: static {event['address']} on {event['link']} via {event.get('gateway')}")
            self.publish(link=event["link"])
        elif kind == "ready":
            return self.on_ready(event)
        elif kind == "timeout":
            self.ctx.log.info(f"network: netlink saw {json.dumps(event.get('seen'))}")
            if self.mode.kind == "dhcp" and self.dhcp_link is None:
                return self.offline(f"no ethernet link after {self.ctx.config.net_timeout:g} s")
            return self.offline(f"no IPv4 address and default route after {self.ctx.config.net_timeout:g} s")
        elif kind == "error":
            return self.offline(f"netlink worker: {event.get('message')}")
        return None

    async def run(self) -> str:
        ctx, mode = self.ctx, self.mode
        self.started = uptime()
        ctx.state.network = NetworkState(mode=mode.kind, status=NetworkStatus.CONFIGURING)
        ctx.store.changed()
        if mode.kind == "static" and mode.dns:
            write_in_place(ctx.path("etc/resolv.conf"), resolv_conf_text(mode.dns))
        deadline = time.monotonic() + ctx.config.net_timeout
        worker = Worker(ctx.reaper, worker_args(mode, deadline))
        if mode.kind == "dhcp":
            link = sysfs_dhcp_link(ctx.path("sys/class/net"), socket.if_nameindex())
            if link is not None:
                self.start_dhcp(link)  # the worker's links event, later, finds it started
        result: str | None = None
        status: int | None = None
        try:
            async with contextlib.aclosing(worker.events(deadline + WORKER_GRACE)) as events:
                async for event in events:
                    result = self.handle(event)
                    if result is not None:
                        break  # done now: the worker's interpreter teardown need not delay the boot
        finally:
            if result is None:
                status = await worker.finish()
            else:
                asyncio.get_running_loop().create_task(worker.finish())
        if result is not None:
            return result
        if mode.kind == "none":
            self.publish(status=NetworkStatus.NONE)
            return "none: lo only"
        if mode.kind == "static" and not mode.gateway and status == 0:
            interface = ipaddress.IPv4Interface(mode.address or "")
            self.publish(status=NetworkStatus.UP, address=str(interface.ip), prefixlen=interface.network.prefixlen)
            ctx.log.milestone("network up", str(interface.ip))
            return f"static: {mode.address} (no gateway)"
        return self.offline(f"the netlink worker ended with status {status}")


async def run(ctx: PhaseContext) -> str:
    net_dir = network_dir(ctx.config.state_dir)
    up = ctx.wiring.maybe(Wiring.network_up)
    if up is None:  # one for the boot: a retried phase keeps it
        up = ctx.wiring.network_up = asyncio.Event()
    phase = NetworkPhase(ctx=ctx, mode=parse_net_mode(ctx.config.net), net_dir=net_dir, up=up)
    try:
        return await phase.run()
    finally:
        phase.finished = True


PHASE = Phase(
    name="network",
    run=run,
    needs=("images",),
    fills=(Wiring.network_attempt, Wiring.network_up),
    uses=(Wiring.system_containers,),
)
