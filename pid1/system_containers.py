"""The system-container supervisor: keeps dom0, the console and the DHCP client running.

Phases hand it a ContainerSpec (`ensure(spec)`); from then on it keeps one
container per role alive, driven by Docker's event stream, never by polling:

- One events subscription, filtered to containers with a `pid1.role` label
  and `die` events. Docker's `container=NAME` filter matches by prefix, so
  names, ids and this pid1's instance label are compared exactly here.
- `subscribe()` says nothing when it is connected, so the subscription asks
  for events `since` a moment before it was made (Docker replays them) and a
  reconcile runs right after every subscribe: list the labelled containers
  and make the world match the specs (remove leftovers of an earlier boot or
  strays, start what is missing or exited). When the stream ends (dockerd
  died or restarted) the loop waits until dockerd answers and does it again.
- On `die`: the image is resolved again (the first tag of spec.images present
  locally, else the bundled fallback) and a container started. When the image
  is the one the exited container ran, the same container is started again
  (about 70 ms; replacing it costs ~165 ms); otherwise it is replaced.
- Crash loops back off: the first restart after a stable run is immediate,
  then 100 ms doubling to 10 s; a run of pid1.restart_stable seconds (30)
  resets it. An image that ends FALLBACK_AFTER times in a row (exits other
  than SIGKILL within the stable time, or dockerd refusing to create or
  start it, e.g. "No command specified") is set aside for the bundled
  fallback, and the state says why: no tag can lock the user out. Tagging a
  different image under the same name makes it eligible again.
- Containers are created, then started: `containers.run()` would try to pull
  a missing image, and there is no registry to pull from.
- pid1 removes only containers that carry its `pid1.role` label. When a
  user's container holds a role's name (a container of the user's called
  `console` keeps its writable layer: data), the role runs as `ROLE-pid1`
  (then `ROLE-pid1-2`...), and the log and the state (`name_conflict`) say so.

A spec with a console bridge (the console's, `ContainerSpec.bridge`) is
started through it (`bridge.attach(container, start=True)`, so its first
prompt is not lost) and the bridge shows a waiting line while none runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pid1.container_spec import ROLE_LABEL, ContainerSpec
from pid1.linux.procfs import missing_capabilities
from pid1.state import uptime
from pid1.state_schema import ContainerState, ContainerStatus

if TYPE_CHECKING:
    from pid1.phases import PhaseContext

INSTANCE_LABEL = "pid1.instance"
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 10.0
FALLBACK_AFTER = 5
SIGKILL_EXIT = 137  # docker kill, the OOM killer, a force removal: not the image's fault
EVENTS_SINCE_MARGIN = 1.0
RESUBSCRIBE_FIRST = 0.05
RESUBSCRIBE_CAP = 2.0
ATTACH_START_TIMEOUT = 30.0
FIRST_RECONCILE_WAIT = 10.0
NAME_TRIES = 5
STOP_ORDER = ("console", "dom0")  # then every other role, in the order they were ensured


def privileged_host_config(missing: list[str]) -> dict[str, Any]:
    """--privileged, or where the bounding set forbids it, the closest thing:
    every capability but the missing ones, no seccomp/AppArmor, nothing masked."""
    if not missing:
        return {"Privileged": True}
    return {
        "Privileged": False,
        "CapAdd": ["ALL"],
        "CapDrop": [f"CAP_{name}" for name in missing],
        "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
        "MaskedPaths": [],
        "ReadonlyPaths": [],
    }


def container_names(role: str) -> list[str]:
    """The names a role's container may have, in order: its role, then others
    for when a user's container holds the name (pid1 never removes those)."""
    return [role, f"{role}-pid1", *(f"{role}-pid1-{n}" for n in range(2, NAME_TRIES))]


def backoff_delay(failures_in_row: int) -> float:
    """No wait after the first failure; then 100 ms doubling, capped."""
    if failures_in_row <= 1:
        return 0.0
    return min(BACKOFF_FIRST * 2 ** (failures_in_row - 2), BACKOFF_CAP)


