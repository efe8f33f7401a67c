"""What dockerd gets to create a system container: the create payload built
from a ContainerSpec, and the names a role's container may take.

Owns `create_config`, `privileged_host_config` and `container_names`. Every
system container is labelled `pid1.role=ROLE` and `pid1.instance=<this
boot>`, never restarted by dockerd (pid1 restarts it) and created, never
`run` (which would try to pull). A TTY container that runs a shell (the
spec's `stop_signal`, or the bundled fallback on a TTY) stops on SIGHUP: a
shell ignores SIGTERM, and a hang-up is how a terminal session ends.

May use: the standard library and pid1.container_spec (what is missing of
the capability bounding set comes from pid1.linux.procfs, by the caller).
"""

from __future__ import annotations

from typing import Any

from pid1.container_spec import ROLE_LABEL, ContainerSpec

INSTANCE_LABEL = "pid1.instance"
NAME_TRIES = 5
HANGUP = "SIGHUP"


def privileged_host_config(missing: list[str]) -> dict[str, Any]:
    """--privileged, or where the bounding set forbids it, the closest thing:
    every capability but the missing ones, no seccomp/AppArmor, nothing masked."""
    if not missing:
        return {"Privileged": True}
    return {
        "Privileged": False,
        "CapAdd": ["ALL"],
        "CapDrop": [f"CAP_{name}" for name in missing],
        "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
        "MaskedPaths": [],
        "ReadonlyPaths": [],
    }


def container_names(role: str) -> list[str]:
    """The names a role's container may have, in order: its role, then others
    for when a user's container holds the name (pid1 never removes those)."""
    return [role, f"{role}-pid1", *(f"{role}-pid1-{n}" for n in range(2, NAME_TRIES))]


def create_config(spec: ContainerSpec, image: str, instance: str, missing_caps: list[str]) -> dict[str, Any]:
    """The /containers/create payload for `spec` running `image`."""
    host_config: dict[str, Any] = {
        "NetworkMode": "host" if spec.net_host else "default",
        "Binds": list(spec.binds),
        "CapAdd": list(spec.cap_add),
        "RestartPolicy": {"Name": "no"},  # pid1 restarts, never dockerd
    }
    if spec.privileged:
        privileged = privileged_host_config(missing_caps)
        privileged["CapAdd"] = sorted({*privileged.get("CapAdd", []), *spec.cap_add})
        host_config.update(privileged)
    if spec.pid_host:
        host_config["PidMode"] = "host"
    if spec.uts_host:
        host_config["UTSMode"] = "host"
    config: dict[str, Any] = {
        "Image": image,
        "Env": list(spec.env),
        "Labels": {ROLE_LABEL: spec.role, INSTANCE_LABEL: instance},
        "Tty": spec.tty,
        "OpenStdin": spec.open_stdin,
        "StdinOnce": False,
        "AttachStdin": spec.open_stdin,
        "AttachStdout": spec.tty,
        "AttachStderr": spec.tty,
        "StopTimeout": spec.stop_timeout,
        "HostConfig": host_config,
    }
    if spec.cmd is not None:
        config["Cmd"] = list(spec.cmd)
    if spec.stop_signal is not None:
        config["StopSignal"] = spec.stop_signal
    elif spec.tty and image == spec.fallback_image:  # the bundled busybox's shell
        config["StopSignal"] = HANGUP
    return config
