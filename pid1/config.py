"""Configuration from the kernel command line: `pid1.KEY=VALUE` words.

Every key is a field of `Config` with its type, default and one-line doc (the
README's table is generated from the same metadata: `python -m pid1 keys`).
An unknown key or a malformed value produces a warning naming it and the
default is kept: a typo never stops a boot.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any

PREFIX = "pid1."


def _key(default: Any, doc: str, choices: tuple[str, ...] = ()) -> Any:
    meta = {"doc": doc, "choices": choices}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """pid1's configuration; field names are the `pid1.` keys."""

    phases: list[str] = _key(
        [], "run only these phases (comma-separated) and what they need; empty: all; none: no phase"
    )
    extra_phases: list[str] = _key([], "extra Python modules whose PHASES join the DAG (development and tests)")
    cgroups: str = _key("v2", "cgroup layout: v2 (unified tree) or v1 (one hierarchy per controller)", ("v1", "v2"))
    hostname: str = _key("only-docker", "hostname set at boot")
    storage_label: str = _key("DOCKER", "filesystem label of the disk mounted on the docker data root")
    docker_root: str = _key("/var/lib/docker", "docker data root (the labelled disk or a tmpfs is mounted here)")
    autoformat: list[str] = _key(
        [], "devices (sdb or /dev/sdb) formatted as the DOCKER disk when blank (zeros or boot2docker's magic)"
    )
    storage_wait: float = _key(0.5, "seconds the labelled disk gets to appear, from when the disk drivers loaded")
    io_timeout: float = _key(
        30.0, "seconds the disk scan, the kernel modules' loading or the seed copy may take before the boot goes on"
    )
    docker_socket: str = _key("/run/docker.sock", "dockerd's API socket")
    docker_exec_root: str = _key("/run/docker", "dockerd's exec root")
    containerd_socket: str = _key("/run/containerd/containerd.sock", "containerd's socket")
    dockerd_args: list[str] = _key([], "extra dockerd arguments (comma-separated)")
    images_dir: str = _key("/usr/share/pid1/images", "bundled image tarballs, loaded when missing")
    docker_seed: str = _key(
        "/usr/share/pid1/docker-seed", "image store copied into a data root dockerd never used (empty: none)"
    )
    console_image: str = _key("console-image:latest", "image tag tried first for the console container")
    dom0_image: str = _key("dom0-image:latest", "image tag tried first for the dom0 container")
    fallback_image: str = _key("busybox:latest", "bundled image used when no tag resolves")
    restart_stable: float = _key(30.0, "seconds a system container must run before its crash-loop backoff resets")
    console: list[str] = _key(["ttyS0", "tty1"], "console terminals: names under /dev (ttyS0) or full paths")
    net: str = _key("dhcp", "network: dhcp, none, or static:ADDR/PREFIX,GATEWAY[,DNS]")
    net_timeout: float = _key(15.0, "seconds the network phase waits for a lease before going on offline")
    state_dir: str = _key("/run/pid1", "where state.json, status and the control channel live")
    view_tty: str = _key("tty2", "terminal showing the live supervisor view: a name under /dev, a full path, or none")
    stop_grace: float = _key(5.0, "seconds between SIGTERM and SIGKILL for remaining processes at stop")
    userdata: str = _key("", "user-data URL (http), fetched once the network is up; a cidata or config-2 volume wins")
    # Not a key: where each key that is not a default came from (the state, VT2).
    origins: dict[str, str] = field(default_factory=dict, metadata={"internal": True})


def key_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


class ConfigError(ValueError):
    pass


def _convert(name: str, raw: str, current: Any, choices: tuple[str, ...]) -> Any:
    if isinstance(current, float):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"expected a number, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"expected a non-negative number, got {raw!r}")
        return value
    if isinstance(current, list):
        return [part for part in raw.split(",") if part]
    if choices and raw not in choices:
        raise ConfigError(f"expected one of {', '.join(choices)}, got {raw!r}")
    if not raw and name != "userdata":
        raise ConfigError("empty value")
    return raw


KERNEL = "kernel command line"
USER_DATA = "user-data"


def parse_cmdline(cmdline: str, userdata: dict[str, str] | None = None) -> tuple[Config, list[str]]:
    """Parse a kernel command line over the user-data's pid1 keys (the
    command line wins); returns the config and the warnings."""
    config = Config()
    warnings: list[str] = []
    fields = {f.name: f for f in key_fields()}
    apply_settings(config, userdata or {}, USER_DATA, warnings)
    try:
        words = shlex.split(cmdline)
    except ValueError:
        words = cmdline.split()
    for word in words:
        if not word.startswith(PREFIX):
            continue
        key, sep, raw = word[len(PREFIX) :].partition("=")
        name = key.replace("-", "_")
        if name not in fields:
            warnings.append(f"unknown kernel command line key {word!r}: ignored")
            continue
        if not sep:
            warnings.append(f"kernel command line key {PREFIX}{key} has no value: keeping {getattr(config, name)!r}")
            continue
        _apply(config, fields[name], raw, KERNEL, warnings)
    if config.net != "dhcp" and config.net != "none" and not config.net.startswith("static:"):
        warnings.append(f"bad value for {PREFIX}net: {config.net!r}; keeping default 'dhcp'")
        config.net = "dhcp"
        config.origins.pop("net", None)
    return config, warnings


def _apply(config: Config, key: dataclasses.Field, raw: str, origin: str, warnings: list[str]) -> None:
    """Set one key from `origin`; a bad value is a warning and changes nothing."""
    try:
        value = _convert(key.name, raw, getattr(config, key.name), key.metadata.get("choices", ()))
    except ConfigError as exc:
        where = "" if origin == KERNEL else f" in the {origin}"
        warnings.append(
            f"bad value for {PREFIX}{key.name}{where}: {exc}; keeping default {getattr(config, key.name)!r}"
        )
        return
    setattr(config, key.name, value)
    config.origins[key.name] = origin


def apply_settings(config: Config, settings: dict[str, str], origin: str, warnings: list[str]) -> list[str]:
    """Set keys by name from `origin` (the user-data) on a config already in
    use; returns the names that took. Unknown names are warnings."""
    fields = {f.name: f for f in key_fields()}
    taken = []
    for name, raw in settings.items():
        if name not in fields:
            warnings.append(f"unknown key pid1.{name} in the {origin}: ignored")
            continue
        _apply(config, fields[name], raw, origin, warnings)
        if config.origins.get(name) == origin:
            taken.append(name)
    return taken


def known_keys() -> frozenset[str]:
    """The key names, without the `pid1.` prefix."""
    return frozenset(f.name for f in key_fields())


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, doc) for every key, for the README and `python -m pid1 keys`."""
    rows = []
    for f in key_fields():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = ",".join(default) if isinstance(default, list) else str(default)
        rows.append((PREFIX + f.name, shown, f.metadata["doc"]))
    return rows
