"""The modprobe the kernel and dockerd run: a light front to pid1.kmod.

The kernel's request_module (`/proc/sys/kernel/modprobe -q -- NAME`) and
dockerd (`modprobe -va NAME...`) mostly ask for modules the modules phase has
loaded already. Each ask starts a Python process, and importing pid1.kmod
(argparse, re, dataclasses, socket) costs more than the interpreter itself
under emulation (docs/benchmarks.md, "Kernel modules"), on dockerd's critical
path. So this module imports only `os` and `time` (and pid1.linux.procfs,
which imports nothing): a plain request for
names the kernel has is answered here; anything else (aliases, missing
modules, other options) goes to pid1.kmod, imported then. pid1.kmod does not
import this module: the front depends on kmod, never the other way.

The helper the modules phase installs passes a state directory (/run/pid1):
every request is appended to `modprobe.log` there, so a user can see what the
kernel and dockerd asked for and what each answer cost, and the names no
module answers are kept in `modprobe.not-found`, so asking again fails at
once. That matters: dockerd's BuildKit execs a binary for each foreign
architecture at start, and each exec makes the kernel ask for `binfmt-464c`
(five times in a row), which no module provides. The module tree
cannot change during a boot (it is in the initramfs; containers get it
read-only), so a name not found stays not found.
"""

from __future__ import annotations

import os
import time

from pid1.linux.procfs import loaded_modules

# Options that change nothing about which modules end up loaded.
PLAIN_FLAGS = frozenset("qvab")


def plain_request(argv: list[str]) -> list[str] | None:
    """The module names of a plain request (`-q -- NAME`, `-va NAME...`),
    or None for anything the full modprobe must handle (other options,
    module parameters, no name)."""
    names: list[str] = []
    every_argument_a_name = False
    options_done = False
    for arg in argv:
        if not options_done and arg == "--":
            options_done = True
        elif not options_done and arg.startswith("-") and len(arg) > 1:
            if arg.startswith("--") or not set(arg[1:]) <= PLAIN_FLAGS:
                return None
            every_argument_a_name |= "a" in arg
        else:
            names.append(arg)
    if not names or (len(names) > 1 and not every_argument_a_name):
        return None  # no name, or NAME PARAM=VALUE...
    return names


def all_in_kernel(names: list[str], proc_modules: str = "/proc/modules", sys_module: str = "/sys/module") -> bool:
    """True when every name is a module the kernel has now, loaded (in
    /proc/modules) or built in with a /sys/module entry. Aliases are never
    matched here: they need the index."""
    loaded = loaded_modules(proc_modules)
    for name in names:
        module = name.replace("-", "_")
        if module not in loaded and not os.path.isdir(os.path.join(sys_module, module)):
            return False
    return True


def known_not_found(path: str) -> set[str]:
    try:
        with open(path) as f:
            return set(f.read().split())
    except OSError:
        return set()


def remember_not_found(path: str, names: set[str]) -> None:
    try:
        with open(path, "a") as f:
            f.write("".join(f"{name}\n" for name in sorted(names)))
    except OSError:
        pass  # only the next ask is slower


def log_request(path: str, argv: list[str], status: int, began: float, how: str) -> None:
    """One line in the log; silent when it cannot be written (the request
    matters, not its record)."""
    took = (time.monotonic() - began) * 1000
    try:
        with open("/proc/uptime") as f:
            now = f.read().split()[0]
    except OSError:
        now = "?"
    line = f"[{now}] pid {os.getppid()}: modprobe {' '.join(argv)} -> {status} ({how}, {took:.0f} ms)\n"
    try:
        with open(path, "a") as f:
            f.write(line)
    except OSError:
        pass


def main(argv: list[str], state_dir: str | None = None) -> int:
    """modprobe's exit status for argv; with a state_dir, logged and with the
    not-found names remembered there."""
    began = time.monotonic()
    names = plain_request(argv)
    not_found_path = os.path.join(state_dir, "modprobe.not-found") if state_dir else None
    if names is not None and all_in_kernel(names):
        status, how = 0, "in the kernel already"
    elif names is not None and not_found_path and set(names) <= known_not_found(not_found_path):
        status, how = 1, "not found earlier"
    else:
        from pid1.kmod.cli import modprobe_main

        not_found: set[str] = set()
        status, how = modprobe_main(argv, not_found), "resolved by pid1.kmod"
        if not_found and not_found_path:
            remember_not_found(not_found_path, not_found)
    if state_dir:
        log_request(os.path.join(state_dir, "modprobe.log"), argv, status, began, how)
    return status
