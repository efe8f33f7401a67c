"""modules and docker_modules: load the kernel modules the hardware and
Docker need. modules needs mounts (/proc, /sys) and engine (the module
files are on the engine's squashfs, but loop's and squashfs's: image/build.py
late_modules); docker_modules needs modules.

Coldplug: every `modalias` under /sys/devices is resolved through
modules.alias (pid1.kmod, which resolves as kmod's modprobe does), then the
storage modules (the disk drivers, ext4, and overlay for dockerd's storage
driver) and the ACPI power button and input drivers are added; each module
is loaded with its modules.dep and softdep dependencies first, by
finit_module(2), skipping what /proc/modules or modules.builtin has.
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

It also installs pid1's modprobe (`python -m pid1 modprobe`, the same
resolver) at /run/pid1/bin/modprobe. In the initial PID namespace (the real
boot) it makes sure the kernel's request_module and dockerd's `modprobe`
calls have a modprobe: a real one on PATH (the image ships kmod's) is used
for both, since a C program answers in milliseconds where a Python one
takes 0.1-0.4 s to start under emulation, and the kernel waits for it
(BuildKit's platform probes at dockerd's start ask for binfmt-464c five
times); with none, /proc/sys/kernel/modprobe points at pid1's and
/usr/local/sbin/modprobe links to it. A pid1 in a child PID namespace
(tests) leaves both alone: that sysctl is one value for the whole machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pid1
from pid1 import kmod
from pid1.layout import SYSTEM_PATH
from pid1.module_sets import ENGINE_MODULES, INPUT_MODULES, STORAGE_MODULES
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded
from pid1.wiring import Wiring

# DESIGN.md "Facts": what the measured boot loaded for dockerd 20.10
# (iptables-legacy), in two parts (pid1.module_sets): what storage and
# dockerd's start need loads with the hardware drivers in the `modules`
# phase, the networking modules in `docker_modules`, beside dockerd's start.
DOCKER_MODULES = (*STORAGE_MODULES, *ENGINE_MODULES)
FIXED = (*STORAGE_MODULES, *INPUT_MODULES)
COLDPLUG_ROUNDS = 3
# Chains loaded at once (see load_requests). Measured booting the image under
# TCG with 2 vCPUs (47 modules, ~2.5-5 s of finit_module on a busy host): 2
# workers were faster in 2 runs of 5 and slower in 3 (module loading patches
# kernel text, which emulation serialises), so: one after the other. Worth
# measuring again under KVM.
WORKERS = 1
HELPER = "run/pid1/bin/modprobe"
HELPER_STATE = "run/pid1"  # the helper's log and not-found names (pid1.modprobe)
KERNEL_MODPROBE = "proc/sys/kernel/modprobe"
# /proc/self/ns/pid of the initial PID namespace (PROC_PID_INIT_INO, a kernel constant).
INITIAL_PID_NS_INODE = 0xEFFFFFFC


GOOD = ("loaded", "already", "builtin")


@dataclass
class Tally:
    """What loading did, module by module (first outcome wins)."""

    results: dict[str, kmod.LoadResult] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # failed or skipped: their dependents are skipped
    devices: int = 0  # distinct modaliases seen
    matched: int = 0  # of those, how many named a module
    loading: set[str] = field(default_factory=set)  # in a worker's hands now (finit_module)
    hung: list[str] = field(default_factory=list)  # still loading when the phase went on without them

    def done(self) -> set[str]:
        return {name for name, r in self.results.items() if r.outcome in GOOD}

    def summary(self) -> str:
        """E.g. "loaded 23, already 4, failed 1 (xt_nat: ENOENT), skipped 2; 9 of 31 modaliases matched"."""
        by_outcome = Counter(r.outcome for r in self.results.values())
        failed = [r for r in self.results.values() if r.outcome in ("failed", "missing")]
        text = (
            f"loaded {by_outcome['loaded']}, already {by_outcome['already'] + by_outcome['builtin']}, "
            f"failed {len(failed)}"
        )
        if failed:
            named = ", ".join(f"{r.name}: {r.error.split(' ', 1)[0]}" for r in failed[:4])
            text += f" ({named}{', ...' if len(failed) > 4 else ''})"
        if by_outcome["skipped"]:
            text += f", skipped {by_outcome['skipped']} (a dependency failed)"
        if self.hung:
            text += f", gave up waiting for {' '.join(self.hung)}"
        if self.devices:
            text += f"; {self.matched} of {self.devices} modaliases matched"
        return text


def coldplug_requests(index: kmod.ModuleIndex, aliases: list[str]) -> tuple[list[tuple[str, ...]], int]:
    """For each modalias that names modules (blacklists applied, as udev's
    `modprobe -b`), those modules in modprobe's order, as one chain: when
    several drivers match a device, the first must register first, as with
    modprobe. Also how many aliases named any; most name nothing (buses,
    CPUs, platform devices)."""
    chains: dict[tuple[str, ...], None] = {}
    for alias in aliases:
        found = index.lookup(alias, use_blacklist=True)
        if found:
            chains.setdefault(tuple(found), None)
    return list(chains), len([a for a in aliases if index.lookup(a, use_blacklist=True)])


class SharedLoads:
    """The loads of one round, shared by the workers: the first worker to
    reach a module loads it, any other waits for that outcome. A chain lists
    a module's dependencies before it, so by the time a worker gets to a
    module, every dependency has an outcome (and a failed one is in
    tally.failed). A waiter only ever waits for a worker that is inside
    finit_module, so there is no deadlock."""

    def __init__(self, tally: Tally, loader: kmod.Loader) -> None:
        self.tally = tally
        self.loader = loader
        self.lock = threading.Lock()
        self.loading: dict[str, threading.Event] = {}
        self.new: list[kmod.LoadResult] = []

    def record(self, result: kmod.LoadResult) -> None:
        with self.lock:
            self.tally.loading.discard(result.name)
            if result.name not in self.tally.results:
                self.tally.results[result.name] = result
                self.new.append(result)
                if result.outcome not in GOOD:
                    self.tally.failed.add(result.name)

    def load(self, entry: kmod.PlanEntry) -> None:
        with self.lock:
            if entry.name in self.tally.results:
                return
            event = self.loading.get(entry.name)
            owner = event is None
            if owner:
                event = self.loading[entry.name] = threading.Event()
                self.tally.loading.add(entry.name)
        assert event is not None
        if not owner:
            event.wait()
            return
        try:
            self.record(kmod.load_entry(entry, self.tally.failed, self.loader))
        finally:
            event.set()

    def run_chain(self, plan: list[kmod.PlanEntry]) -> None:
        for entry in plan:
            self.load(entry)


def load_requests(
    index: kmod.ModuleIndex,
    requests: Sequence[str | Sequence[str]],
    loaded: set[str],
    tally: Tally,
    loader: kmod.Loader = kmod.load_module,
    workers: int = 1,
) -> list[kmod.LoadResult]:
    """Plan and load requests (blocking: run it in a thread). A request is a
    module name or alias, or a chain of them loaded in order. With workers >
    1, chains load concurrently (as udev's modprobe workers do), each in its
    own order. The results new to `tally` are recorded there and returned."""
    shared = SharedLoads(tally, loader)
    plans: list[list[kmod.PlanEntry]] = []
    for request in requests:
        plan: list[kmod.PlanEntry] = []
        for name in [request] if isinstance(request, str) else request:
            try:
                plan += index.plan([name], loaded | tally.done())
            except kmod.ModuleNotFound as exc:
                shared.record(kmod.LoadResult(name, "missing", f"ENOENT {exc}"))
        plans.append(plan)
    if workers <= 1:
        for plan in plans:
            shared.run_chain(plan)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modules") as pool:
            for future in [pool.submit(shared.run_chain, plan) for plan in plans]:
                future.result()
    return shared.new


def helper_script(python: str = sys.executable, state_dir: str = "/" + HELPER_STATE) -> str:
    """An executable modprobe for the kernel and dockerd: this Python running
    pid1.modprobe (which answers for loaded modules without importing
    pid1.kmod) from the directory pid1 itself was imported from, with its log
    and not-found names in `state_dir`. -I -S as in the image's /init: no
    environment, no `site` (the guest's trimmed standard library may not
    have it)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pid1.__file__)))
    return (
        f"#!{python} -IS\n"
        "# written by pid1's modules phase: the kernel's and dockerd's modprobe (pid1.modprobe)\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from pid1.modprobe import main\n"
        f"sys.exit(main(sys.argv[1:], state_dir={state_dir!r}))\n"
    )


