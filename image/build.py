"""Builds dist/vmlinuz, dist/initrd.img and the boot media (dist/only-docker.iso,
dist/only-docker.img, dist/only-docker.qcow2) from Debian 12 packages.

    image/build [--compress none|zstd|lz4] [--iso-compress none|zstd|lz4] [--no-iso] [--dist DIR]

Every byte of the guest comes from a Debian package fetched with `apt-get
download` (cached in /var/cache/only-docker/debs) and unpacked with `dpkg-deb
-x` (cached in /var/cache/only-docker/unpacked), never installed here; the
Python dependencies come from PyPI wheels (`pip install --target`). Host tools
(dpkg-deb, depmod, zstd, and for the media xorriso, mtools, sfdisk...) only
transform them. The boot loaders come from Debian's packages too (shim-signed,
grub-efi-amd64-signed, grub-pc-bin, grub-common), unpacked like the rest;
image/boot_media.py makes each medium from a BootSet, the kernel, initrd
and command line that its boot loaders load: the disk image's initrd is
dist/initrd.img's parts, the ISO's all but the engine (below).

The initrd is several cpio archives back to back (the kernel unpacks each in
turn), one per part, each rebuilt only when what went into it changed:

    base     the skeleton, kmod, the shared libraries Python and kmod need,
             CA certificates, the kernel modules' indexes and the modules
             the engine phase loads (loop, squashfs, and the CD-ROM's and
             isofs for the ISO: pid1.module_sets MEDIUM_MODULES)
    python   Debian's python3.11 with the standard library modules pid1 and
             its dependencies import (image/python_runtime.py finds them),
             and the dependencies themselves, byte-compiled
    pid1     the pid1 package (byte-compiled, with sources) and /init
    engine   one squashfs, which the engine phase mounts, of what only the
             engine and the phases after it read: the engine (dockerd,
             containerd, the shim, runc, docker-proxy, the docker client,
             docker-init), iptables, mke2fs, the libraries only they need,
             the other kernel modules, the bundled images and the same
             images as a docker data root (image/docker_seed.py) that pid1
             copies into an empty one. The other parts keep symlinks to
             them. Last: in a VM too small for it, the kernel's unpack
             stops there, after /init (pid1/ram.py then says why)
    medium   the ISO's instead of engine: pid1.layout.ENGINE_MEDIUM, which
             names the ISO's own copy of the engine's squashfs (a file
             beside the initrd, read through the CD-ROM at boot, not by
             the boot loader through the firmware)

A rebuild with nothing changed re-reads the inputs' fingerprints and stops.

dist/initrd.img (for `qemu/run --kernel`) is a plain cpio and the media's is
zstd-compressed, because the two loaders differ: qemu hands a -initrd file to
the guest at no cost, and the kernel unpacks a plain cpio faster than it
decompresses zstd; the firmware reads the boot media slowly, so there the
smaller zstd initrd reaches the console prompt sooner (the figures:
docs/benchmarks.md, "The two initrd encodings").
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.kernel_tree import KernelTreeError, ensure_kernel_tree
from image import boot_media, cpio, elf
from image.bundled_images import find_in_trees
from pid1 import kmod, module_sets  # pid1's own module lists and resolver: the boot's, not a copy
from pid1.layout import ENGINE_IMAGE, ENGINE_MEDIUM, ENGINE_MOUNT, SYSTEM_PATH, EngineMedium

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CACHE = Path(os.environ.get("ONLY_DOCKER_CACHE", "/var/cache/only-docker"))
DEBS = CACHE / "debs"
UNPACKED = CACHE / "unpacked"
BUILD = REPO / "build"
# printk.devkmsg=on: pid1 writes its log to /dev/kmsg; the default rate limit (10 lines
# per 5 s per writer) silently drops lines in bursts such as the orderly stop
KERNEL_CMDLINE = "console=tty1 console=ttyS0 printk.devkmsg=on"
MULTIARCH = "usr/lib/x86_64-linux-gnu"

# What the guest runs, by package. Libraries are found from the binaries'
# DT_NEEDED entries in these packages; a library missing here is an error
# that names it (add its package).
ENGINE_PACKAGES = ["docker.io", "containerd", "runc", "iptables", "ca-certificates", "kmod", "tini", "e2fsprogs"]
LIBRARY_PACKAGES = [
    "libc6", "libsystemd0", "libdevmapper1.02.1", "libcap2", "libgcrypt20", "liblzma5", "libzstd1",
    "liblz4-1", "libselinux1", "libudev1", "libgpg-error0", "libpcre2-8-0", "libseccomp2",
    "libxtables12", "libip4tc2", "libip6tc2", "libnftnl11", "libmnl0", "libnetfilter-conntrack3",
    "libnfnetlink0", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "libssl3", "libuuid1", "libsqlite3-0",
    "libext2fs2", "libcom-err2", "libblkid1",
]  # fmt: skip
PYTHON_PACKAGES = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib"]
# dom0's bundled image (image/bundled_images.py): dropbear and its libraries.
# dropbear, not openssh-server: one small server with no privilege-separation
# user, no PAM and no /run/sshd to prepare, that runs from a busybox image (docs/remote-access.md).
DOM0_PACKAGES = ["dropbear-bin", "libc6", "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10", "zlib1g"]

# Binaries that go into the guest, as paths inside the packages.
ENGINE_BINARIES = [
    "usr/sbin/dockerd",
    "usr/sbin/docker-proxy",
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc",
    "usr/sbin/xtables-legacy-multi",
    # kmod's modprobe, for the kernel's request_module and dockerd: a C
    # program answers far sooner than pid1's Python one under emulation
    # (docs/benchmarks.md, "Kernel modules"; pid1's own phases load modules
    # in-process, with pid1.kmod)
    "usr/bin/kmod",
    # pid1.autoformat formats a blank disk ext4 (busybox's mke2fs makes only ext2)
    "usr/sbin/mke2fs",
]
# Installed under another name: dockerd runs `docker-init` from PATH for
# `docker run --init` (and asks its version for `docker info`); Debian's is
# tini, static.
RENAMED_BINARIES = {"usr/bin/tini-static": "usr/bin/docker-init"}
# dockerd 20.10 execs `iptables` from PATH; the legacy variant needs no nf_tables.
IPTABLES_LINKS = ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"]

# The engine's squashfs (the `engine` part, ENGINE_IMAGE): what only the
# engine and the phases after the engine phase read, moved out of the other
# parts, their paths left as symlinks into ENGINE_MOUNT, where the engine
# phase (pid1/phases/engine.py) mounts it before containerd and the modules
# phase start. Page cache instead of pinned initramfs pages (docs/image.md;
# figures in docs/benchmarks.md). From base: ENGINE_FILES, the libraries
# only they need (late_libraries) and the kernel modules but loop's and
# squashfs's and the boot medium's (late_modules); from the bundled tree:
# BUNDLED_FILES. The paths are pid1.layout's (ENGINE_IMAGE, ENGINE_MOUNT).
ENGINE_FILES = [
    "usr/sbin/dockerd", "usr/sbin/docker-proxy", "usr/bin/containerd", "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc", "usr/lib/pid1/docker-cli", "usr/bin/docker-init", "usr/sbin/xtables-legacy-multi",
    f"{MULTIARCH}/xtables", "usr/sbin/mke2fs",
]  # fmt: skip
# read by the dockerd phase (the seed) and the images phase, both after containerd
BUNDLED_FILES = ["usr/share/pid1/images", "usr/share/pid1/docker-seed"]
# zstd -15 with 256 KiB blocks: measured against -19, lz4 and xz in docs/benchmarks.md
SQUASHFS_OPTIONS = ["-comp", "zstd", "-Xcompression-level", "15", "-b", "256K"]

# Kernel modules shipped (with their modules.dep closure and soft
# dependencies): what pid1 loads and what the kernel or dockerd ask for.
MODULES = module_sets.IN_IMAGE


class BuildError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"image/build: {message}", flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, **kwargs)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found") from None
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise BuildError(f"{' '.join(argv[:4])}... failed (exit {exc.returncode}) {err.strip()[-2000:]}") from None


# --- host tools -------------------------------------------------------------------------------
HOST_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "zstd": "zstd",
    "strip": "binutils",
    "patchelf": "patchelf",
    "mksquashfs": "squashfs-tools",
}


def check_tools(want_media: bool, methods: set[str]) -> None:
    missing = []
    wanted = {**HOST_TOOLS, **(boot_media.HOST_TOOLS if want_media else {})}
    for tool, package in wanted.items():
        if tool == "zstd" and "zstd" not in methods:
            continue
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if "lz4" in methods and shutil.which("lz4") is None:
        missing.append("lz4 (apt-get install lz4)")
    if missing:
        raise BuildError("missing host tools: " + "; ".join(missing))


# --- Debian packages ----------------------------------------------------------------------------
def cached_deb(package: str) -> Path | None:
    found = sorted(DEBS.glob(f"{package}_*_amd64.deb")) + sorted(DEBS.glob(f"{package}_*_all.deb"))
    return found[-1] if found else None


def fetch_debs(packages: list[str]) -> dict[str, Path]:
    """The .deb of each package, downloading those not cached yet."""
    DEBS.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if cached_deb(p) is None]
    if missing:
        log(f"apt-get download {' '.join(missing)}")
        try:
            run(["apt-get", "download", *missing], cwd=DEBS, capture_output=True)
        except BuildError:
            log("apt-get download failed; running apt-get update and trying again")
            run(["apt-get", "update", "-q"], capture_output=True)
            run(["apt-get", "download", *missing], cwd=DEBS, capture_output=True)
    debs = {}
    for package in packages:
        deb = cached_deb(package)
        if deb is None:
            raise BuildError(f"apt-get download {package} gave no .deb in {DEBS}")
        debs[package] = deb
    return debs


def unpack(deb: Path) -> Path:
    """dpkg-deb -x into the cache, once per .deb file."""
    target = UNPACKED / deb.stem
    if not (target / ".unpacked").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(target)])
        (target / ".unpacked").touch()
    return target


def kernel_tree() -> tuple[Path, str]:
    """devtools.kernel_tree's unpacked linux-image (depmod run): (root, version)."""
    try:
        root = ensure_kernel_tree()
    except KernelTreeError as exc:
        raise BuildError(str(exc)) from None
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    if not versions:
        raise BuildError(f"no kernel version under {root}/lib/modules")
    return root, versions[-1]


