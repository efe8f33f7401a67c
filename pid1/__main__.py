"""`python -m pid1`: the init. Also `python -m pid1 keys` (the config keys),
`status --state FILE` (the supervisor view, once), `plot --state FILE -o
boot.svg` (the boot timeline), `modprobe [-q] [-a] NAME...` (pid1's
modprobe, pid1.kmod) and `userdata check FILE` (what a user-data would do).

As PID 1 the arguments are the kernel's: every word of its command line
without `.` or `=` (`quiet splash`, `single`, the `host` of `pid1.hostname=my
host`). PID 1 must boot whatever they are, so it runs the init without
argparse: it takes `--cmdline`/`--root` and warns about every other word;
no subcommand is ever taken from the kernel (`keys` would end PID 1 and
panic the kernel).

Order matters for the init: the handled signals are blocked before anything
can start a thread, so every thread inherits the mask and the signalfd is
the only place those signals arrive. Only for the init: `status` and `plot`
keep Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from pid1 import reaper as reaper_mod
from pid1.linux import procfs

INIT_OPTIONS = ("--cmdline", "--root")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pid1", description="only-docker's PID 1")
    parser.add_argument("--cmdline", help="use this string instead of /proc/cmdline")
    parser.add_argument("--root", default="/", help="treat DIR as / for the host phases (tests, development)")
    parser.add_argument("command", nargs="?", default="init", choices=["init", "keys", "status", "plot", "modprobe"])
    parser.add_argument("--state", default="/run/pid1/state.json", help="status, plot: the state file to read")
    parser.add_argument("-o", "--output", default="boot.svg", help="plot: the SVG to write (- for stdout)")
    parser.add_argument("--rows", type=int, help="status: screen rows (default: the terminal's)")
    parser.add_argument("--cols", type=int, help="status: screen columns (default: the terminal's, else 80)")
    parser.add_argument("--long", action="store_true", help="status: every phase and 40 log lines")
    return parser.parse_args(argv)


def pid1_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """PID 1's argv: the values of --cmdline and --root (`--opt V` or
    `--opt=V`), and every other word (but a leading `init`), to be warned
    about. Never fails."""
    options: dict[str, str] = {}
    ignored: list[str] = []
    words = iter(argv[1:] if argv[:1] == ["init"] else argv)
    for word in words:
        name, eq, value = word.partition("=")
        if name not in INIT_OPTIONS:
            ignored.append(word)
        elif eq:
            options[name] = value
        else:
            following = next(words, None)
            if following is None:
                ignored.append(word)
            else:
                options[name] = following
    return options, ignored


def read_cmdline(given: str | None) -> str:
    if given is not None:
        return given
    return procfs.read_cmdline()  # "" while /proc is not mounted: the mounts phase will; defaults meanwhile


def run_init(cmdline: str | None, root: str, ignored_args: list[str]) -> int:
    reaper_mod.block_handled_signals()
    from pid1 import init

    return init.run(read_cmdline(cmdline), root=root, ignored_args=ignored_args)


def main(argv: list[str]) -> int:
    if os.getpid() == 1:
        options, ignored = pid1_args(argv)
        return run_init(options.get("--cmdline"), options.get("--root", "/"), ignored)
    if argv[:1] == ["modprobe"]:
        # kmod-style options (-q -a -v ...) of its own, and no signals to take over:
        # the kernel's request_module and dockerd run this as a short-lived command.
        from pid1.modprobe import main as modprobe

        return modprobe(argv[1:])
    if argv[:1] == ["userdata"]:
        from pid1.userdata_check import main as userdata

        return userdata(argv[1:])
    args = parse_args(argv)
    if args.command == "keys":
        from pid1.config import describe_keys

        print("| key | default | meaning |\n|---|---|---|")
        for key, default, doc in describe_keys():
            print(f"| `{key}` | `{default}` | {doc} |")
        return 0
    if args.command == "status":
        from pid1.view.cli import status_main

        return status_main(args.state, args.rows, args.cols, args.long)
    if args.command == "plot":
        from pid1.plot import plot_main

        return plot_main(args.state, args.output)
    return run_init(args.cmdline, args.root, [])


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        if os.getpid() != 1:
            raise
        traceback.print_exc()
        from pid1 import init

        init.last_resort()
    if os.getpid() == 1:  # init.run never returns as PID 1; if it did, the kernel would panic
        from pid1 import init

        init.last_resort()
    sys.exit(code)
