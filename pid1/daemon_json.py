"""dockerd's daemon.json, from the user-data's `only_docker.docker` section:
checked key by key before dockerd sees it, because dockerd 20.10 refuses to
start at all on a key it does not know, a value of the wrong type, or a key
also given as a flag (pid1 passes --data-root, --exec-root, -H, --pidfile,
--containerd and --storage-driver itself). It has no `--validate` yet, so
this check is the one before the start; a file dockerd still refuses is
caught at its start (pid1.phases.dockerd falls back to the last good one).

`proxies` (daemon.json only from dockerd 23) becomes the environment of
dockerd and of the console and dom0, so their pulls use the same proxy.
Pure logic: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# Set by pid1 as flags: the same key in daemon.json stops dockerd.
FLAG_KEYS = frozenset({"data-root", "graph", "exec-root", "hosts", "pidfile", "containerd", "storage-driver"})
PROXY_ENV = {"http-proxy": "HTTP_PROXY", "https-proxy": "HTTPS_PROXY", "no-proxy": "NO_PROXY"}


@dataclass
class DaemonSettings:
    """What the docker section becomes: daemon.json's content, the proxy
    environment, and why it was refused (empty when it was not)."""

    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


class Invalid(ValueError):
    pass


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("expected a list of strings")
    return value


def _urls(value: Any) -> list[str]:
    for url in _strings(value):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Invalid(f"{url!r} is not an http(s) URL")
    return value


def _ips(value: Any) -> list[str]:
    for address in _strings(value):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise Invalid(f"{address!r} is not an IP address") from None
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {value!r}")
    return value


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    return check


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected a string, got {value!r}")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _network(value: Any) -> str:
    try:
        ipaddress.ip_network(_string(value), strict=False)
    except ValueError:
        raise Invalid(f"{value!r} is not an address/prefix") from None
    return value


def _string_map(value: Any) -> dict[str, str]:
    """log-opts and the like: dockerd wants strings; YAML reads `max-file: 3`
    as a number, which is what the user meant as "3"."""
    if not isinstance(value, dict):
        raise Invalid("expected a mapping")
    out = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise Invalid(f"{key}: expected a string, got {item!r}")
        out[str(key)] = str(item)
    return out


def _features(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise Invalid("expected a mapping of feature names to true or false")
    return value


def _address_pools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise Invalid("expected a list of {base, size}")
    for pool in value:
        if not isinstance(pool, dict) or set(pool) != {"base", "size"}:
            raise Invalid(f"{pool!r}: expected exactly base and size")
        _network(pool["base"])
        _int_between(1, 128)(pool["size"])
    return value


KNOWN: dict[str, Callable[[Any], Any]] = {
    "registry-mirrors": _urls,
    "insecure-registries": _strings,
    "allow-nondistributable-artifacts": _strings,
    "dns": _ips,
    "dns-search": _strings,
    "dns-opts": _strings,
    "labels": _strings,
    "log-driver": _string,
    "log-opts": _string_map,
    "log-level": _choice("debug", "info", "warn", "error", "fatal"),
    "default-address-pools": _address_pools,
    "bip": _network,
    "fixed-cidr": _network,
    "fixed-cidr-v6": _network,
    "mtu": _int_between(68, 65535),
    "max-concurrent-downloads": _int_between(1, 64),
    "max-concurrent-uploads": _int_between(1, 64),
    "max-download-attempts": _int_between(1, 64),
    "shutdown-timeout": _int_between(0, 3600),
    "live-restore": _bool,
    "debug": _bool,
    "experimental": _bool,
    "ipv6": _bool,
    "icc": _bool,
    "ip-forward": _bool,
    "ip-masq": _bool,
    "iptables": _bool,
    "userland-proxy": _bool,
    "no-new-privileges": _bool,
    "init": _bool,
    "features": _features,
    "metrics-addr": _string,
    "default-cgroupns-mode": _choice("private", "host"),
    "default-ipc-mode": _choice("private", "shareable"),
    "default-shm-size": _string,
}


def flags_given(dockerd_args: list[str]) -> set[str]:
    """The daemon.json keys the extra dockerd arguments set (`--bridge=none` -> bridge)."""
    return {arg.lstrip("-").split("=", 1)[0] for arg in dockerd_args if arg.startswith("--")}


def check_daemon_json(section: dict[str, Any], dockerd_args: list[str]) -> DaemonSettings:
    """Check the docker section; any error refuses the whole section (a
    daemon.json half applied is not what the user wrote)."""
    settings = DaemonSettings()
    given_as_flags = flags_given(dockerd_args)
    for key, value in section.items():
        key = str(key)
        if key == "proxies":
            _proxies(value, settings)
        elif key in FLAG_KEYS:
            settings.errors.append(f"{key}: pid1 sets it itself (it would stop dockerd: given twice)")
        elif key in given_as_flags:
            settings.errors.append(f"{key}: also given in pid1.dockerd_args (it would stop dockerd: given twice)")
        elif key not in KNOWN:
            settings.errors.append(f"{key}: not a daemon.json key this dockerd (20.10) knows")
        else:
            try:
                settings.config[key] = KNOWN[key](value)
            except Invalid as exc:
                settings.errors.append(f"{key}: {exc}")
    if settings.errors:
        settings.config, settings.env = {}, {}
    return settings


def _proxies(value: Any, settings: DaemonSettings) -> None:
    if not isinstance(value, dict):
        settings.errors.append("proxies: expected a mapping of http-proxy, https-proxy, no-proxy")
        return
    for key, item in value.items():
        if key not in PROXY_ENV:
            settings.errors.append(f"proxies.{key}: expected http-proxy, https-proxy or no-proxy")
        elif not isinstance(item, str):
            settings.errors.append(f"proxies.{key}: expected a string")
        else:
            settings.env[PROXY_ENV[key]] = item
            settings.env[PROXY_ENV[key].lower()] = item  # curl and busybox wget read the lower-case names
