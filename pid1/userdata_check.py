"""`python -m pid1 userdata check FILE [--meta-data FILE]`: what pid1 would
make of a user-data, on the user's own machine, before booting with it.

Prints what applies, every warning and the docker section's check; exits 0
when all of it applies, 1 when parts are ignored (warnings), 2 when none of
it can be used. Needs only pid1.userdata, pid1.daemon_json and pid1.config.
"""

from __future__ import annotations

import argparse
import sys

from pid1.config import parse_cmdline
from pid1.daemon_json import check_daemon_json
from pid1.userdata import MAX_USERDATA_BYTES, UserDataError, parse_meta_data, parse_userdata


def read_bounded(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_USERDATA_BYTES + 1)


def check(path: str, meta_path: str | None) -> int:
    try:
        data = parse_userdata(read_bounded(path))
        meta = parse_meta_data(read_bounded(meta_path)) if meta_path else None
    except (OSError, UserDataError) as exc:
        print(f"{path}: error: {exc}; none of it would apply")
        return 2
    print(f"{path}: {data.kind.value}" + (f", instance-id {meta.instance_id}" if meta and meta.instance_id else ""))
    warnings = list(data.warnings)
    config, config_warnings = parse_cmdline("", data.settings)
    warnings += config_warnings
    applies = data.summary()
    if data.docker is not None:
        daemon = check_daemon_json(data.docker, config.dockerd_args)
        for error in daemon.errors:
            warnings.append(f"docker section refused: {error} (dockerd would start on its last good settings)")
        if not daemon.valid:
            applies.remove("daemon.json")
    for item in applies or ["nothing to apply"]:
        print(f"  applies: {item}")
    for warning in warnings:
        print(f"  warning: {warning}")
    return 1 if warnings else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pid1 userdata", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check"])
    parser.add_argument("file", help="the user-data (#cloud-config or a #! script)")
    parser.add_argument("--meta-data", help="NoCloud meta-data or OpenStack meta_data.json")
    args = parser.parse_args(argv)
    return check(args.file, args.meta_data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
