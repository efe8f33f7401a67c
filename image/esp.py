"""The ESP of an only-docker disk (the image file, a copy of it, or a
device), without root: what it boots, this machine's kernel words, and the
upgrade to a new release that keeps the DOCKER partition untouched.

    image/esp show DISK
    image/esp words DISK [KEY=VALUE|WORD ...] [--remove KEY ...]
    image/esp upgrade NEW.img DISK

Needs mtools, and write access to DISK (a device needs its owner's rights).
Power the machine off first: nothing here may write a disk a running
kernel has in use.

`upgrade` takes the new release's kernel, initrd, boot loaders and grub.cfg
from NEW.img (a raw dist/only-docker.img), in an order that leaves a
bootable disk after a crash at any step: the new release's directory is
copied beside the old one; the UEFI boot loaders are each written beside
and renamed over; the BIOS core.img is written to the BIOS boot partition
(the one step that is not atomic: a crash inside it leaves the UEFI path
only); grub.cfg, the switch to the new release, is written beside and
renamed over, keeping this machine's `set machine_words=` line (its
`pid1.grow` word names this disk's table, not the new image's); then the
old release's directory goes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from image import boot_media, gpt

RELEASES = "/only-docker"
LINUX_LINE = re.compile(r"^linux (/only-docker/([^/\s]+))/vmlinuz\b", re.MULTILINE)
WORDS_LINE = re.compile(r'^set machine_words="([^"\n]*)"$', re.MULTILINE)
BOOT_LOADERS = ("/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/grubx64.efi")


class EspError(RuntimeError):
    """What this disk is not, or what a step could not do."""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, capture_output=True, env=boot_media.mtools_env(), **kwargs)
    except FileNotFoundError:
        raise EspError(f"{argv[0]} not found (apt-get install mtools)") from None
    except subprocess.CalledProcessError as exc:
        raise EspError(f"{' '.join(argv)}: {exc.stderr.decode(errors='replace').strip()}") from None


class Disk:
    """One only-docker disk: its table, its ESP (as mtools names it) and its grub.cfg."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.table = gpt.read_table(path)
            self.esp = self.table.by_type(gpt.EFI_SYSTEM)
            self.bios = self.table.by_type(gpt.BIOS_BOOT)
        except (OSError, gpt.TableError) as exc:
            raise EspError(f"{path}: not an only-docker disk ({exc})") from None
        self.fat = f"{path}@@{self.esp.offset(self.table.sector)}"

    def read(self, inside: str) -> bytes:
        return run(["mtype", "-i", self.fat, f"::{inside}"]).stdout

    def grub_cfg(self) -> str:
        try:
            text = self.read(boot_media.GRUB_CFG_ON_ESP).decode()
        except EspError as exc:
            raise EspError(f"{self.path}: no only-docker {boot_media.GRUB_CFG_ON_ESP} on its ESP ({exc})") from None
        if not (LINUX_LINE.search(text) and WORDS_LINE.search(text)):
            raise EspError(
                f"{self.path}: {boot_media.GRUB_CFG_ON_ESP} is not only-docker's (no linux or machine_words line)"
            )
        return text

    def releases(self) -> list[str]:
        out = run(["mdir", "-b", "-i", self.fat, f"::{RELEASES}"]).stdout.decode()
        return sorted(Path(line.strip()).name for line in out.splitlines() if line.strip())

    def write(self, inside: str, source: Path) -> None:
        """inside <- source, written beside it and then renamed over it."""
        beside = inside + ".new"
        run(["mcopy", "-o", "-i", self.fat, str(source), f"::{beside}"])
        run(["mren", "-D", "o", "-i", self.fat, f"::{beside}", f"::{inside}"])


def release_of(cfg: str) -> str:
    return LINUX_LINE.search(cfg).group(2)


def machine_words(cfg: str) -> list[str]:
    return WORDS_LINE.search(cfg).group(1).split()


def with_machine_words(cfg: str, words: list[str]) -> str:
    bad = [w for w in words if not set(w) <= boot_media.WORD_CHARACTERS]
    if bad:
        raise EspError(f"kernel words GRUB would change (letters, digits and ._,:=/+@%- only): {' '.join(bad)}")
    return WORDS_LINE.sub(lambda _: f'set machine_words="{" ".join(words)}"', cfg, count=1)


