"""The storage phase as PID 1 of a namespace, with real disks: ext4 images on
loop devices attached by the test before (or while) pid1 runs.

pid1 runs over a temporary root whose /dev is a private tmpfs, so the real
devices and mounts phases run without touching the host: pid1 finds the loop
device through the namespace's own sysfs, makes its node in that /dev and
mounts it on <root>/var/lib/docker. Each test uses a label unique to the run
(other tests on this machine may have loop devices attached too), and every
loop device is detached at teardown, also on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.harness import REPO, Pid1, wait_for

pytestmark = pytest.mark.namespace

TEST_PHASES = "pid1.extra_phases=tests.namespace.storage_phases"


def unique_label() -> str:
    return f"DOCKER-{uuid.uuid4().hex[:9]}"  # 16 characters: ext4's maximum


MKFS = {
    "ext2": (["mke2fs", "-q", "-F", "-t", "ext2", "-L"], 64),
    "ext4": (["mke2fs", "-q", "-F", "-t", "ext4", "-L"], 64),
    "xfs": (["mkfs.xfs", "-q", "-f", "-L"], 300),  # xfsprogs' minimum; the file is sparse
    "btrfs": (["mkfs.btrfs", "-q", "-f", "-L"], 128),
}


def make_image(path: Path, fstype: str, label: str, *options: str) -> Path:
    argv, size_mb = MKFS[fstype]
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run([*argv[:-1], *options, "-L", label, str(path)], check=True, capture_output=True)
    return path


def make_ext4(path: Path, label: str, *options: str) -> Path:
    return make_image(path, "ext4", label, *options)


def kernel_has(fstype: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def corrupt_block_size(image: Path) -> None:
    """An impossible s_log_block_size (2^50 KiB blocks): the label and magic
    stay readable, the kernel refuses to mount it."""
    with open(image, "r+b") as f:
        f.seek(1024 + 24)
        f.write((40).to_bytes(4, "little"))


@pytest.fixture
def attach() -> Iterator[Callable[[Path], str]]:
    """attach(image) -> /dev/loopN; every device is detached at teardown."""
    devices: list[str] = []

    def attach_image(image: Path) -> str:
        out = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True)
        devices.append(out.stdout.strip())
        return devices[-1]

    yield attach_image
    for device in devices:
        # Still mounted in a namespace that is going away: the kernel detaches
        # it when the last mount goes (losetup -d sets autoclear then).
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def start(pid1_ns, root: Path, cmdline: str) -> Pid1:
    """pid1 as PID 1 under `root`, whose /dev is a private tmpfs (sh mounts it
    and execs pid1, which stays PID 1)."""
    (root / "dev").mkdir(parents=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    return pid1_ns(f"pid1.phases=storage {TEST_PHASES} {cmdline}", root=str(root), wrapper=wrapper)


def mount_entry(run: Pid1, target: str) -> dict[str, str] | None:
    """The namespace's mount on target (the last one wins): fstype, source, dev (major:minor)."""
    found = None
    for line in run.nsenter(["cat", "/proc/self/mountinfo"]).stdout.decode().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[4] == target:
            found = {"dev": fields[2], "fstype": fields[sep + 1], "source": fields[sep + 2]}
    return found


def rdev(device: str) -> str:
    st = os.stat(device)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def storage_done(run: Pid1) -> dict:
    return run.wait_phase("storage", timeout=30)["storage"]


def test_labelled_disk_is_mounted_on_var_lib_docker(attach, pid1_ns, tmp_path: Path) -> None:
    label = unique_label()
    image = make_ext4(tmp_path / "docker.img", label)
    loop = attach(image)
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={label}")
    storage = storage_done(run)
    target = f"{root}/var/lib/docker"
    node = f"{root}/dev/{os.path.basename(loop)}"
    assert storage["mode"] == "disk", run.describe()
    assert (storage["device"], storage["fstype"], storage["label"], storage["error"]) == (node, "ext4", label, None)
    entry = mount_entry(run, target)
    assert entry == {"dev": rdev(loop), "fstype": "ext4", "source": node}, f"{entry}\n{run.describe()}"
    assert f"storage: {node} (ext4, label {label}) mounted on {target}" in run.log()

    # Data written there lands on the disk image (checked after the stop).
    assert run.nsenter(["sh", "-c", f"echo on-disk > {target}/probe"]).returncode == 0

    # A second pid1 over the booted root (not PID 1) finds it mounted and changes nothing.
    state2 = tmp_path / "state2"
    second = run.nsenter(
        [
            "sh",
            "-c",
            f"cd {REPO} && timeout -s TERM 10 {sys.executable} -m pid1 --root {root} --cmdline "
            f"'pid1.state_dir={state2} pid1.phases=storage {TEST_PHASES} pid1.storage_label={label}' 2>&1; true",
        ],
        timeout=30,
    )
    out = second.stdout.decode()
    assert f"storage: {target} is mounted already (ext4 from {node}): left as it is" in out, out
    again = json.loads((state2 / "state.json").read_text())["storage"]
    assert (again["mode"], again["device"], again["label"], again["preexisting"]) == ("disk", node, label, True)
    assert mount_entry(run, target) == entry

    run.kill(signal.SIGTERM)
    assert run.wait_exit(30) == -signal.SIGHUP  # SIGTERM: the orderly stop, then reboot
    assert f"unmounted {target}" in run.log(), run.log()
    probe = subprocess.run(["debugfs", "-R", "cat /probe", str(image)], capture_output=True, text=True)
    assert probe.stdout == "on-disk\n", probe


