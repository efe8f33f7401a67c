"""The system-container supervisor: keeps dom0, the console, the DHCP client
and the clock client running, driven by Docker's event stream, never by
polling.

Owns `SystemContainers` (the slot `Wiring.system_containers`). Phases hand
it a ContainerSpec (`ensure(spec)`); from then on one keeper per role
(pid1/engine/keeper.py, its state machine) keeps one container of that role
alive, and pid1/engine/starter.py makes and starts it.

- One events subscription, filtered to `die` events of containers with a
  `pid1.role` label. Docker's `container=NAME` filter matches by prefix, so
  names, ids and this boot's instance label are compared exactly here.
- The subscription says nothing when it is connected, so it asks for events
  `since` a moment before it was made (Docker replays them), and a reconcile
  runs right after every subscribe: list the labelled containers and make
  the world match the specs (remove leftovers of an earlier boot or strays,
  start what is missing or exited). When the stream ends (dockerd died or
  restarted) the loop waits until dockerd answers and does it again.
- On `die` the image is resolved again and a container started, after the
  keeper's backoff. The console's bridge shows a waiting line meanwhile.
- The stop stops the containers by their spec's stop_rank (the console, then
  dom0, then the others), each with its stop timeout; no start after it.

May use: pid1.engine.client, .keeper, .starter, .container_config, .status,
pid1.container_spec, pid1.state, pid1.linux.procfs (the capability bounding
set); the log and state store it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from pid1.backoff import Backoff
from pid1.container_spec import ROLE_LABEL, ContainerSpec
from pid1.engine.container_config import INSTANCE_LABEL
from pid1.engine.keeper import Keeper
from pid1.engine.starter import Starter
from pid1.engine.status import ContainerStatus
from pid1.linux.procfs import missing_capabilities
from pid1.state import ContainerState, uptime

if TYPE_CHECKING:
    from pid1.engine.client import DockerClient
    from pid1.log import Log
    from pid1.state import StateStore

EVENTS_SINCE_MARGIN = 1.0
RESUBSCRIBE_FIRST = 0.05
RESUBSCRIBE_CAP = 2.0
STREAM_STABLE = 10.0  # an event stream that lasted this long resubscribes at once when it ends
FIRST_RECONCILE_WAIT = 10.0
S = ContainerStatus


class SystemContainers:
    """The slot `Wiring.system_containers` (the dockerd phase makes it)."""

    def __init__(
        self, client: DockerClient, dockerd_up: asyncio.Event, log: Log, store: StateStore, stable_run: float
    ) -> None:
        self.client = client
        self.dockerd_up = dockerd_up
        self.log = log
        self.store = store
        self.stable_run = stable_run  # pid1.restart_stable
        self.keepers: dict[str, Keeper] = {}
        self.stopping = False
        self.subscriptions = 0
        self.reconciles = 0
        self.first_reconcile = asyncio.Event()
        missing = missing_capabilities()
        if missing:
            self.log.warning(
                f"the capability bounding set lacks {', '.join(missing)}: system containers get every "
                "other capability instead of --privileged (a restricted sandbox, not a VM)"
            )
        self.starter = Starter(client, log, store, instance=os.urandom(6).hex(), missing_caps=missing)

    # --- the interface for phases and the control channel -----------------------------------
    async def ensure(self, spec: ContainerSpec) -> None:
        """Keep a container for spec.role running from now on. Idempotent;
        returns after the first start attempt (successful or not)."""
        keeper = self.keepers.get(spec.role)
        if keeper is not None:
            if keeper.spec != spec:
                keeper.spec = spec  # the next start makes a new container (made_from differs)
                self.log.info(f"{spec.role}: spec changed; applied at the next start")
            await keeper.first_attempt.wait()
            return
        state = ContainerState(role=spec.role, name=spec.role, status=S.PENDING)
        keeper = Keeper(spec=spec, state=state, log=self.log)
        self.keepers[spec.role] = keeper
        self.store.state.containers[spec.role] = state
        self.store.changed()
        try:  # leftovers of an earlier boot are gone (bounded: a start removes its role's anyway)
            await asyncio.wait_for(self.first_reconcile.wait(), FIRST_RECONCILE_WAIT)
        except TimeoutError:
            self.log.warning(f"{spec.role}: no reconcile after {FIRST_RECONCILE_WAIT:.0f} s; starting anyway")
        if not keeper.busy:
            self.schedule(keeper, "first start")
        await keeper.first_attempt.wait()

    async def wait_running(self, role: str, timeout: float) -> str:
        """The id of the role's container once it runs (at once when it does);
        TimeoutError after `timeout` seconds, KeyError for a role not ensured."""
        keeper = self.keepers[role]
        await asyncio.wait_for(keeper.running.wait(), timeout)
        assert keeper.container_id is not None
        return keeper.container_id

    async def restart(self, role: str) -> None:
        """Stop the role's container (its stop timeout), remove it and start a
        fresh one with the image resolved again; forgets crash-loop history."""
        keeper = self.keepers.get(role)
        if keeper is None:
            raise KeyError(f"no system container {role!r}")
        if self.stopping:
            self.log.warning(f"{role}: restart requested while pid1 stops: ignored")
            return
        self.log.notice(f"{role}: restart requested")
        keeper.move(S.EXITED)  # booked: the die of the container stopped here is not a crash
        if keeper.busy:
            keeper.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper.task
        await self.starter.remove(keeper, stop_first=True)
        keeper.forget_failures()
        keeper.bad_image_id = keeper.state.fallback_reason = None
        self.store.changed()
        done = asyncio.Event()
        keeper.task = asyncio.get_running_loop().create_task(self._keep_started(keeper, "restart requested", done))
        await done.wait()

    async def stop_all(self) -> None:
        """The stop: no more starts; stop the containers by stop_rank, each
        with its spec's stop timeout."""
        self.stopping = True
        for keeper in self.keepers.values():
            if keeper.busy:
                keeper.task.cancel()
            if keeper.stable_timer is not None:
                keeper.stable_timer.cancel()
        for keeper in sorted(self.keepers.values(), key=lambda k: k.spec.stop_rank):  # stable: ensure order
            keeper.move(S.STOPPED)
            keeper.state.up_since = None
            self.store.changed()
            if keeper.container_id is None:
                continue
            began = uptime()
            try:
                await self.client.container(keeper.container_id).stop(keeper.spec.stop_timeout)
            except Exception as exc:
                self.log.warning(f"{keeper.role}: stop failed: {exc}")
            self.log.info(f"{keeper.role}: stopped in {(uptime() - began) * 1000:.0f} ms")
            if keeper.attach_task is not None and not keeper.attach_task.done():
                keeper.attach_task.cancel()

    # --- the event loop -------------------------------------------------------------------------
    async def watch_events(self) -> None:
        """The service: subscribe, reconcile, handle die events; again when the stream ends."""
        backoff = Backoff(RESUBSCRIBE_FIRST, RESUBSCRIBE_CAP)
        while not self.stopping:
            await self.dockerd_up.wait()
            began = uptime()
            try:
                await self._one_subscription()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning(f"system containers: event stream failed: {exc!r}")
            if self.stopping:
                return
            # A stream that ends at once again and again (dockerd half up) backs off.
            if uptime() - began > STREAM_STABLE:
                backoff.reset()
                delay = 0.0
            else:
                delay = backoff.next()
            self.log.info(f"system containers: event stream ended; subscribing again in {delay * 1000:.0f} ms")
            await asyncio.sleep(delay)

    async def _one_subscription(self) -> None:
        filters = {"type": ["container"], "event": ["die"], "label": [ROLE_LABEL]}
        async with self.client.events(filters, since=time.time() - EVENTS_SINCE_MARGIN) as events:
            self.subscriptions += 1
            self.store.state.dockerd.event_subscriptions = self.subscriptions
            await self.reconcile()
            self.first_reconcile.set()
            while (event := await events.next()) is not None:
                self.on_event(event)

    def on_event(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        keeper = self.keepers.get(attributes.get(ROLE_LABEL, ""))
        if keeper is None or attributes.get("name") != keeper.state.name:
            return
        if attributes.get(INSTANCE_LABEL) != self.starter.instance or actor.get("ID") != keeper.container_id:
            return  # a leftover, a stray, or the container before this one
        if not keeper.live or int(event.get("timeNano") or 0) < keeper.started_on_todays_clock():
            return  # already booked (replayed by `since`, or stopped by pid1)
        try:
            code: int | None = int(attributes.get("exitCode", ""))
        except ValueError:
            code = None
        self.container_exited(keeper, code, event_lag_ms=(time.time_ns() - int(event["timeNano"])) / 1e6)

    async def reconcile(self) -> None:
        """Make the world match the specs: one container per role, running."""
        self.reconciles += 1
        self.store.state.dockerd.reconciles = self.reconciles
        current = {}
        for listed in await self.client.list_containers(ROLE_LABEL):
            role = listed.labels.get(ROLE_LABEL, "")
            keeper = self.keepers.get(role)
            if keeper is not None and keeper.busy:
                continue  # its start task decides
            if listed.labels.get(INSTANCE_LABEL) != self.starter.instance:
                why = "left by an earlier boot"
            elif keeper is None:
                why = "of a role no longer wanted"
            elif listed.id != keeper.container_id:
                why = "not the current one"
            else:
                current[role] = listed
                continue
            self.log.info(f"removing container {list(listed.names)} ({role}, {listed.id[:12]}): {why}")
            with contextlib.suppress(Exception):
                await self.client.container(listed.id).remove()
        for role, keeper in self.keepers.items():
            if keeper.busy or self.stopping:
                continue
            listed = current.get(role)
            if listed is not None and listed.state == "running":
                if keeper.status is not S.RUNNING:
                    self._mark_running(keeper)
                continue
            if keeper.live:  # it ended while nobody listened (dockerd restart)
                code = None
                if listed is not None:
                    with contextlib.suppress(Exception):
                        code = (await self.client.container(listed.id).show())["State"]["ExitCode"]
                self.container_exited(keeper, code)
            else:
                self.schedule(keeper, "not running")

    # --- one role's life ------------------------------------------------------------------------
    def container_exited(
        self, keeper: Keeper, code: int | None, event_lag_ms: float | None = None, error: str | None = None
    ) -> None:
        """Book an end (die event, failed create or start, found exited) and
        schedule a start."""
        shown = keeper.book_end(code, self.stable_run, error=error, event_lag_ms=event_lag_ms)
        self.store.changed()
        self._show_waiting(keeper, f"{keeper.role} {shown}")
        self.schedule(keeper, shown)

    def schedule(self, keeper: Keeper, why: str) -> None:
        """A start attempt, unless one is under way (it sees the new end) or pid1 stops."""
        if self.stopping or keeper.busy:
            return
        keeper.task = asyncio.get_running_loop().create_task(self._keep_started(keeper, why))

    async def _keep_started(self, keeper: Keeper, why: str, done: asyncio.Event | None = None) -> None:
        """Start attempts, with backoff, until one holds."""
        state = keeper.state
        try:
            while not self.stopping:
                delay = keeper.next_delay()
                if delay > 0:
                    keeper.move(S.BACKOFF)
                    state.next_retry = round(uptime() + delay, 3)
                    self.store.changed()
                    self.log.info(f"{keeper.role}: {why}; next start in {delay:.1f} s")
                    self._show_waiting(keeper, f"{keeper.role} {why}; next try in {delay:.1f} s")
                    await asyncio.sleep(delay)
                state.next_retry = None
                ok = await self._start_once(keeper)
                keeper.first_attempt.set()
                if done is not None:
                    done.set()
                if keeper.status is S.RUNNING:
                    return
                # it failed, or died before the start returned (booked meanwhile): again
                why = "failed to start" if not ok else f"exited with status {state.last_exit}"
        finally:
            keeper.first_attempt.set()
            if done is not None:
                done.set()

    async def _start_once(self, keeper: Keeper) -> bool:
        spec, state = keeper.spec, keeper.state
        keeper.begin_attempt()
        self.store.changed()
        began = uptime()
        try:
            image, image_id, reason = await self.starter.resolve(keeper)
            keeper.tried_image_id = image_id
            resolved = uptime()
            state.image, state.image_id, state.image_reason = image, image_id, reason
            self.store.changed()
            reused = await self.starter.start_resolved(keeper, image, image_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = getattr(exc, "message", None) or str(exc) or repr(exc)  # EngineError: dockerd's own words
            self.log.error(f"{spec.role}: start failed: {why}")
            if keeper.live:
                self.container_exited(keeper, None, error=why)
            return False
        took = (uptime() - began) * 1000
        how = "started again" if reused else "created and started"
        self.log.info(
            f"{spec.role}: {how} {state.image} ({keeper.container_id[:12]}) in {took:.0f} ms "
            f"(resolved in {(resolved - began) * 1000:.0f} ms: {reason})"
        )
        if keeper.live:  # else it died before the start call returned: already booked
            self._mark_running(keeper)
        if spec.milestone:
            self.log.milestone(spec.milestone, state.image or "")
        return True

    def _mark_running(self, keeper: Keeper) -> None:
        state = keeper.state
        if state.up_since is None and keeper.first_attempt.is_set():
            state.restarts += 1
        keeper.move(S.RUNNING)
        state.up_since = round(uptime(), 3)
        state.next_retry = None
        self.store.changed()
        loop = asyncio.get_running_loop()
        keeper.stable_timer = loop.call_later(self.stable_run, self._stable, keeper, keeper.start_ns)

    def _stable(self, keeper: Keeper, start_ns: int) -> None:
        if keeper.start_ns == start_ns and keeper.status is S.RUNNING:
            keeper.forget_failures()
            self.store.changed()

    def _show_waiting(self, keeper: Keeper, reason: str) -> None:
        if not self.stopping:
            self.starter.show_waiting(keeper, reason)
