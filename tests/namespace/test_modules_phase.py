"""The modules phase under the real supervisor, as PID 1 of a namespace,
against a temporary root.

The module tree there is Debian's metadata (modules.dep, aliases, softdeps,
builtin) with every .ko replaced by a file that is not a module: the phase
runs end to end and really calls finit_module, which this kernel refuses
(ENOSYS without module support, ENOEXEC for a non-ELF file elsewhere), so
nothing is ever loaded into the machine running the tests. The phase must
name each failure with its errno, skip what depends on it, and still end
`done`. Loading real modules is left to the VM tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devtools.harness import Pid1

pytestmark = pytest.mark.namespace

MODULES_ROOT = Path(os.environ.get("PID1_TEST_MODULES_ROOT", "/var/cache/only-docker/kernel/root"))
METADATA = ("modules.dep", "modules.alias", "modules.softdep", "modules.builtin", "modules.builtin.modinfo")


def start(pid1_ns, root: Path, cmdline: str = "") -> Pid1:
    """pid1 under `root` with a private tmpfs on its /dev (the devices phase
    must not write into the host's devtmpfs)."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    return pid1_ns(f"pid1.phases=modules {cmdline}", root=str(root), wrapper=wrapper)


def not_a_module_tree(root: Path) -> Path:
    found = sorted(p for p in MODULES_ROOT.glob("lib/modules/*") if (p / "modules.dep").is_file())
    if not found:
        pytest.skip(f"no Debian kernel tree under {MODULES_ROOT} (devtools/kernel_tree.py makes it)")
    moddir = root / "lib/modules" / os.uname().release
    moddir.mkdir(parents=True)
    for name in METADATA:
        shutil.copy(found[-1] / name, moddir / name)
    for line in (moddir / "modules.dep").read_text().splitlines():
        ko = moddir / line.split(":", 1)[0]
        ko.parent.mkdir(parents=True, exist_ok=True)
        ko.write_bytes(b"not a kernel module\n")
    return moddir


def host_kernel_modprobe() -> str:
    try:
        return Path("/proc/sys/kernel/modprobe").read_text()
    except FileNotFoundError:
        return "(none: a kernel without module support)"


def test_failures_are_warnings_and_the_phase_is_done(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    not_a_module_tree(root)
    before = host_kernel_modprobe()
    run = start(pid1_ns, root)
    state = run.wait_phase("modules", timeout=60)
    detail = state["phases"]["modules"]["detail"]
    # The host's own devices (its sysfs is mounted under root/sys) are coldplugged too.
    assert detail.startswith("loaded 0, already "), detail
    assert "failed " in detail and "skipped " in detail and "modaliases matched" in detail, detail
    assert "kernel.modprobe left alone (not the initial PID namespace)" in detail
    log = run.log()
    # Every module named with its errno; what depends on a failed module is not tried.
    assert "modules: virtio_ring not loaded: E" in log, run.describe()
    assert "modules: jbd2 not loaded: E" in log, run.describe()
    skipped = next(line for line in log.splitlines() if "modules: not tried (a dependency failed): " in line)
    assert " virtio_net" in skipped and " ext4" in skipped, skipped
    assert host_kernel_modprobe() == before, "a pid1 in a child PID namespace must not set kernel.modprobe"
    helper = f"{root}/run/pid1/bin/modprobe"
    shown = run.nsenter([helper, "-D", "-d", str(root), "ext4"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().splitlines()[-1].endswith("/kernel/fs/ext4/ext4.ko "), shown.stdout


def test_no_module_tree_is_a_note_not_a_failure(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path / "root")
    state = run.wait_phase("modules")
    assert state["phases"]["modules"]["detail"] == f"no modules for {os.uname().release}: nothing to do"
    assert "modules: no modules.dep in" in run.log()


def test_a_module_load_that_hangs_is_given_up_and_the_phase_goes_on(pid1_ns, tmp_path: Path) -> None:
    """overlay.ko is a FIFO: opening it for finit_module blocks for ever, as a
    module whose init hangs does. The phase gives up on it after
    pid1.io_timeout, names it, and ends; pid1 goes on (the boot is done)."""
    root = tmp_path / "root"
    moddir = not_a_module_tree(root)
    overlay = moddir / "kernel/fs/overlayfs/overlay.ko"
    overlay.unlink()
    os.mkfifo(overlay)
    timeout = 2
    run = start(pid1_ns, root, f"pid1.io_timeout={timeout}")
    state = run.wait_phase("modules", timeout=60)
    phase = state["phases"]["modules"]
    assert "gave up waiting for overlay" in phase["detail"], run.describe()
    assert timeout <= phase["duration"] < timeout + 20, run.describe()
    assert "modules: overlay still not done after 2 s (pid1.io_timeout): going on without it" in run.log()
    run.wait_state("boot done", lambda s: s["mode"] == "running")
