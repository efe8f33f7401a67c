"""Configuration from the kernel command line: `pid1.KEY=VALUE` words.

Every key is a field of `Config` with its type, default, one-line doc and,
for numbers, its bounds (the README's table is generated from the same
metadata: `python -m pid1 keys`). An unknown key or a malformed value
produces a warning naming it and the default is kept; a number out of its
bounds is set to the bound, with a warning: a typo never stops a boot.

The line is split into words the way the kernel does (`next_arg` in
kernel/params.c): double quotes group spaces, `pid1.hostname="my host"`
gives the value `my host`; there are no escapes and single quotes are
ordinary characters.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pid1.net.mode import net_mode_problem

PREFIX = "pid1."
KERNEL_SPACE = " \t\n\v\f\r"  # C isspace(), as the kernel splits
HOSTNAME_MAX = 64  # bytes, the kernel's limit for sethostname(2)
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def hostname_problem(name: str) -> str | None:
    """Why `name` is not an RFC 1123 host name of at most 64 bytes (None: it is)."""
    if len(name.encode()) > HOSTNAME_MAX:
        return f"longer than {HOSTNAME_MAX} bytes"
    for label in name.split("."):
        if not _HOSTNAME_LABEL.fullmatch(label):
            return f"label {label!r} is not 1-63 letters, digits or inner hyphens (RFC 1123)"
    return None


def tcp_address_problem(value: str) -> str | None:
    """Why `value` is not HOST:PORT for dockerd's TCP listener (None: it is)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "expected HOST:PORT (e.g. 0.0.0.0:2376)"
    if any(ch.isspace() or ch in "/@" for ch in host):
        return f"{host!r} is not a host"
    return None


def listen_problem(value: str) -> str | None:
    """Why `value` is not PORT or ADDRESS:PORT (IPv4, or [IPv6]) for dom0's SSH server (None: it is)."""
    address, _, port = value.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{port!r} is not a port (1 to 65535)"
    if address:
        import ipaddress

        try:
            ipaddress.ip_address(address[1:-1] if address.startswith("[") and address.endswith("]") else address)
        except ValueError:
            return f"{address!r} is not an IP address"
    return None


def grow_word_problem(value: str) -> str | None:
    """Why `value` is not a pid1.grow word: the CRC32 of the image's GPT entries, 8 lowercase hex digits."""
    if len(value) != 8 or any(c not in "0123456789abcdef" for c in value):
        return "expected the image's GPT entry CRC, 8 lowercase hex digits (e.g. 1a2b3c4d): DOCKER is not grown"
    return None


def _key(
    default: Any,
    doc: str,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    check: Callable[[str], str | None] | None = None,
    empty_ok: bool = False,
) -> Any:
    """A key's declaration. minimum/maximum bound a number; check(value)
    returns why a value is bad (None: good)."""
    meta = {
        "doc": doc,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "check": check,
        "empty_ok": empty_ok,
    }
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
    transparent_hugepage: str = _key(
        "never",
        "transparent huge pages: never (the RAM goes to containers), madvise, always, or kernel (its own setting)",
        ("never", "madvise", "always", "kernel"),
    )
    hostname: str = _key("only-docker", "hostname set at boot (RFC 1123, at most 64 bytes)", check=hostname_problem)
    storage_label: str = _key("DOCKER", "filesystem label of the disk mounted on the docker data root")
    docker_root: str = _key("/var/lib/docker", "docker data root (the labelled disk or a tmpfs is mounted here)")
    autoformat: list[str] = _key(
        [], "devices (sdb or /dev/sdb) formatted as the DOCKER disk when blank (zeros or boot2docker's magic)"
    )
    storage_wait: float = _key(
        0.5, "seconds the labelled disk gets to appear, from when the disk drivers loaded", minimum=0, maximum=300
    )
    grow: str = _key(
        "",
        "the disk image's GPT entry CRC (8 hex digits, set by the image build): while the table is the image's, "
        "its DOCKER partition grows to fill the disk; empty: never",
        check=grow_word_problem,
        empty_ok=True,
    )
    io_timeout: float = _key(
        30.0,
        "seconds the disk scan, the kernel modules' loading, the seed copy or the wait for the ISO's engine image "
        "may take before the boot goes on",
        minimum=1,
        maximum=600,
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
    ssh_listen: str = _key(
        "22", "where dom0's SSH server listens (the bundled dom0 image): PORT or ADDRESS:PORT", check=listen_problem
    )
    restart_stable: float = _key(
        30.0, "seconds a system container must run before its crash-loop backoff resets", minimum=1, maximum=3600
    )
    console: list[str] = _key(["ttyS0", "tty1"], "console terminals: names under /dev (ttyS0) or full paths")
    console_log: str = _key(
        "quiet",
        "after the console's first start: quiet (only errors and the stop reach the terminals) or all",
        ("quiet", "all"),
    )
    net: str = _key(
        "dhcp",
        "network: dhcp, none, static:ADDR/PREFIX,GATEWAY[,DNS][,mtu=N], or per interface NAME:SPEC+NAME:SPEC",
        check=net_mode_problem,
    )
    net_timeout: float = _key(
        15.0, "seconds the network phase waits for a lease before going on offline", minimum=0, maximum=600
    )
    state_dir: str = _key("/run/pid1", "where state.json, status and the control channel live")
    view_tty: str = _key("tty2", "terminal showing the live supervisor view: a name under /dev, a full path, or none")
    stop_grace: float = _key(
        5.0, "seconds between SIGTERM and SIGKILL for remaining processes at stop", minimum=0, maximum=120
    )
    userdata: str = _key(
        "", "user-data URL (http), fetched once the network is up; a cidata or config-2 volume wins", empty_ok=True
    )
    ntp: str = _key(
        "on",
        "the clock: on (the ntp container sets it), query (only measures the offset), off (no ntp container)",
        ("on", "query", "off"),
    )
    ntp_servers: list[str] = _key(
        [], "NTP servers (comma-separated); empty: the user-data's, else DHCP's, else pool.ntp.org"
    )
    runcmd_wait_clock: float = _key(
        0.0, "seconds runcmd waits for the clock synced milestone before it runs (0: it does not wait)", minimum=0,
        maximum=3600,
    )  # fmt: skip
    docker_tcp: str = _key(
        "",
        "HOST:PORT for Docker's TCP API, with TLS only (certificates from the user-data); empty: off",
        check=tcp_address_problem,
        empty_ok=True,
    )
    # Not a key: where each key that is not a default came from (the state, VT2).
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False, metadata={"internal": True})


