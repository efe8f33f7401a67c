"""The host's own small state, kept on the DOCKER disk beside Docker's data:
what the machine itself must remember across boots (the user-data last
applied, runcmd's done-marks, daemon.json, the files write_files made, the
SSH keys and host key). Docker's data root stays where it is on an existing disk;
this is one directory inside it, `only-docker/`, which dockerd ignores.
From RAM the same layout lives in the tmpfs and is gone at power-off.

    <docker_root>/only-docker/
        user-data, meta-data, source   the user-data last applied, and where it came from
        daemon.json                     dockerd's settings from that user-data (when valid)
        files/<path>                    write_files' files, bound into dom0 and the console
        runcmd/<instance>.done          runcmd and the script ran for this instance
        ssh/                            authorized_keys and dom0's host key (bound into dom0: pid1.phases.ssh)
        ssh-host-keys                   the host key fingerprints pid1 saw last (out of dom0's reach)

Plain files; writes are atomic (a crash leaves the old file or the new one).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

DIRNAME = "only-docker"
MAX_READ = 1024 * 1024 + 1


@dataclass(frozen=True)
class HostState:
    root: str
    persistent: bool  # on the DOCKER disk (True) or in RAM

    @classmethod
    def under(cls, docker_root: str, persistent: bool) -> HostState:
        return cls(os.path.join(docker_root, DIRNAME), persistent)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def write(self, relative: str, data: bytes, mode: int = 0o600) -> str:
        """Write a file under the state atomically; returns its path."""
        path = self.path(relative)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = f"{path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        return path

    def read(self, relative: str) -> bytes | None:
        """A regular file's content (bounded), or None when there is none."""
        try:
            fd = os.open(self.path(relative), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not _is_regular(fd):
                return None
            return os.read(fd, MAX_READ)
        finally:
            os.close(fd)

    def remove(self, relative: str) -> None:
        try:
            os.unlink(self.path(relative))
        except FileNotFoundError:
            pass

    def marked(self, relative: str) -> bool:
        return os.path.isfile(self.path(relative))


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)
