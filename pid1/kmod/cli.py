"""`python -m pid1 modprobe` (pid1.modprobe, then `modprobe_main`): the
command-line face of the resolver, for what the kernel and dockerd ask.

Owns: parse_modprobe_args, modprobe_main.
May use: pid1.kmod.config, .index and .load, pid1.kmsg and pid1.linux.procfs.
"""

from __future__ import annotations

import argparse
import os
import sys

from pid1.kmod.config import read_config
from pid1.kmod.index import ModuleIndex, ModuleNotFound, PlanEntry
from pid1.kmod.load import load_entry, module_dir
from pid1.kmsg import write_once
from pid1.linux.procfs import loaded_modules, read_cmdline


def _kmsg(message: str) -> None:
    """The kernel's request_module runs us with no terminal: leave a trace in dmesg."""
    write_once("info", "pid1-modprobe", message)


def parse_modprobe_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pid1 modprobe",
        description="load kernel modules with their dependencies (pid1's resolver; a subset of kmod's modprobe)",
    )
    parser.add_argument("-a", "--all", action="store_true", help="every argument is a module name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no error for a module that is not found")
    parser.add_argument("-v", "--verbose", action="store_true", help="print what is done")
    parser.add_argument("-n", "--dry-run", action="store_true", help="do not load anything")
    parser.add_argument("-D", "--show-depends", action="store_true", help="print the load list and stop")
    parser.add_argument("-R", "--resolve-alias", action="store_true", help="print the modules an alias names")
    parser.add_argument("-b", "--use-blacklist", action="store_true", help="apply blacklists to aliases too")
    parser.add_argument("-r", "--remove", action="store_true", help="(not supported)")
    parser.add_argument("-d", "--dirname", default="/", help="the root holding lib/modules")
    parser.add_argument("-S", "--set-version", help="kernel version (default: the running one)")
    parser.add_argument("-C", "--config", action="append", help="modprobe.d directory (repeatable)")
    parser.add_argument("names", nargs="*", metavar="NAME")
    return parser.parse_args(argv)


def modprobe_main(argv: list[str], not_found: set[str] | None = None) -> int:
    """`modprobe [-q] [-a] [-v] [-D] NAME [PARAM=VALUE...]`: what the kernel
    (`/proc/sys/kernel/modprobe -q -- NAME`) and dockerd (`modprobe -va ...`)
    call. Exit 0 when everything asked for is in the kernel afterwards. Names
    that no module or alias answers are added to `not_found`."""
    args = parse_modprobe_args(argv)
    if args.remove:
        print("modprobe: removing modules is not supported by pid1's modprobe", file=sys.stderr)
        return 1
    if not args.names:
        print("modprobe: no module name given", file=sys.stderr)
        return 1
    names = args.names if args.all else args.names[:1]
    cli_params = "" if args.all else " ".join(args.names[1:])
    if args.config:
        config = read_config("/", [os.path.abspath(d) for d in args.config])
    else:
        config = read_config(args.dirname)
    if args.dirname == "/":
        config.add_kernel_cmdline(read_cmdline())
    moddir = module_dir(args.dirname, args.set_version)
    try:
        index = ModuleIndex.load(moddir, config)
    except OSError as exc:
        if not args.quiet:
            print(f"modprobe: FATAL: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.resolve_alias:
        found = [m for name in names for m in index.lookup(name, args.use_blacklist)]
        for module in found:
            print(module)
        return 0 if found else 1
    dry = args.dry_run or args.show_depends
    loaded = frozenset() if args.show_depends else frozenset(loaded_modules())
    status = 0
    for name in names:
        try:
            top = index.lookup(name, args.use_blacklist)
            if not top:
                if not_found is not None:
                    not_found.add(name)
                raise ModuleNotFound(f"Module {name} not found in directory {moddir}")
            extra = dict.fromkeys(top, cli_params) if cli_params else None
            plan = index.plan([name], loaded, args.use_blacklist, extra)
        except ModuleNotFound as exc:
            if not args.quiet:
                print(f"modprobe: FATAL: {exc}", file=sys.stderr)
            status = 1
            continue
        status |= _run_plan(plan, args.show_depends, dry, args.verbose, args.quiet)
    return status


def _run_plan(plan: list[PlanEntry], show: bool, dry: bool, verbose: bool, quiet: bool) -> int:
    status = 0
    failed: set[str] = set()
    for entry in plan:
        if show:
            if entry.state == "builtin":
                print(f"builtin {entry.name}")
            else:
                print(f"insmod {entry.path} {entry.params}")
            continue
        if entry.state != "load":
            continue
        if verbose:
            print(f"insmod {entry.path} {entry.params}")
        if dry:
            continue
        result = load_entry(entry, failed)
        if result.outcome in ("failed", "skipped"):
            status = 1
            _kmsg(f"{entry.name}: {result.error}")
            if not quiet:
                print(f"modprobe: ERROR: could not insert '{entry.name}': {result.error}", file=sys.stderr)
        elif result.outcome == "loaded":
            _kmsg(f"loaded {entry.name}")
    return status
