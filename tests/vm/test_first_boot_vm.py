"""First boot with no volume and blank disks, in the real image under qemu
(one boot): `pid1.userdata=http://10.0.2.2:PORT/seed/` served by the test on
127.0.0.1 (qemu's user network maps 10.0.2.2 to the host's loopback), and
`pid1.autoformat=vda,vdb,vdc` over a zero disk, a disk as docker-machine
makes it (boot2docker's magic, then its userdata.tar with an SSH key) and a
disk holding data. The first two become DOCKER, the data disk is
byte-for-byte unchanged, the URL's hostname and runcmd apply. The same boot
checks the clock: an SNTP server on 127.0.0.1:123 (10.0.2.2:123 to the
guest, the harness's pid1.ntp_servers) ten minutes ahead of this machine
makes the ntp container step the guest's clock by that much: a notice in
the log, state.clock synced, and the guest's date moved."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from test_boot import STEP, shell_ready

from devtools.harness import serve_files
from devtools.sntp_server import SntpServer
from pid1.autoformat import BOOT2DOCKER_MAGIC
from pid1.blockdev import read_superblock

pytestmark = pytest.mark.vm

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHyXlQ7L0k0pZ3bW1m8Xr2tO6D9mJb8+6b3fXoWkE0aH docker-machine"
USER_DATA = b"""#cloud-config
hostname: from-url
runcmd:
  - docker tag busybox:latest url-ran:1
"""


@pytest.fixture
def served():
    with serve_files({"/seed/user-data": USER_DATA, "/seed/meta-data": b"instance-id: iid-url-vm\n"}) as port:
        yield port


AHEAD = 600.0  # seconds the test's SNTP server is ahead of this machine


@pytest.fixture
def ahead_sntp():
    try:
        server = SntpServer("127.0.0.1", AHEAD, 123)
    except OSError as exc:
        pytest.fail(f"cannot serve SNTP on 127.0.0.1:123 for the guest ({exc}): is an NTP daemon running here?")
    yield server
    server.close()


def disk(path: Path, head: bytes = b"", at: int = 0, size_mb: int = 512) -> str:
    with open(path, "wb") as f:
        f.seek(at)
        f.write(head)
        f.truncate(size_mb << 20)
    return str(path)


def machine_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((BOOT2DOCKER_MAGIC.decode(), BOOT2DOCKER_MAGIC), (".ssh/authorized_keys", KEY.encode())):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_a_url_user_data_and_blank_disks_on_the_first_boot(boot, served, ahead_sntp, tmp_path) -> None:
    zero = disk(tmp_path / "zero.img")
    machine = disk(tmp_path / "machine.img", machine_tar())
    data = disk(tmp_path / "data.img", b"precious", at=700 * 1024)
    before = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    # console_log=all: the test waits for pid1's runcmd line, which comes after the console's prompt
    append = [f"pid1.userdata=http://10.0.2.2:{served}/seed/", "pid1.autoformat=vda,vdb,vdc", "pid1.console_log=all"]
    vm = boot("first-boot", append=append, disks=[zero, machine, data])
    vm.wait_for(r"pid1: autoformat: /dev/vdc holds data \(non-zero bytes from offset 716800\)", STEP, since_mark=False)
    shell_ready(vm)
    status = vm.shell("cat /run/pid1/status", STEP)
    assert "boot:    disk /dev/vda (ext4, DOCKER)" in status, status
    vm.wait_for(r"pid1: phase runcmd done", STEP, since_mark=False)
    # The machine's name, and the console's (started before the URL was fetched: it shares the machine's)
    assert vm.output("nsenter -t 1 -u hostname; hostname", STEP) == ["from-url"] * 2, vm.tail()
    assert "url-ran" in vm.shell("docker images --format '{{.Repository}}' url-ran", STEP), vm.tail()
    # The clock: stepped to the server, ten minutes ahead
    vm.wait_for(r"pid1: clock: stepped by \+(59\d|60\d)\.\d+ s to 10\.0\.2\.2", STEP, since_mark=False)
    vm.wait_for(r"pid1: clock synced", STEP, since_mark=False)
    guest = float(vm.output("date +%s", STEP)[-1])
    assert abs(guest - time.time() - AHEAD) < 30, (guest, time.time(), vm.tail())
    assert "clock:   synced to 10.0.2.2" in vm.shell("cat /run/pid1/status", STEP), vm.tail()
    # it did so with CAP_SYS_TIME alone: not privileged, the host's network
    fields = "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.HostConfig.CapAdd}}"
    host = vm.output(f"docker inspect -f '{fields}' ntp", STEP)
    assert host[-1:] == ["false host [SYS_TIME]"], host
    assert ahead_sntp.requests > 0
    vm.send("echo poweroff > /run/pid1/control\n")
    vm.wait_exit(STEP)
    assert read_superblock(zero) == ("ext4", "DOCKER") and read_superblock(machine) == ("ext4", "DOCKER")
    assert hashlib.sha256(Path(data).read_bytes()).hexdigest() == before, "the data disk was changed"
    # docker-machine's key, kept in the host state on the disk that was used (vda)
    keys = subprocess.run(["debugfs", "-R", "cat /only-docker/ssh/authorized_keys", zero], capture_output=True,
                          text=True, timeout=60).stdout  # fmt: skip
    assert keys.strip() == KEY, keys
