"""pid1 with a Docker engine of its own, for the docker-tier tests and the
benchmarks: its command line (own data root, exec root and sockets under a
work directory, dockerd without bridge or iptables, the host phases
replaced by devtools.noop_host_phases) and what the host must have for it.
Stdlib only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

DOCKERD_TEST_ARGS = "--bridge=none,--iptables=false,--ip-masq=false"
STAND_INS = "devtools.noop_host_phases"


def docker_available() -> str | None:
    """Why pid1 cannot run an engine here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("dockerd", "containerd", "docker", "runc", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is missing (docker.io, containerd, runc)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is missing"
    if not os.path.exists("/usr/sbin/dropbear"):
        return "dropbear-bin is missing (the dom0 image's SSH server; tests/run installs it)"
    return None


def engine_cmdline(
    phases: str, workdir: Path, images_dir: Path, extra: str = "", extra_phases: Iterable[str] = ()
) -> str:
    """pid1's command line for a test engine of its own under workdir: the
    host phases replaced by no-ops, dockerd without bridge or iptables.
    `extra_phases`: more phase modules after the stand-ins."""
    return " ".join(
        [
            f"pid1.phases={phases}",
            f"pid1.extra_phases={','.join([STAND_INS, *extra_phases])}",
            f"pid1.docker_root={workdir / 'data'}",
            f"pid1.docker_exec_root={workdir / 'exec'}",
            f"pid1.docker_socket={workdir / 'd.sock'}",
            f"pid1.containerd_socket={workdir / 'c.sock'}",
            f"pid1.images_dir={images_dir}",
            f"pid1.dockerd_args={DOCKERD_TEST_ARGS}",
            extra,
        ]
    )
