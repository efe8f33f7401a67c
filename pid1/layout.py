"""Facts about this system's root filesystem that the image build and the
boot must agree on, in one place both import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# The kernel gives init no PATH: /init sets this one for pid1, which every
# daemon it starts inherits; the bundled images' config carries it too.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The engine's read-only image (image/build.py makes it; the engine phase
# mounts it): a squashfs in the initramfs, its files' paths left as symlinks
# into ENGINE_MOUNT.
ENGINE_IMAGE = "usr/lib/pid1/engine.squashfs"
ENGINE_MOUNT = "usr/lib/pid1/engine"
# The ISO's initrd has no ENGINE_IMAGE (the boot loader would read it through
# the firmware, slowly): the squashfs is a file of the ISO itself, which the
# engine phase reads through the CD-ROM, and this file in the initrd says
# where (EngineMedium).
ENGINE_MEDIUM = "usr/lib/pid1/engine-medium.json"
MEDIUM_MOUNT = "usr/lib/pid1/medium"
# What the engine phase reads ahead from the image (paths in it; a folder's
# files too), in the order the boot reads them: the docker seed, copied into
# a data root dockerd never used just before dockerd's exec (every RAM boot,
# a disk's first), dockerd a second or two after the mount, iptables and its
# extensions (dockerd runs it some 75 times as it starts), the shim and runc
# for each container, docker-init and docker-proxy for the user's.
ENGINE_READ_AHEAD = (
    "usr/share/pid1/docker-seed",
    "usr/sbin/dockerd",
    "usr/sbin/xtables-legacy-multi",
    "usr/lib/x86_64-linux-gnu/xtables",
    "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc",
    "usr/bin/docker-init",
    "usr/sbin/docker-proxy",
)


@dataclass(frozen=True)
class EngineMedium:
    """Where the boot medium keeps the engine's image: the ISO 9660 volume
    (its volume identifier), the file's path on it, and its size, which a
    medium of another release does not match."""

    volume: str
    path: str
    size: int

    def to_json(self) -> str:
        return json.dumps({"volume": self.volume, "path": self.path, "size": self.size}, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, raw: bytes) -> EngineMedium:
        """Raises ValueError saying what is wrong."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        volume, path, size = data.get("volume"), data.get("path"), data.get("size")
        if not (isinstance(volume, str) and volume and isinstance(path, str) and path):
            raise ValueError("volume and path must be non-empty strings")
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"path {path!r} must be relative, inside the volume")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size {size!r} must be a positive integer")
        return cls(volume, path, size)
