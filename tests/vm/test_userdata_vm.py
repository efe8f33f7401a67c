"""First-boot configuration in the real image under qemu: a NoCloud volume
made as users make one (an ISO labelled cidata, from xorriso's mkisofs, as
cloud-localds does) on a second CD-ROM, and a qemu/mkdisk disk. Two boots,
then a third with an OpenStack config-2 drive whose user-data names a blank
disk to format (autoformat from the user-data, used in that same boot):

  1. the user-data sets the hostname, writes a file with its mode into dom0
     and the console, gives dockerd a registry mirror (docker info shows it)
     and runs one runcmd command in dom0 (it tags an image: a mark that
     stays on the disk); the status view names the source.
  2. the same disk, a volume with the same instance-id but a docker section
     dockerd would refuse: runcmd does not run again, the error is on the
     status view, and dockerd runs on the last good daemon.json.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_boot import STEP, shell_ready

from devtools.vm import REPO, nocloud_iso

pytestmark = pytest.mark.vm

USER_DATA = """#cloud-config
hostname: ud-vm
write_files:
  - path: /etc/ud-vm.conf
    content: made by the user-data
    permissions: '0640'
runcmd:
  - docker tag busybox:latest ran-once:$(cut -c1-8 /proc/sys/kernel/random/uuid)
only_docker:
  docker:
    registry-mirrors: [http://10.0.2.2:5000]
"""
# The tests wait for pid1's lines after the console's prompt (runcmd comes
# after dom0), which the console_log phase keeps off the console by default.
ALL_LINES = ["pid1.console_log=all"]
REFUSED = """#cloud-config
hostname: ud-vm
only_docker:
  docker:
    mtu: 5
"""


def meta(instance_id: str) -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: ud-vm\n"


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ud") / "docker.img"
    subprocess.run([str(REPO / "qemu/mkdisk"), str(path), "2G"], check=True, capture_output=True, timeout=60)
    return str(path)


def marks(vm) -> int:
    return int(vm.output("docker images --format '{{.Repository}}:{{.Tag}}' | grep -c '^ran-once:'", STEP)[-1])


def test_a_nocloud_volume_configures_the_first_boot_and_runcmd_runs_once(boot, disk, tmp_path) -> None:
    first = boot(
        "userdata-1", append=ALL_LINES, disk=disk, cdroms=[nocloud_iso(tmp_path / "a.iso", USER_DATA, meta("iid-vm-1"))]
    )
    first.wait_for(r"pid1: userdata: from nocloud /dev/sr\d, instance iid-vm-1", STEP, since_mark=False)
    shell_ready(first)
    assert first.output("hostname", STEP) == ["ud-vm"], first.tail()
    assert first.output("stat -c %a /etc/ud-vm.conf; cat /etc/ud-vm.conf", STEP) == \
        ["640", "made by the user-data"], first.tail()  # fmt: skip
    mirrors = first.shell("docker info --format '{{json .RegistryConfig.Mirrors}}'", STEP)
    assert '["http://10.0.2.2:5000/"]' in mirrors, mirrors
    first.wait_for(r"pid1: phase runcmd done", STEP, since_mark=False)
    assert marks(first) == 1, first.tail()
    status = first.shell("cat /run/pid1/status", STEP)
    assert "config:  user-data from nocloud /dev/sr" in status, status
    first.send("echo poweroff > /run/pid1/control\n")  # the orderly stop
    first.wait_exit(STEP)

    second = boot(
        "userdata-2", append=ALL_LINES, disk=disk, cdroms=[nocloud_iso(tmp_path / "b.iso", REFUSED, meta("iid-vm-1"))]
    )
    shell_ready(second)
    second.wait_for(r"pid1: phase runcmd done", STEP, since_mark=False)
    assert marks(second) == 1, second.tail()  # the same instance: not again
    status = second.shell("cat /run/pid1/status", STEP)
    assert "config:  user-data from nocloud /dev/sr0 · error: docker section refused (mtu" in status, status
    mirrors = second.shell("docker info --format '{{json .RegistryConfig.Mirrors}}'", STEP)
    assert '["http://10.0.2.2:5000/"]' in mirrors, mirrors  # the last good daemon.json


def config_drive_iso(path: Path, user_data: str, uuid: str) -> str:
    """An OpenStack config drive: ISO 9660 labelled config-2."""
    files = path.with_suffix(".d")
    (files / "openstack/latest").mkdir(parents=True)
    (files / "openstack/latest/user_data").write_text(user_data)
    (files / "openstack/latest/meta_data.json").write_text(f'{{"uuid": "{uuid}", "hostname": "cfg2"}}')
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-volid", "config-2", "-joliet", "-rock",
                    str(files)], check=True, capture_output=True, timeout=60)  # fmt: skip
    return str(path)


CONFIG_2_USER_DATA = """#cloud-config
hostname: cfg2
only_docker:
  autoformat: [vda]
"""


def test_an_openstack_config_drive_is_a_source_too_and_formats_the_blank_disk_it_names(boot, tmp_path) -> None:
    """A cloud's way: no kernel command line to edit, a blank volume attached,
    and the user-data naming it. It is formatted and used in this same boot
    (the volume is read before the disks are used)."""
    uuid = "83679162-1378-4288-a2d4-70e13ec132aa"
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(512 << 20)
    drive = config_drive_iso(tmp_path / "c.iso", CONFIG_2_USER_DATA, uuid)
    vm = boot("userdata-config2", disk=str(blank), cdroms=[drive])
    vm.wait_for(r"pid1: userdata: from config-2 /dev/sr0, for the disks: pid1.autoformat=vda", STEP, since_mark=False)
    vm.wait_for(r"pid1: autoformat: /dev/vda: .*formatting it ext4, label DOCKER", STEP, since_mark=False)
    vm.wait_for(rf"pid1: userdata: from config-2 /dev/sr0, instance {uuid}", STEP, since_mark=False)
    shell_ready(vm)
    assert vm.output("hostname", STEP) == ["cfg2"], vm.tail()
    status = vm.shell("cat /run/pid1/status", STEP)
    assert "boot:    disk /dev/vda (ext4, DOCKER)" in status, status
