"""User-data: what a user gives the machine for its first boot, parsed and
checked into a `UserData` before anything of it is applied.

Two kinds, as cloud-init reads them: a script (`#!...`, run once per
instance in dom0), or `#cloud-config` YAML, the subset that fits a host made
of containers (CLOUD_INIT_KEYS; `swarm` is checked by pid1.swarm_config,
`network` read by pid1.net.netconfig as a pid1.net value, and `only_docker:`
takes any `pid1.*` key and `docker:`, daemon.json, checked by pid1.daemon_json).
Any other key is a warning that names it, and the rest applies; a malformed
document is an error with the reason, and nothing of it applies. Nothing
here touches the machine; YAML is parsed only when there is a cloud-config.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import posixpath
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pid1.ssh_keys import key_problem as ssh_key_problem
from pid1.swarm_config import SwarmConfig, SwarmConfigError, parse_swarm

T = TypeVar("T")

# cloud-init sets no limit; clouds do (EC2 16 KiB, OpenStack 64 KiB). A user-data
# is read whole into PID 1, so bound it well above what any real one needs.
MAX_USERDATA_BYTES = 1024 * 1024
MAX_FILES = 256
MAX_FILE_BYTES = 1024 * 1024
MAX_KEYS = 256
MAX_COMMANDS = 128
MAX_NTP_SERVERS = 16
MAX_PEM_BYTES = 64 * 1024  # one certificate chain or key
TLS_FILES = ("ca", "cert", "key")  # only_docker.docker_tls: Docker's TCP API (pid1.docker_tcp)
SECTION = "only_docker"
# Where write_files may write: directories dom0 and the console get from the
# host. A path elsewhere (the engine's, pid1's, the kernel's) is refused.
WRITABLE_PREFIXES = ("/etc/", "/root/", "/home/", "/opt/", "/srv/", "/usr/local/", "/var/lib/only-docker/files/")
HOSTNAME = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
CLOUD_INIT_KEYS = ("hostname", "write_files", "ssh_authorized_keys", "ntp", "runcmd", "swarm", "network", SECTION)


class Kind(enum.Enum):
    NONE = "none"
    CLOUD_CONFIG = "cloud-config"
    SCRIPT = "script"


class UserDataError(ValueError):
    """The document as a whole cannot be used (the reason says why)."""


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: bytes
    permissions: int = 0o644
    append: bool = False


@dataclass
class UserData:
    kind: Kind = Kind.NONE
    hostname: str | None = None
    write_files: list[WriteFile] = field(default_factory=list)
    ssh_authorized_keys: list[str] = field(default_factory=list)
    ntp_servers: list[str] = field(default_factory=list)
    runcmd: list[list[str]] = field(default_factory=list)  # argv each; a string runs as sh -c
    script: bytes | None = None
    settings: dict[str, str] = field(default_factory=dict)  # pid1 key -> value, as on the command line
    docker: dict[str, Any] | None = None  # dockerd's daemon.json as given, checked by pid1.daemon_json
    docker_tls: dict[str, bytes] | None = None  # ca, cert, key (PEM) for pid1.docker_tcp
    swarm: SwarmConfig | None = None  # pid1.swarm_config; the swarm phase applies it
    swarm_error: str | None = None  # why the swarm section was refused (the swarm phase's state says it too)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """What it asks for, one short item each (the log, the state, VT2)."""
        items = []
        if self.hostname:
            items.append(f"hostname {self.hostname}")
        for label, count in (("file", len(self.write_files)), ("ssh key", len(self.ssh_authorized_keys)),
                             ("ntp server", len(self.ntp_servers)), ("command", len(self.runcmd))):  # fmt: skip
            if count:
                items.append(f"{count} {label}{'s' if count > 1 else ''}")
        if self.script is not None:
            items.append("a script")
        if self.settings:
            items.append("pid1 " + ",".join(sorted(self.settings)))
        if self.docker is not None:
            items.append("daemon.json")
        if self.docker_tls is not None:
            items.append("docker TLS certificates")
        if self.swarm is not None:
            items.append(self.swarm.summary())
        return items


@dataclass(frozen=True)
class MetaData:
    instance_id: str | None = None
    local_hostname: str | None = None


def parse_userdata(raw: bytes) -> UserData:
    """Parse a user-data document. Raises UserDataError when none of it can be
    used (too big, not UTF-8, malformed YAML, not a mapping, an unknown kind)."""
    if len(raw) > MAX_USERDATA_BYTES:
        raise UserDataError(f"{len(raw)} bytes: larger than the {MAX_USERDATA_BYTES // 1024} KiB a user-data may be")
    if raw[:2] == b"\x1f\x8b":  # cloud-init accepts a gzipped user-data
        raw = _gunzip(raw, MAX_USERDATA_BYTES, "user-data")
    if not raw.strip():
        return UserData()
    if raw.startswith(b"#!"):
        return UserData(kind=Kind.SCRIPT, script=raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserDataError(f"not UTF-8 text (byte {exc.start})") from None
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if first != "#cloud-config":
        raise UserDataError(f"starts with {first[:40]!r}: expected '#cloud-config' or a '#!' script")
    document = _load_yaml(text)
    if document is None:
        return UserData(kind=Kind.CLOUD_CONFIG)
    if not isinstance(document, dict):
        raise UserDataError(f"the cloud-config is a {type(document).__name__}, not a mapping of keys")
    return _cloud_config(document)


def parse_meta_data(raw: bytes) -> MetaData:
    """NoCloud's meta-data (YAML) or OpenStack's meta_data.json. A bad one
    gives no instance-id (so once-per-instance work runs once per boot's
    user-data, not never): the caller logs the reason."""
    if not raw.strip():
        return MetaData()
    text = raw[:MAX_USERDATA_BYTES].decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except ValueError:
        document = _load_yaml(text)
    if not isinstance(document, dict):
        raise UserDataError("meta-data is not a mapping")
    instance = document.get("instance-id", document.get("uuid"))
    hostname = document.get("local-hostname", document.get("hostname"))
    return MetaData(
        instance_id=str(instance) if isinstance(instance, (str, int)) else None,
        local_hostname=str(hostname) if isinstance(hostname, str) else None,
    )


# --- the cloud-config keys ------------------------------------------------------------------
def _cloud_config(document: dict[Any, Any]) -> UserData:
    data = UserData(kind=Kind.CLOUD_CONFIG)
    for key in document:
        if key not in CLOUD_INIT_KEYS:
            data.warnings.append(
                f"unknown key {str(key)[:60]!r}: ignored (this system applies {', '.join(CLOUD_INIT_KEYS)})"
            )
    if "hostname" in document:
        data.hostname = _hostname(document["hostname"], data.warnings)
    if "write_files" in document:
        data.write_files = _write_files(document["write_files"], data.warnings)
    if "ssh_authorized_keys" in document:
        data.ssh_authorized_keys = _ssh_keys(document["ssh_authorized_keys"], data.warnings)
    if "ntp" in document:
        data.ntp_servers = _ntp(document["ntp"], data.warnings)
    if "runcmd" in document:
        data.runcmd = _runcmd(document["runcmd"], data.warnings)
    if "swarm" in document:
        try:
            data.swarm = parse_swarm(document["swarm"])
        except SwarmConfigError as exc:
            data.swarm_error = str(exc)
            data.warnings.append(f"{exc}: the swarm section is ignored")
    if SECTION in document:
        _own_section(document[SECTION], data)
    if "network" in document:
        from pid1.net.netconfig import network_from_document

        if (net := network_from_document(document["network"], data.warnings)) is not None:
            if "net" in data.settings:
                data.warnings.append(f"network: {SECTION}.net is given too, and wins")
            data.settings.setdefault("net", net)
    return data


def _hostname(value: Any, warnings: list[str]) -> str | None:
    if isinstance(value, str) and HOSTNAME.match(value):
        return value
    warnings.append(f"hostname {str(value)[:80]!r} is not a host name (letters, digits, '-', at most 64): ignored")
    return None


def _entries(value: Any, key: str, limit: int, noun: str, parse: Callable[[Any], T], warnings: list[str]) -> list[T]:
    """The list at `key`, at most `limit` entries (`noun`: what they are),
    each through `parse`, whose UserDataError skips that entry (its message
    says why); what is not a list is ignored. Each skip is a warning."""
    if not isinstance(value, list):
        warnings.append(f"{key} is not a list: ignored")
        return []
    taken: list[T] = []
    for index, entry in enumerate(value):
        if len(taken) >= limit:
            warnings.append(f"{key}: more than {limit} {noun}; the rest ignored")
            break
        try:
            taken.append(parse(entry))
        except UserDataError as exc:
            warnings.append(f"{key}[{index}]: {exc}; skipped")
    return taken


def _write_files(value: Any, warnings: list[str]) -> list[WriteFile]:
    return _entries(value, "write_files", MAX_FILES, "files", _write_file, warnings)


def _write_file(entry: Any) -> WriteFile:
    if not isinstance(entry, dict):
        raise UserDataError("not a mapping with path and content")
    path = writable_path(entry.get("path"))
    content = entry.get("content", "")
    if not isinstance(content, (str, bytes)):
        raise UserDataError(f"content of {path} is a {type(content).__name__}, not text")
    data = content.encode() if isinstance(content, str) else content
    encoding = str(entry.get("encoding", "text")).lower()
    if encoding in ("b64", "base64", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise UserDataError(f"content of {path} is not base64 ({exc})") from None
    if encoding in ("gz", "gzip", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        data = _gunzip(data, MAX_FILE_BYTES, path)
    elif encoding not in ("text", "b64", "base64"):
        raise UserDataError(f"unknown encoding {encoding!r} for {path} (text, b64, gzip, gz+b64)")
    if len(data) > MAX_FILE_BYTES:
        raise UserDataError(f"{path} is {len(data)} bytes, over {MAX_FILE_BYTES // 1024} KiB")
    return WriteFile(path=path, content=data, permissions=_permissions(entry.get("permissions", "0644"), path),
                     append=bool(entry.get("append", False)))  # fmt: skip


def writable_path(value: Any) -> str:
    """The normalised absolute path, or UserDataError if it is not one that
    write_files may write (outside the allowed directories, or escaping them)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise UserDataError(f"path {str(value)[:80]!r} is not an absolute path")
    if "\0" in value or any(part == ".." for part in value.split("/")):
        raise UserDataError(f"path {value[:80]!r} climbs out with '..'")
    path = posixpath.normpath(value)
    if not any(path.startswith(prefix) for prefix in WRITABLE_PREFIXES):
        raise UserDataError(
            f"path {path[:80]!r} is outside what write_files may write ({', '.join(WRITABLE_PREFIXES)})"
        )
    return path