def merge_words(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    """current with add's words (a KEY=VALUE replaces the same KEY) and without remove's keys."""
    keys = {w.split("=", 1)[0] for w in add} | set(remove)
    return [w for w in current if w.split("=", 1)[0] not in keys] + [w for w in add if w.split("=", 1)[0] not in remove]


# --- the commands ------------------------------------------------------------------------------------
def show(disk: Disk) -> str:
    cfg = disk.grub_cfg()
    sector = disk.table.sector
    lines = [f"{disk.path}: GPT, {sector}-byte sectors, entry array CRC {disk.table.entries_crc:08x}"]
    for p in disk.table.partitions:
        lines.append(f"  {p.number} {p.name:8} {p.first_lba:>10}..{p.last_lba:<10} {p.size(sector) / 2**20:9.1f} MiB")
    lines.append(f"release {release_of(cfg)} (on the ESP: {', '.join(disk.releases())})")
    lines.append(f"machine words: {' '.join(machine_words(cfg)) or '(none)'}")
    return "\n".join(lines)


def set_words(disk: Disk, add: list[str], remove: list[str]) -> list[str]:
    cfg = disk.grub_cfg()
    words = merge_words(machine_words(cfg), add, remove)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grub.cfg"
        path.write_text(with_machine_words(cfg, words))
        disk.write(boot_media.GRUB_CFG_ON_ESP, path)
    return words


def upgrade(new: Disk, disk: Disk, say=print) -> str:
    """disk boots new's release; returns the release."""
    old_cfg, new_cfg = disk.grub_cfg(), new.grub_cfg()
    release = release_of(new_cfg)
    if new.esp.number != disk.esp.number:
        raise EspError(f"the new image's ESP is partition {new.esp.number}, this disk's {disk.esp.number}: "
                       "its BIOS core.img would look in the wrong place")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(["mcopy", "-s", "-i", new.fat, f"::{RELEASES}/{release}", str(work)])
        if release in disk.releases():
            run(["mdeltree", "-i", disk.fat, f"::{RELEASES}/{release}"])
        run(["mcopy", "-s", "-i", disk.fat, str(work / release), f"::{RELEASES}/"])
        say(f"copied release {release}")
        for inside in BOOT_LOADERS:
            source = work / Path(inside).name
            source.write_bytes(new.read(inside))
            disk.write(inside, source)
        # BIOS: the new core.img and boot.img, pointed at this disk's BIOS boot partition
        new_mbr = read_bytes(new.path, 0, boot_media.BOOT_CODE_END)
        new_core = read_bytes(new.path, new.bios.offset(new.table.sector), new.bios.size(new.table.sector))
        if len(new_core) > disk.bios.size(disk.table.sector):
            raise EspError("the new BIOS boot partition is larger than this disk's")
        mbr, core = boot_media.bios_boot_sectors(new_mbr, new_core, disk.bios.first_lba)
        if core != read_bytes(disk.path, disk.bios.offset(disk.table.sector), len(core)):
            boot_media.write_at(disk.path, disk.bios.offset(disk.table.sector), core)
        if mbr != read_bytes(disk.path, 0, len(mbr)):
            boot_media.write_at(disk.path, 0, mbr)
        say("boot loaders replaced")
        cfg = work / "grub.cfg"
        cfg.write_text(with_machine_words(new_cfg, machine_words(old_cfg)))
        disk.write(boot_media.GRUB_CFG_ON_ESP, cfg)
        say(f"grub.cfg boots {release}, machine words kept: {' '.join(machine_words(old_cfg)) or '(none)'}")
    for old in disk.releases():
        if old != release:
            run(["mdeltree", "-i", disk.fat, f"::{RELEASES}/{old}"])
            say(f"removed release {old}")
    os.sync()
    return release


def read_bytes(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="image/esp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="the table, the release and the machine's words").add_argument("disk", type=Path)
    words = sub.add_parser("words", help="add (KEY=VALUE replaces KEY) or --remove this machine's kernel words")
    words.add_argument("disk", type=Path)
    words.add_argument("add", nargs="*")
    words.add_argument("--remove", action="append", default=[], metavar="KEY")
    up = sub.add_parser("upgrade", help="boot NEW.img's release from DISK, keeping DOCKER and the machine's words")
    up.add_argument("new", type=Path, help="a raw only-docker.img of the new release")
    up.add_argument("disk", type=Path)
    opts = parser.parse_args(argv)
    try:
        if opts.command == "show":
            print(show(Disk(opts.disk)))
        elif opts.command == "words":
            print(" ".join(set_words(Disk(opts.disk), opts.add, opts.remove)) or "(no machine words)")
        else:
            upgrade(Disk(opts.new), Disk(opts.disk), say=lambda m: print(f"image/esp: {m}"))
    except EspError as exc:
        print(f"image/esp: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
