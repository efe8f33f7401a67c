"""pid1's modprobe for the kernel and dockerd: `python -m pid1 modprobe`
(the fast front pid1.modprobe, resolving with pid1.kmod), installed at
/run/pid1/bin/modprobe.

In the initial PID namespace (the real boot) `install_modprobe` makes sure
the kernel's request_module and dockerd's `modprobe` calls have a modprobe:
a real one on PATH (the image ships kmod's) is used for both, since a C
program starts much faster than a Python one under emulation, and the
kernel waits for it (BuildKit's platform probes at dockerd's start ask for
binfmt-464c five times); with none, /proc/sys/kernel/modprobe points at
pid1's and /usr/local/sbin/modprobe links to it. A pid1 in a child PID
namespace (tests) leaves both alone: that sysctl is one value for the
whole machine.

Owns: the helper script, kernel.modprobe, the PATH link.
May use: pid1.layout (PATH) and the log it is given.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pid1
from pid1.layout import SYSTEM_PATH

if TYPE_CHECKING:
    from pid1.log import Log

HELPER = "run/pid1/bin/modprobe"
HELPER_STATE = "run/pid1"  # the helper's log and not-found names (pid1.modprobe)
KERNEL_MODPROBE = "proc/sys/kernel/modprobe"
# /proc/self/ns/pid of the initial PID namespace (PROC_PID_INIT_INO, a kernel constant).
INITIAL_PID_NS_INODE = 0xEFFFFFFC


def helper_script(python: str = sys.executable, state_dir: str = "/" + HELPER_STATE) -> str:
    """An executable modprobe for the kernel and dockerd: this Python running
    pid1.modprobe (which answers for loaded modules without importing
    pid1.kmod) from the directory pid1 itself was imported from, with its log
    and not-found names in `state_dir`. -I -S as in the image's /init: no
    environment, no `site` (the guest's trimmed standard library may not
    have it)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pid1.__file__)))
    return (
        f"#!{python} -IS\n"
        "# written by pid1's modules phase: the kernel's and dockerd's modprobe (pid1.modprobe)\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from pid1.modprobe import main\n"
        f"sys.exit(main(sys.argv[1:], state_dir={state_dir!r}))\n"
    )


def install_helper(path: str, text: str) -> bool:
    """Write the helper (atomically, mode 755) unless it is there already."""
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return True


def in_initial_pid_namespace(ns_link: str = "/proc/self/ns/pid") -> bool:
    try:
        return os.stat(ns_link).st_ino == INITIAL_PID_NS_INODE
    except OSError:
        return False


def point_kernel_at(sysctl: str, helper: str) -> bool:
    """Set kernel.modprobe (the file /proc/sys/kernel/modprobe) to `helper`
    unless it says so already. True when written."""
    with open(sysctl) as f:
        if f.read().strip() == helper:
            return False
    with open(sysctl, "w") as f:
        f.write(helper)
    return True


def modprobe_on_path(root: str, path_dirs: str = SYSTEM_PATH) -> str | None:
    """The first `modprobe` on PATH (as the machine sees the path), or None."""
    for directory in (d for d in path_dirs.split(":") if d):
        if os.path.lexists(os.path.join(root, directory.lstrip("/"), "modprobe")):
            return os.path.join(directory, "modprobe")
    return None


def link_into_path(root: str, helper: str, path_dirs: str = SYSTEM_PATH) -> str | None:
    """Make `modprobe` on PATH (dockerd execs it) a link to the helper,
    unless a modprobe is on PATH already (a real kmod is left alone). The
    link goes in the first PATH directory. Returns the link made, or None."""
    dirs = [d for d in path_dirs.split(":") if d]
    if not dirs or modprobe_on_path(root, path_dirs) is not None:
        return None
    link = os.path.join(root, dirs[0].lstrip("/"), "modprobe")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(helper, link)
    return os.path.join(dirs[0], "modprobe")


def install_modprobe(root: str, log: Log) -> str:
    """Install the helper; in the initial PID namespace (the real boot) also
    give the kernel and PATH a modprobe: the real one on PATH when there
    is one, else the helper."""
    helper = "/" + HELPER
    if install_helper(os.path.join(root, HELPER), helper_script()):
        log.info(f"modules: installed pid1's modprobe at {helper}")
    if not in_initial_pid_namespace(os.path.join(root, "proc/self/ns/pid")):
        return "kernel.modprobe left alone (not the initial PID namespace)"
    modprobe = modprobe_on_path(root) or helper
    if modprobe == helper:
        try:
            linked = link_into_path(root, helper)
            if linked:
                log.info(f"modules: {linked} -> {helper}")
        except OSError as exc:
            log.warning(f"modules: cannot put modprobe on PATH: {exc}")
    try:
        if point_kernel_at(os.path.join(root, KERNEL_MODPROBE), modprobe):
            log.info(f"modules: kernel.modprobe = {modprobe}")
    except OSError as exc:
        log.warning(f"modules: cannot set kernel.modprobe: {exc}")
        return f"kernel.modprobe not set ({exc.strerror})"
    return f"kernel.modprobe={modprobe}"