def key_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


class ConfigError(ValueError):
    pass


def kernel_words(cmdline: str) -> list[tuple[str, str | None]]:
    """(param, value) for each word of a kernel command line, split as the
    kernel's next_arg() does; value is None for a word without `=`."""
    words: list[tuple[str, str | None]] = []
    rest = cmdline.lstrip(KERNEL_SPACE)
    while rest:
        quoted = rest.startswith('"')
        if quoted:
            rest = rest[1:]
        in_quote, i, equals = quoted, 0, -1
        while i < len(rest) and (in_quote or rest[i] not in KERNEL_SPACE):
            if equals < 0 and rest[i] == "=":
                equals = i
            if rest[i] == '"':
                in_quote = not in_quote
            i += 1
        word, rest = rest[:i], rest[i + 1 :].lstrip(KERNEL_SPACE)
        value_quoted = equals >= 0 and word[equals + 1 : equals + 2] == '"'
        if (quoted or value_quoted) and len(word) > equals + 1 + value_quoted and word.endswith('"'):
            word = word[:-1]  # the closing quote, once
        if equals < 0:
            words.append((word, None))
        else:
            words.append((word[:equals], word[equals + 1 + value_quoted :]))
    return words


def quoting_hints(cmdline: str, stray: Sequence[str]) -> list[str]:
    """For stray init arguments that follow a pid1 key's value on the command
    line (`pid1.hostname=my host`): the quoted form the user likely meant."""
    hints: list[str] = []
    words = kernel_words(cmdline)
    for (param, value), (word, no_value) in itertools.pairwise(words):
        if param.startswith(PREFIX) and value is not None and no_value is None and word in stray:
            hints.append(f'{param}="{value} {word}"')
    return hints


def _convert(raw: str, current: Any, meta: dict[str, Any]) -> tuple[Any, str | None]:
    """The typed value of raw and, when it was set to a bound, why."""
    if isinstance(current, float):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {raw!r}")
        low, high = meta.get("minimum"), meta.get("maximum")
        if low is not None and value < low:
            return float(low), f"{raw} is below the minimum {low:g}: using {low:g}"
        if high is not None and value > high:
            return float(high), f"{raw} is above the maximum {high:g}: using {high:g}"
        return value, None
    if isinstance(current, list):
        return [part for part in raw.split(",") if part], None
    choices = meta.get("choices", ())
    if choices and raw not in choices:
        raise ConfigError(f"expected one of {', '.join(choices)}, got {raw!r}")
    if not raw and not meta.get("empty_ok"):
        raise ConfigError("empty value")
    check = meta.get("check")
    problem = check(raw) if check is not None else None
    if problem:
        raise ConfigError(f"{raw!r}: {problem}")
    return raw, None


KERNEL = "kernel command line"
USER_DATA = "user-data"


def parse_cmdline(cmdline: str, userdata: dict[str, str] | None = None) -> tuple[Config, list[str]]:
    """Parse a kernel command line over the user-data's pid1 keys (the
    command line wins); returns the config and the warnings."""
    config = Config()
    warnings: list[str] = []
    fields = {f.name: f for f in key_fields()}
    apply_settings(config, userdata or {}, USER_DATA, warnings)
    for param, raw in kernel_words(cmdline):
        if not param.startswith(PREFIX):
            continue
        key = param[len(PREFIX) :]
        name = key.replace("-", "_")
        if name not in fields:
            shown = param if raw is None else f"{param}={raw}"
            warnings.append(f"unknown kernel command line key {shown!r}: ignored")
            continue
        if raw is None:
            warnings.append(f"kernel command line key {PREFIX}{key} has no value: keeping {getattr(config, name)!r}")
            continue
        _apply(config, fields[name], raw, KERNEL, warnings)
    return config, warnings


def _apply(config: Config, key: dataclasses.Field, raw: str, origin: str, warnings: list[str]) -> None:
    """Set one key from `origin`; a bad value is a warning and changes nothing."""
    where = "" if origin == KERNEL else f" in the {origin}"
    try:
        value, bounded = _convert(raw, getattr(config, key.name), key.metadata)
    except ConfigError as exc:
        warnings.append(
            f"bad value for {PREFIX}{key.name}{where}: {exc}; keeping default {getattr(config, key.name)!r}"
        )
        return
    setattr(config, key.name, value)
    config.origins[key.name] = origin
    if bounded:
        warnings.append(f"{PREFIX}{key.name}{where}={bounded}")


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
        doc = f.metadata["doc"]
        low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
        if low is not None and high is not None:
            doc += f" ({low:g} to {high:g})"
        rows.append((PREFIX + f.name, shown, doc))
    return rows
