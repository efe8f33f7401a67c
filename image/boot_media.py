"""The boot media, made without root, each from a BootSet (the kernel, its
initrds, the command line, and files kept beside them: image/build.py
makes them, the ISO's with its engine image beside a smaller initrd): the
hybrid ISO and the GPT disk image, each booting on BIOS and on UEFI.

Needs: Debian's boot loaders unpacked from their packages (Loaders:
shim-signed, grub-efi-amd64-signed, grub-pc-bin, grub-common's grub-mkimage
of the same version, isolinux and syslinux-common), and the host tools xorriso, mkfs.vfat,
mtools, sfdisk, mke2fs and qemu-img. No loop mounts: mkfs.vfat and mke2fs
write into a file at an offset, mtools copies into it, sfdisk writes the
table, GRUB's BIOS boot sectors are patched and written here as
grub-bios-setup would.

    ISO    El Torito BIOS: isolinux, with isolinux.cfg (it reads a CD
           through the BIOS faster than GRUB: docs/benchmarks.md);
           El Torito UEFI: a FAT image holding Debian's signed shim as
           /EFI/BOOT/BOOTX64.EFI and Debian's signed CD GRUB (gcdx64.efi,
           which finds the ISO by its /.disk/info) as grubx64.efi, reading
           /boot/grub/grub.cfg. Hybrid: isolinux's MBR boots it from a USB
           stick on BIOS, the FAT image is a partition for UEFI.
    disk   GPT as GROW_LAYOUT says (docs/image.md, the disk image): a BIOS
           boot partition with core.img (and boot.img in the protective MBR
           pointing at it), the ESP (shim and Debian's signed GRUB in
           /EFI/BOOT, /EFI/debian/grub.cfg, which both GRUBs read, the release
           in /only-docker/<release>/) and DOCKER, a small ext4 that pid1's
           grow phase extends to the disk's end. The boot words carry
           `pid1.grow=<the entry array's CRC>`: growth only for this table.

One grub.cfg text for every GRUB (grub_cfg), and isolinux.cfg from the same
BootSet (isolinux_cfg): no menu, no timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from image import gpt

MIB = 1 << 20
SECTOR = 512
ISO_VOLUME = "ONLY_DOCKER"  # the ISO 9660 volume identifier: the engine phase finds the ISO by it


@dataclass(frozen=True)
class BootSet:
    """What every boot loader loads, in one place: the kernel, its initrds in
    the order the kernel unpacks them, and the command line."""

    kernel: Path
    initrds: tuple[Path, ...]
    cmdline: str
    release: str  # a short fingerprint of the three: the directory the media keep them in
    # Files the release directory keeps beside them that no boot loader loads
    # (name, source): the ISO's engine image, which pid1 reads from the CD.
    beside: tuple[tuple[str, Path], ...] = ()

    def files(self) -> dict[str, Path]:
        """Name in the release directory -> source file."""
        names = ["initrd.img"] if len(self.initrds) == 1 else [f"initrd{n}.img" for n in range(len(self.initrds))]
        return {"vmlinuz": self.kernel, **dict(zip(names, self.initrds, strict=True))}

    @property
    def directory(self) -> str:
        return f"/only-docker/{self.release}"


@dataclass(frozen=True)
class Loaders:
    """Debian's boot loaders, from their unpacked packages."""

    shim: Path  # shim-signed: shimx64.efi.signed, signed by Microsoft's UEFI CA
    grub_efi: Path  # grub-efi-amd64-signed: grubx64.efi.signed (Debian's key), reads /EFI/debian/grub.cfg
    grub_efi_cd: Path  # grub-efi-amd64-signed: gcdx64.efi.signed, finds /.disk/info, reads /boot/grub/grub.cfg
    grub_pc: Path  # grub-pc-bin: usr/lib/grub/i386-pc (modules, boot.img, cdboot.img, boot_hybrid.img)
    mkimage: Path  # grub-common: usr/bin/grub-mkimage, the same GRUB version as grub_pc
    isolinux: Path  # isolinux: usr/lib/ISOLINUX (isolinux.bin, isohdpfx.bin)
    ldlinux: Path  # syslinux-common: usr/lib/syslinux/modules/bios/ldlinux.c32

    @classmethod
    def from_trees(cls, trees: dict[str, Path]) -> Loaders:
        signed = trees["grub-efi-amd64-signed"] / "usr/lib/grub/x86_64-efi-signed"
        return cls(
            shim=trees["shim-signed"] / "usr/lib/shim/shimx64.efi.signed",
            grub_efi=signed / "grubx64.efi.signed",
            grub_efi_cd=signed / "gcdx64.efi.signed",
            grub_pc=trees["grub-pc-bin"] / "usr/lib/grub/i386-pc",
            mkimage=trees["grub-common"] / "usr/bin/grub-mkimage",
            isolinux=trees["isolinux"] / "usr/lib/ISOLINUX",
            ldlinux=trees["syslinux-common"] / "usr/lib/syslinux/modules/bios/ldlinux.c32",
        )

    def missing(self) -> list[str]:
        paths = (self.shim, self.grub_efi, self.grub_efi_cd, self.grub_pc, self.mkimage, self.isolinux, self.ldlinux)
        return [str(p) for p in paths if not p.exists()]


