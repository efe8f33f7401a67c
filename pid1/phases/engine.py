"""engine: mount the engine's read-only image before anything reads it.
Needs mounts (/proc, and /dev from devices).

The image build puts what only the engine and the phases after this one
read in a squashfs (ENGINE_IMAGE) and leaves relative symlinks into
ENGINE_MOUNT at their paths: dockerd, containerd, the shim, runc,
docker-proxy, the docker client, docker-init, iptables, mke2fs, the
libraries only they need, the kernel modules (but loop and squashfs), the
bundled images and the seed (image/build.py ENGINE_FILES). Mounted read-only
through a loop device, their pages are page cache that the kernel evicts and
reads again when RAM is short, instead of initramfs pages pinned for the
life of the machine (figures: docs/benchmarks.md). containerd and the
modules phase need this phase; everything else that reads the image comes
after one of them.

loop and squashfs are modules in Debian's kernel (pid1.module_sets
EARLY_MODULES): loaded here with pid1.kmod, before the modules phase, which
finds them loaded.

With neither the image nor its mount point (pid1 over a booted system, the
tests) it does nothing. A mount point without its image (an initramfs not
unpacked whole) or an image that does not mount fails the phase with the
reason, and it is retried: nothing of the engine can run without it.
"""

from __future__ import annotations

import asyncio
import os

from pid1 import kmod
from pid1.linux import syscalls
from pid1.module_sets import EARLY_MODULES
from pid1.mounting import is_mountpoint
from pid1.phases import Phase, PhaseContext

ENGINE_IMAGE = "usr/lib/pid1/engine.squashfs"
ENGINE_MOUNT = "usr/lib/pid1/engine"


def load_early_modules(root: str) -> list[str]:
    """Load EARLY_MODULES (what the kernel has built in or loaded is
    skipped); returns the names loaded now. Raises OSError naming a module
    that failed."""
    moddir = kmod.module_dir(root)
    if not os.path.isfile(os.path.join(moddir, "modules.dep")):
        return []  # a kernel without modules: squashfs and loop are built in, or the mount says why
    index = kmod.ModuleIndex.load(moddir, kmod.read_config(root))
    loaded = kmod.loaded_modules(os.path.join(root, "proc/modules"))
    failed: set[str] = set()
    done = []
    for entry in index.plan(EARLY_MODULES, loaded):
        result = kmod.load_entry(entry, failed)
        if result.outcome in ("failed", "skipped"):
            raise OSError(f"module {result.name}: {result.error}")
        if result.outcome == "loaded":
            done.append(result.name)
    return done


def mount_engine(root: str) -> tuple[str, list[str]]:
    """Blocking: the modules, then the loop mount. (device, modules loaded)."""
    modules = load_early_modules(root)
    target = os.path.join(root, ENGINE_MOUNT)
    os.makedirs(target, exist_ok=True)
    device = syscalls.mount_loop_read_only(
        os.path.join(root, ENGINE_IMAGE), target, "squashfs", control=os.path.join(root, "dev/loop-control")
    )
    return device, modules


async def run(ctx: PhaseContext) -> str:
    image, target = ctx.path(ENGINE_IMAGE), ctx.path(ENGINE_MOUNT)
    if not os.path.isfile(image):
        if os.path.isdir(target):  # the image's mount point, with no image: the initramfs is not whole
            raise RuntimeError(
                f"/{ENGINE_IMAGE} is missing beside its mount point: the initramfs was not unpacked whole "
                "(see the kernel's 'Initramfs unpacking failed' line)"
            )
        return f"no /{ENGINE_IMAGE}: the engine's files are in place"
    if is_mountpoint(target):
        return f"/{ENGINE_MOUNT} already mounted"
    size = os.path.getsize(image)
    try:
        device, modules = await asyncio.to_thread(mount_engine, ctx.root)
    except OSError as exc:
        raise RuntimeError(f"cannot mount /{ENGINE_IMAGE} ({size >> 20} MiB) on /{ENGINE_MOUNT}: {exc}") from None
    ctx.mounts.add(target)
    loaded = f"; loaded {' '.join(modules)}" if modules else ""
    return f"/{ENGINE_IMAGE} ({size >> 20} MiB squashfs) on /{ENGINE_MOUNT} through {device}{loaded}"


PHASE = Phase(name="engine", run=run, needs=("mounts",))
