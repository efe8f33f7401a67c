"""The value of `pid1.net`, parsed in one place: what each interface gets.

    dhcp | none | SPEC                      the first ethernet link
    NAME:SPEC[+NAME:SPEC...]                named interfaces (eth0, ens4...)
    SPEC = dhcp[,default][,mtu=N]
         | static:ADDR/PREFIX[,GATEWAY[,DNS...]][,mtu=N]

One interface owns the default route: the one with a GATEWAY, else the
`dhcp` one marked `default`, else the first `dhcp` one listed; another DHCP
interface gets its address but not the route (it must not steal it). Two
owners is an error. pid1.config checks the value with this parser (a
malformed one is a warning, and DHCP on the first link is kept); the
user-data's `network:` (cloud-init network config v2, pid1.net.netconfig)
is turned into this form, so this is the one parser of both.

Owns: Method, Interface, NetMode, parse_net_mode, net_mode_problem, net_mode_text.
May use: the standard library only (ipaddress, imported for static values).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

MTU_MIN = 68  # the IPv4 minimum (RFC 791)
MTU_MAX = 65535
IFNAME_MAX = 15  # IFNAMSIZ - 1
INTERFACE_SEPARATOR = "+"
SYNTAX = "dhcp, none, static:ADDR/PREFIX[,GATEWAY[,DNS...]][,mtu=N], or NAME:SPEC[+NAME:SPEC...]"


class NetConfigError(ValueError):
    pass


class Method(StrEnum):
    DHCP = "dhcp"
    STATIC = "static"


@dataclass(frozen=True)
class Interface:
    """One interface's settings. name None: the machine's first ethernet link."""

    name: str | None
    method: Method
    address: str | None = None  # static: "ADDR/PREFIX"
    gateway: str | None = None  # static: the default route's next hop
    dns: tuple[str, ...] = ()
    mtu: int | None = None
    default_route: bool = False  # this interface owns the default route

    def label(self) -> str:
        return self.name or "the first ethernet link"


@dataclass(frozen=True)
class NetMode:
    """`kind`: "none", or the method of the interface that owns the default
    route (what the state's `mode` says)."""

    kind: str
    interfaces: tuple[Interface, ...] = ()

    @property
    def primary(self) -> Interface | None:
        """The interface whose address and default route make the network "up"."""
        owner = next((i for i in self.interfaces if i.default_route), None)
        return owner or (self.interfaces[0] if self.interfaces else None)

    @property
    def dns(self) -> tuple[str, ...]:
        """The static interfaces' DNS servers, in order, once each."""
        return tuple(dict.fromkeys(server for i in self.interfaces for server in i.dns))


def valid_ifname(name: str) -> bool:
    """What the kernel's dev_valid_name accepts, minus this syntax's separators."""
    return (
        0 < len(name) <= IFNAME_MAX
        and name not in (".", "..")
        and not any(ch.isspace() or ch in "/:,+=" for ch in name)
    )


def parse_net_mode(value: str) -> NetMode:
    """`pid1.net`'s value -> NetMode; NetConfigError says what is wrong."""
    value = value.strip()
    if value == "none":
        return NetMode(kind="none")
    entries = [entry.strip() for entry in value.split(INTERFACE_SEPARATOR)]
    interfaces = [parse_entry(entry, named=len(entries) > 1) for entry in entries]
    names = [i.name for i in interfaces]
    for name in names:
        if names.count(name) > 1:
            raise NetConfigError(f"interface {name} is configured twice")
    return with_default_route(interfaces)


def parse_entry(entry: str, named: bool) -> Interface:
    name: str | None = None
    head, colon, rest = entry.partition(":")
    if colon and head.strip() not in ("static", "dhcp"):
        name = head.strip()
        if not valid_ifname(name):
            raise NetConfigError(f"{name!r} is no interface name (1-{IFNAME_MAX} characters, no / : , + = or spaces)")
        entry = rest.strip()
    elif named:
        raise NetConfigError(f"{entry!r}: with several interfaces, each needs its name (NAME:SPEC)")
    where = f"{name}: " if name else ""
    if entry == "none":
        raise NetConfigError(f"{where}none is for the whole machine (pid1.net=none), not one interface")
    words = [word.strip() for word in entry.split(",")]
    options = [w for w in words[1:] if "=" in w or w == "default"]
    positional = [w for w in words[1:] if w not in options]
    mtu, default = parse_options(options, where)
    if words[0] == "dhcp":
        if positional:
            raise NetConfigError(f"{where}dhcp takes only default and mtu=N, not {positional[0]!r}")
        return Interface(name=name, method=Method.DHCP, mtu=mtu, default_route=default)
    if not words[0].startswith("static:"):
        raise NetConfigError(f"{where}{words[0]!r}: expected {SYNTAX}")
    if default:
        raise NetConfigError(f"{where}static takes the default route by its GATEWAY, not 'default'")
    return parse_static([words[0][len("static:") :].strip(), *positional], name, mtu, where)


def parse_options(options: list[str], where: str) -> tuple[int | None, bool]:
    mtu: int | None = None
    default = False
    for option in options:
        key, _, text = option.partition("=")
        if option == "default":
            default = True
        elif key.strip() == "mtu":
            if not text.strip().isdigit() or not MTU_MIN <= int(text) <= MTU_MAX:
                raise NetConfigError(f"{where}bad mtu {text.strip()!r} (a number, {MTU_MIN}-{MTU_MAX})")
            mtu = int(text)
        else:
            raise NetConfigError(f"{where}unknown option {option!r} (mtu=N, or default for dhcp)")
    return mtu, default


def parse_static(parts: list[str], name: str | None, mtu: int | None, where: str) -> Interface:
    if not parts[0]:
        raise NetConfigError(f"{where}static: the address is missing (static:ADDR/PREFIX,GATEWAY[,DNS...])")
    if "/" not in parts[0]:
        raise NetConfigError(f"{where}static: {parts[0]!r} has no prefix length (e.g. {parts[0]}/24)")
    import ipaddress  # here: config checks every boot's value, and most are dhcp

    try:
        interface = ipaddress.IPv4Interface(parts[0])
    except ValueError as exc:
        raise NetConfigError(f"{where}static: bad IPv4 address {parts[0]!r}: {exc}") from None
    if interface.network.prefixlen == 0:
        raise NetConfigError(f"{where}static: prefix length 0 in {parts[0]!r}")
    gateway = parts[1] if len(parts) > 1 and parts[1] else None
    if gateway is not None:
        try:
            gateway_ip = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise NetConfigError(f"{where}static: bad gateway {gateway!r} (an IPv4 address)") from None
        if gateway_ip == interface.ip:
            raise NetConfigError(f"{where}static: the gateway {gateway} is the address itself")
        if gateway_ip not in interface.network:
            raise NetConfigError(f"{where}static: the gateway {gateway} is not in {interface.network}")
    dns = tuple(part for part in parts[2:] if part)
    for server in dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise NetConfigError(f"{where}static: bad DNS server {server!r} (an IP address)") from None
    return Interface(name=name, method=Method.STATIC, address=str(interface), gateway=gateway, dns=dns, mtu=mtu,
                     default_route=gateway is not None)  # fmt: skip


def with_default_route(interfaces: list[Interface]) -> NetMode:
    """Mark the one interface that owns the default route (see the module doc)."""
    owners = [i for i in interfaces if i.default_route]
    if len(owners) > 1:
        named = ", ".join(i.label() for i in owners)
        raise NetConfigError(f"{named}: only one interface may have the default route (a gateway, or dhcp,default)")
    if not owners:
        first_dhcp = next((i for i in interfaces if i.method == Method.DHCP), None)
        if first_dhcp is not None:
            interfaces = [replace(i, default_route=True) if i is first_dhcp else i for i in interfaces]
    mode = NetMode(kind="", interfaces=tuple(interfaces))
    primary = mode.primary
    assert primary is not None  # parse_net_mode makes at least one entry
    return replace(mode, kind=primary.method.value)


def net_mode_text(mode: NetMode) -> str:
    """A NetMode written as `pid1.net`'s value (parse_net_mode reads it back)."""
    if mode.kind == "none":
        return "none"
    entries = []
    for i in mode.interfaces:
        if i.method == Method.DHCP:
            words = ["dhcp", *(["default"] if i.default_route and len(mode.interfaces) > 1 else [])]
        else:
            words = [f"static:{i.address}", i.gateway or "", *i.dns]
            while len(words) > 1 and not words[-1]:
                words.pop()
        if i.mtu is not None:
            words.append(f"mtu={i.mtu}")
        entries.append((f"{i.name}:" if i.name else "") + ",".join(words))
    return INTERFACE_SEPARATOR.join(entries)


def net_mode_problem(value: str) -> str | None:
    """Why `value` is no `pid1.net` value (None: it is one)."""
    try:
        parse_net_mode(value)
    except NetConfigError as exc:
        return str(exc)
    return None