PACKAGES = ["shim-signed", "grub-efi-amd64-signed", "grub-pc-bin", "grub-common", "isolinux", "syslinux-common"]
HOST_TOOLS = {
    "xorriso": "xorriso",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
}
# GRUB's BIOS core: what it needs to read grub.cfg and boot Linux; every
# module is in core.img, so the media need no /boot/grub/i386-pc.
GRUB_PC_DISK_MODULES = ["biosdisk", "part_gpt", "fat", "normal", "configfile", "linux", "boot"]

# The words GRUB may carry in `machine_words` (image/esp.py edits that
# line): nothing GRUB's quoting would change.
WORD_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._,:=/+@%-")
MACHINE_WORDS_LINE = "set machine_words="
GRUB_CFG = """\
# only-docker {release}: GRUB reads this file on BIOS and on UEFI.
# image/esp upgrade replaces it with a new release's and keeps the next
# line, this machine's own kernel words, as it is.
{words_line}"{machine_words}"
linux {directory}/vmlinuz {cmdline} $machine_words
initrd {initrds}
boot
"""


ISOLINUX_CFG = """\
DEFAULT only-docker
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL only-docker
  KERNEL {directory}/vmlinuz
  INITRD {initrds}
  APPEND {cmdline}
"""


def isolinux_cfg(boot: BootSet) -> str:
    initrds = ",".join(f"{boot.directory}/{name}" for name in boot.files() if name != "vmlinuz")
    return ISOLINUX_CFG.format(directory=boot.directory, initrds=initrds, cmdline=boot.cmdline)


def grub_cfg(boot: BootSet, machine_words: str = "") -> str:
    bad = [w for w in machine_words.split() if not set(w) <= WORD_CHARACTERS]
    if bad:
        raise ValueError(f"kernel words GRUB would change: {' '.join(bad)}")
    return GRUB_CFG.format(
        release=boot.release,
        words_line=MACHINE_WORDS_LINE,
        machine_words=" ".join(machine_words.split()),
        directory=boot.directory,
        cmdline=boot.cmdline,
        initrds=" ".join(f"{boot.directory}/{name}" for name in boot.files() if name != "vmlinuz"),
    )


Run = Callable[..., subprocess.CompletedProcess]


def mtools_env() -> dict[str, str]:
    # images made here have no geometry mtools would check
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def fill_fat(run: Run, target: str, files: dict[str, Path]) -> None:
    """Copy files (path inside the FAT -> source) into the FAT filesystem
    `target` (mtools' -i: a file, or FILE@@OFFSET), making directories."""
    directories = sorted({str(Path(inside).parent) for inside in files} - {"/"}, key=len)
    made: set[str] = set()
    for directory in directories:
        parts = Path(directory).parts[1:]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if path not in made:
                run(["mmd", "-i", target, f"::{path}"], capture_output=True, env=mtools_env())
                made.add(path)
    for inside, source in files.items():
        run(["mcopy", "-i", target, "-o", str(source), f"::{inside}"], capture_output=True, env=mtools_env())


def fat_size_kib(files: dict[str, Path], slack: int = 2 * MIB) -> int:
    return (sum(p.stat().st_size for p in files.values()) + slack) // 1024 + 1


