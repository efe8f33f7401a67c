"""The user-data's `swarm:` section, parsed and checked into a `SwarmConfig`
before the swarm phase (pid1/phases/swarm.py) applies any of it.

    swarm:
      init: {advertise_addr: eth1}                      # or an IP, IP:PORT
      # or
      join: {managers: ["10.0.0.1:2377"], token: SWMTKN-1-..., advertise_addr: eth1}
      labels: {zone: a}

Strict: an unknown key, `init` and `join` both, a token that is not
`SWMTKN-1-<50 base36>-<25 base36>`, a manager that is not HOST[:PORT] is a
`SwarmConfigError` naming it, and nothing of the section applies (the rest
of the user-data does). Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

MAX_MANAGERS = 16
MAX_LABELS = 64
DEFAULT_PORT = 2377
# Docker's join token: version 1, the CA's digest in base 36 (50 digits), the secret (25).
TOKEN = re.compile(r"^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$")
INTERFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # IFNAMSIZ - 1
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
LABEL_VALUE_MAX = 256
SECTION_KEYS = ("init", "join", "labels")
INIT_KEYS = ("advertise_addr",)
JOIN_KEYS = ("managers", "token", "advertise_addr")


class SwarmConfigError(ValueError):
    """The section cannot be used; the message names what and why."""


@dataclass(frozen=True)
class SwarmConfig:
    """`role` is "init" or "join"; `managers` and `token` only for a join."""

    role: str
    advertise_addr: str | None = None
    managers: tuple[str, ...] = ()
    token: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def listen_addr(self) -> str:
        """Where the node listens for the swarm: the advertised address, or
        dockerd's default. A join must not leave dockerd's default: a worker
        that joined listening on 0.0.0.0 finds its own address again at
        every start by a route to the manager, and dockerd exits fatally
        ("could not find local IP address") when a boot starts it before
        the network it gets from a container (docs/swarm.md)."""
        if self.advertise_addr is None:
            return f"0.0.0.0:{DEFAULT_PORT}"
        if is_interface(self.advertise_addr):  # dockerd takes its address when it joins
            return f"{self.advertise_addr}:{DEFAULT_PORT}"
        return host_port(self.advertise_addr, "advertise_addr")  # an address, checked when parsed

    def summary(self) -> str:
        if self.role == "init":
            return f"swarm init (advertise {self.advertise_addr or 'default'})"
        return f"swarm join ({len(self.managers)} manager{'s' if len(self.managers) != 1 else ''})"


def parse_swarm(value: Any) -> SwarmConfig:
    if not isinstance(value, dict):
        raise SwarmConfigError(f"swarm is a {type(value).__name__}, not a mapping (init or join, labels)")
    _no_unknown(value, SECTION_KEYS, "swarm")
    if ("init" in value) == ("join" in value):
        raise SwarmConfigError("swarm needs exactly one of init and join" + (", not both" if "init" in value else ""))
    labels = _labels(value.get("labels", {}))
    if "init" in value:
        init = value["init"] if value["init"] is not None else {}
        if not isinstance(init, dict):
            raise SwarmConfigError("swarm.init is not a mapping (advertise_addr)")
        _no_unknown(init, INIT_KEYS, "swarm.init")
        return SwarmConfig(role="init", advertise_addr=_advertise(init.get("advertise_addr"), "swarm.init"),
                           labels=labels)  # fmt: skip
    join = value["join"]
    if not isinstance(join, dict):
        raise SwarmConfigError("swarm.join is not a mapping (managers, token)")
    _no_unknown(join, JOIN_KEYS, "swarm.join")
    return SwarmConfig(
        role="join",
        advertise_addr=_advertise(join.get("advertise_addr"), "swarm.join"),
        managers=_managers(join.get("managers")),
        token=_token(join.get("token")),
        labels=labels,
    )


def _no_unknown(mapping: dict[Any, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [str(key)[:40] for key in mapping if key not in known]
    if unknown:
        raise SwarmConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(known)})")


def _token(value: Any) -> str:
    if not isinstance(value, str):
        raise SwarmConfigError("swarm.join.token is missing (docker swarm join-token -q worker)")
    if not TOKEN.match(value.strip()):
        shown = value[:12] + "..." if len(value) > 12 else value  # the secret part is not for the log
        raise SwarmConfigError(
            f"swarm.join.token {shown!r} is not a join token (SWMTKN-1-<50 base-36 digits>-<25 base-36 digits>)"
        )
    return value.strip()


def host_port(value: Any, where: str) -> str:
    """HOST, IPv4:PORT, [IPv6]:PORT or HOST:PORT, checked; the port 2377 by default."""
    if not isinstance(value, str) or not value:
        raise SwarmConfigError(f"{where} {str(value)[:60]!r} is not HOST[:PORT]")
    host, port = value, str(DEFAULT_PORT)
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SwarmConfigError(f"{where} {value[:60]!r}: {port[:10]!r} is not a port")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not HOST_NAME.match(host):
            reason = f"{host[:60]!r} is neither an address nor a host name"
            raise SwarmConfigError(f"{where} {value[:60]!r}: {reason}") from None
        return f"{host}:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _managers(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SwarmConfigError("swarm.join.managers is missing or not a list of HOST[:PORT]")
    if len(value) > MAX_MANAGERS:
        raise SwarmConfigError(f"swarm.join.managers: {len(value)} of them, more than {MAX_MANAGERS}")
    return tuple(host_port(entry, "swarm.join.managers entry") for entry in value)


def _advertise(value: Any, where: str) -> str | None:
    """An address (IP or IP:PORT) or an interface name; None: dockerd chooses."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SwarmConfigError(f"{where}.advertise_addr is not text (an address or an interface name)")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if INTERFACE.match(value) and ":" not in value:
        return value
    return host_port(value, f"{where}.advertise_addr")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise SwarmConfigError("swarm.labels is not a mapping of names to values")
    if len(value) > MAX_LABELS:
        raise SwarmConfigError(f"swarm.labels: {len(value)} of them, more than {MAX_LABELS}")
    labels = {}
    for key, label in value.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise SwarmConfigError(f"swarm.labels: {str(key)[:60]!r} is not a label name (letters, digits, ._/-)")
        if isinstance(label, bool) or not isinstance(label, (str, int, float)) or len(str(label)) > LABEL_VALUE_MAX:
            raise SwarmConfigError(f"swarm.labels.{key}: not a short plain value")
        labels[key] = str(label)
    return labels


def is_interface(advertise: str | None) -> bool:
    """Whether advertise_addr names an interface (not an address)."""
    if advertise is None:
        return False
    try:
        ipaddress.ip_address(advertise)
        return False
    except ValueError:
        return bool(INTERFACE.match(advertise)) and ":" not in advertise
