"""hostname: the hostname (pid1.hostname, or the user-data's), /etc/hostname,
/etc/hosts and an /etc/resolv.conf placeholder that the network phase fills.
Needs mounts, and userdata (which may set the name).
Files that exist are left as they are.
"""

from __future__ import annotations

import os
import socket

from pid1 import syscalls
from pid1.phases import Phase, PhaseContext

RESOLV_PLACEHOLDER = "# written by pid1; the network phase replaces this when it has DNS servers\n"


def write_if_missing(path: str, text: str) -> bool:
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return True


async def run(ctx: PhaseContext) -> str:
    name = ctx.config.hostname
    done = []
    if socket.gethostname() != name:
        syscalls.sethostname(name)
        done.append(f"hostname {name}")
    files = {
        "etc/hostname": f"{name}\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "etc/resolv.conf": RESOLV_PLACEHOLDER,
    }
    done += [rel for rel, text in files.items() if write_if_missing(ctx.path(rel), text)]
    return ", ".join(done) if done else "already in place"


PHASE = Phase(name="hostname", run=run, needs=("mounts", "userdata"), doc=__doc__ or "")