@pytest.mark.parametrize("fstype", ["ext2", "xfs", "btrfs"])
def test_other_filesystems_are_mounted_with_their_type(attach, pid1_ns, tmp_path: Path, fstype: str) -> None:
    """ext2 goes through the ext4 driver; xfs and btrfs through their own."""
    driver = "ext4" if fstype == "ext2" else fstype
    if not kernel_has(driver):
        pytest.skip(f"this kernel has no {driver} loaded (the test root has no modules to load)")
    label = unique_label()[: 12 if fstype == "xfs" else 16]
    loop = attach(make_image(tmp_path / f"{fstype}.img", fstype, label))
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={label}")
    storage = storage_done(run)
    assert (storage["mode"], storage["fstype"], storage["label"]) == ("disk", fstype, label), run.describe()
    entry = mount_entry(run, f"{root}/var/lib/docker")
    assert entry is not None and entry["fstype"] == driver, f"{entry}\n{run.describe()}"
    if fstype != "btrfs":  # btrfs reports an anonymous device number, not the disk's
        assert entry["dev"] == rdev(loop), entry


def test_corrupt_superblock_falls_back_to_ram(attach, pid1_ns, tmp_path: Path) -> None:
    label = unique_label()
    # Without metadata_csum, so every kernel gets past the checksum to the bad field.
    image = make_ext4(tmp_path / "bad.img", label, "-O", "^metadata_csum")
    corrupt_block_size(image)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    loop = attach(image)
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={label}")
    storage = storage_done(run)
    node = f"{root}/dev/{os.path.basename(loop)}"
    assert storage["mode"] == "ram", run.describe()
    assert storage["fstype"] == "tmpfs"
    # The reason is the kernel's errno (EINVAL here; another kernel may check the
    # superblock in another order and say something else).
    prefix = f"{node} (ext4, label {label}) failed to mount on {root}/var/lib/docker: "
    assert storage["error"].startswith(prefix) and storage["error"].endswith(" (dmesg says why)"), storage
    assert run.state()["phases"]["storage"]["detail"].startswith(f"running from RAM (the disk labelled {label} failed")
    assert mount_entry(run, f"{root}/var/lib/docker")["fstype"] == "tmpfs"
    assert "running from RAM: the disk labelled" in run.log()
    # The disk was read, never written (nor "repaired"): byte for byte what the test made.
    run.kill(signal.SIGTERM)
    assert run.wait_exit(30) == -signal.SIGHUP  # SIGTERM: the orderly stop, then reboot
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_negative_control_unlabelled_disk_is_not_mounted(attach, pid1_ns, tmp_path: Path) -> None:
    """The same good disk, but pid1 asks for another label: RAM, and the disk
    stays unmounted. Also the cost of RAM mode: the phase waits storage_wait
    (0.5 s by default; no modules phase here, so all of it) for a late disk,
    and no longer."""
    label = unique_label()
    loop = attach(make_ext4(tmp_path / "docker.img", label))
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={label}-x")
    storage = storage_done(run)
    assert storage["mode"] == "ram" and storage["error"] is None, run.describe()
    entry = mount_entry(run, f"{root}/var/lib/docker")
    assert entry["fstype"] == "tmpfs", entry
    mountinfo = run.nsenter(["cat", "/proc/self/mountinfo"]).stdout.decode()
    mounted_devs = {line.split()[2] for line in mountinfo.splitlines()}
    assert rdev(loop) not in mounted_devs
    assert f"running from RAM: no disk labelled {label}-x" in run.log()
    duration = run.state()["phases"]["storage"]["duration"]
    print(f"storage phase in RAM mode with the default wait: {duration:.3f} s")
    assert 0.5 <= duration < 5.0, run.describe()