def _permissions(value: Any, path: str) -> int:
    try:
        mode = value if isinstance(value, int) else int(str(value), 8)
    except ValueError:
        raise UserDataError(f"permissions {value!r} of {path} are not octal") from None
    if not 0 <= mode <= 0o7777:
        raise UserDataError(f"permissions {value!r} of {path} are out of range")
    return mode


def _ssh_keys(value: Any, warnings: list[str]) -> list[str]:
    return _entries([value] if isinstance(value, str) else value, "ssh_authorized_keys", MAX_KEYS, "keys",
                    _ssh_key, warnings)  # fmt: skip


def _ssh_key(line: Any) -> str:
    reason = ssh_key_problem(line)
    if reason:
        raise UserDataError(reason)
    return line.strip()


def _ntp(value: Any, warnings: list[str]) -> list[str]:
    if not isinstance(value, dict):
        warnings.append("ntp is not a mapping (servers, pools): ignored")
        return []
    servers: list[str] = []
    for key in ("servers", "pools"):
        entries = value.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(s, str) and s and " " not in s for s in entries):
            warnings.append(f"ntp.{key} is not a list of host names: ignored")
            continue
        servers += entries
    for key in value:
        if key not in ("servers", "pools", "enabled"):
            warnings.append(f"ntp.{key}: not supported (busybox ntpd takes servers): ignored")
    if len(servers) > MAX_NTP_SERVERS:
        warnings.append(f"ntp: more than {MAX_NTP_SERVERS} servers; the rest ignored")
    return servers[:MAX_NTP_SERVERS] if value.get("enabled", True) is not False else []


