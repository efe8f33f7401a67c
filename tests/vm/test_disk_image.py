"""The disk image, dist/only-docker.img, as a user writes it to a disk and
boots it (`qemu/run --image`): GPT, GRUB from the BIOS boot partition or
shim and GRUB from the ESP, Docker's data on its DOCKER partition, which
pid1 grows to fill a larger disk once. Few boots, each carrying several
scenarios in order (a TCG boot costs about a minute):

  BIOS, the image on a 2 GiB disk:
    1. first boot: DOCKER grown to the disk's end (partition and ext4), the
       command line carries the image's pid1.grow word; Docker's data root is
       /dev/vda3; an image is made; `poweroff` -> the stop sequence in order.
    -  offline, qemu stopped: `image/esp upgrade` from a next release's image
       (dist's, its release directory renamed and a word added) replaces the
       ESP's release and keeps the machine's words; DOCKER's bytes untouched.
    2. second boot: the next release's command line, the pid1.grow word kept,
       not grown again ("already fills the disk"), the image still there;
       qemu killed in the middle of a disk write.
    3. the crashed disk boots to a console; the ACPI power button stops it.
  UEFI (OVMF), the image on a 1 GiB disk whose table was changed by hand
  (sfdisk renamed a partition): it boots, the log says why DOCKER did not
  grow, and the table is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_boot import STEP, STOP_TIMEOUT, shell_ready, wait_logged, wait_running

from devtools.vm import REPO, VM, BootTimeout
from image import esp, gpt

pytestmark = pytest.mark.vm

MIB = 1 << 20
GROW_TIMEOUT = 120.0


def copy_image(dist: Path, path: Path, size: int) -> Path:
    """dist/only-docker.img written to a `size`-byte disk, as dd to a larger disk does."""
    subprocess.run(["cp", "--sparse=always", str(dist / "only-docker.img"), str(path)], check=True)
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def partition_kib(vm: VM, name: str) -> int:
    """The kernel's size of a partition (KiB), from /proc/partitions."""
    for line in vm.output("cat /proc/partitions", STEP):
        fields = line.split()
        if len(fields) == 4 and fields[3] == name:
            return int(fields[2])
    raise AssertionError(f"{name} not in /proc/partitions:\n{vm.tail()}")


def docker_root_kib(vm: VM) -> int:
    """The size of the filesystem Docker's data root is on (KiB), as df sees it."""
    out = vm.output("docker run --rm -v /var/lib/docker:/d busybox df -k /d | tail -1", STEP)
    fields = out[-1].split()
    return int(fields[1])


def storage_state(vm: VM) -> dict:
    out = vm.shell("cat /run/pid1/state.json", STEP)
    return json.loads(out[out.index("{") : out.rindex("}") + 1])["storage"]


def partition_digest(path: Path, part: gpt.Partition, sector: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(part.offset(sector))
        left = part.size(sector)
        while left:
            chunk = f.read(min(left, 8 * MIB))
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def next_release(dist: Path, path: Path) -> tuple[str, str]:
    """dist's image dressed as the next release: its release directory
    renamed, and a word on its release's command line. Returns (release, word)."""
    subprocess.run(["cp", "--sparse=always", str(dist / "only-docker.img"), str(path)], check=True)
    disk = esp.Disk(path)
    cfg = disk.grub_cfg()
    old = esp.release_of(cfg)
    new, word = f"next{old[:8]}", "only_docker_test_release=next"
    esp.run(["mmove", "-i", disk.fat, f"::/only-docker/{old}", f"::/only-docker/{new}"])
    cfg = cfg.replace(f"/only-docker/{old}/", f"/only-docker/{new}/")
    cfg = cfg.replace(" $machine_words", f" {word} $machine_words")
    staged = path.with_suffix(".cfg")
    staged.write_text(cfg)
    disk.write("/EFI/debian/grub.cfg", staged)
    return new, word


def test_the_image_layout_is_the_contract(iso_image: Path):
    """No boot: the table as built (GROW_CONTRACT): bios, ESP, DOCKER last to the last usable LBA."""
    table = gpt.read_table(iso_image / "only-docker.img")
    names = [(p.number, p.name, p.type) for p in table.partitions]
    assert names == [(1, "bios", gpt.BIOS_BOOT), (2, "ESP", gpt.EFI_SYSTEM), (3, "DOCKER", gpt.LINUX_DATA)], names
    assert table.partitions[0].first_lba == 2048 and table.partitions[-1].last_lba == table.last_usable
    cfg = esp.Disk(iso_image / "only-docker.img").grub_cfg()
    assert esp.machine_words(cfg) == [f"pid1.grow={table.entries_crc:08x}"], cfg


def esp_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "image/esp"), *args], capture_output=True, text=True, timeout=120)