def test_no_wait_when_storage_wait_is_zero(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={unique_label()} pid1.storage_wait=0")
    storage = storage_done(run)
    assert storage["mode"] == "ram", run.describe()
    duration = run.state()["phases"]["storage"]["duration"]
    print(f"storage phase in RAM mode with pid1.storage_wait=0: {duration:.3f} s")
    assert duration < 1.0, run.describe()
    assert "waiting up to" not in run.log()


def test_disk_attached_while_waiting_is_mounted_at_once(attach, pid1_ns, tmp_path: Path) -> None:
    """The late-disk path: pid1 is already waiting when the disk appears; the
    block uevent wakes it, long before its 30 s wait would end."""
    label = unique_label()
    image = make_ext4(tmp_path / "late.img", label)
    root = tmp_path / "root"
    run = start(pid1_ns, root, f"pid1.storage_label={label} pid1.storage_wait=30")
    run.wait_log(f"no disk labelled {label} yet: waiting up to", timeout=30)
    attached = time.monotonic()
    loop = attach(image)
    storage = storage_done(run)
    took = time.monotonic() - attached
    print(f"late disk mounted {took:.3f} s after losetup")
    assert storage["mode"] == "disk" and storage["device"] == f"{root}/dev/{os.path.basename(loop)}", run.describe()
    assert took < 10, run.describe()
    wait_for(
        "the late disk mounted in the namespace",
        lambda: (mount_entry(run, f"{root}/var/lib/docker") or {}).get("dev") == rdev(loop),
        10,
        run.describe,
    )


@pytest.mark.parametrize("hang_at", ["class/block/vdz/dev", "class/block/vdz/size"])
def test_a_disk_scan_that_hangs_falls_back_to_ram_with_the_reason(pid1_ns, tmp_path: Path, hang_at: str) -> None:
    """The root's /sys is a tmpfs with one block device whose sysfs file is a
    FIFO: reading it blocks for ever, as a device that does not answer does.
    The disks phase gives its scan up after pid1.io_timeout, storage runs
    from RAM and says why, and pid1 goes on (the boot is done)."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "sys").mkdir()
    device = f"$0/sys/{os.path.dirname(hang_at)}"
    setup = (
        'mount -t tmpfs devtest "$0/dev" && mount -t tmpfs systest "$0/sys" && '
        f'mkdir -p "{device}" && echo 131072 > "{device}/size" && echo 254:0 > "{device}/dev" && '
        f'rm "$0/sys/{hang_at}" && mkfifo "$0/sys/{hang_at}" && exec "$@"'
    )
    timeout = 2
    run = pid1_ns(
        f"pid1.phases=storage {TEST_PHASES} pid1.storage_label={unique_label()} pid1.io_timeout={timeout}",
        root=str(root),
        wrapper=["sh", "-c", setup, str(root)],
    )
    state = run.wait_phase("storage", timeout=30)
    storage, phase = state["storage"], state["phases"]["storage"]
    assert storage["mode"] == "ram", run.describe()
    why = f"reading {root}/sys/class/block did not finish within {timeout} s (pid1.io_timeout)"
    assert storage["error"] == why, run.describe()
    assert phase["detail"] == f"running from RAM (the disk scan hangs: {why})", run.describe()
    assert timeout <= state["phases"]["disks"]["duration"] < timeout + 10, run.describe()
    assert f"disks: {why}: a device does not answer" in run.log(), run.describe()
    assert mount_entry(run, f"{root}/var/lib/docker")["fstype"] == "tmpfs", run.describe()
    run.wait_state("boot done", lambda s: s["mode"] == "running")


def test_a_disk_removed_while_mounted_is_said_in_the_log_and_the_state(attach, pid1_ns, tmp_path: Path) -> None:
    """The kernel's `remove` uevent for the mounted disk (here a synthetic one,
    written to the loop device's uevent file: the kernel sends the same event
    an unplugged disk gets) is said at once. A removal of another device is not."""
    label = unique_label()
    loop = attach(make_ext4(tmp_path / "docker.img", label))
    other = attach(make_ext4(tmp_path / "other.img", unique_label()))
    run = start(pid1_ns, tmp_path / "root", f"pid1.storage_label={label}")
    assert storage_done(run)["mode"] == "disk", run.describe()
    Path(f"/sys/class/block/{os.path.basename(other)}/uevent").write_text("remove\n")
    Path(f"/sys/class/block/{os.path.basename(loop)}/uevent").write_text("remove\n")
    state = run.wait_state("the disk said gone", lambda s: s["storage"].get("status") == "gone" and s, 10)
    assert f"{os.path.basename(loop)} (label {label}) was removed while mounted on" in state["storage"]["error"]
    run.wait_log("put the disk back and reboot")
    assert f"{os.path.basename(other)} (label" not in run.log(), run.describe()  # its removal was sent first