def _runcmd(value: Any, warnings: list[str]) -> list[list[str]]:
    return _entries(value, "runcmd", MAX_COMMANDS, "commands", _command, warnings)


def _command(entry: Any) -> list[str]:
    if isinstance(entry, str) and entry.strip():
        return ["sh", "-c", entry]
    if isinstance(entry, list) and entry and all(isinstance(a, (str, int, float)) for a in entry):
        return [str(a) for a in entry]
    raise UserDataError("neither a command line nor a list of words")


def _own_section(value: Any, data: UserData) -> None:
    """`only_docker:` -- pid1 keys by name (with or without `pid1.`), `docker:`
    and `docker_tls:`."""
    from pid1.config import known_keys

    if not isinstance(value, dict):
        data.warnings.append(f"{SECTION} is not a mapping: ignored")
        return
    known = known_keys()
    for key, setting in value.items():
        name = str(key).removeprefix("pid1.").replace("-", "_")
        if name == "docker_tls":
            data.docker_tls = _docker_tls(setting, data.warnings)
        elif name == "docker":
            if isinstance(setting, dict):
                data.docker = setting
            else:
                data.warnings.append(f"{SECTION}.docker is not a mapping (daemon.json's keys): ignored")
        elif name in known:
            text = _setting_text(setting)
            if text is None:
                data.warnings.append(f"{SECTION}.{key}: {str(setting)[:60]!r} is not a plain value: ignored")
            else:
                data.settings[name] = text
        else:
            data.warnings.append(f"{SECTION}.{str(key)[:60]}: not a pid1 key (python -m pid1 keys): ignored")


