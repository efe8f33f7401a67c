"""swarm: puts the node in Docker's swarm as the user-data's `swarm:`
section says (pid1/swarm_config.py), and keeps state.swarm saying how it
stands. Needs userdata (the section), dockerd (the Docker client), network
(the network up, and the advertise interface's address through
Wiring.interface_addresses) and ntp (a join with a wrong clock fails on the
managers' certificates: it waits for `clock synced`, at most CLOCK_WAIT,
when NTP is configured).

The phase checks the section and starts the `swarm` service; it never waits
for a manager. The service reconciles, it does not remember: every REFRESH
seconds it asks dockerd's /info. A node already in a swarm (active, or
pending while it reconnects after a dockerd restart: the swarm lives in the
data root) is left as it is; only an inactive node is asked to init or
join. Managers that do not answer are tried again by pid1/backoff.py (a join
that timed out is left first: dockerd would otherwise go on trying in the
background with the same request); a refusal (a token of another cluster:
"remote CA does not match fingerprint") is not retried in this boot, and
its reason stays in state.swarm.error. On a manager, the
section's labels and `only-docker.hostname` (the engine's host name) are put
on the node's spec: a node re-created from RAM comes back with a new id, and
the label matches it to its old entry (docs/swarm.md). A worker cannot
change its own spec: the leader puts the host-name label on every node, and
removes a down node's entry once a newer node of its host name is ready;
the section's other labels of a worker are a manager's to set, and the
state says so.

Owns: the phase, the `swarm` service and state.swarm. May use: the Docker
client (pid1/engine/client.py's swarm calls), pid1.backoff,
pid1.phases.ntp's clock wait, pid1.net.addresses, the phase API and the
wiring.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pid1.backoff import Backoff
from pid1.net.addresses import source_address_towards
from pid1.phases import Phase, PhaseContext
from pid1.state import uptime
from pid1.state_schema import SwarmStatus
from pid1.swarm_config import DEFAULT_PORT, SwarmConfig, is_interface
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.engine.client import DockerClient

SERVICE = "swarm"
REFRESH = 5.0  # seconds between two looks at /info
CLOCK_WAIT = 60.0  # at most, for `clock synced` before the first init or join
NETWORK_WAIT = 60.0  # at most, for the network before the first try (then the tries' backoff)
RETRY_FIRST, RETRY_CAP = 2.0, 60.0  # seconds: the backoff while the managers do not answer
CALL_TIMEOUT = 60.0  # seconds: a dockerd that hangs is given up on (its own join timeout is 20 s)
HOSTNAME_LABEL = "only-docker.hostname"
ERROR_MAX = 500
# dockerd's words for a request that no retry can fix (a token of another swarm, a bad secret)
REFUSALS = ("does not match fingerprint", "invalid join token", "already part of a swarm")
TIMEOUT = "Timeout was reached"  # the join goes on in dockerd's background: leave it, back off, try again


def refusal(message: str) -> bool:
    lowered = message.lower()
    return TIMEOUT.lower() not in lowered and any(word in lowered for word in REFUSALS)


@dataclass
class NodeView:
    """What /info says of the node's swarm."""

    local_state: str
    node_id: str | None
    node_addr: str | None
    manager: bool
    remote_managers: int
    nodes: int | None
    error: str | None
    hostname: str | None

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> NodeView:
        swarm = info.get("Swarm") or {}
        return cls(
            local_state=str(swarm.get("LocalNodeState") or "inactive"),
            node_id=swarm.get("NodeID") or None,
            node_addr=swarm.get("NodeAddr") or None,
            manager=swarm.get("ControlAvailable") is True,
            remote_managers=len(swarm.get("RemoteManagers") or []),
            nodes=swarm.get("Nodes") if swarm.get("ControlAvailable") else None,
            error=(str(swarm.get("Error") or "")[:ERROR_MAX]) or None,
            hostname=info.get("Name") or None,
        )


