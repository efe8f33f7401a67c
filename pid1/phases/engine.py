"""engine: mount the engine's read-only image before anything reads it.
Needs mounts (/proc, /sys, and /dev from devices).

The image build puts what only the engine and the phases after this one
read in a squashfs (pid1.layout.ENGINE_IMAGE) and leaves relative symlinks
into ENGINE_MOUNT at their paths: dockerd, containerd, the shim, runc,
docker-proxy, the docker client, docker-init, iptables, mke2fs, the
libraries only they need, the kernel modules (but loop, squashfs and the
boot medium's), the bundled images and the seed (image/build.py
ENGINE_FILES). Mounted read-only through a loop device, their pages are
page cache that the kernel evicts and reads again when RAM is short,
instead of initramfs pages pinned for the life of the machine (figures:
docs/benchmarks.md). containerd and the modules phase need this phase;
everything else that reads the image comes after one of them.

Once mounted, a thread reads the docker seed, dockerd, the shim, runc,
docker-init and docker-proxy through (ENGINE_READ_AHEAD), at idle CPU priority: each page of
the image is decompressed when first read, and dockerd, exec'd a second or
two later, would otherwise wait for its pages one fault at a time. The CPU
that read costs is one the boot leaves idle meanwhile; the pages are page
cache like any, evicted when RAM is short (figures: docs/benchmarks.md).

Where the image is:
- in the initramfs (`-kernel` and the disk image): mounted from there;
- on the boot medium (the ISO): its initrd has ENGINE_MEDIUM instead, naming
  the ISO 9660 volume, the file and its size. The boot loader then reads a
  small initrd through the firmware, and the kernel reads the engine through
  the CD-ROM, on demand. The CD-ROM's drivers and isofs (MEDIUM_MODULES) are
  loaded, the volume is waited for up to pid1.io_timeout, mounted read-only on
  MEDIUM_MOUNT, and the image mounted from it. The CD must stay in: it is
  the engine's disk, as a live CD's.

loop, squashfs and the medium's modules are modules in Debian's kernel
(pid1.module_sets): loaded here with pid1.kmod, before the modules phase,
which finds them loaded.

With neither the image, its medium nor its mount point (pid1 over a booted
system, the tests) it does nothing. A mount point without either (an
initramfs not unpacked whole), a medium that is not there or not this
release's, or an image that does not mount fails the phase with the reason,
and it is retried: nothing of the engine can run without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Sequence

from pid1 import kmod
from pid1.blockdev import LabelledDevice, scan_bounded
from pid1.blockwait import wait_for_devices
from pid1.layout import ENGINE_IMAGE, ENGINE_MEDIUM, ENGINE_MOUNT, ENGINE_READ_AHEAD, MEDIUM_MOUNT, EngineMedium
from pid1.linux import syscalls
from pid1.module_sets import EARLY_MODULES, MEDIUM_MODULES
from pid1.mounting import is_mountpoint
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded

MAX_MEDIUM_JSON = 4096
READ_AHEAD_CHUNK = 1 << 20


def load_early_modules(root: str, names: Sequence[str]) -> list[str]:
    """Load `names` with what they need (what the kernel has built in or
    loaded is skipped); returns the names loaded now. Raises OSError naming
    a module that failed."""
    if not names:
        return []  # nothing to load: the module index is not read for it (the ISO's path loads first)
    moddir = kmod.module_dir(root)
    if not os.path.isfile(os.path.join(moddir, "modules.dep")):
        return []  # a kernel without modules: all built in, or the mount says why
    index = kmod.ModuleIndex.load(moddir, kmod.read_config(root))
    loaded = kmod.loaded_modules(os.path.join(root, "proc/modules"))
    failed: set[str] = set()
    done = []
    for entry in index.plan(names, loaded):
        result = kmod.load_entry(entry, failed)
        if result.outcome in ("failed", "skipped"):
            raise OSError(f"module {result.name}: {result.error}")
        if result.outcome == "loaded":
            done.append(result.name)
    return done


def mount_image(root: str, image: str) -> str:
    """Blocking: `image` on ENGINE_MOUNT, read-only, through a loop device; the device."""
    target = os.path.join(root, ENGINE_MOUNT)
    os.makedirs(target, exist_ok=True)
    return syscalls.mount_loop_read_only(image, target, "squashfs", control=os.path.join(root, "dev/loop-control"))


def read_medium(path: str) -> EngineMedium:
    """ENGINE_MEDIUM, parsed; ValueError saying what is wrong."""
    with open(path, "rb") as f:
        raw = f.read(MAX_MEDIUM_JSON + 1)
    if len(raw) > MAX_MEDIUM_JSON:
        raise ValueError(f"larger than {MAX_MEDIUM_JSON} bytes")
    return EngineMedium.parse(raw)


def image_on(device: LabelledDevice, medium: EngineMedium, mountpoint: str) -> str | None:
    """Blocking: mount `device` read-only on `mountpoint`; the image's path
    there when it is this release's (its size is medium.size), else None,
    unmounted again."""
    os.makedirs(mountpoint, exist_ok=True)
    flags = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(device.path, mountpoint, device.fstype, flags)
    image = os.path.join(mountpoint, medium.path)
    if matches(image, medium):
        return image
    syscalls.umount(mountpoint)
    return None


def matches(image: str, medium: EngineMedium) -> bool:
    try:
        return os.path.isfile(image) and os.path.getsize(image) == medium.size
    except OSError:
        return False


async def find_medium(ctx: PhaseContext, medium: EngineMedium) -> tuple[str, str]:
    """Wait up to pid1.io_timeout for the volume, mount it on MEDIUM_MOUNT;
    the device and the image's path. RuntimeError saying what was found
    instead. The CD-ROM is there once its driver's module is loaded
    (finit_module waits for the probing the module's init scheduled): the
    wait is for hardware slower than that."""
    mountpoint = ctx.path(MEDIUM_MOUNT)
    if is_mountpoint(mountpoint):  # mounted by an earlier try of this phase, whose image mount failed
        if matches(os.path.join(mountpoint, medium.path), medium):
            return f"/{MEDIUM_MOUNT}", os.path.join(mountpoint, medium.path)
        await asyncio.to_thread(syscalls.umount, mountpoint)
    passed: list[str] = []
    bound = ctx.config.io_timeout

    async def volumes() -> list[tuple[LabelledDevice, str]]:
        scan = await scan_bounded(medium.volume, ctx.path("sys"), ctx.path("dev"), bound)
        found = []
        for device in scan.with_label(medium.volume):
            if device.fstype != "iso9660":
                continue
            try:
                image = await bounded(image_on, device, medium, mountpoint, timeout=bound, name="pid1-engine")
            except OSError as exc:
                passed.append(f"{device.path}: cannot mount it: {exc}")
                continue
            except TimeoutError:
                passed.append(f"{device.path}: its mount did not return within {bound:.0f} s")
                continue
            if image is None:
                passed.append(f"{device.path}: no /{medium.path} of {medium.size} bytes (another release?)")
                continue
            found.append((device, image))
            break
        return found

    def waiting(left: float) -> None:
        ctx.log.info(f"engine: no CD-ROM with volume {medium.volume} yet: waiting up to {left:.0f} s for it")

    found = await wait_for_devices(volumes, time.monotonic() + bound, waiting)
    if not found:
        seen = "; ".join(dict.fromkeys(passed)) or "none with that volume"
        raise RuntimeError(
            f"the engine's image is on the boot medium, an ISO 9660 volume {medium.volume} with /{medium.path}, "
            f"and none came within {bound:.0f} s, pid1.io_timeout ({seen}): attach the ISO this initrd came from "
            "as a CD-ROM (IDE or SATA), or boot dist/initrd.img, which holds the engine"
        )
    ctx.mounts.add(mountpoint)
    device, image = found[0]
    return device.path, image


async def run(ctx: PhaseContext) -> str:
    image, target, marker = ctx.path(ENGINE_IMAGE), ctx.path(ENGINE_MOUNT), ctx.path(ENGINE_MEDIUM)
    if is_mountpoint(target):
        return f"/{ENGINE_MOUNT} already mounted"
    if os.path.isfile(image):
        return await mount_from(ctx, image, f"/{ENGINE_IMAGE}", load=EARLY_MODULES)
    if os.path.isfile(marker):
        try:
            medium = read_medium(marker)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"/{ENGINE_MEDIUM}: {exc}") from None
        try:
            modules = await asyncio.to_thread(load_early_modules, ctx.root, (*EARLY_MODULES, *MEDIUM_MODULES))
        except OSError as exc:
            raise RuntimeError(f"cannot load the boot medium's drivers: {exc}") from None
        device, image = await find_medium(ctx, medium)
        return await mount_from(ctx, image, f"/{medium.path} on {device}", loaded=modules)
    if os.path.isdir(target):  # the image's mount point, with no image: the initramfs is not whole
        raise RuntimeError(
            f"/{ENGINE_IMAGE} is missing beside its mount point: the initramfs was not unpacked whole "
            "(see the kernel's 'Initramfs unpacking failed' line)"
        )
    return f"no /{ENGINE_IMAGE}: the engine's files are in place"


async def mount_from(
    ctx: PhaseContext, image: str, where: str, load: Sequence[str] = (), loaded: Sequence[str] = ()
) -> str:
    """Load the modules `load`, mount `image` (described as `where`) on
    ENGINE_MOUNT; the detail names the modules loaded (`loaded` already)."""
    size = os.path.getsize(image)

    def load_and_mount() -> tuple[str, list[str]]:
        modules = [*loaded, *load_early_modules(ctx.root, load)]
        return mount_image(ctx.root, image), modules

    try:
        device, modules = await asyncio.to_thread(load_and_mount)
    except OSError as exc:
        raise RuntimeError(f"cannot mount {where} ({size >> 20} MiB) on /{ENGINE_MOUNT}: {exc}") from None
    ctx.mounts.add(ctx.path(ENGINE_MOUNT))
    paths = [os.path.join(ctx.path(ENGINE_MOUNT), path) for path in ENGINE_READ_AHEAD]
    threading.Thread(target=read_ahead, args=(paths,), name="pid1-read-ahead", daemon=True).start()
    note = f"; loaded {' '.join(modules)}" if modules else ""
    return f"{where} ({size >> 20} MiB squashfs) on /{ENGINE_MOUNT} through {device}{note}"


def read_ahead(paths: Sequence[str]) -> int:
    """Read each file of `paths` (and the files under a folder of them)
    through once, at idle CPU priority, so that its pages are in the page
    cache before it is read or run; the bytes read. A file that cannot be
    read is skipped: its pages then come when it is used."""
    with contextlib.suppress(OSError):
        syscalls.run_when_idle()
    buffer = bytearray(READ_AHEAD_CHUNK)
    done = 0
    for path in paths:
        files = [path]
        if os.path.isdir(path):
            files = [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in sorted(names)]
        for file in files:
            if os.path.islink(file):
                continue  # a layer's symlink: its target is a file of the walk or not the image's
            try:
                with open(file, "rb", buffering=0) as f:
                    while count := f.readinto(buffer):
                        done += count
            except OSError:
                continue
    return done


PHASE = Phase(name="engine", run=run, needs=("mounts",))
