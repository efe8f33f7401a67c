"""The modules phase's parts: the /sys walk over a temporary sysfs-like tree,
coldplug against Debian's real module tree, the load order, failures, and the
modprobe helper the kernel and dockerd call.

finit_module itself cannot run here (this machine's kernel is not Debian's
and has no module support), so the load tests hand `load_requests` a loader
that records what it is asked to load, in order, in place of the syscall;
real loading is checked by the VM tests.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pid1 import kmod
from pid1.kmod import batch
from pid1.kmod import helper as modprobe_helper
from pid1.phases import modules as phase

MODULES_ROOT = Path(os.environ.get("PID1_TEST_MODULES_ROOT", "/var/cache/only-docker/kernel/root"))
VIRTIO_NET_PCI = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
VIRTIO_NET = "virtio:d00000001v00001AF4"
POWER_BUTTON = "acpi:LNXPWRBN:"


def kernel_moddir() -> Path | None:
    found = sorted(p for p in MODULES_ROOT.glob("lib/modules/*") if (p / "modules.dep").is_file())
    return found[-1] if found else None


MODDIR = kernel_moddir()
needs_tree = pytest.mark.skipif(
    MODDIR is None, reason=f"no Debian kernel tree under {MODULES_ROOT} (devtools/kernel_tree.py makes it)"
)


@pytest.fixture(scope="module")
def index() -> kmod.ModuleIndex:
    assert MODDIR is not None
    return kmod.ModuleIndex.load(str(MODDIR))


def fake_sys(root: Path) -> Path:
    """A /sys/devices shaped like a qemu guest's, with sysfs's symlinks back
    up the tree (`subsystem`, `driver`, `firmware_node`) that a walk must not follow."""
    devices = root / "sys/devices"
    nic = devices / "pci0000:00/0000:00:03.0"
    files = {
        nic / "modalias": VIRTIO_NET_PCI + "\n",
        nic / "virtio0/modalias": VIRTIO_NET + "\n",
        devices / "LNXSYSTM:00/LNXPWRBN:00/modalias": POWER_BUTTON + "\n",
        devices / "platform/no-driver/modalias": "platform:no-such-driver\n",
        devices / "platform/empty/modalias": "",
        devices / "virtual/net/lo/uevent": "INTERFACE=lo\n",
        root / "sys/bus/hidden/modalias": "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n",  # e1000
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (nic / "subsystem").symlink_to("../../..")  # a loop if followed
    (nic / "driver").symlink_to(root / "sys/bus/hidden")  # a modalias reachable only through a link
    (nic / "virtio0/modalias_link").symlink_to(nic / "modalias")
    return devices


def test_scan_reads_every_modalias_once_and_follows_no_symlink(tmp_path: Path) -> None:
    devices = fake_sys(tmp_path)
    found = kmod.scan_modaliases(str(devices))
    assert sorted(found) == sorted([VIRTIO_NET_PCI, VIRTIO_NET, POWER_BUTTON, "platform:no-such-driver"])
    assert kmod.scan_modaliases(str(tmp_path / "no-sys")) == []


def test_scan_of_this_machines_sysfs_terminates() -> None:
    if not os.path.isdir("/sys/devices"):
        pytest.skip("no /sys here")
    found = kmod.scan_modaliases("/sys/devices")
    assert len(found) == len(set(found))
    assert all(alias and "\n" not in alias for alias in found)


@needs_tree
def test_coldplug_maps_devices_to_drivers(index: kmod.ModuleIndex, tmp_path: Path) -> None:
    aliases = kmod.scan_modaliases(str(fake_sys(tmp_path)))
    chains, matched = batch.coldplug_requests(index, aliases)
    assert set(chains) == {("virtio_pci",), ("virtio_net",), ("button",)}, chains
    assert matched == 3
    ide = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"
    assert batch.coldplug_requests(index, [ide, ide]) == ([("ata_piix", "ata_generic")], 2), "one chain, in order"


@needs_tree
def test_the_disk_drivers_come_first_and_the_rest_keep_their_order(index: kmod.ModuleIndex) -> None:
    # As a q35 machine with a virtio disk and NIC, a SATA CD-ROM and a VGA card coldplugs in round 0.
    requests = [("bochs",), ("virtio_pci",), ("ahci",), ("i2c_i801",), *phase.FIXED]
    disks, rest = phase.disk_drivers_first(index, requests)
    assert disks == [("virtio_pci",), ("ahci",), "virtio_pci", "virtio_blk"], disks
    assert rest == [("bochs",), ("i2c_i801",), "virtio_net", "crc32c_generic", "ext4", "overlay", "button",
                    "evdev"], rest  # fmt: skip
    assert phase.disk_drivers_first(index, ["no_such_module"]) == ([], ["no_such_module"])


class Recorder:
    """Stands in for finit_module: records (module, params) in call order;
    raises OSError(errno) for the modules in `fail`, says "already there"
    for those in `exists`."""

    def __init__(self, fail: dict[str, int] | None = None, exists: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or {}
        self.exists = exists or set()

    def __call__(self, path: str, params: str) -> bool:
        name = kmod.module_name_of(path)
        assert os.path.isfile(path), path
        self.calls.append(name)
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]))
        return name not in self.exists


@needs_tree
def test_loads_dependencies_first_each_module_once(index: kmod.ModuleIndex, tmp_path: Path) -> None:
    aliases = kmod.scan_modaliases(str(fake_sys(tmp_path)))
    requests, _ = batch.coldplug_requests(index, aliases)
    loader = Recorder(exists={"virtio"})
    tally = batch.Tally()
    results = batch.load_requests(index, [*requests, *phase.DOCKER_MODULES, *phase.INPUT_MODULES], set(), tally, loader)
    calls = loader.calls
    assert len(calls) == len(set(calls)), "nothing is loaded twice"
    for module in ("virtio_net", "virtio_blk", "ext4", "overlay", "br_netfilter", "iptable_nat", "button", "evdev"):
        assert module in calls
    for before, after in [
        ("virtio_ring", "virtio_pci"),
        ("virtio_pci", "virtio_net"),
        ("crc32c_generic", "jbd2"),
        ("jbd2", "ext4"),
        ("bridge", "br_netfilter"),
        ("nf_conntrack", "nf_nat"),
        ("x_tables", "ip_tables"),
        ("ip_tables", "iptable_nat"),
    ]:
        assert calls.index(before) < calls.index(after), (before, after, calls)
    assert tally.results["virtio"].outcome == "already"  # EEXIST: a racing modprobe won
    assert [r.name for r in results] == list(tally.results)
    assert tally.summary() == f"loaded {len(calls) - 1}, already 1, failed 0", tally.summary()
    # A second round over the same devices loads nothing more.
    again = batch.load_requests(index, [*requests, *phase.DOCKER_MODULES], set(), tally, loader)
    assert again == [] and len(loader.calls) == len(calls)


@needs_tree
def test_loaded_and_builtin_modules_are_skipped(index: kmod.ModuleIndex) -> None:
    loader = Recorder()
    tally = batch.Tally()
    batch.load_requests(index, ["ext4", "unix"], {"jbd2", "mbcache", "crc16"}, tally, loader)
    assert loader.calls == ["crc32c_intel", "crc32c_generic", "ext4"]
    assert tally.results["jbd2"].outcome == "already"
    assert tally.results["unix"].outcome == "builtin"


@needs_tree
def test_a_failure_is_named_and_only_its_dependents_are_skipped(index: kmod.ModuleIndex) -> None:
    loader = Recorder(fail={"nf_conntrack": errno.ENOEXEC})
    tally = batch.Tally()
    batch.load_requests(index, ["nf_nat", "overlay", "no_such_module", "veth"], set(), tally, loader)
    outcome = {name: (r.outcome, r.error) for name, r in tally.results.items()}
    assert outcome["nf_conntrack"] == ("failed", "ENOEXEC (Exec format error)")
    assert outcome["nf_nat"] == ("skipped", "needs nf_conntrack")
    assert outcome["no_such_module"][0] == "missing" and "not found" in outcome["no_such_module"][1]
    assert outcome["overlay"] == outcome["veth"] == ("loaded", "")
    assert "nf_nat" not in loader.calls, "a module whose dependency failed is not tried"
    summary = tally.summary()
    loaded = len(loader.calls) - 1  # all but nf_conntrack
    assert summary.startswith(f"loaded {loaded}, already 0, failed 2 ("), summary
    assert "nf_conntrack: ENOEXEC" in summary and "no_such_module: ENOENT" in summary, summary
    assert summary.endswith(", skipped 1 (a dependency failed)"), summary


@needs_tree
@pytest.mark.parametrize("fail", [set(), {"nf_conntrack", "virtio_ring"}])
def test_concurrent_chains_keep_every_dependency_order(index: kmod.ModuleIndex, fail: set[str]) -> None:
    """With 4 workers (loads that take time, so chains really overlap), each
    module is tried once, after every module it depends on (modules.dep and
    softdep pre:) has been loaded, and a failure still skips its dependents."""
    calls: list[str] = []
    active: list[int] = [0, 0]  # now, most at once
    lock = threading.Lock()

    def slow_loader(path: str, params: str) -> bool:
        name = kmod.module_name_of(path)
        with lock:
            calls.append(name)
            active[0] += 1
            active[1] = max(active)
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        if name in fail:
            raise OSError(errno.ENOEXEC, "Exec format error")
        return True

    requests = [("virtio_pci",), ("virtio_net",), *phase.DOCKER_MODULES, *phase.INPUT_MODULES]
    tally = batch.Tally()
    batch.load_requests(index, requests, set(), tally, slow_loader, workers=4)
    assert len(calls) == len(set(calls)), calls
    assert active[1] > 1, "chains overlapped"
    for name in calls:
        before = {*index.deps.get(name, ()), *(m for p in index.softdep_of(name).pre for m in index.lookup(p))}
        for dep in before:
            assert dep in calls[: calls.index(name)], (dep, name, calls)
    for name, result in tally.results.items():
        if result.outcome == "skipped":
            assert set(index.deps[name]) & fail, (name, result)
            assert name not in calls
    sequential = batch.Tally()
    batch.load_requests(index, requests, set(), sequential, Recorder(fail=dict.fromkeys(fail, errno.ENOEXEC)))
    assert {n: r.outcome for n, r in tally.results.items()} == {n: r.outcome for n, r in sequential.results.items()}


def test_helper_is_written_once_and_answers_as_modprobe(tmp_path: Path) -> None:
    helper = tmp_path / "run/pid1/bin/modprobe"
    text = modprobe_helper.helper_script()
    assert modprobe_helper.install_helper(str(helper), text) is True
    assert modprobe_helper.install_helper(str(helper), text) is False, "already in place: nothing written"
    assert os.access(helper, os.X_OK)
    if MODDIR is None:
        pytest.skip("no kernel tree to resolve against")
    empty = tmp_path / "modprobe.d"
    empty.mkdir()
    args = ["-C", str(empty), "-d", str(MODULES_ROOT), "-S", MODDIR.name]
    # The kernel runs it as `modprobe -q -- NAME` with a bare environment and cwd /.
    env = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin", "HOME": "/"}
    out = subprocess.run([str(helper), *args, "-D", "--", "ext4"], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert [kmod.module_name_of(line.split()[1]) for line in out.stdout.splitlines()][-2:] == ["crc16", "ext4"]
    missing = subprocess.run([str(helper), *args, "-q", "--", "no_such"], capture_output=True, text=True, env=env)
    assert (missing.returncode, missing.stderr) == (1, "")


def test_kernel_modprobe_is_set_once(tmp_path: Path) -> None:
    sysctl = tmp_path / "modprobe"
    sysctl.write_text("/sbin/modprobe\n")
    assert modprobe_helper.point_kernel_at(str(sysctl), "/run/pid1/bin/modprobe") is True
    assert sysctl.read_text() == "/run/pid1/bin/modprobe"
    assert modprobe_helper.point_kernel_at(str(sysctl), "/run/pid1/bin/modprobe") is False


def test_only_the_initial_pid_namespace_touches_kernel_modprobe(tmp_path: Path) -> None:
    """kernel.modprobe is one value for the whole machine: a pid1 in a
    child PID namespace (the tests, a container) must leave it alone."""
    probe = "from pid1.kmod.helper import in_initial_pid_namespace as f; print(f())"
    repo = Path(__file__).resolve().parents[2]
    if os.geteuid() != 0:
        pytest.skip("unshare --pid needs root")
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", os.environ.get("PYTHON", "python3"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=30,
    )
    assert out.stdout.strip() == "False", out.stderr
    assert modprobe_helper.in_initial_pid_namespace(str(tmp_path / "missing")) is False


def test_modprobe_goes_on_path_only_where_there_is_none(tmp_path: Path) -> None:
    helper = "/run/pid1/bin/modprobe"
    assert modprobe_helper.link_into_path(str(tmp_path), helper) == "/usr/local/sbin/modprobe"
    assert os.readlink(tmp_path / "usr/local/sbin/modprobe") == helper
    assert modprobe_helper.link_into_path(str(tmp_path), helper) is None, "there already"
    kmod_root = tmp_path / "with-kmod"
    (kmod_root / "usr/sbin").mkdir(parents=True)
    (kmod_root / "usr/sbin/modprobe").write_text("a real modprobe")
    assert modprobe_helper.link_into_path(str(kmod_root), helper) is None
    assert not (kmod_root / "usr/local/sbin/modprobe").exists()
    # the real one is what the kernel gets too (install_modprobe)
    assert modprobe_helper.modprobe_on_path(str(kmod_root)) == "/usr/sbin/modprobe"
    assert modprobe_helper.modprobe_on_path(str(tmp_path / "bare")) is None


def test_added_devices_modaliases_come_from_uevents() -> None:
    """The phase reads the kernel's uevents for devices that new drivers add.
    The messages here go through a real datagram socket pair, in the
    kernel's format; the kernel's own are seen in the VM boot."""
    add = b"add@/devices/pci0000:00/0000:00:03.0/virtio0\0ACTION=add\0SUBSYSTEM=virtio\0MODALIAS=" + VIRTIO_NET.encode()
    assert kmod.uevent_modalias(add + b"\0SEQNUM=1\0") == VIRTIO_NET
    assert kmod.uevent_modalias(add.replace(b"add@", b"bind@", 1)) is None
    assert kmod.uevent_modalias(b"add@/devices/virtual/net/lo\0ACTION=add\0SUBSYSTEM=net\0") is None
    assert kmod.uevent_modalias(b"libudev\0\xfe\xed\xca\xfe") is None  # udev's own re-broadcasts
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    watch = kmod.ModaliasWatch(ours)
    try:
        assert watch.take() == []
        button = b"add@/devices/LNXSYSTM:00/LNXPWRBN:00\0MODALIAS=acpi:LNXPWRBN:\0"
        for message in (add, b"change@/devices/x\0MODALIAS=pci:v1\0", add, button):
            kernel.send(message)
        assert watch.take() == [VIRTIO_NET, POWER_BUTTON]
        assert watch.take() == []
    finally:
        watch.close()
        kernel.close()
    opened = kmod.ModaliasWatch.open()  # the real netlink socket, where permitted
    if opened is not None:
        assert opened.take() is not None
        opened.close()
