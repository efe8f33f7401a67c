"""hostname: the hostname (pid1.hostname), /etc/hostname, /etc/hosts and an
/etc/resolv.conf placeholder that the network phase fills. Needs mounts.
(The userdata phase renames the host with `rename` when a user-data says so.)
Files that exist are left as they are.
"""

from __future__ import annotations

import os
import socket

from pid1.linux import syscalls
from pid1.phases import Phase, PhaseContext

RESOLV_PLACEHOLDER = "# written by pid1; the network phase replaces this when it has DNS servers\n"


def write_if_missing(path: str, text: str) -> bool:
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return True


def name_files(name: str) -> dict[str, str]:
    return {
        "etc/hostname": f"{name}\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    }


async def run(ctx: PhaseContext) -> str:
    name = ctx.config.hostname
    done = []
    if socket.gethostname() != name:
        syscalls.sethostname(name)
        done.append(f"hostname {name}")
    files = {**name_files(name), "etc/resolv.conf": RESOLV_PLACEHOLDER}
    done += [rel for rel, text in files.items() if write_if_missing(ctx.path(rel), text)]
    return ", ".join(done) if done else "already in place"


def rename(ctx: PhaseContext, old: str, new: str) -> None:
    """The host's name changed after the boot set it (a user-data): the kernel's
    name, and the files pid1 wrote for `old`, the name it set (a file with
    anything else in it is someone else's, and kept)."""
    syscalls.sethostname(new)
    for relative, text in name_files(new).items():
        path = ctx.path(relative)
        try:
            with open(path) as f:
                current = f.read()
        except OSError:
            current = None
        if current is None or current == name_files(old)[relative]:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


PHASE = Phase(name="hostname", run=run, needs=("mounts",))
