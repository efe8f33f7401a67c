"""The user-data's network: a subset of cloud-init's network config version 2
(the `network:` key of a #cloud-config, or NoCloud's `network-config` file),
turned into a NetMode, which is then written as `pid1.net`'s value: the
kernel command line's one parser (pid1.net.mode) checks it, and the
command line's own `pid1.net` wins as for any key.

    network:
      version: 2
      ethernets:
        eth0: {dhcp4: true}
        eth1:
          addresses: [10.0.0.5/24]
          gateway4: 10.0.0.1        # or routes: [{to: default, via: 10.0.0.1}]
          nameservers: {addresses: [10.0.0.1]}
          mtu: 9000

Each ethernet is keyed by its interface name. `dhcp4: true` is DHCP (its
default route, unless `dhcp4-overrides: {use-routes: false}`), else the first
of `addresses` is the static IPv4 address. What this system does not apply
(IPv6, more addresses, `match`, `set-name`, bonds, bridges, vlans, other
keys) is a warning that names it; an ethernet that cannot be used is skipped
with the reason; nothing usable at all is a UserDataError-free None, so
DHCP on the first link stays.

Owns: parse_network_config, network_from_document.
May use: pid1.net.mode; the YAML parser only for a network-config file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pid1.net.mode import (
    Interface,
    Method,
    NetConfigError,
    net_mode_text,
    parse_entry,
    valid_ifname,
    with_default_route,
)

MAX_ETHERNETS = 16
MAX_BYTES = 64 * 1024
ETHERNET_KEYS = frozenset({"dhcp4", "dhcp4-overrides", "addresses", "gateway4", "routes", "nameservers", "mtu"})
IGNORED_KEYS = frozenset({"dhcp6", "match", "set-name", "wakeonlan", "optional", "renderer", "critical"})


def network_from_document(value: Any, warnings: list[str], where: str = "network") -> str | None:
    """The `network:` value (v2) as `pid1.net`'s text, or None (nothing
    usable: the reasons are in `warnings`)."""
    if isinstance(value, dict) and "network" in value and "version" not in value:
        value = value["network"]  # a network-config file may wrap it, as cloud-init allows
    if not isinstance(value, dict):
        warnings.append(f"{where} is not a mapping (version: 2, ethernets: ...): ignored")
        return None
    if value.get("version") != 2:
        warnings.append(f"{where}.version is {value.get('version')!r}: only version 2 is read; ignored")
        return None
    if value.get("config") == "disabled":
        return None
    for key in value:
        if key not in ("version", "ethernets", "renderer"):
            warnings.append(f"{where}.{str(key)[:40]}: not supported (only ethernets): ignored")
    ethernets = value.get("ethernets")
    if not isinstance(ethernets, dict) or not ethernets:
        warnings.append(f"{where}.ethernets is missing or not a mapping of interface names: ignored")
        return None
    interfaces: list[Interface] = []
    for name, settings in list(ethernets.items())[:MAX_ETHERNETS]:
        try:
            interfaces.append(ethernet(str(name), settings, warnings, f"{where}.ethernets.{str(name)[:20]}"))
        except NetConfigError as exc:
            warnings.append(f"{where}.ethernets.{str(name)[:20]}: {exc}; skipped")
    if len(ethernets) > MAX_ETHERNETS:
        warnings.append(f"{where}.ethernets: more than {MAX_ETHERNETS}; the rest ignored")
    if not interfaces:
        return None
    try:
        return net_mode_text(with_default_route(pick_default_route(interfaces)))
    except NetConfigError as exc:
        warnings.append(f"{where}: {exc}; ignored")
        return None


def pick_default_route(interfaces: list[Interface]) -> list[Interface]:
    """The default route's owner: the static interface with a gateway, else
    the first DHCP one that does not refuse routes (dhcp4-overrides)."""
    if any(i.default_route and i.method == Method.STATIC for i in interfaces):
        return [replace(i, default_route=False) if i.method == Method.DHCP else i for i in interfaces]
    owner = next((i for i in interfaces if i.default_route), None)
    return [replace(i, default_route=i is owner) for i in interfaces]


def ethernet(name: str, settings: Any, warnings: list[str], where: str) -> Interface:
    if not valid_ifname(name):
        raise NetConfigError(f"{name!r} is no interface name")
    if not isinstance(settings, dict):
        raise NetConfigError("not a mapping of settings")
    for key in settings:
        if key in IGNORED_KEYS:
            warnings.append(f"{where}.{key}: not applied by this system (interfaces are named, IPv4 only)")
        elif key not in ETHERNET_KEYS:
            warnings.append(f"{where}.{str(key)[:40]}: unknown key, ignored")
    mtu = settings.get("mtu")
    words = [f"mtu={mtu}"] if mtu is not None else []
    if settings.get("dhcp4") is True:
        for key in ("addresses", "gateway4", "routes", "nameservers"):
            if key in settings:
                warnings.append(f"{where}.{key}: ignored with dhcp4 (the lease gives them)")
        interface = parse_entry(",".join(["dhcp", *words]), named=False)
        overrides = settings.get("dhcp4-overrides") or {}
        routes = not (isinstance(overrides, dict) and overrides.get("use-routes") is False)
        return replace(interface, name=name, default_route=routes)  # a candidate; see pick_default_route
    addresses = [a for a in settings.get("addresses") or [] if isinstance(a, str) and ":" not in a]
    if not addresses:
        raise NetConfigError("neither dhcp4: true nor an IPv4 address in addresses")
    if len(addresses) > 1 or len(addresses) != len(settings.get("addresses") or []):
        warnings.append(f"{where}.addresses: only the first IPv4 address, {addresses[0]}, is applied")
    gateway = settings.get("gateway4") or default_via(settings.get("routes"), warnings, where)
    servers = settings.get("nameservers") or {}
    dns = servers.get("addresses", []) if isinstance(servers, dict) else []
    if not isinstance(dns, list):
        raise NetConfigError("nameservers.addresses is not a list")
    static = ",".join([f"static:{addresses[0]}", str(gateway or ""), *map(str, dns), *words])
    return replace(parse_entry(static, named=False), name=name)


def default_via(routes: Any, warnings: list[str], where: str) -> str | None:
    """The gateway of a default route in `routes` (the others are warned about)."""
    if routes is None:
        return None
    if not isinstance(routes, list):
        raise NetConfigError("routes is not a list")
    gateway = None
    for route in routes:
        if isinstance(route, dict) and route.get("to") in ("default", "0.0.0.0/0") and gateway is None:
            gateway = str(route.get("via", ""))
        else:
            warnings.append(f"{where}.routes: only a default route is applied; {str(route)[:60]} ignored")
    return gateway


def parse_network_config(raw: bytes, warnings: list[str], where: str = "network-config") -> str | None:
    """NoCloud's `network-config` file (YAML) as `pid1.net`'s text, or None."""
    if len(raw) > MAX_BYTES:
        warnings.append(f"{where}: {len(raw)} bytes, over {MAX_BYTES // 1024} KiB: ignored")
        return None
    if not raw.strip():
        return None
    import yaml  # only when there is such a file

    try:
        document = yaml.safe_load(raw.decode("utf-8", errors="replace"))
    except yaml.YAMLError as exc:
        warnings.append(f"{where}: malformed YAML ({str(exc).splitlines()[0]}): ignored")
        return None
    return network_from_document(document, warnings, where)