@dataclass
class SwarmKeeper:
    """The `swarm` service: one look at dockerd per REFRESH, init or join
    when the node is in no swarm, with backoff; labels once per node id."""

    ctx: PhaseContext
    client: DockerClient
    config: SwarmConfig
    backoff: Backoff
    refused: bool = False
    labelled: str | None = None  # the node id the labels were put on

    def publish(self, **changes: Any) -> None:
        self.ctx.state.swarm.update(**changes, updated=round(uptime(), 3))
        self.ctx.store.changed()

    async def run(self) -> None:
        while True:
            delay = await self.step()
            await asyncio.sleep(delay)

    async def step(self) -> float:
        """One look and what it calls for; the seconds until the next look."""
        try:
            node = NodeView.from_info(await asyncio.wait_for(self.client.info(), CALL_TIMEOUT))
        except Exception as exc:  # dockerd restarting (pid1 brings it back) or not up yet
            self.publish(status=SwarmStatus.WAITING, error=f"dockerd does not answer: {str(exc)[:200]}")
            return REFRESH
        if node.local_state == "inactive":
            self.labelled = None
            if self.refused:
                return REFRESH  # the reason stays in the state; no hot loop
            return await self.apply()
        self.refused = False
        status = {"active": SwarmStatus.ACTIVE, "pending": SwarmStatus.PENDING}.get(node.local_state, SwarmStatus.ERROR)
        if status == SwarmStatus.ACTIVE:
            self.backoff.reset()
        record, active = self.ctx.state.swarm, status == SwarmStatus.ACTIVE
        self.publish(
            status=status, node_id=node.node_id, node_addr=node.node_addr, local_state=node.local_state,
            role="manager" if node.manager else "worker", nodes=node.nodes, next_retry=None,
            managers=await self.reachability(node), error=node.error or (None if active else record.error),
            attempts=0 if active else record.attempts,
        )  # fmt: skip
        if active and node.node_id and self.labelled != node.node_id:
            await self.label(node)
        if active and (record.managers or "").endswith("leader"):
            await self.lead()
        return REFRESH

    async def reachability(self, node: NodeView) -> str:
        """A manager's own reachability (and whether it leads); a worker's known managers."""
        if not node.manager or not node.node_id:
            return f"{node.remote_managers} known" if node.local_state == "active" else "none known"
        try:
            status = (await self.client.node(node.node_id)).get("ManagerStatus") or {}
        except Exception as exc:
            return f"unknown ({str(exc)[:80]})"
        return str(status.get("Reachability") or "unknown") + (", leader" if status.get("Leader") else "")

    async def lead(self) -> None:
        """The leader's part, for every node: the host-name label on a ready
        node that lacks it (a worker cannot set its own), and the entry of a
        down node that a newer node of the same host name replaced removed
        (that machine came back from RAM with a new id; were it to come back
        under the old one, it would find itself out of the swarm)."""
        try:
            nodes = await self.client.nodes()
        except Exception as exc:
            self.ctx.log.warning(f"swarm: listing the nodes failed: {str(exc)[:200]}")
            return
        for node in unlabelled_nodes(nodes):
            spec = dict(node.get("Spec") or {})
            spec["Labels"] = {**(spec.get("Labels") or {}), HOSTNAME_LABEL: node["Description"]["Hostname"]}
            try:
                await self.client.update_node(str(node.get("ID")), int(node["Version"]["Index"]), spec)
            except Exception as exc:  # a version race: the next look tries again
                self.ctx.log.warning(f"swarm: labelling node {str(node.get('ID'))[:12]} failed: {str(exc)[:200]}")
        for old_id, hostname, newer in replaced_nodes(nodes):
            try:
                await self.client.remove_node(old_id)
            except Exception as exc:  # the next look tries again
                self.ctx.log.warning(f"swarm: removing the replaced node {old_id[:12]} failed: {str(exc)[:200]}")
                continue
            self.ctx.state.swarm.replaced += 1
            self.ctx.log.notice(f"swarm: removed node {old_id[:12]} ({hostname}, down): replaced by {newer[:12]}")
        self.ctx.store.changed()

    async def apply(self) -> float:
        config, ctx, record = self.config, self.ctx, self.ctx.state.swarm
        attempt = record.attempts + 1
        self.publish(status=SwarmStatus.JOINING, local_state="inactive", attempts=attempt, next_retry=None)
        try:
            if config.role == "init":
                node_id = await asyncio.wait_for(self.client.swarm_init(config.advertise_addr), CALL_TIMEOUT)
                ctx.log.milestone("swarm active", f"initialised a new swarm: node {str(node_id)[:25]}, manager")
            else:
                listen = await join_listen_addr(config)
                join = self.client.swarm_join(config.managers, config.token or "", config.advertise_addr, listen)
                await asyncio.wait_for(join, CALL_TIMEOUT)
                ctx.log.milestone("swarm active", f"joined through {', '.join(config.managers)}")
        except TimeoutError:
            return await self.failed(f"{TIMEOUT}: dockerd did not answer within {CALL_TIMEOUT:g} s", attempt)
        except Exception as exc:
            return await self.failed(str(getattr(exc, "message", None) or exc)[:ERROR_MAX], attempt)
        return 0.0  # look at once: the state fills in from /info

    async def failed(self, message: str, attempt: int) -> float:
        ctx, what = self.ctx, f"swarm {self.config.role}"
        if refusal(message):
            self.refused = True
            ctx.log.error(f"swarm: {what} refused: {message}; not retried (fix the user-data and reboot)")
            self.publish(status=SwarmStatus.REFUSED, error=message)
            return REFRESH
        if TIMEOUT.lower() in message.lower():
            try:  # stop dockerd's own background attempt: the next one is ours, after the backoff
                await self.client.swarm_leave()
            except Exception as exc:
                ctx.log.warning(f"swarm: leaving the join that timed out failed: {exc}")
        delay = self.backoff.next() or RETRY_FIRST
        ctx.log.warning(f"swarm: {what} failed (try {attempt}): {message}; again in {delay:g} s")
        self.publish(status=SwarmStatus.RETRYING, error=message, next_retry=round(uptime() + delay, 3))
        return delay

    async def label(self, node: NodeView) -> None:
        """The section's labels and the host name label on the node's spec
        (a manager's call; a worker's are a manager's to set)."""
        wanted = {**self.config.labels, **({HOSTNAME_LABEL: node.hostname} if node.hostname else {})}
        if not node.manager:
            self.labelled = node.node_id
            self.publish(
                labels="a worker's own labels are a manager's to set (docker node update --label-add); "
                f"the leader sets {HOSTNAME_LABEL}"
            )
            return
        try:
            inspected = await self.client.node(node.node_id or "")
            spec = dict(inspected.get("Spec") or {})
            labels = dict(spec.get("Labels") or {})
            if any(labels.get(key) != value for key, value in wanted.items()):
                spec["Labels"] = {**labels, **wanted}
                await self.client.update_node(node.node_id or "", int(inspected["Version"]["Index"]), spec)
        except Exception as exc:  # a version race with another update: the next look tries again
            self.publish(labels=f"not applied: {str(exc)[:200]}")
            return
        self.labelled = node.node_id
        self.publish(labels=f"applied: {', '.join(f'{k}={v}' for k, v in sorted(wanted.items()))}"[:ERROR_MAX])