def _docker_tls(value: Any, warnings: list[str]) -> dict[str, bytes] | None:
    """`docker_tls: {ca, cert, key}`: PEM text each; all three or none."""
    where = f"{SECTION}.docker_tls"
    if not isinstance(value, dict):
        warnings.append(f"{where} is not a mapping (ca, cert, key): ignored")
        return None
    for key in value:
        if key not in TLS_FILES:
            warnings.append(f"{where}.{str(key)[:40]}: not one of {', '.join(TLS_FILES)}: ignored")
    found: dict[str, bytes] = {}
    for name in TLS_FILES:
        pem = value.get(name)
        if not isinstance(pem, str) or "-----BEGIN " not in pem:
            warnings.append(f"{where}.{name} is missing or not PEM text: the TLS certificates are ignored")
            return None
        if len(pem.encode()) > MAX_PEM_BYTES:
            warnings.append(f"{where}.{name} is over {MAX_PEM_BYTES // 1024} KiB: the TLS certificates are ignored")
            return None
        found[name] = pem.encode()
    return found


def _setting_text(value: Any) -> str | None:
    """A YAML value as the command line would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    return None


# --- helpers -----------------------------------------------------------------------------------
def _load_yaml(text: str) -> Any:
    import yaml  # only when there is a cloud-config: pid1 without user-data never loads it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserDataError(f"malformed YAML{at}: {problem}") from None


def _gunzip(data: bytes, limit: int, what: str) -> bytes:
    """Decompress at most `limit` bytes (a small gzip can unpack to gigabytes)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UserDataError(f"{what} is not valid gzip ({exc})") from None
    if len(out) > limit:
        raise UserDataError(f"{what} unpacks to more than {limit // 1024} KiB")
    return out
