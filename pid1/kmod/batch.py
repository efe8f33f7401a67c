"""Loading many module requests at once: plan each (a name, an alias, or a
chain of them loaded in order), load the plans with finit_module, and keep
a tally of what happened, module by module.

Owns: Tally, coldplug_requests (modaliases -> chains, as udev's
`modprobe -b`), SharedLoads (one round's loads shared by workers),
load_requests (blocking: callers run it in a thread, bounded).
May use: pid1.kmod.index and pid1.kmod.load; threads of its own only with
workers > 1.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pid1.kmod.index import ModuleIndex, ModuleNotFound, PlanEntry
from pid1.kmod.load import Loader, LoadResult, load_entry, load_module

GOOD = ("loaded", "already", "builtin")


@dataclass
class Tally:
    """What loading did, module by module (first outcome wins)."""

    results: dict[str, LoadResult] = field(default_factory=dict)
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


def coldplug_requests(index: ModuleIndex, aliases: list[str]) -> tuple[list[tuple[str, ...]], int]:
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

    def __init__(self, tally: Tally, loader: Loader) -> None:
        self.tally = tally
        self.loader = loader
        self.lock = threading.Lock()
        self.loading: dict[str, threading.Event] = {}
        self.new: list[LoadResult] = []

    def record(self, result: LoadResult) -> None:
        with self.lock:
            self.tally.loading.discard(result.name)
            if result.name not in self.tally.results:
                self.tally.results[result.name] = result
                self.new.append(result)
                if result.outcome not in GOOD:
                    self.tally.failed.add(result.name)

    def load(self, entry: PlanEntry) -> None:
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
            self.record(load_entry(entry, self.tally.failed, self.loader))
        finally:
            event.set()

    def run_chain(self, plan: list[PlanEntry]) -> None:
        for entry in plan:
            self.load(entry)


def load_requests(
    index: ModuleIndex,
    requests: Sequence[str | Sequence[str]],
    loaded: set[str],
    tally: Tally,
    loader: Loader = load_module,
    workers: int = 1,
) -> list[LoadResult]:
    """Plan and load requests (blocking: run it in a thread). A request is a
    module name or alias, or a chain of them loaded in order. With workers >
    1, chains load concurrently (as udev's modprobe workers do), each in its
    own order. The results new to `tally` are recorded there and returned."""
    shared = SharedLoads(tally, loader)
    plans: list[list[PlanEntry]] = []
    for request in requests:
        plan: list[PlanEntry] = []
        for name in [request] if isinstance(request, str) else request:
            try:
                plan += index.plan([name], loaded | tally.done())
            except ModuleNotFound as exc:
                shared.record(LoadResult(name, "missing", f"ENOENT {exc}"))
        plans.append(plan)
    if workers <= 1:
        for plan in plans:
            shared.run_chain(plan)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modules") as pool:
            for future in [pool.submit(shared.run_chain, plan) for plan in plans]:
                future.result()
    return shared.new
