"""Builds the bundled images as `docker save` tarballs, without a daemon.

    python -m image.bundled_images [OUTPUT_DIR] [--busybox PATH] [--tree DIR ...]

writes OUTPUT_DIR/busybox.tar and OUTPUT_DIR/dom0.tar; OUTPUT_DIR defaults to
/var/cache/only-docker/images.

- busybox.tar holds one image under two tags: busybox:latest (the console's
  and dom0's fallback) and pid1-dhcp:latest (the dhcp container's; pid1 binds
  its udhcpc script in, so a user who retags busybox:latest on a persistent
  disk does not change the DHCP client). One layer: Debian's busybox-static as
  /bin/busybox, a symlink for each of its applets (`busybox --list-full`),
  /etc/passwd, /etc/group and the usual empty directories.
- dom0.tar is pid1-dom0:latest, dom0's image: the same busybox layer plus
  Debian's dropbear (dropbear-bin: `dropbear`, `dropbearkey`) with the shared
  libraries they need and the loader, and image/dom0-start as its command
  (dropbear on port 22 when root has a key). The programs and libraries come
  from the trees given (image/build: the unpacked .debs; tests: the host's /,
  where tests/run installs dropbear-bin). dom0's docker client is not in the
  image: pid1 binds it in, as for any dom0.

One tarball and one layer per image, because every image dockerd takes in
costs it re-executions of itself (to untar, to apply the layer), seconds each
under emulation.

The tarballs are deterministic (fixed mtimes, owners and order): the same
busybox binary gives byte-identical files, so the image IDs are stable and a
tarball is rewritten only when its content changes. pid1's images phase puts
them into dockerd when a tag is missing (a one-layer image like this one by
/images/create?fromSrc=-, see pid1/phases/images.py; tests and the initrd
use the same files).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from image import elf
from pid1.layout import SYSTEM_PATH

HERE = Path(__file__).resolve().parent

DEFAULT_OUTPUT = Path("/var/cache/only-docker/images")
# Any fixed instant works; this one is the Debian 12 release day.
EPOCH = 1686355200
CREATED = "2023-06-10T00:00:00Z"
PATH_ENV = f"PATH={SYSTEM_PATH}"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"
DIRECTORIES = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "root": 0o700, "run": 0o755, "sbin": 0o755,
    "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755,
}  # fmt: skip


MULTIARCH = "lib/x86_64-linux-gnu"
LOADER = "lib64/ld-linux-x86-64.so.2"  # every Debian amd64 binary's PT_INTERP
# Where a program's libraries are looked for in a tree (merged /usr or not).
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
SSH_LABEL = "org.only-docker.ssh"  # what serves SSH in an image (pid1's status names it)


@dataclass(frozen=True)
class ImageSpec:
    file_name: str
    tags: tuple[str, ...]
    cmd: tuple[str, ...]
    # ELF programs (paths inside the trees) copied to the same path, with the
    # shared libraries they need (under /lib/x86_64-linux-gnu) and the loader
    programs: tuple[str, ...] = ()
    scripts: tuple[tuple[str, str], ...] = ()  # (path in the image, file in image/), mode 0755
    files: tuple[tuple[str, str], ...] = ()  # (path in the image, content), mode 0644
    labels: tuple[tuple[str, str], ...] = ()


DOM0_TAG = "pid1-dom0:latest"
BUNDLED = [
    ImageSpec("busybox.tar", ("busybox:latest", "pid1-dhcp:latest"), ("sh",)),
    ImageSpec(
        "dom0.tar",
        (DOM0_TAG,),
        ("/usr/lib/pid1-dom0/start",),
        programs=("usr/sbin/dropbear", "usr/bin/dropbearkey"),
        scripts=(("usr/lib/pid1-dom0/start", "dom0-start"),),
        files=(("etc/shells", "/bin/sh\n/bin/ash\n"),),
        labels=((SSH_LABEL, "dropbear"),),
    ),
]


class MissingProgram(RuntimeError):
    """A program or library an image needs is in none of the trees."""


def find_in_trees(trees: list[Path], relative: str) -> Path | None:
    """The first tree's file at `relative`, in its /usr spelling or not
    (Debian 12 is merged-/usr at install, not in every package)."""
    spellings = [relative, f"usr/{relative}"]
    if relative.startswith("usr/"):
        spellings.append(relative.removeprefix("usr/"))
    for tree in trees:
        for spelling in spellings:
            candidate = tree / spelling
            if candidate.exists():
                return candidate
    return None


def program_files(programs: tuple[str, ...], trees: list[Path]) -> dict[str, tuple[bytes, int]]:
    """The programs, every library they need (through DT_NEEDED, read
    without running the host's loader) and the loader, as image files."""
    files: dict[str, tuple[bytes, int]] = {}
    queue: list[tuple[str, Path]] = []
    for program in programs:
        source = find_in_trees(trees, program)
        if source is None:
            raise MissingProgram(f"{program} is in none of {', '.join(map(str, trees))} (dropbear-bin)")
        files[program] = (source.read_bytes(), 0o755)
        queue.append((program, source))
    loader = find_in_trees(trees, f"{MULTIARCH}/ld-linux-x86-64.so.2")
    if loader is None:
        raise MissingProgram(f"no ld-linux-x86-64.so.2 in {', '.join(map(str, trees))} (libc6)")
    files[LOADER] = (loader.read_bytes(), 0o755)
    while queue:
        name, source = queue.pop()
        for soname in elf.needed(source):
            target = f"{MULTIARCH}/{soname}"
            if target in files or soname == Path(LOADER).name:  # the loader is at LOADER already
                continue
            library = next(filter(None, (find_in_trees(trees, f"{d}/{soname}") for d in LIBRARY_DIRS)), None)
            if library is None:
                raise MissingProgram(f"{name} needs {soname}, which none of {', '.join(map(str, trees))} has")
            files[target] = (library.read_bytes(), 0o644)
            queue.append((soname, library))
    return files


def spec_files(spec: ImageSpec, trees: list[Path]) -> dict[str, tuple[bytes, int]]:
    """What an image holds beyond the busybox layer, path -> (content, mode)."""
    files = program_files(spec.programs, trees) if spec.programs else {}
    for path, name in spec.scripts:
        files[path] = ((HERE / name).read_bytes(), 0o755)
    for path, content in spec.files:
        files[path] = (content.encode(), 0o644)
    return files


def spec_layer(spec: ImageSpec, busybox: str, trees: list[Path] | None = None) -> bytes:
    """The layer tar of a bundled image (`trees`: where its programs come from; default the host's /)."""
    return rootfs_layer(busybox, spec_files(spec, trees or [Path("/")]))


def busybox_applets(busybox: str) -> list[str]:
    """Paths (relative to /) of every applet the binary provides."""
    listed = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip().lstrip("/") for line in listed.splitlines() if line.strip()})


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "root", "root"
    return info


