"""The addresses of the interfaces pid1.net configures, for a phase that
needs one (Swarm's advertise interface): the network phase fills
Wiring.interface_addresses with an InterfaceAddresses over the state's
`network.interfaces`, and calls `changed()` whenever it changes them.

Owns: InterfaceAddresses. May use: asyncio, the state's NetworkState.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pid1.state_schema import NetworkState


class InterfaceAddresses:
    """What the network phase provides a phase that needs an interface's
    address (Wiring.interface_addresses; e.g. Swarm's advertise interface):
    `of(name)` now, or `wait(name, timeout)` until it has one. One for the
    boot (a retried phase keeps it); it reads the state's current
    `network.interfaces`, which the phase changes and then calls `changed()`."""

    def __init__(self, network: Callable[[], NetworkState]) -> None:
        self.network = network
        self.event = asyncio.Event()

    def of(self, name: str) -> list[str]:
        """Interface `name`'s IPv4 addresses ("ADDR/PREFIX"); [] while it has none, or is absent."""
        return self.network().addresses_of(name)

    def changed(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()  # wakes every waiter; the next wait waits for the next change

    async def wait(self, name: str, timeout: float) -> list[str]:
        """`of(name)` once it is not empty, or [] after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not (found := self.of(name)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), remaining)
        return found