# --- fingerprints (incremental builds) --------------------------------------------------------------
def fingerprint(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path) and part.is_file():
            digest.update(part.read_bytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def tree_fingerprint(root: Path, suffixes: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


@dataclass
class Part:
    """One cpio archive of the initrd, rebuilt when its key changes."""

    name: str
    key: str
    stage: Path = field(init=False)
    archive: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stage = BUILD / "stage" / self.name
        self.archive = BUILD / f"{self.name}.cpio"

    @property
    def key_file(self) -> Path:
        return BUILD / f"{self.name}.key"

    def fresh(self) -> bool:
        return self.archive.exists() and self.key_file.exists() and self.key_file.read_text() == self.key

    def begin(self) -> Path:
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        return self.stage

    def finish(self) -> None:
        count = cpio.write_tree(self.stage, self.archive)
        self.key_file.write_text(self.key)
        log(f"part {self.name}: {count} entries, {human(self.archive.stat().st_size)} uncompressed")


def human(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# --- the base part -------------------------------------------------------------------------------
def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    shutil.copy2(src, dst, follow_symlinks=True)


def library_dirs() -> list[str]:
    return [MULTIARCH, "lib/x86_64-linux-gnu", "usr/lib", "lib"]


def copy_library_closure(
    stage: Path, trees: list[Path], elves: list[Path], provided: Callable[[str], bool] = lambda soname: False
) -> list[str]:
    """Copy every shared library the ELF files need, and those the copies
    need, from the unpacked packages into the stage's /usr/lib/x86_64-linux-gnu;
    a soname the stage has there, or that `provided` says is there already
    (another part has it), is skipped. Returns the sonames copied."""
    wanted: list[str] = []
    queue = list(elves)
    seen: set[str] = set()
    while queue:
        path = queue.pop()
        for soname in elf.needed(path):
            if soname in seen:
                continue
            seen.add(soname)
            if (stage / MULTIARCH / soname).exists() or provided(soname):
                continue
            source = next(filter(None, (find_in_trees(trees, f"{d}/{soname}") for d in library_dirs())), None)
            if source is None:
                raise BuildError(f"{path.name} needs {soname}, which no package in the build provides (add it)")
            copy_file(source, stage / MULTIARCH / soname)
            queue.append(stage / MULTIARCH / soname)
            wanted.append(soname)
    return sorted(wanted)


def skeleton(stage: Path) -> None:
    for directory in ("proc", "sys", "dev", "run", "tmp", "root", "etc", "var/lib/docker", "var/log", "mnt"):
        (stage / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(stage / "tmp", 0o1777)
    os.chmod(stage / "root", 0o700)
    # merged /usr, as Debian 12: /bin, /sbin, /lib, /lib64 point into /usr
    for name in ("bin", "sbin", "lib"):
        (stage / "usr" / name).mkdir(parents=True, exist_ok=True)
        os.symlink(f"usr/{name}", stage / name)
    (stage / "usr/lib64").mkdir(parents=True, exist_ok=True)
    os.symlink("usr/lib64", stage / "lib64")
    os.symlink("../run", stage / "var/run")
    etc = stage / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (etc / "group").write_text("root:x:0:\ntty:x:5:\ndocker:x:999:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (etc / "resolv.conf").write_text("")  # the dhcp container's udhcpc script fills it in
    (etc / "os-release").write_text('NAME="only-docker"\nID=only-docker\nPRETTY_NAME="only-docker (pid1)"\n')


def ca_bundle(stage: Path, tree: Path) -> int:
    """What update-ca-certificates makes at install: one PEM bundle."""
    certs = sorted((tree / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = stage / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs))
    return len(certs)


def module_closure(modules_dir: Path, names: Sequence[str], config_root: Path | None = None) -> list[str]:
    """Paths (relative to modules_dir) of the named modules and every module
    the boot would load with them: pid1.kmod's plan, as modprobe resolves it
    (modules.dep, softdeps before and after, aliases, modprobe.d under
    config_root: the image's own)."""
    config = kmod.read_config(str(config_root)) if config_root is not None else kmod.ModprobeConfig()
    index = kmod.ModuleIndex.load(str(modules_dir), config)
    try:
        plan = index.plan(names)
    except kmod.ModuleNotFound as exc:
        raise BuildError(f"kernel module: {exc}") from None
    return sorted(os.path.relpath(entry.path, modules_dir) for entry in plan if entry.path is not None)


DOCKER_CLI = "usr/lib/pid1/docker-cli"


def docker_cli(stage: Path, engine_trees: list[Path], lib_trees: list[Path]) -> None:
    """The docker client, runnable in any container that gets DOCKER_CLI
    bind-mounted (dom0 and the console: the bundled busybox has no libc):
    its loader and libc beside it, its ELF interpreter and RUNPATH pointing
    there (patchelf). /usr/bin/docker links to it."""
    directory = stage / DOCKER_CLI
    source = find_in_trees(engine_trees, "usr/bin/docker")
    if source is None:
        raise BuildError("docker.io has no usr/bin/docker")
    copy_file(source, directory / "docker")
    for soname in ("ld-linux-x86-64.so.2", *elf.needed(directory / "docker")):
        library = find_in_trees(lib_trees, f"lib/x86_64-linux-gnu/{soname}")
        if library is None:
            raise BuildError(f"the docker client needs {soname}, which libc6 does not have")
        copy_file(library, directory / soname)
    run(
        ["patchelf", "--set-interpreter", f"/{DOCKER_CLI}/ld-linux-x86-64.so.2", "--set-rpath", f"/{DOCKER_CLI}",
         str(directory / "docker")],
    )  # fmt: skip
    os.symlink("../lib/pid1/docker-cli/docker", stage / "usr/bin/docker")


def split_engine(stage: Path, tree: Path, relatives: Sequence[str]) -> int:
    """Move `relatives` (files or directories) from the stage into `tree`
    (a root of the squashfs) and leave relative symlinks to their place
    under ENGINE_MOUNT; returns the bytes moved."""
    moved = 0
    for relative in relatives:
        source, target = stage / relative, tree / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        moved += sum(f.stat().st_size for f in [source, *source.rglob("*")] if f.is_file() and not f.is_symlink())
        shutil.move(source, target)
        link_into_engine(stage, relative)
    return moved


def link_into_engine(stage: Path, relative: str) -> None:
    """A relative symlink at `relative` to its place in the mounted squashfs."""
    link = stage / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(stage / ENGINE_MOUNT / relative, link.parent), link)


def library_closure(libraries: Path, elves: Sequence[Path]) -> set[str]:
    """The sonames the ELF files need, directly or through each other, that
    are in the directory `libraries`."""
    found: set[str] = set()
    queue = list(elves)
    while queue:
        for soname in elf.needed(queue.pop()):
            if soname not in found and (libraries / soname).is_file():
                found.add(soname)
                queue.append(libraries / soname)
    return found


def interpreter_elves(python_trees: list[Path]) -> list[Path]:
    """Python's interpreter and every extension module its packages have: a
    superset of what the python part keeps (image/python_runtime.py trims it)."""
    elves = [path for t in python_trees for path in [t / "usr/bin/python3.11"] if path.is_file()]
    elves += sorted(p for t in python_trees for p in t.glob("usr/lib/python3.11/lib-dynload/*.so"))
    if not elves:
        raise BuildError("no usr/bin/python3.11 in the python packages")
    return elves


def late_libraries(stage: Path, python_trees: list[Path]) -> list[str]:
    """The base part's shared libraries that nothing unpacked before the
    engine's squashfs is mounted needs: not Python (it runs pid1 and the
    mount), not kmod. Relative paths."""
    libraries = stage / MULTIARCH
    early = library_closure(libraries, [stage / "usr/bin/kmod", *interpreter_elves(python_trees)])
    early.add("ld-linux-x86-64.so.2")
    files = [p for p in libraries.iterdir() if p.is_file() and not p.is_symlink()]
    return sorted(f"{MULTIARCH}/{p.name}" for p in files if p.name not in early)


def late_modules(stage: Path, kver: str) -> list[str]:
    """Every kernel module file but those the engine phase loads to mount
    the squashfs, from the initramfs or the boot medium (EARLY_MODULES,
    MEDIUM_MODULES and what they need). Relative paths."""
    moddir = stage / "usr/lib/modules" / kver
    early = set(module_closure(moddir, (*module_sets.EARLY_MODULES, *module_sets.MEDIUM_MODULES), stage))
    return sorted(str(p.relative_to(stage)) for p in moddir.rglob("*.ko*") if str(p.relative_to(moddir)) not in early)


def build_bundled(tree: Path, key: str, dom0_trees: list[Path]) -> None:
    """The bundled image tarballs and the seed (BUNDLED_FILES) in `tree`, a
    root of the engine's squashfs; rebuilt when `key` changes."""
    from image import bundled_images, docker_seed

    stamp = BUILD / "bundled.key"
    if tree.is_dir() and stamp.exists() and stamp.read_text() == key:
        return
    shutil.rmtree(tree, ignore_errors=True)
    images = tree / "usr/share/pid1/images"
    images.mkdir(parents=True)
    busybox = busybox_path()
    built = bundled_images.build(BUILD / "images", busybox=busybox, trees=dom0_trees)
    for path in built.values():
        shutil.copy2(path, images / path.name)
    docker_seed.build_seed(tree / "usr/share/pid1/docker-seed", busybox=busybox, trees=dom0_trees)
    stamp.write_text(key)


def build_engine(part: Part, trees: list[Path]) -> None:
    """The engine part: one file, ENGINE_IMAGE, made by mksquashfs from the
    union of `trees` (hard links into one root)."""
    root = BUILD / "stage/engine-root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for tree in trees:
        shutil.copytree(tree, root, symlinks=True, copy_function=os.link, dirs_exist_ok=True)
    stage = part.begin()
    image = stage / ENGINE_IMAGE
    image.parent.mkdir(parents=True)
    run(
        ["mksquashfs", str(root), str(image), *SQUASHFS_OPTIONS, "-noappend", "-all-root", "-no-xattrs",
         "-quiet", "-no-progress", "-mkfs-time", str(cpio.MTIME), "-all-time", str(cpio.MTIME)],
        capture_output=True,
    )  # fmt: skip
    shutil.rmtree(root)
    part.finish()


def build_base(part: Part, engine_tree: Path, trees_of: dict[str, list[Path]], kroot: Path, kver: str) -> None:
    """The base part, and in `engine_tree` what of it goes into the engine's squashfs."""
    engine_trees, lib_trees = trees_of["engine"], trees_of["libraries"]
    stage = part.begin()
    skeleton(stage)
    trees = engine_trees + lib_trees
    elves = []
    for binary in ENGINE_BINARIES:
        source = find_in_trees(engine_trees, binary)
        if source is None:
            raise BuildError(f"{binary} is in none of {', '.join(t.name for t in engine_trees)}")
        copy_file(source, stage / binary)
        elves.append(stage / binary)
    for binary, installed in RENAMED_BINARIES.items():
        source = find_in_trees(engine_trees, binary)
        if source is None:
            raise BuildError(f"{binary} is in none of {', '.join(t.name for t in engine_trees)}")
        copy_file(source, stage / installed)
        elves.append(stage / installed)
    for name in IPTABLES_LINKS:
        os.symlink("xtables-legacy-multi", stage / "usr/sbin" / name)
    os.symlink("../bin/kmod", stage / "usr/sbin/modprobe")
    # xtables extensions are dlopen()ed at run time: ldd cannot see them
    xt_src = find_in_trees(trees, f"{MULTIARCH}/xtables")
    if xt_src is None:
        raise BuildError("no xtables extensions directory in the iptables packages")
    shutil.copytree(xt_src, stage / MULTIARCH / "xtables", symlinks=True)
    elves += sorted((stage / MULTIARCH / "xtables").glob("*.so"))
    # the dynamic loader, where every binary's PT_INTERP says
    loader = find_in_trees(lib_trees, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    if loader is None:
        raise BuildError("libc6 has no ld-linux-x86-64.so.2")
    copy_file(loader, stage / MULTIARCH / "ld-linux-x86-64.so.2")
    os.symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", stage / "usr/lib64/ld-linux-x86-64.so.2")
    copy_library_closure(stage, lib_trees + engine_trees, elves)
    docker_cli(stage, engine_trees, lib_trees)
    ca_tree = next(t for t in engine_trees if t.name.startswith("ca-certificates_"))
    ca_bundle(stage, ca_tree)
    # kernel modules: the subset, with indexes regenerated for it
    src = kroot / "lib/modules" / kver
    dst = stage / "usr/lib/modules" / kver
    for relative in module_closure(src, MODULES, stage):
        copy_file(src / relative, dst / relative)
    for index in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        copy_file(src / index, dst / index)
    run(["depmod", "-b", str(stage / "usr"), kver])
    # depmod -b ROOT looks in ROOT/lib/modules; /lib is a link to /usr/lib in the guest
    shutil.rmtree(engine_tree, ignore_errors=True)
    engine_tree.mkdir(parents=True)
    late = [*late_libraries(stage, trees_of["python"]), *late_modules(stage, kver)]
    moved = split_engine(stage, engine_tree, [*ENGINE_FILES, *late])
    (stage / ENGINE_MOUNT).mkdir(parents=True)
    part.finish()
    log(f"part base: {human(moved)} moved to the engine's squashfs ({len(late)} libraries and modules among them)")


# --- the python part ---------------------------------------------------------------------------
def build_python(part: Part, python_trees: list[Path], lib_trees: list[Path], base_stage: Path) -> dict:
    from image import python_runtime

    stage = part.begin()
    report = python_runtime.build(
        stage=stage,
        python_trees=python_trees,
        requirements=python_runtime.requirements(REPO / "pyproject.toml"),
        pid1_source=REPO / "pid1",
        wheel_cache=CACHE / "wheels",
    )

    # libraries the interpreter and the extension modules need that base lacks
    def provided(soname: str) -> bool:  # by base, or vendored by an extension (RPATH $ORIGIN)
        return (base_stage / MULTIARCH / soname).exists() or any(True for _ in stage.rglob(soname))

    elves = [stage / "usr/bin/python3.11", *sorted(stage.rglob("*.so"))]
    copy_library_closure(stage, lib_trees + python_trees, elves, provided)
    part.finish()
    (BUILD / "python-modules.txt").write_text("\n".join(report["modules"]) + "\n")
    return report


# --- the pid1 part -------------------------------------------------------------------------------
INIT_SCRIPT_TEMPLATE = """#!/usr/bin/python3.11 -IS
# only-docker's /init: python3 -m pid1, nothing in between. -I -S: no
# environment variables, no site scan at start-up; pid1 and its
# dependencies live in Debian's dist-packages directory.
import os, sys
# the kernel gives init no PATH; pid1 and every daemon it starts inherit this
os.environ["PATH"] = "{path}"
sys.path.append("/usr/lib/python3/dist-packages")
import runpy
runpy.run_module("pid1", run_name="__main__", alter_sys=True)
"""
INIT_SCRIPT = INIT_SCRIPT_TEMPLATE.replace("{path}", SYSTEM_PATH)


def build_pid1(part: Part, python_stage: Path) -> None:
    from image import python_runtime

    stage = part.begin()
    site = stage / python_runtime.SITE
    site.mkdir(parents=True)
    shutil.copytree(REPO / "pid1", site / "pid1", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    python_runtime.compile_tree(python_stage, site / "pid1", keep_sources=True)
    init = stage / "init"
    init.write_text(INIT_SCRIPT)
    os.chmod(init, 0o755)
    # the bundled images and the seed are in the engine's squashfs (build_bundled)
    for relative in BUNDLED_FILES:
        link_into_engine(stage, relative)
    part.finish()


def medium_part(engine: Part, medium: EngineMedium) -> Part:
    """The ISO's last initrd part: ENGINE_MEDIUM, where the engine phase
    finds the engine's image on the ISO (pid1/phases/engine.py)."""
    part = Part("medium", fingerprint(engine.key, medium.to_json()))
    if not part.fresh():
        stage = part.begin()
        (stage / ENGINE_MEDIUM).parent.mkdir(parents=True)
        (stage / ENGINE_MEDIUM).write_text(medium.to_json())
        part.finish()
    return part


def busybox_path() -> str:
    """Debian's busybox-static binary, from its package (never the host's)."""
    tree = unpack(fetch_debs(["busybox-static"])["busybox-static"])
    path = find_in_trees([tree], "bin/busybox")
    if path is None:
        raise BuildError("busybox-static has no bin/busybox")
    return str(path)


# --- packing -------------------------------------------------------------------------------------
COMPRESSORS = {
    "none": None,
    # -19 with a 32 MB window: the size the boot benchmark's goal asks for
    # (the kernel allocates that window while unpacking); the ISO's default
    # (see the module docstring for why dist/initrd.img stays plain)
    "zstd": ["zstd", "-q", "-f", "-T0", "-19", "--long=25", "--stdout"],
    "lz4": ["lz4", "-q", "-f", "-l", "-9", "-c"],  # -l: the legacy frame the kernel reads
}


def compressed(part: Part, method: str) -> Path:
    if method == "none":
        return part.archive
    out = part.archive.with_suffix(f".cpio.{method}")
    stamp = out.with_suffix(out.suffix + ".key")
    if out.exists() and stamp.exists() and stamp.read_text() == part.key:
        return out
    with open(out, "wb") as f:
        run([*COMPRESSORS[method], str(part.archive)], stdout=f)
    stamp.write_text(part.key)
    return out


def concatenate(sources: list[Path], target: Path) -> bool:
    """target = sources back to back; rewritten only when it would change."""
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as out:
        for source in sources:
            with open(source, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            # The kernel takes a plain cpio after a compressed one only at a
            # 4-byte boundary ("invalid magic at start of compressed
            # archive" otherwise); it skips the zeros.
            out.write(bytes(-out.tell() % 4))
    if target.exists() and files_equal(tmp, target):
        tmp.unlink()
        return False
    os.replace(tmp, target)
    return True


def files_equal(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def build_media(
    dist: Path, iso_boot: boot_media.BootSet, boot: boot_media.BootSet, loaders: boot_media.Loaders, key: str
) -> list[str]:
    """dist/only-docker.iso from iso_boot, .img and .qcow2 from boot, when the key changed."""
    made = []
    iso, image, qcow2 = dist / "only-docker.iso", dist / "only-docker.img", dist / "only-docker.qcow2"
    stamp = BUILD / "media.key"
    if all(p.exists() for p in (iso, image, qcow2)) and stamp.exists() and stamp.read_text() == key:
        return made
    stamp.unlink(missing_ok=True)
    boot_media.build_iso(run, iso, iso_boot, loaders, BUILD / "media-iso")
    crc = boot_media.build_disk_image(run, image, boot, loaders, BUILD / "media-disk")
    log(f"disk image: GPT entry array CRC {crc:08x} (pid1.grow={crc:08x} in its grub.cfg)")
    boot_media.build_qcow2(run, image, qcow2)
    stamp.write_text(key)
    return ["only-docker.iso", "only-docker.img", "only-docker.qcow2"]


# --- main ----------------------------------------------------------------------------------------
def build(dist: Path, compress: str, iso_compress: str, want_media: bool) -> dict:
    from image import python_runtime

    began = time.monotonic()
    check_tools(want_media, {compress, iso_compress} if want_media else {compress})
    BUILD.mkdir(exist_ok=True)
    dist.mkdir(parents=True, exist_ok=True)
    debs = fetch_debs(list(dict.fromkeys(ENGINE_PACKAGES + LIBRARY_PACKAGES + PYTHON_PACKAGES + DOM0_PACKAGES)))
    trees = {name: unpack(deb) for name, deb in debs.items()}
    dom0_trees = [trees[p] for p in DOM0_PACKAGES]
    kroot, kver = kernel_tree()
    engine_trees = [trees[p] for p in ENGINE_PACKAGES]
    lib_trees = [trees[p] for p in LIBRARY_PACKAGES]
    python_trees = [trees[p] for p in PYTHON_PACKAGES]
    me = [Path(__file__), HERE / "cpio.py", HERE / "elf.py"]

    debs_key = sorted(d.name for d in debs.values())
    trees_of = {"engine": engine_trees, "libraries": lib_trees, "python": python_trees}
    early = (module_sets.EARLY_MODULES, module_sets.MEDIUM_MODULES)
    base = Part("base", fingerprint(*me, debs_key, kver, MODULES, *early))
    engine_tree = BUILD / "stage/engine-tree"  # what base moves into the squashfs
    bundled_tree = BUILD / "stage/bundled-tree"
    bundled_key = fingerprint(
        *me, HERE / "bundled_images.py", HERE / "docker_seed.py", HERE / "dom0-start", REPO / "pid1/layout.py",
        sorted(debs[p].name for p in DOM0_PACKAGES),
    )  # fmt: skip
    engine = Part("engine", fingerprint(base.key, bundled_key, SQUASHFS_OPTIONS))
    if not base.fresh() or not (engine.fresh() or engine_tree.is_dir()):
        build_base(base, engine_tree, trees_of, kroot, kver)
    if not engine.fresh() or not (engine.stage / ENGINE_IMAGE).is_file():  # the ISO takes the image from the stage
        build_bundled(bundled_tree, bundled_key, dom0_trees)
        build_engine(engine, [engine_tree, bundled_tree])
    pyproject = REPO / "pyproject.toml"
    python = Part(
        "python",
        fingerprint(
            *me, HERE / "python_runtime.py", HERE / "python-keep.txt", python_runtime.requirements(pyproject),
            debs_key, base.key, tree_fingerprint(REPO / "pid1", (".py",)),
        ),
    )  # fmt: skip
    if not python.fresh():
        build_python(python, python_trees, lib_trees, base.stage)
    pid1 = Part(
        "pid1",
        fingerprint(*me, HERE / "python_runtime.py", tree_fingerprint(REPO / "pid1", (".py", ".script")), INIT_SCRIPT),
    )
    if not pid1.fresh():
        if not python.stage.exists():
            build_python(python, python_trees, lib_trees, base.stage)
        build_pid1(pid1, python.stage)

    made = []
    vmlinuz = dist / "vmlinuz"
    source_kernel = kroot / "boot" / f"vmlinuz-{kver}"
    if not vmlinuz.exists() or not files_equal(source_kernel, vmlinuz):
        shutil.copyfile(source_kernel, vmlinuz)
        made.append("vmlinuz")
    # Unpacked in this order: in a VM too small for the engine's image, the
    # unpack stops there and /init still runs (pid1/ram.py says why). The
    # squashfs is compressed already: its part is never compressed again.
    ordered = (base, python, pid1, engine)
    parts = [compressed(p, compress if p is not engine else "none") for p in ordered]
    initrd = dist / "initrd.img"
    initrd_key = fingerprint(str(initrd), *(p.key for p in ordered), compress)
    initrd_stamp = BUILD / "initrd.key"
    expected = sum(p.stat().st_size + -p.stat().st_size % 4 for p in parts)
    unchanged = initrd_stamp.exists() and initrd_stamp.read_text() == initrd_key
    if not (unchanged and initrd.exists() and initrd.stat().st_size == expected):
        if concatenate(parts, initrd):
            made.append("initrd.img")
        initrd_stamp.write_text(initrd_key)
    iso_initrd = media_initrd = initrd
    if want_media and iso_compress != compress:
        media_initrd = BUILD / f"initrd-image.img.{iso_compress}"
        concatenate([compressed(p, iso_compress if p is not engine else "none") for p in ordered], media_initrd)
    if want_media:
        # What the boot loaders load: the disk image's ESP has the whole initrd
        boot = boot_media.BootSet(
            kernel=vmlinuz,
            initrds=(media_initrd,),
            cmdline=KERNEL_CMDLINE,
            release=fingerprint(kver, *(p.key for p in ordered), iso_compress, KERNEL_CMDLINE)[:12],
        )
        # and the ISO's all but the engine, whose image is a file of the ISO beside it
        engine_image = engine.stage / ENGINE_IMAGE
        engine_name = os.path.basename(ENGINE_IMAGE)  # in the ISO's release directory, beside the kernel and initrd
        on_iso = f"{boot.directory.lstrip('/')}/{engine_name}"
        medium = medium_part(engine, EngineMedium(boot_media.ISO_VOLUME, on_iso, engine_image.stat().st_size))
        iso_initrd = BUILD / f"initrd-iso.img.{iso_compress}"
        concatenate([compressed(p, iso_compress) for p in (base, python, pid1, medium)], iso_initrd)
        iso_boot = dataclasses.replace(boot, initrds=(iso_initrd,), beside=((engine_name, engine_image),))
        boot_debs = fetch_debs(boot_media.PACKAGES)
        loaders = boot_media.Loaders.from_trees({name: unpack(deb) for name, deb in boot_debs.items()})
        if loaders.missing():
            raise BuildError(f"the boot loader packages lack {', '.join(loaders.missing())}")
        media_key = fingerprint(
            boot, iso_boot, sorted(d.name for d in boot_debs.values()), HERE / "boot_media.py", HERE / "gpt.py",
            boot_media.LAYOUT,
        )  # fmt: skip
        made += build_media(dist, iso_boot, boot, loaders, media_key)
    sizes = {
        "kernel": kver,
        "compress": compress,
        "iso_compress": iso_compress if want_media else None,
        "iso_initrd": iso_initrd.stat().st_size if want_media else None,  # without the engine: a file of the ISO
        "image_initrd": media_initrd.stat().st_size if want_media else None,  # the disk image's, whole
        "parts": {p.name: {"cpio": p.archive.stat().st_size, "packed": q.stat().st_size} for p, q in
                  zip(ordered, parts, strict=True)},
        "files": {f.name: f.stat().st_size for f in sorted(dist.iterdir()) if f.is_file() and f.suffix != ".json"},
        "seconds": round(time.monotonic() - began, 1),
        "made": made,
    }  # fmt: skip
    (dist / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    return sizes


def print_summary(sizes: dict, dist: Path) -> None:
    for name, entry in sizes["parts"].items():
        print(f"  initrd part {name:7} {human(entry['cpio']):>9} cpio  {human(entry['packed']):>9} {sizes['compress']}")
    for name, size in sizes["files"].items():
        mark = "made" if name in sizes["made"] else "unchanged"
        print(f"  {dist}/{name:18} {human(size):>9}  {mark}")
    if sizes["iso_initrd"] is not None:
        iso_note = f"{sizes['iso_compress']}, the engine beside it on the ISO"
        print(f"  the ISO's initrd        {human(sizes['iso_initrd']):>9}  {iso_note}")
        print(f"  the disk image's initrd {human(sizes['image_initrd']):>9}  {sizes['iso_compress']}")
    print(f"  kernel {sizes['kernel']}, command line '{KERNEL_CMDLINE}', {sizes['seconds']} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="image/build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist")
    parser.add_argument("--compress", choices=sorted(COMPRESSORS), default=os.environ.get("IMAGE_COMPRESS", "none"))
    parser.add_argument(
        "--iso-compress", choices=sorted(COMPRESSORS), default="zstd", help="the initrd of the ISO and the disk image"
    )
    parser.add_argument("--no-iso", action="store_true", help="only vmlinuz and initrd.img: no ISO, no disk image")
    opts = parser.parse_args(argv)
    umask = os.umask(0o022)
    BUILD.mkdir(exist_ok=True)
    lock = open(BUILD / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another image/build is running; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        sizes = build(opts.dist.resolve(), opts.compress, opts.iso_compress, not opts.no_iso)
    except RuntimeError as exc:  # BuildError, python_runtime.RuntimeError_
        print(f"image/build: error: {exc}", file=sys.stderr)
        return 1
    finally:
        os.umask(umask)
    print_summary(sizes, opts.dist)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