def rootfs_layer(busybox: str, extra_files: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    """The layer tar: directories, busybox, its applet links, /etc files
    (and `extra_files`, path -> (content, mode), for tests' own images)."""
    binary = Path(busybox).read_bytes()
    files: dict[str, tuple[bytes, int]] = {
        "etc/passwd": (PASSWD.encode(), 0o644),
        "etc/group": (GROUP.encode(), 0o644),
        **(extra_files or {}),
    }
    directories = dict(DIRECTORIES)
    for path in files:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directories.setdefault("/".join(parts[:depth]), 0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(directories):
            tar.addfile(_info(name, tarfile.DIRTYPE, directories[name]))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for applet in busybox_applets(busybox):
            if applet == "bin/busybox" or applet in files or applet.split("/")[0] not in ("bin", "sbin", "usr"):
                continue
            tar.addfile(_info(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
        for name in sorted(files):
            content, mode = files[name]
            tar.addfile(_info(name, tarfile.REGTYPE, mode, len(content)), io.BytesIO(content))
    return buf.getvalue()


def image_config(spec: ImageSpec, layer: bytes, extra_config: dict[str, object] | None = None) -> bytes:
    """The image config (its sha256 is the image ID) of a one-layer image."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    labels = {"org.only-docker.bundled": spec.tags[0], **dict(spec.labels)}
    image_config = {"Cmd": list(spec.cmd), "Env": [PATH_ENV], "Labels": labels}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {**image_config, **(extra_config or {})},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": f"image/bundled_images.py ({', '.join(spec.tags)})"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_tarball(
    spec: ImageSpec, busybox: str, extra_config: dict[str, object] | None = None, trees: list[Path] | None = None
) -> bytes:
    """A `docker save` (v1.2 with manifest.json) tarball of a one-layer
    image under every tag of spec.tags (`extra_config`: more image config
    keys, for tests)."""
    layer = spec_layer(spec, busybox, trees)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config_bytes = image_config(spec, layer, extra_config)
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_dir = diff_id.split(":")[1]
    manifest = [{"Config": config_name, "RepoTags": list(spec.tags), "Layers": [f"{layer_dir}/layer.tar"]}]
    repositories: dict[str, dict[str, str]] = {}
    for full in spec.tags:
        repo, _, tag = full.rpartition(":")
        repositories.setdefault(repo, {})[tag] = layer_dir
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info(config_name, tarfile.REGTYPE, 0o644, len(config_bytes)), config_bytes),
        (_info(layer_dir, tarfile.DIRTYPE, 0o755), None),
        (_info(f"{layer_dir}/VERSION", tarfile.REGTYPE, 0o644, 3), b"1.0"),
        (_info(f"{layer_dir}/layer.tar", tarfile.REGTYPE, 0o644, len(layer)), layer),
    ]
    for name, content in (
        ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
        ("repositories", json.dumps(repositories, separators=(",", ":")).encode()),
    ):
        members.append((_info(name, tarfile.REGTYPE, 0o644, len(content)), content))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def write_if_changed(path: Path, content: bytes) -> bool:
    """Atomically replace `path` unless it already holds `content`."""
    try:
        if path.read_bytes() == content:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return True


def build(output: Path, busybox: str = "/bin/busybox", trees: list[Path] | None = None) -> dict[str, Path]:
    """Write every bundled image tarball into `output` (and remove tarballs
    an earlier version wrote); returns file name -> path."""
    output.mkdir(parents=True, exist_ok=True)
    built = {}
    for spec in BUNDLED:
        path = output / spec.file_name
        write_if_changed(path, image_tarball(spec, busybox, trees=trees))
        built[spec.file_name] = path
    for stale in output.glob("*.tar"):
        if stale.name not in built:
            stale.unlink()
    return built


def source_options(doc: str) -> argparse.ArgumentParser:
    """The command line of an image builder (this one, docker_seed): where
    busybox and dropbear come from; the caller adds its output."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--busybox", default="/bin/busybox", help="Debian's busybox-static binary")
    parser.add_argument("--tree", type=Path, action="append", help="where dropbear comes from (default /)")
    return parser


def busybox_found(path: str, program: str) -> bool:
    """Whether busybox is at `path`; if not, says so on stderr as `program`."""
    if not os.path.exists(path):
        print(f"{program}: {path} not found (apt-get install busybox-static)", file=sys.stderr)
    return os.path.exists(path)


def main(argv: list[str]) -> int:
    parser = source_options(__doc__ or "")
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    opts = parser.parse_args(argv)
    if not busybox_found(opts.busybox, "bundled_images"):
        return 1
    try:
        build(opts.output, opts.busybox, opts.tree)
    except MissingProgram as exc:
        print(f"bundled_images: {exc}", file=sys.stderr)
        return 1
    for spec in BUNDLED:
        path = opts.output / spec.file_name
        print(f"{path}\t{', '.join(spec.tags)}\t{path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
