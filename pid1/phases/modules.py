"""modules: load the kernel modules the hardware and Docker need. Needs mounts
(/proc, /sys).

Coldplug: every `modalias` under /sys/devices is resolved through
modules.alias (pid1.kmod, which resolves as kmod's modprobe does), then the
fixed list Docker needs (DESIGN.md, "Facts") and the ACPI power button and
input drivers are added; each module is loaded with its modules.dep and
softdep dependencies first, by finit_module(2), skipping what /proc/modules or
modules.builtin has. Drivers can add devices (virtio_pci makes the virtio
devices that virtio_net/virtio_blk drive), so /sys is scanned again after
each round that loaded something, up to COLDPLUG_ROUNDS.

A module that fails to load is a warning naming it and the errno, never a
failed phase. With no lib/modules/$(uname -r)/modules.dep (a development
machine, a kernel with everything built in) the phase says so and does
nothing.

It also installs pid1's modprobe (`python -m pid1 modprobe`, the same
resolver) at /run/pid1/bin/modprobe, and in the initial PID namespace (the
real boot) points /proc/sys/kernel/modprobe at it, so the kernel's
request_module works, and links it as /usr/local/sbin/modprobe when PATH has
no modprobe, for dockerd. A pid1 in a child PID namespace (tests) leaves both
alone: that sysctl is one value for the whole machine.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from pid1 import kmod
from pid1.phases import Phase, PhaseContext

# DESIGN.md "Facts": what the measured boot loaded for dockerd 20.10 (iptables-legacy).
DOCKER_MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "overlay",
    "bridge",
    "br_netfilter",
    "veth",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_conntrack",
    "xt_nat",
    "xt_tcpudp",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
)
# The ACPI power button and its input events (SIGPWR-free power-off, issue 4).
INPUT_MODULES = ("button", "evdev")
COLDPLUG_ROUNDS = 3
HELPER = "run/pid1/bin/modprobe"
# image/build.py's /init sets this PATH for pid1 and every daemon it starts.
PATH_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
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
        return text + f"; {self.matched} of {self.devices} modaliases matched"


def coldplug_requests(index: kmod.ModuleIndex, aliases: list[str]) -> tuple[list[str], int]:
    """The modules that drive these modaliases, in order, blacklists applied
    (as udev's `modprobe -b`), and how many aliases named any; aliases that
    name nothing (most of them: buses, CPUs, platform devices) are left out."""
    modules: dict[str, None] = {}
    matched = 0
    for alias in aliases:
        found = index.lookup(alias, use_blacklist=True)
        matched += bool(found)
        for module in found:
            modules.setdefault(module, None)
    return list(modules), matched


def load_requests(
    index: kmod.ModuleIndex,
    requests: list[str],
    loaded: set[str],
    tally: Tally,
    loader: kmod.Loader = kmod.load_module,
) -> list[kmod.LoadResult]:
    """Plan and load each request in order (blocking: run in a thread). The
    results new to `tally` are recorded there and returned."""
    new: list[kmod.LoadResult] = []
    for request in requests:
        try:
            plan = index.plan([request], loaded | tally.done())
        except kmod.ModuleNotFound as exc:
            if request not in tally.results:
                result = kmod.LoadResult(request, "missing", f"ENOENT {exc}")
                tally.results[request] = result
                tally.failed.add(request)
                new.append(result)
            continue
        for entry in plan:
            if entry.name in tally.results:
                continue
            result = kmod.load_entry(entry, tally.failed, loader)
            tally.results[entry.name] = result
            new.append(result)
    return new


def helper_script(python: str = sys.executable) -> str:
    """An executable modprobe for the kernel and dockerd: this Python running
    `pid1 modprobe` from the directory pid1 itself was imported from. -I -S
    as in the image's /init: no environment, no `site` (the guest's trimmed
    standard library may not have it)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(kmod.__file__)))
    return (
        f"#!{python} -IS\n"
        "# written by pid1's modules phase: the kernel's and dockerd's modprobe (pid1.kmod)\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from pid1.kmod import modprobe_main\n"
        "sys.exit(modprobe_main(sys.argv[1:]))\n"
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


def link_into_path(root: str, helper: str, path_dirs: str = PATH_DIRS) -> str | None:
    """Make `modprobe` on PATH (dockerd execs it) a link to the helper,
    unless a modprobe is on PATH already (a real kmod is left alone). The
    link goes in the first PATH directory. Returns the link made, or None."""
    dirs = [d for d in path_dirs.split(":") if d]
    if not dirs or any(os.path.lexists(os.path.join(root, d.lstrip("/"), "modprobe")) for d in dirs):
        return None
    link = os.path.join(root, dirs[0].lstrip("/"), "modprobe")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(helper, link)
    return os.path.join(dirs[0], "modprobe")


async def setup_modprobe(ctx: PhaseContext) -> str:
    """Install the helper; in the initial PID namespace (the real boot) also
    make it the kernel's modprobe and the `modprobe` on PATH."""
    helper = "/" + HELPER
    if install_helper(ctx.path(HELPER), helper_script()):
        ctx.log.info(f"modules: installed pid1's modprobe at {helper}")
    if not in_initial_pid_namespace(ctx.path("proc/self/ns/pid")):
        return "kernel.modprobe left alone (not the initial PID namespace)"
    try:
        linked = link_into_path(ctx.root, helper)
        if linked:
            ctx.log.info(f"modules: {linked} -> {helper}")
    except OSError as exc:
        ctx.log.warning(f"modules: cannot put modprobe on PATH: {exc}")
    try:
        if point_kernel_at(ctx.path(KERNEL_MODPROBE), helper):
            ctx.log.info(f"modules: kernel.modprobe = {helper}")
    except OSError as exc:
        ctx.log.warning(f"modules: cannot set kernel.modprobe: {exc}")
        return f"kernel.modprobe not set ({exc.strerror})"
    return f"kernel.modprobe={helper}"


async def run(ctx: PhaseContext) -> str:
    release = os.uname().release
    moddir = ctx.path("lib/modules", release)
    if not os.path.isfile(os.path.join(moddir, "modules.dep")):
        ctx.log.info(f"modules: no modules.dep in {moddir}: nothing to load")
        return f"no modules for {release}: nothing to do"
    config = await asyncio.to_thread(kmod.read_config, ctx.root)
    config.add_kernel_cmdline(read_text(ctx.path("proc/cmdline")))
    index = await asyncio.to_thread(kmod.ModuleIndex.load, moddir, config)
    modprobe_note = await setup_modprobe(ctx)

    loaded = kmod.loaded_modules(ctx.path("proc/modules"))
    tally = Tally()
    seen: set[str] = set()
    fixed = [*DOCKER_MODULES, *INPUT_MODULES]
    for round_no in range(COLDPLUG_ROUNDS):
        aliases = await asyncio.to_thread(kmod.scan_modaliases, ctx.path("sys/devices"))
        fresh = [a for a in aliases if a not in seen]
        seen.update(fresh)
        requests, matched = await asyncio.to_thread(coldplug_requests, index, fresh)
        tally.devices = len(seen)
        tally.matched += matched
        if round_no == 0:
            requests += fixed
        results = await asyncio.to_thread(load_requests, index, requests, loaded, tally)
        report(ctx, results)
        if not any(r.outcome == "loaded" for r in results):
            break  # nothing new in the kernel: no new devices to find
    summary = tally.summary()
    ctx.log.info(f"modules: {summary}")
    return f"{summary}; {modprobe_note}"


PHASE = Phase(name="modules", run=run, needs=("mounts",), required=False, doc=__doc__ or "")