def unlabelled_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ready nodes whose spec lacks the host-name label (or has another)."""
    found = []
    for node in nodes:
        hostname = (node.get("Description") or {}).get("Hostname")
        labels = (node.get("Spec") or {}).get("Labels") or {}
        if hostname and (node.get("Status") or {}).get("State") == "ready" and labels.get(HOSTNAME_LABEL) != hostname:
            found.append(node)
    return found


def replaced_nodes(nodes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(old id, host name, newer id) of each down node whose host name a
    node created after it has, and that one ready."""

    def hostname(node: dict[str, Any]) -> str:
        return str((node.get("Description") or {}).get("Hostname") or "")

    def state(node: dict[str, Any]) -> str:
        return str((node.get("Status") or {}).get("State") or "")

    def created(node: dict[str, Any]) -> str:  # RFC 3339 in UTC, its fraction cut of trailing zeros by Go
        base, _, fraction = str(node.get("CreatedAt") or "").rstrip("Z").partition(".")
        return f"{base}.{fraction.ljust(9, '0')}"

    found = []
    for old in nodes:
        if state(old) != "down" or not hostname(old) or old.get("ManagerStatus"):
            continue  # a manager's entry is the managers' own business (demote it first)
        newer = [n for n in nodes if n is not old and hostname(n) == hostname(old) and state(n) == "ready"
                 and created(n) > created(old)]  # fmt: skip
        if newer:
            found.append((str(old.get("ID")), hostname(old), str(newer[0].get("ID"))))
    return found


