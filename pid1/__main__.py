"""`python -m pid1`: the init. Also `python -m pid1 keys` (the config keys),
`status --state FILE` (the supervisor view, once), `plot --state FILE -o
boot.svg` (the boot timeline) and `modprobe [-q] [-a] NAME...` (pid1's
modprobe, pid1.kmod).

Order matters at the top of main(): the handled signals are blocked before
anything can start a thread, so every thread inherits the mask and the
signalfd is the only place those signals arrive.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from pid1 import reaper as reaper_mod


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


def read_cmdline(args: argparse.Namespace) -> str:
    if args.cmdline is not None:
        return args.cmdline
    try:
        with open("/proc/cmdline") as f:
            return f.read()
    except OSError:
        return ""  # /proc is not mounted yet: the mounts phase will; defaults meanwhile


def main(argv: list[str]) -> int:
    if argv[:1] == ["modprobe"]:
        # kmod-style options (-q -a -v ...) of its own, and no signals to take over:
        # the kernel's request_module and dockerd run this as a short-lived command.
        from pid1.modprobe import main as modprobe

        return modprobe(argv[1:])
    if argv[:1] == ["userdata"] and os.getpid() != 1:
        from pid1.userdata_check import main as userdata

        return userdata(argv[1:])
    reaper_mod.block_handled_signals()
    args = parse_args(argv)
    if args.command == "keys":
        from pid1.config import describe_keys

        print("| key | default | meaning |\n|---|---|---|")
        for key, default, doc in describe_keys():
            print(f"| `{key}` | `{default}` | {doc} |")
        return 0
    if args.command == "status":
        from pid1.view import status_main

        return status_main(args.state, args.rows, args.cols, args.long)
    if args.command == "plot":
        from pid1.plot import plot_main

        return plot_main(args.state, args.output)
    from pid1 import init

    return init.run(read_cmdline(args), root=args.root)


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        if os.getpid() != 1:
            raise
        traceback.print_exc()
        from pid1 import init

        init.last_resort()
    sys.exit(code)
