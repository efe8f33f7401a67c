"""The value of `pid1.net`: `dhcp`, `none` or
`static:ADDR/PREFIX,GATEWAY[,DNS...]`, parsed in one place. pid1.config
checks the value with it (a malformed one is a warning, and DHCP is kept);
the network phase reads the NetMode.

Owns: NetMode, parse_net_mode, net_mode_problem.
May use: the standard library only (ipaddress, imported for static values).
"""

from __future__ import annotations

from dataclasses import dataclass


class NetConfigError(ValueError):
    pass


@dataclass(frozen=True)
class NetMode:
    kind: str  # "dhcp", "static" or "none"
    address: str | None = None  # static: "ADDR/PREFIX"
    gateway: str | None = None
    dns: tuple[str, ...] = ()


def parse_net_mode(value: str) -> NetMode:
    """`pid1.net`'s value -> NetMode; NetConfigError says what is wrong."""
    value = value.strip()
    if value in ("dhcp", "none"):
        return NetMode(kind=value)
    if not value.startswith("static:"):
        raise NetConfigError("expected dhcp, none or static:ADDR/PREFIX,GATEWAY[,DNS...]")
    parts = [part.strip() for part in value[len("static:") :].split(",")]
    if not parts[0]:
        raise NetConfigError("static: the address is missing (static:ADDR/PREFIX,GATEWAY[,DNS...])")
    if "/" not in parts[0]:
        raise NetConfigError(f"static: {parts[0]!r} has no prefix length (e.g. {parts[0]}/24)")
    import ipaddress  # here: config checks every boot's value, and most are dhcp

    try:
        interface = ipaddress.IPv4Interface(parts[0])
    except ValueError as exc:
        raise NetConfigError(f"static: bad IPv4 address {parts[0]!r}: {exc}") from None
    if interface.network.prefixlen == 0:
        raise NetConfigError(f"static: prefix length 0 in {parts[0]!r}")
    gateway = parts[1] if len(parts) > 1 and parts[1] else None
    if gateway is not None:
        try:
            gateway_ip = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise NetConfigError(f"static: bad gateway {gateway!r} (an IPv4 address)") from None
        if gateway_ip == interface.ip:
            raise NetConfigError(f"static: the gateway {gateway} is the address itself")
        if gateway_ip not in interface.network:
            raise NetConfigError(f"static: the gateway {gateway} is not in {interface.network}")
    dns = tuple(part for part in parts[2:] if part)
    for server in dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise NetConfigError(f"static: bad DNS server {server!r} (an IP address)") from None
    return NetMode(kind="static", address=str(interface), gateway=gateway, dns=dns)


def net_mode_problem(value: str) -> str | None:
    """Why `value` is no `pid1.net` value (None: it is one)."""
    try:
        parse_net_mode(value)
    except NetConfigError as exc:
        return str(exc)
    return None
