"""The starter's hand-over between two console attaches: a start cancelled
(pid1's stop) while the previous attach winds down ends cancelled, and does
not go on to attach and start a container during the stop."""

from __future__ import annotations

import asyncio

from pid1.container_spec import ContainerSpec
from pid1.engine.keeper import Keeper
from pid1.engine.starter import Starter
from pid1.state_schema import ContainerState


class RecordingBridge:
    def __init__(self) -> None:
        self.attached: list[object] = []

    async def attach(self, container: object, *, start: bool = False) -> None:
        self.attached.append(container)


def test_a_start_cancelled_while_the_previous_attach_ends_is_cancelled_and_attaches_nothing() -> None:
    async def scenario() -> tuple[RecordingBridge, bool]:
        bridge = RecordingBridge()
        spec = ContainerSpec(role="console", images=("console-image:latest",), fallback_image="busybox:latest",
                             bridge=bridge)  # type: ignore[arg-type]  # fmt: skip
        keeper = Keeper(spec=spec, state=ContainerState(role="console", name="console"), log=None)  # type: ignore[arg-type]
        winding_down = asyncio.Event()

        async def previous_attach() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                winding_down.set()
                await asyncio.sleep(0.2)  # a stream's close takes a moment; it then returns

        keeper.attach_task = asyncio.create_task(previous_attach())
        await asyncio.sleep(0)
        starter = Starter(client=None, log=None, store=None, instance="test", missing_caps=[])  # type: ignore[arg-type]
        start = asyncio.create_task(starter.start(keeper, object()))  # type: ignore[arg-type]
        await winding_down.wait()
        start.cancel()
        try:
            await asyncio.wait_for(start, 5)
        except asyncio.CancelledError:
            return bridge, True
        return bridge, False

    bridge, cancelled = asyncio.run(scenario())
    assert cancelled, "the cancelled start went on as if nothing happened"
    assert bridge.attached == [], "a container was attached and started during the stop"
