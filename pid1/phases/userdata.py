"""userdata: the first-boot configuration, before dockerd starts. Needs
storage (the DOCKER disk, for the host state) and userdata_volume (the
volume's user-data, read before the disks were used).

Sources, the first found wins: the NoCloud or config-2 volume userdata_volume
read, then the copy kept in the host state (pid1.host_state) from an earlier
boot. A volume's user-data that cannot be used (malformed, too big) is an
error with the reason, and the kept copy applies instead.

Applies what must be in place before the engine: the user-data's pid1 keys
(the kernel command line wins), the hostname, daemon.json (checked by
pid1.daemon_json; refused whole with the reason, and the last good one used),
and the files of write_files, kept in the host state and bound into dom0 and
the console. Fills `Wiring.userdata` (an `Applied`) for dockerd, the system
containers and the runcmd phase, and records `state.userdata`. Uses the
slots storage (its mode), volume_userdata and boot2docker_files.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pid1.config import KERNEL, USER_DATA, apply_settings
from pid1.host_state import HostState
from pid1.phases import Phase, PhaseContext
from pid1.phases.userdata_volume import DISK_KEYS, Found, VolumeSource
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.userdata import MetaData, UserData

# Keys read before any user-data is: from it they would come too late.
EARLY_KEYS = frozenset({"phases", "extra_phases", "cgroups", "state_dir", "console", "view_tty", "userdata",
                        "io_timeout"})  # fmt: skip


@dataclass
class Applied:
    """What the user-data gave the later phases."""

    data: UserData | None = None  # None: no user-data (pid1.userdata is imported only when there is one)
    meta: MetaData | None = None
    host_state: HostState | None = None
    daemon_json: str | None = None  # path of the daemon.json dockerd gets
    env: dict[str, str] = field(default_factory=dict)  # proxies, for dockerd, dom0 and the console
    binds: list[str] = field(default_factory=list)  # write_files' files, "host:container"
    instance_key: str | None = None  # the instance-id, else a digest of the user-data
    tls_dir: str | None = None  # ca.pem, cert.pem, key.pem for pid1.docker_tcp, in the host state

    def take(self, data: UserData, meta: MetaData, raw: bytes) -> None:
        """The user-data this boot applies (`raw`: its bytes, which key the
        instance when the meta-data names none)."""
        self.data, self.meta = data, meta
        self.instance_key = instance_key(meta, raw)


def is_volume(source: str) -> bool:
    return source.startswith(("nocloud ", "config-2 "))


def kept_copy(host_state: HostState, userdata: bytes) -> Found:
    """The user-data kept from an earlier boot, with its meta-data and network-config."""
    return Found("kept copy", userdata, host_state.read("meta-data") or b"", host_state.read("network-config") or b"")


def find_source(volume: VolumeSource | None, host_state: HostState) -> tuple[Found | None, list[str]]:
    """The first source that has a user-data (the volume userdata_volume
    read, else the copy kept from an earlier boot), and why volumes had none."""
    problems = list(volume.problems) if volume is not None else []
    if volume is not None and volume.found is not None:
        return volume.found, problems
    kept = host_state.read("user-data")
    if kept is not None:
        return kept_copy(host_state, kept), problems
    return None, problems


def parse_found(found: Found, host_state: HostState) -> tuple[UserData | None, Found, list[str]]:
    """The user-data to apply and where it is from: the source's, else (when
    it cannot be used) the copy kept from an earlier boot, so the machine
    stays as it was; and the errors, each with its reason. None: neither can
    be used (the disk's copy is anyone's to write: it can be broken too)."""
    from pid1.userdata import UserDataError, parse_userdata

    try:
        return parse_userdata(found.userdata), found, []
    except UserDataError as exc:
        errors = [f"user-data from {found.source}: {exc}; none of it applies"]
    kept = host_state.read("user-data") if found.source != "kept copy" else None
    if kept is None:
        return None, found, errors
    found = kept_copy(host_state, kept)
    try:
        return parse_userdata(found.userdata), found, errors
    except UserDataError as exc:
        return None, found, [*errors, f"the copy kept from an earlier boot: {exc}; none of it applies either"]


# --- applying --------------------------------------------------------------------------------------
def instance_key(meta: MetaData, raw: bytes) -> str:
    """What runcmd's once-per-instance is keyed by: the instance-id when there is
    one (safe as a file name), else a digest of the user-data (hashlib: here, as OpenSSL loads slowly)."""
    if meta.instance_id:
        return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in meta.instance_id)[:128]
    import hashlib

    return "sha256-" + hashlib.sha256(raw).hexdigest()[:32]


def take_network_config(data: UserData, found: Found) -> None:
    """NoCloud's network-config file as the user-data's pid1.net, unless the
    user-data itself says (its `network:` or only_docker's net); the kernel
    command line still wins over both (apply_keys)."""
    if not found.network_config:
        return
    from pid1.net.netconfig import parse_network_config

    net = parse_network_config(found.network_config, data.warnings)
    if net is not None and "net" in data.settings:
        data.warnings.append("network-config: the user-data's own network (or only_docker.net) wins over it")
    elif net is not None:
        data.settings["net"] = net


def apply_keys(ctx: PhaseContext, data: UserData, source: str, warnings: list[str]) -> list[str]:
    """The user-data's pid1 keys on the live config (the kernel command line
    wins), and its hostname; returns the keys that took. The disks' keys
    applied already when the source is a volume (userdata_volume); from the
    kept copy they would come after the disks were used."""
    from pid1.phases import hostname

    settings = dict(data.settings)
    if data.hostname and "hostname" not in settings:
        settings["hostname"] = data.hostname
    before = ctx.config.hostname
    for name in sorted(EARLY_KEYS & set(settings)):
        warnings.append(f"pid1.{name} is read before the user-data: it applies only on the kernel command line")
        del settings[name]
    for name in sorted(DISK_KEYS & set(settings)):
        if not is_volume(source):
            warnings.append(f"pid1.{name} decides the disks: it applies from the kernel command line or a "
                            f"user-data volume, not from the {source}")  # fmt: skip
        del settings[name]
    for name in sorted(settings):
        if ctx.config.origins.get(name) == KERNEL:
            warnings.append(f"pid1.{name}: the kernel command line's value wins over the user-data's")
            del settings[name]
    taken = apply_settings(ctx.config, settings, USER_DATA, warnings)
    if ctx.config.hostname != before:
        hostname.rename(ctx, before, ctx.config.hostname)
    return taken


def apply_daemon_json(ctx: PhaseContext, applied: Applied, host_state: HostState, errors: list[str]) -> str | None:
    data = applied.data
    if data is None or data.docker is None:
        host_state.remove("daemon.json")  # pid1 wrote it for an earlier user-data: not wanted now
        return None
    from pid1.daemon_json import check_daemon_json  # only with a docker section
    from pid1.engine.dockerd_args import TLS_FLAGS

    flags = ctx.config.dockerd_args + (list(TLS_FLAGS) if ctx.config.docker_tcp else [])
    checked = check_daemon_json(data.docker, flags)
    if checked.valid:
        applied.env.update(checked.env)
        applied.daemon_json = host_state.write("daemon.json", json.dumps(checked.config, indent=2).encode() + b"\n")
        return f"daemon.json ({', '.join(sorted(checked.config)) or 'empty'})"
    last_good = host_state.path("daemon.json") if host_state.marked("daemon.json") else None
    fallback = "the last good daemon.json" if last_good else "dockerd's defaults"
    errors.append(f"docker section refused ({'; '.join(checked.errors)}): dockerd starts with {fallback}")
    applied.daemon_json = last_good
    return None


def keep_docker_tls(applied: Applied, host_state: HostState) -> str | None:
    """The user-data's TLS certificates for Docker's TCP API, kept in the
    host state (mode 0600); removed when the user-data has none."""
    tls = applied.data.docker_tls if applied.data is not None else None
    for name in ("ca", "cert", "key"):
        if tls is None:
            host_state.remove(f"tls/{name}.pem")
        else:
            host_state.write(f"tls/{name}.pem", tls[name])
    if tls is None:
        return None
    applied.tls_dir = host_state.path("tls")
    return "docker TLS certificates"


def apply_files(applied: Applied, host_state: HostState, warnings: list[str]) -> int:
    written = 0
    for entry in applied.data.write_files if applied.data else ():
        relative = os.path.join("files", entry.path.lstrip("/"))
        try:
            if entry.append:
                current = host_state.read(relative) or b""
                path = host_state.write(relative, current + entry.content, entry.permissions)
            else:
                path = host_state.write(relative, entry.content, entry.permissions)
        except OSError as exc:
            warnings.append(f"write_files {entry.path}: {exc.strerror or exc}")
            continue
        applied.binds.append(f"{path}:{entry.path}")
        written += 1
    return written


def keep_boot2docker_files(ctx: PhaseContext, host_state: HostState, warnings: list[str]) -> list[str]:
    """docker-machine's userdata.tar (found by autoformat on the disk it
    formatted): its files kept under boot2docker/, its SSH keys returned
    (a line that is not a key is a warning, and skipped)."""
    from pid1.ssh_keys import authorized_keys

    files = ctx.wiring.maybe(Wiring.boot2docker_files) or {}
    keys: list[str] = []
    for name, content in files.items():
        try:
            host_state.write(os.path.join("boot2docker", name), content)
        except OSError as exc:
            ctx.log.warning(f"userdata: boot2docker {name}: {exc.strerror or exc}")
        if name in (".ssh/authorized_keys", ".ssh/authorized_keys2"):
            found, problems = authorized_keys(content.decode(errors="replace"))
            keys += found
            warnings += [f"boot2docker {name} {problem}" for problem in problems]
    return keys


def keep_ssh_keys(host_state: HostState, keys: list[str], warnings: list[str]) -> int:
    """root's keys for dom0's SSH server, in ssh/authorized_keys (bound into
    dom0 with the rest of ssh/: pid1.phases.ssh); none: no file, and no SSH
    server. Returns how many were kept (duplicates once, at most MAX_KEYS)."""
    from pid1.userdata import MAX_KEYS

    unique = list(dict.fromkeys(keys))
    if len(unique) > MAX_KEYS:
        warnings.append(f"{len(unique)} ssh keys: only the first {MAX_KEYS} are kept")
        unique = unique[:MAX_KEYS]
    try:
        os.makedirs(host_state.path("ssh"), mode=0o700, exist_ok=True)
        if unique:
            host_state.write("ssh/authorized_keys", "".join(f"{key}\n" for key in unique).encode())
        else:
            host_state.remove("ssh/authorized_keys")
    except OSError as exc:  # ssh/ is dom0's to write too: whatever it left there
        warnings.append(f"ssh keys not kept in {host_state.path('ssh')}: {exc.strerror or exc}")
        return 0
    return len(unique)


def keep_boot_logs(ctx: PhaseContext, host_state: HostState) -> None:
    """This boot's logs in the host state from now on: pid1's (its ring so far
    first), the daemons' (containerd's from here, dockerd's from its start).
    Written by a thread of their own, never on the loop (pid1.boot_logs);
    ended by the storage watch when the disk goes away."""
    from pid1 import boot_logs

    try:
        current = boot_logs.rotate(host_state.path("logs"))
        names = ("pid1", "dockerd", "containerd")
        writer = boot_logs.BootLogWriter(
            {name: boot_logs.CappedFile(os.path.join(current, f"{name}.log")) for name in names}
        )
    except OSError as exc:
        ctx.log.warning(f"userdata: no boot logs in {host_state.path('logs')}: {exc.strerror or exc}")
        return
    pid1_log = writer.sink("pid1")
    for line in list(ctx.state.log):
        pid1_log(f"[{line.time:9.3f}] {line.level}: {line.message}\n")
    for name in names:
        ctx.log.copies[name] = writer.sink(name)

    def disk_gone() -> None:
        ctx.log.copies.clear()  # no more writes of pid1's to the dead disk
        writer.stop()

    ctx.wiring.storage.when_disk_gone.append(disk_gone)
    ctx.add_stop_hook("boot logs", _stopper(ctx, writer))


def _stopper(ctx: PhaseContext, writer) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        ctx.log.copies.clear()
        for _ in range(100):  # what is queued gets a second to reach the disk
            if not writer.queue:
                break
            await asyncio.sleep(0.01)
        writer.stop()

    return stop


def keep_copy(host_state: HostState, found: Found) -> None:
    """Keep the user-data in the host state: the next boot falls back on it."""
    host_state.write("user-data", found.userdata)
    host_state.write("meta-data", found.metadata)
    if found.network_config:
        host_state.write("network-config", found.network_config)
    else:
        host_state.remove("network-config")
    host_state.write("source", found.source.encode() + b"\n")


def record_outcome(
    ctx: PhaseContext, source: str, data: UserData, meta: MetaData, done: list[str], warnings: list[str],
    errors: Sequence[str] = (),
) -> None:  # fmt: skip
    """What a user-data did, in the log (each warning and error) and in
    state.userdata (added to what is there already)."""
    for warning in warnings:
        ctx.log.warning(f"userdata: {warning}")
    for error in errors:
        ctx.log.error(f"userdata: {error}")
    record = ctx.state.userdata
    record.update(source=source, instance_id=meta.instance_id, kind=data.kind.value, applied=done)
    record.warnings.extend(warnings)
    record.errors.extend(errors)
    ctx.store.changed()


async def run(ctx: PhaseContext) -> str:
    persistent = ctx.wiring.storage.mode == "disk"
    host_state = HostState.under(ctx.path(ctx.config.docker_root), persistent)
    applied = Applied(host_state=host_state)
    ctx.wiring.userdata = applied
    record = ctx.state.userdata
    record.update(source=None, instance_id=None, applied=[], warnings=[], errors=[], host_state=host_state.root,
                  persistent=persistent)  # fmt: skip
    if not persistent:
        ctx.log.info(f"userdata: the host state ({host_state.root}) is in RAM: it is lost at power-off")
    keep_boot_logs(ctx, host_state)
    volume = ctx.wiring.maybe(Wiring.volume_userdata)
    found, problems = find_source(volume, host_state)
    for problem in problems:
        ctx.log.warning(f"userdata: {problem}")
        record.warnings.append(problem)
    tar_warnings: list[str] = []
    boot2docker_keys = keep_boot2docker_files(ctx, host_state, tar_warnings)
    if found is None:
        kept = keep_ssh_keys(host_state, boot2docker_keys, tar_warnings)
        for warning in tar_warnings:
            ctx.log.warning(f"userdata: {warning}")
        record.warnings += tar_warnings
        if boot2docker_keys or ctx.wiring.maybe(Wiring.boot2docker_files):
            record.update(source="boot2docker userdata.tar", applied=[f"{kept} ssh keys"])
            ctx.store.changed()
            ctx.log.notice(f"userdata: from boot2docker's userdata.tar: {kept} ssh keys kept")
            return f"boot2docker userdata.tar: {kept} ssh keys"
        ctx.store.changed()
        return "no user-data"
    from pid1.userdata import MetaData, UserDataError, parse_meta_data

    data, found, parse_errors = parse_found(found, host_state)
    for error in parse_errors:
        ctx.log.error(f"userdata: {error}")
        record.errors.append(error)
    if data is None:
        ctx.store.changed()
        return f"error: {parse_errors[0]}"
    if found.source == "kept copy" and parse_errors:
        ctx.log.notice("userdata: applying the copy kept from an earlier boot instead")
    try:
        meta = parse_meta_data(found.metadata)
    except UserDataError as exc:
        record.warnings.append(f"meta-data: {exc}; no instance-id")
        meta = MetaData()
    applied.take(data, meta, found.userdata)
    take_network_config(data, found)
    warnings, errors = list(data.warnings), list(record.errors)
    disk_keys = volume.disk_keys if volume is not None and found is volume.found else []
    done = [f"pid1.{name}" for name in (*disk_keys, *apply_keys(ctx, data, found.source, warnings))]
    if (daemon := apply_daemon_json(ctx, applied, host_state, errors)) is not None:
        done.append(daemon)
    if (files := apply_files(applied, host_state, warnings)) > 0:
        done.append(f"{files} file{'s' if files > 1 else ''}")
    if (tls := keep_docker_tls(applied, host_state)) is not None:
        done.append(tls)
    warnings += tar_warnings
    if kept := keep_ssh_keys(host_state, data.ssh_authorized_keys + boot2docker_keys, warnings):
        done.append(f"{kept} ssh key{'s' if kept > 1 else ''} kept")
    if found.source != "kept copy":
        keep_copy(host_state, found)
    record_outcome(ctx, found.source, data, meta, done, warnings, errors[len(record.errors) :])
    ctx.log.notice(f"userdata: from {found.source}" + (f", instance {meta.instance_id}" if meta.instance_id else "")
                   + f": {', '.join(done) or 'nothing to apply before dockerd'}")  # fmt: skip
    return f"{found.source}: {len(done)} applied, {len(warnings)} warnings, {len(errors)} errors"


PHASE = Phase(
    name="userdata",
    run=run,
    needs=("storage", "userdata_volume"),
    required=False,
    fills=(Wiring.userdata,),
    uses=(Wiring.storage, Wiring.volume_userdata, Wiring.boot2docker_files),
)