# --- the ISO ---------------------------------------------------------------------------------------
def build_iso(run: Run, iso: Path, boot: BootSet, loaders: Loaders, work: Path) -> None:
    """The hybrid ISO at iso (written whole to iso.tmp, then moved)."""
    shutil.rmtree(work, ignore_errors=True)
    grub = work / "tree/boot/grub"
    grub.mkdir(parents=True)
    tree = work / "tree"
    (tree / "isolinux").mkdir()
    shutil.copy(loaders.isolinux / "isolinux.bin", tree / "isolinux")
    shutil.copy(loaders.ldlinux, tree / "isolinux")
    (tree / "isolinux/isolinux.cfg").write_text(isolinux_cfg(boot))
    (tree / ".disk").mkdir()
    (tree / ".disk/info").write_text(f"only-docker {boot.release}\n")  # gcdx64.efi searches for it
    release = tree / boot.directory.lstrip("/")
    release.mkdir(parents=True)
    for name, source in [*boot.files().items(), *boot.beside]:
        os.link(source, release / name)  # hard links: the tree lives only until xorriso has read it
    (grub / "grub.cfg").write_text(grub_cfg(boot))
    efi_files = {"/EFI/BOOT/BOOTX64.EFI": loaders.shim, "/EFI/BOOT/grubx64.efi": loaders.grub_efi_cd}
    efi = grub / "efi.img"
    run(["mkfs.vfat", "-C", "-n", "ONLY-DOCKER", str(efi), str(fat_size_kib(efi_files, 256 * 1024))],
        capture_output=True)  # fmt: skip
    fill_fat(run, str(efi), efi_files)
    tmp = iso.with_name(iso.name + ".tmp")
    tmp.unlink(missing_ok=True)
    run(
        [
            "xorriso", "-as", "mkisofs", "-quiet", "-o", str(tmp), "-V", ISO_VOLUME, "-r",
            "-isohybrid-mbr", str(loaders.isolinux / "isohdpfx.bin"),
            "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
            "-eltorito-alt-boot", "-e", "boot/grub/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
            str(tree),
        ],
        capture_output=True,
    )  # fmt: skip
    os.replace(tmp, iso)
    shutil.rmtree(work)


# --- the disk image --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiskLayout:
    """The disk image's GPT (docs/image.md, the disk image; GROW_CONTRACT)."""

    esp_mib: int = 256  # room for two releases side by side (image/esp upgrade copies before it switches)
    docker_mib: int = 64  # pid1's grow phase extends it to the disk's end at first boot
    bios_start_mib: int = 1
    bios_mib: int = 1

    @property
    def esp_start_mib(self) -> int:
        return self.bios_start_mib + self.bios_mib

    @property
    def docker_start_mib(self) -> int:
        return self.esp_start_mib + self.esp_mib

    @property
    def total_mib(self) -> int:
        return self.docker_start_mib + self.docker_mib + 1  # the last MiB: the backup table, and slack

    def sfdisk_script(self) -> str:
        """DOCKER, last, ends at the last usable LBA: a whole-MiB image less
        the backup entries (32 sectors) and header."""
        per_mib = MIB // SECTOR
        last_usable = self.total_mib * per_mib - 34
        docker = self.docker_start_mib * per_mib
        rows = [
            f"start={self.bios_start_mib * per_mib}, size={self.bios_mib * per_mib}, type={gpt.BIOS_BOOT}, "
            f'uuid={part_guid("bios")}, name="bios"',
            f"start={self.esp_start_mib * per_mib}, size={self.esp_mib * per_mib}, type={gpt.EFI_SYSTEM}, "
            f'uuid={part_guid("ESP")}, name="ESP"',
            f"start={docker}, size={last_usable - docker + 1}, type={gpt.LINUX_DATA}, "
            f'uuid={part_guid("DOCKER")}, name="DOCKER"',
        ]
        return f"label: gpt\nlabel-id: {part_guid('disk')}\nunit: sectors\n" + "\n".join(rows) + "\n"


LAYOUT = DiskLayout()
# Fixed GUIDs: every build of one layout writes the same table (and the same
# CRC), as every disk made from one cloud image shares its GUIDs anyway.
GUID_NAMESPACE = uuid.UUID("6f6e6c79-2d64-6f63-6b65-722d696d6167")


def part_guid(name: str) -> uuid.UUID:
    return uuid.uuid5(GUID_NAMESPACE, name)


ESP_LABEL = "ONLY-DOCKER"
ESP_VOLUME_ID = "0D0C4E52"  # fixed, as the GUIDs
GRUB_CFG_ON_ESP = "/EFI/debian/grub.cfg"  # where Debian's signed GRUB looks first ($prefix); core.img too


def esp_files(boot: BootSet, loaders: Loaders, cfg: Path) -> dict[str, Path]:
    files = {"/EFI/BOOT/BOOTX64.EFI": loaders.shim, "/EFI/BOOT/grubx64.efi": loaders.grub_efi, GRUB_CFG_ON_ESP: cfg}
    files.update({f"{boot.directory}/{name}": source for name, source in boot.files().items()})
    return files


