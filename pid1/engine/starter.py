"""Making and starting one role's container: the Docker side of a start
attempt, for pid1/engine/system_containers.py.

Owns `Starter`: resolve the image (the spec's candidate tags and its
fallback, looked up at once), start the current container again when it was
made from the same image and spec (cheaper than a new one:
docs/benchmarks.md#restarts-and-the-engine), else remove the role's
containers and create a new one, then start it: plainly, or through the
spec's console bridge (`bridge.attach(container, start=True)`, so the first
prompt reaches the terminals). pid1 removes only containers with its own
`pid1.role` label: when a user's container holds the role's name (its
writable layer is data) the role runs as `ROLE-pid1` (then `ROLE-pid1-2`...)
and `name_conflict` says so.

May use: pid1.engine.client (the Docker API), pid1.engine.container_config,
pid1.engine.keeper, pid1.container_spec; the log and state store it is given.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pid1.container_spec import ROLE_LABEL
from pid1.engine.client import Container, DockerClient, EngineError
from pid1.engine.container_config import container_names, create_config
from pid1.engine.keeper import Keeper, candidate_tags, choose_image

if TYPE_CHECKING:
    from pid1.log import Log
    from pid1.state import StateStore

ATTACH_START_TIMEOUT = 30.0


@dataclass
class Starter:
    client: DockerClient
    log: Log
    store: StateStore
    instance: str  # this boot's pid1.instance label
    missing_caps: list[str]  # what the bounding set lacks (--privileged cannot work then)

    async def resolve(self, keeper: Keeper) -> tuple[str, str, str]:
        """(tag, image id, why): the first candidate present and not set aside, else the fallback."""
        # All candidates and the fallback at once: one round trip, not one per tag.
        found = await asyncio.gather(*(self.client.image_id(tag) for tag in candidate_tags(keeper.spec)))
        tag, image_id, why = choose_image(keeper.spec, found, keeper.bad_image_id)
        if tag != keeper.spec.fallback_image and keeper.bad_image_id is not None:
            keeper.bad_image_id = keeper.state.fallback_reason = None  # a new image under the tag: its chance
        return tag, image_id, why

    async def start_resolved(self, keeper: Keeper, image: str, image_id: str) -> bool:
        """Start the role's container running `image`: the current one again
        when it can be, else a new one. Returns whether it was reused."""
        spec = keeper.spec
        if keeper.container_id and keeper.image_id == image_id and keeper.made_from == spec:
            try:
                await self.start(keeper, self.client.container(keeper.container_id))
                return True
            except EngineError as exc:
                if exc.status not in (404, 409):
                    raise
                self.log.info(f"{spec.role}: cannot start {keeper.container_id[:12]} again ({exc}); replacing it")
        await self.remove(keeper)
        container = await self.create(keeper, image)
        keeper.container_id, keeper.image_id, keeper.made_from = container.id, image_id, spec
        keeper.state.container_id = container.id
        await self.start(keeper, container)
        return False

    async def create(self, keeper: Keeper, image: str) -> Container:
        spec = keeper.spec
        config = create_config(spec, image, self.instance, self.missing_caps)
        taken: list[str] = []
        for name in container_names(spec.role):
            try:
                container = await self.client.create_container(config, name)
            except EngineError as exc:
                if exc.status != 409:  # 409: the name is taken
                    raise
                holder = await self.name_holder(spec.role, name)
                if holder is not None:
                    taken.append(f"{name} is held by {holder}")
                    continue
                container = await self.client.create_container(config, name)  # it was one of pid1's own, now removed
            self.use_name(keeper, name, taken)
            return container
        raise RuntimeError(f"every name pid1 tries for {spec.role} is taken: {'; '.join(taken)}")

    async def name_holder(self, role: str, name: str) -> str | None:
        """Who holds `name`: None when it was a container of this role (pid1's
        label: an earlier boot's, removed now), else a description of the
        user's container, which pid1 never removes (its writable layer is data)."""
        info = await self.client.inspect_container(name)
        if info is None:
            return None  # gone meanwhile
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(ROLE_LABEL) == role:
            self.log.info(f"{role}: removing {name} ({info.get('Id', '')[:12]}), left by an earlier boot")
            await self.client.container(info["Id"]).remove()
            return None
        image = (info.get("Config") or {}).get("Image") or "?"
        return f"a container pid1 did not make ({info.get('Id', '')[:12]}, image {image})"

    def use_name(self, keeper: Keeper, name: str, taken: list[str]) -> None:
        state = keeper.state
        conflict = f"the name {'; '.join(taken)}: left alone, running as {name}" if taken else None
        if conflict and conflict != state.name_conflict:
            self.log.warning(f"{keeper.role}: {conflict}")
        elif state.name_conflict and not conflict:
            self.log.notice(f"{keeper.role}: the name {name} is free again: running as {name}")
        if (state.name, state.name_conflict) != (name, conflict):
            state.name, state.name_conflict = name, conflict
            self.store.changed()

    async def start(self, keeper: Keeper, container: Container) -> None:
        bridge = keeper.spec.bridge
        if bridge is None:
            await container.start()
            return
        previous = keeper.attach_task
        if previous is not None and not previous.done():
            previous.cancel()  # its container has ended; one attach at a time
            # Waited for, not awaited: its end (cancelled, or an error from a
            # container that is gone) is not this start's, but a cancellation
            # of this task (the stop) still reaches it.
            await asyncio.wait({previous})
            if not previous.cancelled():
                previous.exception()
        # The bridge opens the attach stream, then starts the container, so the
        # first prompt reaches the terminals.
        loop = asyncio.get_running_loop()
        attach = loop.create_task(bridge.attach(container, start=True))
        keeper.attach_task = attach
        ready = loop.create_task(bridge.ready.wait())
        done, _ = await asyncio.wait({attach, ready}, timeout=ATTACH_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
        if not done:
            raise TimeoutError(f"the console bridge did not start the container within {ATTACH_START_TIMEOUT:.0f} s")
        if attach in done and attach.exception() is not None:
            raise attach.exception()

    async def remove(self, keeper: Keeper, stop_first: bool = False) -> None:
        """Remove every container of the role (the current one, strays, leftovers)."""
        for listed in await self.client.list_containers(f"{ROLE_LABEL}={keeper.role}"):
            container = self.client.container(listed.id)
            try:
                if stop_first and listed.state == "running":
                    await container.stop(keeper.spec.stop_timeout)
                await container.remove()
            except EngineError as exc:
                if exc.status != 404:
                    raise
        keeper.forget_container()

    def show_waiting(self, keeper: Keeper, reason: str) -> None:
        """The console bridge's waiting line (a spec without a bridge: nothing)."""
        bridge = keeper.spec.bridge
        if bridge is None:
            return
        try:
            bridge.show_waiting(reason)
        except Exception as exc:
            self.log.debug(f"console bridge: show_waiting failed: {exc!r}")
