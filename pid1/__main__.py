"""`python -m pid1`: the init. Also `python -m pid1 keys` (the config keys).

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
    parser.add_argument("command", nargs="?", default="init", choices=["init", "keys"])
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
    reaper_mod.block_handled_signals()
    args = parse_args(argv)
    if args.command == "keys":
        from pid1.config import describe_keys

        for key, default, doc in describe_keys():
            print(f"| `{key}` | `{default}` | {doc} |")
        return 0
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