def test_esp_words_and_upgrade_without_a_boot(iso_image: Path, tmp_path: Path):
    """No boot: a machine's own words survive an upgrade; a disk that is not
    an only-docker one is refused, untouched."""
    disk = copy_image(iso_image, tmp_path / "disk.img", 512 * MIB)
    added = esp_tool("words", str(disk), "pid1.console_log=all")
    assert added.returncode == 0 and added.stdout.split() == ["pid1.grow=" + f"{built(iso_image):08x}",
                                                              "pid1.console_log=all"], added  # fmt: skip
    release, word = next_release(iso_image, tmp_path / "next.img")
    ran = esp_tool("upgrade", str(tmp_path / "next.img"), str(disk))
    assert ran.returncode == 0, ran.stderr
    cfg = esp.Disk(disk).grub_cfg()
    assert esp.release_of(cfg) == release and word in cfg, cfg
    assert esp.machine_words(cfg) == [f"pid1.grow={built(iso_image):08x}", "pid1.console_log=all"], cfg
    assert esp.Disk(disk).releases() == [release]
    iso = tmp_path / "copy.iso"
    shutil.copyfile(iso_image / "only-docker.iso", iso)
    before = iso.read_bytes()
    refused = esp_tool("upgrade", str(tmp_path / "next.img"), str(iso))
    assert refused.returncode == 1 and "not an only-docker disk" in refused.stderr, refused
    assert iso.read_bytes() == before


def built(dist: Path) -> int:
    return gpt.read_table(dist / "only-docker.img").entries_crc


@pytest.fixture(scope="module")
def bios_disk(iso_image: Path, tmp_path_factory) -> Path:
    return copy_image(iso_image, tmp_path_factory.mktemp("image") / "disk.img", 2 << 30)


@pytest.fixture(scope="module")
def built_crc(iso_image: Path) -> int:
    return built(iso_image)


@pytest.fixture(scope="module")
def first_boot(boot, bios_disk: Path) -> VM:
    vm = boot("image1", image=str(bios_disk))
    shell_ready(vm)
    return vm


def test_first_boot_carries_the_grow_word_and_keeps_docker_on_its_partition(first_boot: VM, built_crc: int):
    cmdline = first_boot.output("cat /proc/cmdline", STEP)[0]
    assert f"pid1.grow={built_crc:08x}" in cmdline, cmdline
    assert "console=tty1 console=ttyS0 printk.devkmsg=on" in cmdline, cmdline
    storage = storage_state(first_boot)
    assert storage.get("mode") == "disk" and storage.get("device") == "/dev/vda3", storage
    assert storage.get("fstype") == "ext4", storage
    out = first_boot.shell("docker tag busybox:latest persisted:1 && docker images --format '{{.Repository}}:{{.Tag}}'")
    assert "persisted:1" in out, out


def test_first_boot_grows_docker_to_the_disk(first_boot: VM):
    """(pid1's grow phase; fails until it is in the image.)"""
    where = wait_logged(first_boot, r"pid1: grow: grew DOCKER", GROW_TIMEOUT)
    print("grow logged on the", where)
    kib = partition_kib(first_boot, "vda3")
    assert kib > 1700 * 1024, f"vda3 is {kib} KiB on a 2 GiB disk"
    assert docker_root_kib(first_boot) > 1600 * 1024


def test_first_boot_poweroff_stops_in_order(first_boot: VM):
    vm = first_boot
    vm.mark()
    vm.send("poweroff\n")  # busybox: SIGUSR2 to PID 1
    order = [
        r"stop requested: poweroff \(signal SIGUSR2\)",
        r"stopping: poweroff",
        r"dockerd stopped",
        r"containerd stopped",
        r"unmounted /var/lib/docker",
        r"reboot: Power down",  # the kernel's last line
    ]
    position = 0
    for pattern in order:
        found = vm.wait_for(pattern, STOP_TIMEOUT)
        assert found.start() >= position, f"{pattern} out of order\n{vm.tail(60)}"
        position = found.start()
    assert vm.wait_exit(STEP) == 0, vm.tail()


@pytest.fixture(scope="module")
def upgraded(first_boot: VM, iso_image: Path, bios_disk: Path, tmp_path_factory) -> tuple[str, str]:
    """The ESP upgraded offline, after the first boot's poweroff: (release, word)."""
    try:
        first_boot.wait_exit(STOP_TIMEOUT)
    except BootTimeout:  # the poweroff test failed: the disk must be free all the same
        first_boot.kill()
    new_image = tmp_path_factory.mktemp("next") / "next.img"
    release, word = next_release(iso_image, new_image)
    table = gpt.read_table(bios_disk)
    docker = table.by_type(gpt.LINUX_DATA)
    before = partition_digest(bios_disk, docker, table.sector)
    ran = esp_tool("upgrade", str(new_image), str(bios_disk))
    print(ran.stdout, ran.stderr)
    assert ran.returncode == 0, ran.stderr
    assert f"grub.cfg boots {release}" in ran.stdout, ran.stdout
    assert partition_digest(bios_disk, docker, table.sector) == before, "the upgrade wrote into DOCKER"
    assert gpt.read_table(bios_disk) == table, "the upgrade changed the partition table"
    shown = esp_tool("show", str(bios_disk))
    assert f"release {release} (on the ESP: {release})" in shown.stdout, shown.stdout
    new_image.unlink()
    return release, word


