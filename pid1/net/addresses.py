"""The addresses of the interfaces pid1.net configures, for a phase that
needs one (Swarm's advertise interface): the network phase fills
Wiring.interface_addresses with an InterfaceAddresses over the state's
`network.interfaces`, and calls `changed()` whenever it changes them. And
the address this machine reaches a peer from (`source_address_towards`).

Owns: InterfaceAddresses, source_address_towards. May use: asyncio, socket,
the state's NetworkState.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
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


async def source_address_towards(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The local address the kernel's routes would send from to HOST:PORT
    (a connected UDP socket: nothing is sent), or None: no route, or a name
    that does not resolve within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout)
    except (OSError, TimeoutError):
        return None
    for family, kind, proto, _, address in found:
        with contextlib.suppress(OSError), socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            source = ipaddress.ip_address(probe.getsockname()[0])
            return f"[{source}]" if source.version == 6 else str(source)
    return None