async def join_listen_addr(config: SwarmConfig) -> str:
    """The join's listen address: the advertised one, or, when dockerd is to
    choose, the address the route to the first manager leaves from (what
    dockerd would find), so that dockerd keeps it and needs no route when it
    restores the swarm at its next start (docs/swarm.md); dockerd's default
    where there is no route now."""
    if config.advertise_addr is not None:
        return config.listen_addr
    host, _, port = config.managers[0].rpartition(":")
    source = await source_address_towards(host.strip("[]"), int(port))
    return f"{source}:{DEFAULT_PORT}" if source else config.listen_addr


async def wait_for_network(ctx: PhaseContext, config: SwarmConfig) -> str | None:
    """The network up (bounded), an advertise interface that exists and,
    when pid1.net configures it, has an address (bounded); the problem, or None."""
    up = ctx.wiring.maybe(Wiring.network_up)
    if up is not None and not up.is_set():
        try:
            await asyncio.wait_for(up.wait(), NETWORK_WAIT)
        except TimeoutError:
            ctx.log.warning(f"swarm: no network after {NETWORK_WAIT:g} s; trying anyway")
    name = config.advertise_addr or ""
    if not is_interface(name):
        return None
    try:  # in pid1's network namespace (a test's /sys may show another's)
        socket.if_nametoindex(name)
    except OSError:
        return f"advertise_addr {name!r}: no such interface"
    addresses = ctx.wiring.maybe(Wiring.interface_addresses)
    if addresses is not None and name in ctx.state.network.interfaces:
        # an interface pid1.net configures: dockerd takes its address when the swarm is made
        if not await addresses.wait(name, NETWORK_WAIT):
            ctx.log.warning(f"swarm: {name} has no address after {NETWORK_WAIT:g} s; trying anyway")
    return None


async def run(ctx: PhaseContext) -> str:
    from pid1.phases.ntp import wait_for_clock

    applied = ctx.wiring.maybe(Wiring.userdata)
    data = applied.data if applied is not None else None
    record = ctx.state.swarm
    if data is not None and data.swarm_error:
        record.update(status=SwarmStatus.INVALID, error=data.swarm_error, updated=round(uptime(), 3))
        ctx.store.changed()
        ctx.log.error(f"swarm: the user-data's swarm section is refused: {data.swarm_error}")
        return f"invalid: {data.swarm_error}"
    if data is None or data.swarm is None:
        record.update(status=SwarmStatus.NONE)
        ctx.store.changed()
        return "no swarm section in the user-data"
    config = data.swarm
    record.update(status=SwarmStatus.WAITING, wanted=config.role, updated=round(uptime(), 3))
    ctx.store.changed()
    problem = await wait_for_network(ctx, config)
    if problem:
        record.update(status=SwarmStatus.INVALID, error=problem, updated=round(uptime(), 3))
        ctx.store.changed()
        ctx.log.error(f"swarm: {problem}: not applied")
        return f"invalid: {problem}"
    if ctx.config.ntp != "off" and not await wait_for_clock(ctx, CLOCK_WAIT):
        ctx.log.warning(f"swarm: the clock is not synced after {CLOCK_WAIT:g} s; going on (TLS may refuse it)")
    keeper = SwarmKeeper(ctx, ctx.wiring.docker, config, Backoff(RETRY_FIRST, RETRY_CAP))
    ctx.start_service(SERVICE, keeper.run)
    return f"{config.summary()}: the swarm service keeps it"


PHASE = Phase(name="swarm", run=run, needs=("userdata", "dockerd", "network", "ntp"), required=False,
              uses=(Wiring.userdata, Wiring.docker, Wiring.network_up, Wiring.interface_addresses,
                    Wiring.clock))  # fmt: skip
