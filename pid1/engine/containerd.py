"""containerd as pid1 runs it: its config file and its command line.

Owns `write_config` and `containerd_argv`. containerd gets its own socket
(pid1.containerd_socket) and its root and state under the exec root (RAM,
not the docker data root): with dockerd 20.10 it holds only the records of
running containers, which no boot outlives, so containerd needs neither
storage nor a module and starts at once, beside the module loading. A
dockerd that starts its own containerd takes over a second to stop (it polls
its child once a second); with containerd beside it the stop is quick
(docs/benchmarks.md#restarts-and-the-engine).

May use: the standard library and pid1.config (read only).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pid1.config import Config

# Snapshotters dockerd 20.10 never uses (its images and container layers are
# its own graph driver's): each would probe at start (overlayfs test-mounts,
# devmapper and zfs warn), which costs a boot time and says nothing.
UNUSED_CONTAINERD_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
)


def write_config(config: Config) -> str:
    """Write containerd's config file (in the exec root): its socket, root,
    state, and only the plugins dockerd uses. Returns its path."""
    root = os.path.join(config.docker_exec_root, "containerd", "root")
    state = os.path.join(config.docker_exec_root, "containerd", "daemon")
    path = os.path.join(config.docker_exec_root, "containerd", "containerd.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    disabled = ", ".join(f'"{name}"' for name in UNUSED_CONTAINERD_PLUGINS)
    text = (
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f'  address = "{config.containerd_socket}"\n'
    )
    with open(path, "w") as f:
        f.write(text)
    return path


def containerd_argv(config_path: str) -> list[str]:
    return ["containerd", "--config", config_path, "--log-level", "warn"]


def clear_socket(path: str) -> None:
    """Remove a stale socket file (it answers nobody), before a spawn."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