@dataclass
class Keeper:
    """What the supervisor knows about one role between events."""

    spec: ContainerSpec
    state: ContainerState
    container_id: str | None = None
    image_id: str | None = None  # the image the current container was made from
    # The image the current attempt resolved: what a failure (to create, to
    # start, or a crash) counts against; image_id is cleared before a create.
    tried_image_id: str | None = None
    spec_changed: bool = False
    start_ns: int = 0  # wall clock (event timeNano) when the current attempt began
    started_mono: float = 0.0
    exit_handled: bool = True  # the current run's end has been dealt with
    rerun: bool = False  # a die arrived while a start task was still running
    task: asyncio.Task | None = None
    attach_task: asyncio.Task | None = None
    quick_failures: int = 0
    bad_image_id: str | None = None
    stable_timer: asyncio.TimerHandle | None = None
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)  # set while its container runs

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()


class SystemContainers:
    """The slot `Wiring.system_containers` (the dockerd phase makes it)."""

    def __init__(self, ctx: PhaseContext, docker: Any, dockerd_up: asyncio.Event) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.docker = docker
        self.dockerd_up = dockerd_up
        self.instance = os.urandom(6).hex()
        self.keepers: dict[str, Keeper] = {}
        self.stopping = False
        self.stable_run = float(getattr(ctx.config, "restart_stable", 30.0))
        self.subscriptions = 0
        self.reconciles = 0
        self.first_reconcile = asyncio.Event()
        self.missing_caps = missing_capabilities()
        if self.missing_caps:
            self.log.warning(
                f"the capability bounding set lacks {', '.join(self.missing_caps)}: system containers get every "
                "other capability instead of --privileged (a restricted sandbox, not a VM)"
            )

    # --- the interface for phases and the control channel -----------------------------------
    async def ensure(self, spec: ContainerSpec) -> None:
        """Keep a container for spec.role running from now on. Idempotent;
        returns after the first start attempt (successful or not)."""
        keeper = self.keepers.get(spec.role)
        if keeper is not None:
            if keeper.spec != spec:
                keeper.spec, keeper.spec_changed = spec, True  # the next start makes a new container
                self.log.info(f"{spec.role}: spec changed; applied at the next start")
            await keeper.first_attempt.wait()
            return
        state = ContainerState(role=spec.role, name=spec.role)
        keeper = Keeper(spec=spec, state=state)
        self.keepers[spec.role] = keeper
        self.ctx.state.containers[spec.role] = state
        self.ctx.store.changed()
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
        self.log.notice(f"{role}: restart requested")
        keeper.exit_handled = True  # the die of the container stopped here is not a crash
        if keeper.busy:
            keeper.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper.task
        await self._remove(keeper, stop_first=True)
        state = keeper.state
        state.failures_in_row = keeper.quick_failures = 0
        keeper.bad_image_id = state.fallback_reason = None
        state.status = ContainerStatus.EXITED
        keeper.running.clear()
        done = asyncio.Event()
        keeper.task = asyncio.get_running_loop().create_task(self._keep_started(keeper, "restart requested", done))
        await done.wait()

    async def stop_all(self) -> None:
        """The stop: no more restarts; stop console, dom0, then the rest, each
        with its spec's stop timeout."""
        self.stopping = True
        for keeper in self.keepers.values():
            if keeper.busy:
                keeper.task.cancel()
            if keeper.stable_timer is not None:
                keeper.stable_timer.cancel()
        roles = [r for r in STOP_ORDER if r in self.keepers] + [r for r in self.keepers if r not in STOP_ORDER]
        for role in roles:
            keeper = self.keepers[role]
            keeper.exit_handled = True
            if keeper.container_id is None:
                continue
            began = uptime()
            try:
                await self.docker.containers.container(keeper.container_id).stop(t=keeper.spec.stop_timeout)
            except Exception as exc:
                self.log.warning(f"{role}: stop failed: {exc}")
            keeper.state.status = ContainerStatus.STOPPED
            keeper.running.clear()
            keeper.state.up_since = None
            self.ctx.store.changed()
            self.log.info(f"{role}: stopped in {(uptime() - began) * 1000:.0f} ms")
            if keeper.attach_task is not None and not keeper.attach_task.done():
                keeper.attach_task.cancel()

    # --- the event loop -------------------------------------------------------------------------
    async def watch_events(self) -> None:
        """The service: subscribe, reconcile, handle die events; again when the stream ends."""
        delay = 0.0
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
            delay = 0.0 if uptime() - began > 10 else min(max(delay * 2, RESUBSCRIBE_FIRST), RESUBSCRIBE_CAP)
            self.log.info(f"system containers: event stream ended; subscribing again in {delay * 1000:.0f} ms")
            await asyncio.sleep(delay)

    async def _one_subscription(self) -> None:
        events = self.docker.events
        queue = events.subscribe(create_task=False)
        filters = json.dumps({"type": ["container"], "event": ["die"], "label": [ROLE_LABEL]})
        since = f"{time.time() - EVENTS_SINCE_MARGIN:.6f}"
        runner = asyncio.get_running_loop().create_task(events.run(filters=filters, since=since))
        self.subscriptions += 1
        self.ctx.state.dockerd.event_subscriptions = self.subscriptions
        try:
            await self.reconcile()
            self.first_reconcile.set()
            while True:
                event = await queue.get()
                if event is None:
                    return
                self.on_event(event)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
            with contextlib.suppress(ValueError):
                events.channel.queues.remove(queue.queue)

    def on_event(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        keeper = self.keepers.get(attributes.get(ROLE_LABEL, ""))
        if keeper is None or attributes.get("name") != keeper.state.name:
            return
        if attributes.get(INSTANCE_LABEL) != self.instance or actor.get("ID") != keeper.container_id:
            return  # a leftover, a stray, or the container before this one
        if keeper.exit_handled or int(event.get("timeNano") or 0) < self.started_on_todays_clock(keeper):
            return  # already dealt with (replayed by `since`, or stopped by pid1)
        try:
            code: int | None = int(attributes.get("exitCode", ""))
        except ValueError:
            code = None
        self.container_exited(keeper, code, (time.time_ns() - int(event["timeNano"])) / 1e6)

    @staticmethod
    def started_on_todays_clock(keeper: Keeper) -> int:
        """When the current attempt began, on the wall clock as it is now: a
        clock stepped since (NTP, `date -s`) moves the start with it, so a die
        event after the step is never taken for one from before the start."""
        return time.time_ns() - int((time.monotonic() - keeper.started_mono) * 1e9)

    async def reconcile(self) -> None:
        """Make the world match the specs: one container per role, running."""
        self.reconciles += 1
        self.ctx.state.dockerd.reconciles = self.reconciles
        listed = await self.docker.containers.list(all=True, filters=json.dumps({"label": [ROLE_LABEL]}))
        current: dict[str, dict[str, Any]] = {}
        for container in listed:
            info = container._container
            labels = info.get("Labels") or {}
            role = labels.get(ROLE_LABEL, "")
            keeper = self.keepers.get(role)
            if keeper is not None and keeper.busy:
                continue  # its start task decides
            if labels.get(INSTANCE_LABEL) != self.instance:
                why = "left by an earlier boot"
            elif keeper is None:
                why = "of a role no longer wanted"
            elif info.get("Id") != keeper.container_id:
                why = "not the current one"
            else:
                current[role] = info
                continue
            self.log.info(f"removing container {info.get('Names')} ({role}, {info.get('Id', '')[:12]}): {why}")
            with contextlib.suppress(Exception):
                await container.delete(force=True)
        for role, keeper in self.keepers.items():
            if keeper.busy or self.stopping:
                continue
            info = current.get(role)
            if info is not None and info.get("State") == "running":
                if keeper.state.status != ContainerStatus.RUNNING:
                    self._mark_running(keeper)
                continue
            if not keeper.exit_handled:  # it ended while nobody listened (dockerd restart)
                code = None
                if info is not None:
                    with contextlib.suppress(Exception):
                        shown = await self.docker.containers.container(info["Id"]).show()
                        code = shown["State"]["ExitCode"]
                self.container_exited(keeper, code)
            else:
                self.schedule(keeper, "not running")

    # --- one role's life ------------------------------------------------------------------------
    def container_exited(
        self, keeper: Keeper, code: int | None, event_lag_ms: float | None = None, error: str | None = None
    ) -> None:
        """Book an end (die event, failed create or start, found exited) and
        schedule a start. Every quick end counts toward the fallback."""
        keeper.exit_handled = True
        state = keeper.state
        ran = time.monotonic() - keeper.started_mono
        if keeper.stable_timer is not None:
            keeper.stable_timer.cancel()
            keeper.stable_timer = None
        if ran >= self.stable_run:
            state.failures_in_row = keeper.quick_failures = 0
        state.failures_in_row += 1
        if code != SIGKILL_EXIT:
            keeper.quick_failures += 1
        state.last_exit = code
        state.status = ContainerStatus.EXITED
        keeper.running.clear()
        state.up_since = None
        if code is not None:
            shown = f"exited with status {code}"
        else:
            shown = "failed to start" + (f" ({error})" if error else "")
        lag = f" (die event {event_lag_ms:.0f} ms old)" if event_lag_ms is not None else ""
        self.log.warning(f"{keeper.spec.role}: {state.image} {shown} after {ran:.2f} s{lag}")
        tried = keeper.tried_image_id
        if keeper.quick_failures >= FALLBACK_AFTER and state.image != keeper.spec.fallback_image and tried is not None:
            keeper.bad_image_id = tried
            state.fallback_reason = (
                f"{state.image} ({tried[7:19]}) {shown}, {keeper.quick_failures} times in a row "
                f"within {self.stable_run:.0f} s of starting: using {keeper.spec.fallback_image}"
            )
            self.log.error(f"{keeper.spec.role}: {state.fallback_reason}")
            state.failures_in_row = keeper.quick_failures = 0  # the fallback starts at once
        self.ctx.store.changed()
        self._show_waiting(keeper, f"{keeper.spec.role} {shown}")
        self.schedule(keeper, shown)

    def schedule(self, keeper: Keeper, why: str) -> None:
        if self.stopping:
            return
        if keeper.busy:
            keeper.rerun = True
            return
        keeper.task = asyncio.get_running_loop().create_task(self._keep_started(keeper, why))

    async def _keep_started(self, keeper: Keeper, why: str, done: asyncio.Event | None = None) -> None:
        """Start attempts, with backoff, until one holds."""
        state = keeper.state
        try:
            while not self.stopping:
                delay = backoff_delay(state.failures_in_row)
                if delay > 0:
                    state.status = ContainerStatus.BACKOFF
                    state.next_retry = round(uptime() + delay, 3)
                    self.ctx.store.changed()
                    self.log.info(f"{keeper.spec.role}: {why}; next start in {delay:.1f} s")
                    self._show_waiting(keeper, f"{keeper.spec.role} {why}; next try in {delay:.1f} s")
                    await asyncio.sleep(delay)
                state.next_retry = None
                keeper.rerun = False
                ok = await self._start_once(keeper)
                keeper.first_attempt.set()
                if done is not None:
                    done.set()
                if ok and not keeper.rerun:
                    return
                why = "failed to start" if not ok else f"exited with status {state.last_exit}"
        finally:
            keeper.first_attempt.set()
            if done is not None:
                done.set()

    async def _start_once(self, keeper: Keeper) -> bool:
        from aiodocker.exceptions import DockerError

        spec, state = keeper.spec, keeper.state
        keeper.start_ns = time.time_ns()
        keeper.started_mono = time.monotonic()
        keeper.exit_handled = False
        keeper.tried_image_id = None
        began = uptime()
        try:
            image, image_id, reason = await self.resolve(keeper)
            keeper.tried_image_id = image_id
            resolved = uptime()
            state.image, state.image_id, state.image_reason = image, image_id, reason
            state.status = ContainerStatus.STARTING
            keeper.running.clear()
            self.ctx.store.changed()
            container = None
            reused = False
            if keeper.container_id and keeper.image_id == image_id and not keeper.spec_changed:
                container = self.docker.containers.container(keeper.container_id)
                try:
                    await self._start(keeper, container)
                    reused = True
                except DockerError as exc:
                    if exc.status not in (404, 409):
                        raise
                    self.log.info(f"{spec.role}: cannot start {keeper.container_id[:12]} again ({exc}); replacing it")
            if not reused:
                await self._remove(keeper)
                container = await self._create(keeper, image)
                keeper.container_id, keeper.image_id, keeper.spec_changed = container.id, image_id, False
                state.container_id = container.id
                await self._start(keeper, container)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            why = getattr(exc, "message", None) or str(exc) or repr(exc)  # DockerError: dockerd's own words
            self.log.error(f"{spec.role}: start failed: {why}")
            if not keeper.exit_handled:
                self.container_exited(keeper, None, error=why)
            return False
        took = (uptime() - began) * 1000
        how = "started again" if reused else "created and started"
        self.log.info(
            f"{spec.role}: {how} {state.image} ({keeper.container_id[:12]}) in {took:.0f} ms "
            f"(resolved in {(resolved - began) * 1000:.0f} ms: {reason})"
        )
        if not keeper.exit_handled:  # else it died before the start call returned: already booked
            self._mark_running(keeper)
        if spec.role == "console":
            self.log.milestone("console started", state.image or "")
        return True

    def _mark_running(self, keeper: Keeper) -> None:
        state = keeper.state
        if state.up_since is None and state.status != ContainerStatus.PENDING and keeper.first_attempt.is_set():
            state.restarts += 1
        state.status = ContainerStatus.RUNNING
        keeper.running.set()
        state.up_since = round(uptime(), 3)
        state.next_retry = None
        self.ctx.store.changed()
        loop = asyncio.get_running_loop()
        keeper.stable_timer = loop.call_later(self.stable_run, self._stable, keeper, keeper.start_ns)

    def _stable(self, keeper: Keeper, start_ns: int) -> None:
        if keeper.start_ns == start_ns and not keeper.exit_handled:
            keeper.state.failures_in_row = keeper.quick_failures = 0
            self.ctx.store.changed()

    async def resolve(self, keeper: Keeper) -> tuple[str, str, str]:
        """(tag, image id, why): the first candidate present and not set aside, else the fallback."""
        from aiodocker.exceptions import DockerError

        async def inspect(tag: str) -> dict[str, Any] | None:
            try:
                return await self.docker.images.inspect(tag)
            except DockerError as exc:
                if exc.status == 404:
                    return None
                raise

        spec, tried = keeper.spec, []
        tags = [tag for tag in spec.images if tag != spec.fallback_image]
        # All candidates and the fallback at once: one round trip, not one per tag.
        found = await asyncio.gather(*(inspect(tag) for tag in [*tags, spec.fallback_image]))
        for tag, info in zip(tags, found, strict=False):
            if info is None:
                tried.append(f"{tag} missing")
            elif info["Id"] == keeper.bad_image_id:
                tried.append(f"{tag} set aside (kept crashing)")
            else:
                if keeper.bad_image_id is not None:  # a new image under the tag: give it its chance
                    keeper.bad_image_id = keeper.state.fallback_reason = None
                return tag, info["Id"], f"{tag} present"
        info = found[-1]
        if info is None:
            raise RuntimeError(f"no image to run: {'; '.join(tried)}; the fallback {spec.fallback_image} is missing")
        return spec.fallback_image, info["Id"], "fallback: " + ("; ".join(tried) or "no candidate")

    async def _create(self, keeper: Keeper, image: str) -> Any:
        from aiodocker.exceptions import DockerError

        spec = keeper.spec
        host_config: dict[str, Any] = {
            "NetworkMode": "host" if spec.net_host else "default",
            "Binds": list(spec.binds),
            "CapAdd": list(spec.cap_add),
            "RestartPolicy": {"Name": "no"},  # pid1 restarts, never dockerd
        }
        if spec.privileged:
            privileged = privileged_host_config(self.missing_caps)
            privileged["CapAdd"] = sorted({*privileged.get("CapAdd", []), *spec.cap_add})
            host_config.update(privileged)
        if spec.pid_host:
            host_config["PidMode"] = "host"
        if spec.uts_host:
            host_config["UTSMode"] = "host"
        config: dict[str, Any] = {
            "Image": image,
            "Env": list(spec.env),
            "Labels": {ROLE_LABEL: spec.role, INSTANCE_LABEL: self.instance},
            "Tty": spec.tty,
            "OpenStdin": spec.open_stdin,
            "StdinOnce": False,
            "AttachStdin": spec.open_stdin,
            "AttachStdout": spec.tty,
            "AttachStderr": spec.tty,
            "StopTimeout": spec.stop_timeout,
            "HostConfig": host_config,
        }
        if spec.cmd is not None:
            config["Cmd"] = list(spec.cmd)
        if spec.tty and (spec.role == "console" or image == spec.fallback_image):
            # A shell on a terminal ignores SIGTERM and would hold the stop
            # for its whole timeout; a hang-up is how a terminal session ends.
            config["StopSignal"] = "SIGHUP"
        taken: list[str] = []
        for name in container_names(spec.role):
            try:
                container = await self.docker.containers.create(config, name=name)
            except DockerError as exc:
                if exc.status != 409:  # 409: the name is taken
                    raise
                holder = await self._name_holder(spec.role, name)
                if holder is None:  # one of pid1's own, now removed
                    container = await self.docker.containers.create(config, name=name)
                else:
                    taken.append(f"{name} is held by {holder}")
                    continue
            self._use_name(keeper, name, taken)
            return container
        raise RuntimeError(f"every name pid1 tries for {spec.role} is taken: {'; '.join(taken)}")

    async def _name_holder(self, role: str, name: str) -> str | None:
        """Who holds `name`: None when it was a container of this role (pid1's
        label: an earlier boot's, removed now), else a description of the
        user's container, which pid1 never removes (its writable layer is data)."""
        from aiodocker.exceptions import DockerError

        try:
            info = await self.docker.containers.container(name).show()
        except DockerError as exc:
            if exc.status == 404:
                return None  # gone meanwhile
            raise
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(ROLE_LABEL) == role:
            self.log.info(f"{role}: removing {name} ({info.get('Id', '')[:12]}), left by an earlier boot")
            await self.docker.containers.container(info["Id"]).delete(force=True)
            return None
        image = (info.get("Config") or {}).get("Image") or "?"
        return f"a container pid1 did not make ({info.get('Id', '')[:12]}, image {image})"

    def _use_name(self, keeper: Keeper, name: str, taken: list[str]) -> None:
        state = keeper.state
        conflict = f"the name {'; '.join(taken)}: left alone, running as {name}" if taken else None
        if conflict and conflict != state.name_conflict:
            self.log.warning(f"{keeper.spec.role}: {conflict}")
        elif state.name_conflict and not conflict:
            self.log.notice(f"{keeper.spec.role}: the name {name} is free again: running as {name}")
        if (state.name, state.name_conflict) != (name, conflict):
            state.name, state.name_conflict = name, conflict
            self.ctx.store.changed()

    async def _start(self, keeper: Keeper, container: Any) -> None:
        bridge = keeper.spec.bridge
        if bridge is None:
            await container.start()
            return
        previous = keeper.attach_task
        if previous is not None and not previous.done():
            previous.cancel()  # its container has ended; one attach at a time
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        # The bridge opens the attach stream, then starts the container, so the
        # first prompt reaches the terminals.
        attach = asyncio.get_running_loop().create_task(bridge.attach(container, start=True))
        keeper.attach_task = attach
        ready = asyncio.get_running_loop().create_task(bridge.ready.wait())
        done, _ = await asyncio.wait({attach, ready}, timeout=ATTACH_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
        if not done:
            raise TimeoutError(f"the console bridge did not start the container within {ATTACH_START_TIMEOUT:.0f} s")
        if attach in done and attach.exception() is not None:
            raise attach.exception()

    async def _remove(self, keeper: Keeper, stop_first: bool = False) -> None:
        """Remove every container of the role (the current one, strays, leftovers)."""
        from aiodocker.exceptions import DockerError

        role = keeper.spec.role
        listed = await self.docker.containers.list(all=True, filters=json.dumps({"label": [f"{ROLE_LABEL}={role}"]}))
        for container in listed:
            try:
                if stop_first and container._container.get("State") == "running":
                    await container.stop(t=keeper.spec.stop_timeout)
                await container.delete(force=True)
            except DockerError as exc:
                if exc.status != 404:
                    raise
        keeper.container_id = keeper.image_id = None

    def _show_waiting(self, keeper: Keeper, reason: str) -> None:
        bridge = keeper.spec.bridge
        if bridge is None or self.stopping:
            return
        try:
            bridge.show_waiting(reason)
        except Exception as exc:
            self.log.debug(f"console bridge: show_waiting failed: {exc!r}")