def install_helper(path: str, text: str) -> bool:
    """Write the helper (atomically, mode 755) unless it is there already."""
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return True


def in_initial_pid_namespace(ns_link: str = "/proc/self/ns/pid") -> bool:
    try:
        return os.stat(ns_link).st_ino == INITIAL_PID_NS_INODE
    except OSError:
        return False


def point_kernel_at(sysctl: str, helper: str) -> bool:
    """Set kernel.modprobe (the file /proc/sys/kernel/modprobe) to `helper`
    unless it says so already. True when written."""
    with open(sysctl) as f:
        if f.read().strip() == helper:
            return False
    with open(sysctl, "w") as f:
        f.write(helper)
    return True


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


async def load_bounded(
    ctx: PhaseContext, index: kmod.ModuleIndex, requests: Sequence[str | Sequence[str]], loaded: set[str], tally: Tally
) -> list[kmod.LoadResult]:
    """load_requests off the loop, bounded by pid1.io_timeout: a module whose
    init hangs (finit_module does not return; no thread can be killed) is left
    to its thread, named in the log and the summary, and the boot goes on.
    Returns the results new to `tally`, also on a timeout (what did finish)."""
    before = set(tally.results)
    timeout = ctx.config.io_timeout
    try:
        return await bounded(
            load_requests, index, requests, loaded, tally, kmod.load_module, WORKERS,
            timeout=timeout, name="pid1-modules",
        )  # fmt: skip
    except TimeoutError:
        tally.hung = sorted(tally.loading)
        ctx.log.error(
            f"modules: {' '.join(tally.hung) or 'loading'} still not done after {timeout:.0f} s (pid1.io_timeout): "
            "going on without it and the modules after it"
        )
        return [result for name, result in list(tally.results.items()) if name not in before]


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