# grub-bios-setup's work (GRUB 2.06 util/setup.c), for a core.img in a BIOS
# boot partition: boot.img learns core.img's first sector, core.img's first
# sector (diskboot.img) learns where the rest follows.
BOOT_KERNEL_SECTOR = 0x5C  # boot.img: the 64-bit LBA of core.img
BOOT_DRIVE_CHECK = 0x66  # boot.img: a jmp that grub-setup turns into two nops for hard disks
BOOT_CODE_END = 0x1B8  # boot.img's code ends where the MBR's disk signature and table begin
BLOCKLIST_START = 0x1F4  # diskboot.img: the first blocklist entry's 64-bit LBA (its length grub-mkimage sets)


def bios_boot_sectors(boot_img: bytes, core_img: bytes, core_lba: int) -> tuple[bytes, bytes]:
    """(the MBR's code bytes 0..0x1b8, core.img) ready for core at core_lba."""
    mbr = bytearray(boot_img[:BOOT_CODE_END])
    mbr[BOOT_KERNEL_SECTOR : BOOT_KERNEL_SECTOR + 8] = core_lba.to_bytes(8, "little")
    mbr[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    core = bytearray(core_img)
    core[BLOCKLIST_START : BLOCKLIST_START + 8] = (core_lba + 1).to_bytes(8, "little")
    return bytes(mbr), bytes(core)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def build_disk_image(run: Run, image: Path, boot: BootSet, loaders: Loaders, work: Path,
                     layout: DiskLayout = LAYOUT) -> int:  # fmt: skip
    """The disk image at image (made as image.tmp, then moved); returns the
    GPT entry array's CRC, the `pid1.grow` word's value."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tmp = image.with_name(image.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb") as f:
        f.truncate(layout.total_mib * MIB)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(tmp)], input=layout.sfdisk_script().encode(),
        capture_output=True)  # fmt: skip
    table = gpt.read_table(tmp)
    bios, esp, docker = (table.by_type(kind) for kind in (gpt.BIOS_BOOT, gpt.EFI_SYSTEM, gpt.LINUX_DATA))
    if table.partitions[-1] != docker or docker.last_lba != table.last_usable:
        raise gpt.TableError(f"sfdisk wrote DOCKER at {docker.first_lba}..{docker.last_lba}, "
                             f"not last up to {table.last_usable}")  # fmt: skip
    # BIOS: core.img in the BIOS boot partition, boot.img in the protective MBR
    core_path = work / "core.img"
    run([str(loaders.mkimage), "-O", "i386-pc", "-d", str(loaders.grub_pc), "-p", f"(,gpt{esp.number})/EFI/debian",
         "-o", str(core_path), *GRUB_PC_DISK_MODULES], capture_output=True)  # fmt: skip
    if core_path.stat().st_size > bios.size(table.sector):
        raise gpt.TableError(f"core.img is {core_path.stat().st_size} bytes, the BIOS boot partition smaller")
    mbr, core = bios_boot_sectors((loaders.grub_pc / "boot.img").read_bytes(), core_path.read_bytes(), bios.first_lba)
    write_at(tmp, bios.offset(table.sector), core)
    write_at(tmp, 0, mbr)
    # the ESP: FAT32 at its offset, filled by mtools
    cfg = work / "grub.cfg"
    cfg.write_text(grub_cfg(boot, f"pid1.grow={table.entries_crc:08x}"))
    # FAT32 with 1 KiB clusters: 4 KiB ones would leave a 256 MiB ESP fewer
    # than FAT32's 65525 clusters, which mtools (and some firmware) then read as FAT16
    run(["mkfs.vfat", "-F", "32", "-s", "2", "-n", ESP_LABEL, "-i", ESP_VOLUME_ID, "--offset", str(esp.first_lba),
         str(tmp), str(esp.size(table.sector) // 1024)], capture_output=True)  # fmt: skip
    fill_fat(run, f"{tmp}@@{esp.offset(table.sector)}", esp_files(boot, loaders, cfg))
    # DOCKER: ext4 with 4 KiB blocks (mke2fs's "small" profile would pick 1 KiB
    # blocks and many inodes, which the grown filesystem would keep)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-T", "default", "-b", "4096", "-L", "DOCKER",
         "-E", f"offset={docker.offset(table.sector)},root_owner=0:0", str(tmp),
         f"{docker.size(table.sector) // 1024}k"], capture_output=True)  # fmt: skip
    if gpt.read_table(tmp).entries_crc != table.entries_crc:  # mke2fs or mkfs.vfat wrote outside their partitions
        raise gpt.TableError("the partition table changed while the filesystems were made")
    os.replace(tmp, image)
    shutil.rmtree(work)
    return table.entries_crc


def build_qcow2(run: Run, image: Path, qcow2: Path) -> None:
    tmp = qcow2.with_name(qcow2.name + ".tmp")
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", str(image), str(tmp)], capture_output=True)
    os.replace(tmp, qcow2)
