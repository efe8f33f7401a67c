"""dockerd's command line and environment, from the config and the machine.

Owns the storage-driver choice (`choose_storage_driver`: overlay2 unless
overlay cannot work here), DOCKER_RAMDISK (`ramdisk_env`), pid1.docker_tcp's
arguments (`docker_tcp_args`: TLS with client certificates, never plain
TCP), the daemon.json dockerd refused (`refused_daemon_json`) and the argv
itself (`dockerd_argv`).

May use: the standard library, pid1.linux.mountinfo (the filesystem under
`/` and under the data root, is `/` still the initramfs?), pid1.linux.procfs
(the kernel's filesystems), pid1.config (read only).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pid1.linux.mountinfo import filesystem_type_of, mount_at, read_mountinfo, root_is_initramfs
from pid1.linux.procfs import kernel_filesystems

if TYPE_CHECKING:
    from pid1.config import Config

RAM_FILESYSTEMS = ("rootfs", "ramfs", "tmpfs")
TLS_FLAGS = ("--tlsverify", "--tlscacert", "--tlscert", "--tlskey")  # what pid1.docker_tcp adds
# What dockerd 20.10 prints when it refuses its daemon.json (and exits at once).
CONFIG_REFUSED = b"unable to configure the Docker daemon with file"
LOG_TAIL = 16384  # bytes of dockerd.log read for CONFIG_REFUSED


# --- facts about the machine ------------------------------------------------------------------
def choose_storage_driver(docker_root: str, extra_args: list[str]) -> tuple[str | None, str]:
    """overlay2 unless it cannot work here; (None, why) when the user chose one."""
    if any(a.startswith(("--storage-driver", "-s")) for a in extra_args):
        return None, "set by pid1.dockerd_args"
    if "overlay" not in kernel_filesystems():
        return "vfs", "the kernel has no overlay filesystem (module not loaded?)"
    fstype = filesystem_type_of(docker_root)
    if fstype in ("overlay", "aufs"):
        return "vfs", f"{docker_root} is on {fstype}, which overlay cannot use as its upper layer"
    return "overlay2", f"{docker_root} is on {fstype or 'an unknown filesystem'}"


def ramdisk_env() -> tuple[dict[str, str], str | None]:
    """DOCKER_RAMDISK=true (and why) when `/` is a ramfs/tmpfs that is still
    the kernel's initramfs mount: runc cannot pivot_root out of it. After
    pid1.rootfs.move_root() `/` is still a ramfs/tmpfs but no longer that
    mount, so runc can pivot_root: then nothing is set."""
    table = read_mountinfo()
    root = mount_at("/", table)
    if root is not None and root.fstype in RAM_FILESYSTEMS and root_is_initramfs(table):
        return {"DOCKER_RAMDISK": "true"}, f"/ is {root.fstype}: DOCKER_RAMDISK=true"
    return {}, None


# --- the arguments ---------------------------------------------------------------------------
def docker_tcp_args(address: str, tls_dir: str | None) -> tuple[list[str], str | None]:
    """pid1.docker_tcp's dockerd arguments, or ([], why not). Never plain TCP:
    without the three certificates nothing listens. --tlsverify: clients
    need a certificate signed by the user-data's CA."""
    if not address:
        return [], None
    files = {name: os.path.join(tls_dir, f"{name}.pem") for name in ("ca", "cert", "key")} if tls_dir else {}
    missing = [name for name, path in files.items() if not os.path.isfile(path)] if files else ["ca", "cert", "key"]
    if missing:
        return [], (
            f"pid1.docker_tcp={address}: Docker's TCP API stays off: no TLS {', '.join(missing)} "
            "(only_docker.docker_tls in the user-data: ca, cert, key); pid1 never listens on plain TCP"
        )
    return [
        f"--host=tcp://{address}", "--tlsverify", f"--tlscacert={files['ca']}", f"--tlscert={files['cert']}",
        f"--tlskey={files['key']}",
    ], None  # fmt: skip


def pidfile(config: Config) -> str:
    return os.path.join(config.docker_exec_root, "dockerd.pid")


def clear_pidfile(config: Config) -> None:
    """A pidfile left by a killed dockerd names a pid that may be reused by
    now, and dockerd would refuse to start. No other dockerd of ours runs."""
    try:
        os.unlink(pidfile(config))
    except FileNotFoundError:
        pass


def dockerd_argv(
    config: Config,
    storage_driver: str | None,
    tcp_args: tuple[str, ...] | list[str] = (),
    daemon_json: str | None = None,
) -> list[str]:
    argv = [
        "dockerd",
        f"--containerd={config.containerd_socket}",
        f"--data-root={config.docker_root}",
        f"--exec-root={config.docker_exec_root}",
        f"--pidfile={pidfile(config)}",
        f"--host=unix://{config.docker_socket}",
        *tcp_args,
    ]
    if storage_driver:
        argv.append(f"--storage-driver={storage_driver}")
    if daemon_json:
        argv.append(f"--config-file={daemon_json}")
    return argv + list(config.dockerd_args)


def refused_daemon_json(dockerd_log: str, path: str) -> str | None:
    """Why dockerd refused the daemon.json at `path` on its last start (its
    own words, from the tail of its log), or None when it did not."""
    try:
        with open(dockerd_log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - LOG_TAIL, 0))
            tail = f.read()
    except OSError:
        return None
    if CONFIG_REFUSED not in tail:
        return None
    after = tail.rpartition(CONFIG_REFUSED)[2]
    if path.encode() not in after[:4096]:
        return None
    return after.split(b"\n", 1)[0].decode(errors="replace").strip(" :")[:300]