def modprobe_on_path(root: str, path_dirs: str = SYSTEM_PATH) -> str | None:
    """The first `modprobe` on PATH (as the machine sees the path), or None."""
    for directory in (d for d in path_dirs.split(":") if d):
        if os.path.lexists(os.path.join(root, directory.lstrip("/"), "modprobe")):
            return os.path.join(directory, "modprobe")
    return None


def link_into_path(root: str, helper: str, path_dirs: str = SYSTEM_PATH) -> str | None:
    """Make `modprobe` on PATH (dockerd execs it) a link to the helper,
    unless a modprobe is on PATH already (a real kmod is left alone). The
    link goes in the first PATH directory. Returns the link made, or None."""
    dirs = [d for d in path_dirs.split(":") if d]
    if not dirs or modprobe_on_path(root, path_dirs) is not None:
        return None
    link = os.path.join(root, dirs[0].lstrip("/"), "modprobe")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(helper, link)
    return os.path.join(dirs[0], "modprobe")


async def setup_modprobe(ctx: PhaseContext) -> str:
    """Install the helper; in the initial PID namespace (the real boot) also
    give the kernel and PATH a modprobe: the real one on PATH when there
    is one, else the helper."""
    helper = "/" + HELPER
    if install_helper(ctx.path(HELPER), helper_script()):
        ctx.log.info(f"modules: installed pid1's modprobe at {helper}")
    if not in_initial_pid_namespace(ctx.path("proc/self/ns/pid")):
        return "kernel.modprobe left alone (not the initial PID namespace)"
    modprobe = modprobe_on_path(ctx.root) or helper
    if modprobe == helper:
        try:
            linked = link_into_path(ctx.root, helper)
            if linked:
                ctx.log.info(f"modules: {linked} -> {helper}")
        except OSError as exc:
            ctx.log.warning(f"modules: cannot put modprobe on PATH: {exc}")
    try:
        if point_kernel_at(ctx.path(KERNEL_MODPROBE), modprobe):
            ctx.log.info(f"modules: kernel.modprobe = {modprobe}")
    except OSError as exc:
        ctx.log.warning(f"modules: cannot set kernel.modprobe: {exc}")
        return f"kernel.modprobe not set ({exc.strerror})"
    return f"kernel.modprobe={modprobe}"


async def run(ctx: PhaseContext) -> str:
    release = os.uname().release
    moddir = ctx.path("lib/modules", release)
    if not os.path.isfile(os.path.join(moddir, "modules.dep")):
        ctx.log.info(f"modules: no modules.dep in {moddir}: nothing to load")
        return f"no modules for {release}: nothing to do"
    config = await asyncio.to_thread(kmod.read_config, ctx.root)
    config.add_kernel_cmdline(read_text(ctx.path("proc/cmdline")))
    index = await asyncio.to_thread(kmod.ModuleIndex.load, moddir, config)
    ctx.wiring.module_index = index
    modprobe_note = await setup_modprobe(ctx)

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
            requests: list[str | tuple[str, ...]] = [*chains, *(FIXED if round_no == 0 else ())]
            results = await load_bounded(ctx, index, requests, loaded, tally)
            report(ctx, results)
            if round_no == 0:
                # The disk drivers are in: the storage phase's wait for a late disk counts from here.
                ctx.wiring.disk_drivers_loaded_at = time.monotonic()
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
        doc=__doc__ or "",
    ),
    Phase(
        name="docker_modules",
        run=run_docker_modules,
        needs=("modules",),
        required=False,
        uses=(Wiring.module_index,),
        doc=__doc__ or "",
    ),
]
