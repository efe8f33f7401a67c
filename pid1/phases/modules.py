"""modules and docker_modules: load the kernel modules the hardware and
Docker need. modules needs mounts (/proc, /sys) and engine (the module
files are on the engine's squashfs, but those the engine phase loads:
image/build.py late_modules); docker_modules needs modules.

Coldplug: every `modalias` under /sys/devices is resolved through
modules.alias (pid1.kmod, which resolves as kmod's modprobe does), then the
storage modules (the disk drivers, ext4, and overlay for dockerd's storage
driver) and the ACPI power button and input drivers are added; each module
is loaded with its modules.dep and softdep dependencies first, by
finit_module(2), skipping what /proc/modules or modules.builtin has. The
first round loads the drivers disks are on before the others
(module_sets.DISK_DRIVER_FOLDERS), and the storage phase's wait for a late
disk counts from them.
Drivers add devices (virtio_pci makes the virtio
devices that virtio_net/virtio_blk drive, an ATA driver the CD-ROM behind
it): their modaliases come from the kernel's uevents, read while loading
(or from another walk of /sys when uevents cannot be had), and get their
drivers in another round, up to COLDPLUG_ROUNDS. The networking modules
dockerd needs (bridge, veth, netfilter/NAT, xfrm) load afterwards, in the
docker_modules phase, beside the storage phase and dockerd's start.

A module that fails to load is a warning naming it and the errno, never a
failed phase. A load that does not return within pid1.io_timeout (a
module's init that hangs) is given up: the phase names it and goes on.
With no lib/modules/$(uname -r)/modules.dep (a development machine, a
kernel with everything built in) the phase says so and does nothing.

It also installs pid1's modprobe for the kernel and dockerd
(pid1.kmod.helper). The loading itself is pid1.kmod.batch's; this module
runs the rounds, bounds them by pid1.io_timeout and reports.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from pid1 import kmod
from pid1.kmod.batch import Tally, coldplug_requests, load_requests
from pid1.kmod.helper import install_modprobe
from pid1.linux import procfs
from pid1.module_sets import DISK_DRIVER_FOLDERS, ENGINE_MODULES, INPUT_MODULES, STORAGE_MODULES
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded
from pid1.wiring import Wiring

# What dockerd 20.10 (iptables-legacy) loads when it starts (docs/modules.md),
# in two parts (pid1.module_sets): what storage and
# dockerd's start need loads with the hardware drivers in the `modules`
# phase, the networking modules in `docker_modules`, beside dockerd's start.
DOCKER_MODULES = (*STORAGE_MODULES, *ENGINE_MODULES)
FIXED = (*STORAGE_MODULES, *INPUT_MODULES)
COLDPLUG_ROUNDS = 3
# Chains loaded at once (kmod.batch.load_requests): one after the other, as
# two workers were no faster under emulation, which serialises the kernel
# text patching module loading does (docs/benchmarks.md, "Kernel modules").
WORKERS = 1
# ...except the disk drivers: a controller's module returns only when its
# probe has, and the probe mostly waits for the hardware (an ATA channel's
# reset, an empty one's time-out), so a second chain loads meanwhile.
DISK_WORKERS = 2


async def load_bounded(
    ctx: PhaseContext,
    index: kmod.ModuleIndex,
    requests: Sequence[str | Sequence[str]],
    loaded: set[str],
    tally: Tally,
    workers: int = WORKERS,
) -> list[kmod.LoadResult]:
    """load_requests off the loop, bounded by pid1.io_timeout: a module whose
    init hangs (finit_module does not return; no thread can be killed) is left
    to its thread, named in the log and the summary, and the boot goes on.
    Returns the results new to `tally`, also on a timeout (what did finish)."""
    before = set(tally.results)
    timeout = ctx.config.io_timeout
    try:
        return await bounded(
            load_requests, index, requests, loaded, tally, kmod.load_module, workers,
            timeout=timeout, name="pid1-modules",
        )  # fmt: skip
    except TimeoutError:
        tally.hung = sorted(tally.loading)
        ctx.log.error(
            f"modules: {' '.join(tally.hung) or 'loading'} still not done after {timeout:.0f} s (pid1.io_timeout): "
            "going on without it and the modules after it"
        )
        return [result for name, result in list(tally.results.items()) if name not in before]


def disk_drivers_first(
    index: kmod.ModuleIndex, requests: Sequence[str | Sequence[str]]
) -> tuple[list[str | Sequence[str]], list[str | Sequence[str]]]:
    """`requests` split in two: those whose module (a chain's last) drives
    what disks are on (DISK_DRIVER_FOLDERS), and the rest, each in its order."""

    def drives_disks(request: str | Sequence[str]) -> bool:
        name = request if isinstance(request, str) else request[-1]
        return index.paths.get(kmod.normalize(name), "").startswith(DISK_DRIVER_FOLDERS)

    disks = [r for r in requests if drives_disks(r)]
    return disks, [r for r in requests if not drives_disks(r)]


def report(ctx: PhaseContext, results: list[kmod.LoadResult]) -> None:
    loaded = [r.name for r in results if r.outcome == "loaded"]
    if loaded:
        ctx.log.info(f"modules: loaded {' '.join(loaded)}")
    for result in results:
        if result.outcome in ("failed", "missing"):
            ctx.log.warning(f"modules: {result.name} not loaded: {result.error}")
    skipped = [r.name for r in results if r.outcome == "skipped"]
    if skipped:
        ctx.log.warning(f"modules: not tried (a dependency failed): {' '.join(skipped)}")


async def run(ctx: PhaseContext) -> str:
    release = os.uname().release
    moddir = ctx.path("lib/modules", release)
    if not os.path.isfile(os.path.join(moddir, "modules.dep")):
        ctx.log.info(f"modules: no modules.dep in {moddir}: nothing to load")
        return f"no modules for {release}: nothing to do"
    config = await asyncio.to_thread(kmod.read_config, ctx.root)
    config.add_kernel_cmdline(procfs.read_cmdline(ctx.path("proc/cmdline")))
    index = await asyncio.to_thread(kmod.ModuleIndex.load, moddir, config)
    ctx.wiring.module_index = index
    modprobe_note = install_modprobe(ctx.root, ctx.log)

    loaded = kmod.loaded_modules(ctx.path("proc/modules"))
    tally = Tally()
    seen: set[str] = set()
    # Opened before the first walk, so no device added from then on is missed.
    watch = kmod.ModaliasWatch.open()
    try:
        aliases: list[str] | None = None
        for round_no in range(COLDPLUG_ROUNDS):
            if aliases is None:
                aliases = await asyncio.to_thread(kmod.scan_modaliases, ctx.path("sys/devices"))
            fresh = [a for a in aliases if a not in seen]
            seen.update(fresh)
            chains, matched = await asyncio.to_thread(coldplug_requests, index, fresh)
            tally.devices = len(seen)
            tally.matched += matched
            if round_no == 0:
                disks, rest = disk_drivers_first(index, [*chains, *FIXED])
                results = await load_bounded(ctx, index, disks, loaded, tally, DISK_WORKERS)
                # The disk drivers are in: the storage phase's wait for a late disk counts from here.
                ctx.wiring.disk_drivers_loaded_at = time.monotonic()
                if not tally.hung:
                    results += await load_bounded(ctx, index, rest, loaded, tally)
            else:
                results = await load_bounded(ctx, index, chains, loaded, tally)
            report(ctx, results)
            if tally.hung:
                break  # its thread still holds the loads: no more rounds behind it
            if not any(r.outcome == "loaded" for r in results):
                break  # nothing new in the kernel: no new devices to find
            # The devices the new drivers added: from their uevents, or (none
            # to be had, or some lost) from another walk of /sys.
            aliases = watch.take() if watch else None
            if aliases is not None and not set(aliases) - seen:
                break
    finally:
        if watch:
            watch.close()
    summary = tally.summary()
    ctx.log.info(f"modules: {summary}")
    return f"{summary}; {modprobe_note}"


async def run_docker_modules(ctx: PhaseContext) -> str:
    """The `docker_modules` phase: ENGINE_MODULES, with the index the
    modules phase read (nothing to do where it found no modules)."""
    index = ctx.wiring.maybe(Wiring.module_index)
    if index is None:
        return "no module index (see the modules phase): nothing to do"
    loaded = kmod.loaded_modules(ctx.path("proc/modules"))
    tally = Tally()
    results = await load_bounded(ctx, index, ENGINE_MODULES, loaded, tally)
    report(ctx, results)
    return tally.summary()


PHASES = [
    Phase(
        name="modules",
        run=run,
        needs=("mounts", "engine"),
        required=False,
        fills=(Wiring.module_index, Wiring.disk_drivers_loaded_at),
    ),
    Phase(
        name="docker_modules",
        run=run_docker_modules,
        needs=("modules",),
        required=False,
        uses=(Wiring.module_index,),
    ),
]