def test_esp_upgrade_offline_keeps_the_machine_words(upgraded: tuple[str, str], bios_disk: Path, built_crc: int):
    cfg = esp.Disk(bios_disk).grub_cfg()
    assert esp.machine_words(cfg) == [f"pid1.grow={built_crc:08x}"], cfg
    assert f"/only-docker/{upgraded[0]}/vmlinuz" in cfg and upgraded[1] in cfg, cfg


@pytest.fixture(scope="module")
def second_boot(boot, bios_disk: Path, upgraded: tuple[str, str]) -> VM:
    vm = boot("image2", image=str(bios_disk))
    shell_ready(vm)
    return vm


def test_second_boot_runs_the_upgraded_release_with_the_data(second_boot: VM, upgraded, built_crc: int):
    cmdline = second_boot.output("cat /proc/cmdline", STEP)[0]
    assert upgraded[1] in cmdline and f"pid1.grow={built_crc:08x}" in cmdline, cmdline
    assert f"/only-docker/{upgraded[0]}/vmlinuz" in cmdline, cmdline  # GRUB's BOOT_IMAGE
    out = second_boot.shell("docker images --format '{{.Repository}}:{{.Tag}}'", STEP)
    assert "persisted:1" in out, out
    wait_running(second_boot, {"dom0", "console", "dhcp"})


def test_second_boot_does_not_grow_again(second_boot: VM):
    """(pid1's grow phase; fails until it is in the image.)"""
    wait_logged(second_boot, r"pid1: grow: already fills the disk", GROW_TIMEOUT)
    assert partition_kib(second_boot, "vda3") > 1700 * 1024


def test_second_boot_crashes_mid_write(second_boot: VM):
    # crash-only: qemu dies in the middle of a write to the docker disk
    second_boot.send("dd if=/dev/zero of=/var/lib/docker/crash-test bs=1M count=1500 & sleep 1; echo WRITING\n")
    second_boot.wait_for("WRITING", STEP)
    second_boot.kill()


def test_after_the_crash_it_boots_and_the_power_button_stops_it(boot, bios_disk: Path, second_boot: VM):
    vm = boot("image3", image=str(bios_disk))
    shell_ready(vm)
    assert "persisted:1" in vm.shell("docker images --format '{{.Repository}}:{{.Tag}}'", STEP)
    vm.mark()
    reply = vm.qmp("system_powerdown")
    assert "return" in reply, reply
    vm.wait_for(r"stop requested: poweroff \(ACPI power button\)", STEP)
    vm.wait_for(r"reboot: Power down", STOP_TIMEOUT)
    assert vm.wait_exit(STEP) == 0


# --- UEFI, a table changed by hand ------------------------------------------------------------------
def test_uefi_boots_a_hand_changed_table_and_leaves_it_alone(iso_image: Path, boot, tmp_path_factory):
    path = copy_image(iso_image, tmp_path_factory.mktemp("uefi") / "changed.img", 1 << 30)
    # sfdisk moves the backup table to the disk's end as it writes: the
    # disk could grow, but its table is no longer the image's
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--part-label", str(path), "1", "mine"],
                   check=True, capture_output=True)  # fmt: skip
    table = gpt.read_table(path)
    head, tail = read_ends(path)
    vm = boot("image-uefi", image=str(path), firmware="uefi")
    shell_ready(vm)
    assert "efi: EFI v" in vm.shell("dmesg | grep 'efi: EFI v'", STEP)  # booted by UEFI firmware
    assert storage_state(vm).get("device") == "/dev/vda3"
    try:
        found = wait_logged(vm, r"pid1: grow: table changed by hand", GROW_TIMEOUT)
        print("refusal logged on the", found)
    finally:
        vm.mark()
        vm.send("poweroff\n")
        vm.wait_for(r"reboot: Power down", STOP_TIMEOUT)
        vm.wait_exit(STEP)
    assert read_ends(path) == (head, tail), "the hand-changed table was rewritten"
    assert gpt.read_table(path) == table


def read_ends(path: Path) -> tuple[bytes, bytes]:
    """The first MiB (MBR, primary table, BIOS boot) and the last 33 sectors (the backup table)."""
    with open(path, "rb") as f:
        head = f.read(MIB)
        f.seek(-33 * 512, 2)
        return head, f.read()
