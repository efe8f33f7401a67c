"""memory: the kernel's memory settings for a machine that leaves its RAM
to the containers. Needs mounts (/sys, /proc).

Transparent huge pages (pid1.transparent_hugepage, default `never`).
Debian's kernel gives them to every process (`always`), and two costs come
with that in a small VM:
- khugepaged raises vm.min_free_kbytes for its compaction, several times
  the kernel's own default, and the watermarks follow it: RAM the kernel
  keeps free and MemAvailable does not count;
- the Go runtime of dockerd, containerd and every shim advises its heap for
  huge pages: 2 MiB pages where a few KiB are used, anonymous memory that
  can never be reclaimed.
With `never` the kernel stops khugepaged and puts min_free_kbytes back to
its own default itself. `madvise` and `always` are for workloads that want
huge pages (the reserve comes back with them); `kernel` leaves the kernel's
setting (its `transparent_hugepage=` word, else its build default). The
figures: docs/benchmarks.md.

Only in the initial PID namespace (the real boot): the setting is the whole
machine's, and a pid1 in a test namespace leaves it alone. Not required: a
kernel without the file, or a write it refuses, is a line in the log.
"""

from __future__ import annotations

import re

from pid1.kmod.helper import in_initial_pid_namespace
from pid1.phases import Phase, PhaseContext

THP_ENABLED = "sys/kernel/mm/transparent_hugepage/enabled"
MIN_FREE_KBYTES = "proc/sys/vm/min_free_kbytes"
LEAVE = "kernel"


def selected_mode(text: str) -> str | None:
    """The kernel's current mode: the bracketed word of `always [madvise] never`."""
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else None


def read_word(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


async def run(ctx: PhaseContext) -> str:
    wanted = ctx.config.transparent_hugepage
    if wanted == LEAVE:
        return "transparent huge pages: the kernel's setting kept (pid1.transparent_hugepage=kernel)"
    if not in_initial_pid_namespace(ctx.path("proc/self/ns/pid")):
        return "left alone (not the initial PID namespace: the setting is the whole machine's)"
    path = ctx.path(THP_ENABLED)
    try:
        with open(path) as f:
            current = selected_mode(f.read())
    except FileNotFoundError:
        return "no transparent huge pages in this kernel: nothing to set"
    except OSError as exc:
        ctx.log.warning(f"memory: cannot read /{THP_ENABLED}: {exc}")
        return f"transparent huge pages left as they are ({exc.strerror})"
    if current == wanted:
        return f"transparent huge pages {wanted} already; vm.min_free_kbytes {read_word(ctx.path(MIN_FREE_KBYTES))}"
    before = read_word(ctx.path(MIN_FREE_KBYTES))
    try:
        with open(path, "w") as f:
            f.write(wanted)
    except OSError as exc:
        ctx.log.warning(f"memory: cannot set transparent huge pages to {wanted}: {exc}")
        return f"transparent huge pages left {current} ({exc.strerror})"
    after = read_word(ctx.path(MIN_FREE_KBYTES))
    return f"transparent huge pages {current} -> {wanted}; vm.min_free_kbytes {before} -> {after}"


PHASE = Phase(name="memory", run=run, needs=("mounts",), required=False)
