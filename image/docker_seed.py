"""Builds the docker seed: the bundled images already in dockerd's own store.

    python -m image.docker_seed OUTPUT_DIR [--busybox PATH] [--tree DIR ...]

writes OUTPUT_DIR as a fresh data root of dockerd 20.10 with the overlay2
storage driver would look after `docker load` of image/bundled_images.py's
tarballs: the layer unpacked under overlay2/<cache-id>/diff (with its `link`
and the l/ short link), and image/overlay2/ with the layer's record (diff,
size, cache-id, tar-split.json.gz), the image config under its ID, and
repositories.json with every tag. pid1 copies it into an empty data root
before dockerd starts (pid1/docker_seed.py), so a boot from RAM, or on a new
disk, has busybox:latest, pid1-dhcp:latest and pid1-dom0:latest without the
images phase's import, which costs dockerd a re-execution of itself, seconds under
emulation.

The layout is dockerd's private format, so this file says exactly what
dockerd itself writes, and tests/docker/test_docker_seed.py checks it
against a real dockerd: the files a `docker load` of the tarball leaves
(tar-split byte for byte), the image present at start, `docker save`
rebuilding the layer to its diff ID, and containers running from it. The
cache and link ids, random in dockerd, are derived from the layer here, so
the seed is the same bytes for the same inputs (busybox, the dropbear
package and its libraries).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

from image import bundled_images

DRIVER = "overlay2"


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xD800000000000000 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_ISO = _crc64_table()


def crc64_iso(data: bytes) -> bytes:
    """Go's hash/crc64 with the ISO table, as Sum(nil) gives it (big-endian):
    the checksum tar-split records for each file's content."""
    crc = 0xFFFFFFFFFFFFFFFF
    table = _CRC64_ISO
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return (crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def _header_name(header: bytes) -> str:
    """A USTAR header's name as Go's archive/tar reads it (prefix joined,
    a directory's trailing slash kept; Python's tarfile strips it)."""
    name = header[0:100].split(b"\0", 1)[0].decode()
    prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:263] == b"ustar\x0000" else ""
    return f"{prefix}/{name}" if prefix else name


def tar_split(layer: bytes) -> bytes:
    """The tar-split record of a layer tar, gzipped, as dockerd keeps it
    (tar-split.json.gz): the raw bytes between file contents (headers,
    padding, the end) as segments, each file as its name, size and CRC-64,
    so the exact tar can be rebuilt from the unpacked files (`docker save`,
    `docker push`). Only USTAR members are expected (rootfs_layer writes
    nothing else)."""
    entries: list[dict[str, object]] = []

    def add(entry: dict[str, object]) -> None:
        entry["position"] = len(entries)
        entries.append(entry)

    def segment(raw: bytes) -> None:
        add({"type": 2, "payload": base64.b64encode(raw).decode()})

    position = 0
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
        for member in tar:
            segment(layer[position : member.offset_data])
            content = layer[member.offset_data : member.offset_data + member.size]
            entry: dict[str, object] = {"type": 1, "name": _header_name(layer[member.offset : member.offset + 512])}
            if member.size:
                entry["size"] = member.size
            entry["payload"] = base64.b64encode(crc64_iso(content)).decode() if member.size else None
            add(entry)
            position = member.offset_data + member.size
    # Go's reader stops after the padding and the two zero blocks that end
    # the archive; tar-split then records what follows, and an empty segment.
    end = min(position + (-position % 512) + 1024, len(layer))
    segment(layer[position:end])
    segment(layer[end:])
    segment(b"")
    lines = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries)
    return gzip.compress(lines.encode(), mtime=0)


def _derived_id(*parts: str) -> str:
    return hashlib.sha256(("only-docker seed\0" + "\0".join(parts)).encode()).hexdigest()


def unpack_layer(layer: bytes, target: Path) -> int:
    """Unpack the layer tar as dockerd's untar would (modes, symlinks, the
    layer's mtimes); returns the layer size dockerd records: the sum of the
    lstat sizes of everything but directories."""
    size = 0
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as tar:
        members = tar.getmembers()
        for member in members:
            path = target / member.name
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.issym():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, path)
                size += len(os.fsencode(member.linkname))
            elif member.isfile():
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                assert handle is not None
                path.write_bytes(handle.read())
                size += member.size
            else:
                raise ValueError(f"{member.name}: the seed carries files, directories and symlinks only")
        # modes and mtimes last, deepest first: writing into a directory changes its mtime
        for member in sorted(members, key=lambda m: m.name.count("/"), reverse=True):
            path = target / member.name
            if not member.issym():
                os.chmod(path, member.mode)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    return size


def build_seed(output: Path, busybox: str, trees: list[Path] | None = None) -> list[str]:
    """Write the seed data root for every bundled image into `output`
    (replacing what is there); returns the tags it holds. `trees`: where
    the images' programs come from (bundled_images.spec_layer)."""
    if output.exists():
        shutil.rmtree(output)
    repositories: dict[str, dict[str, str]] = {}
    store = output / "image" / DRIVER
    for spec in bundled_images.BUNDLED:
        layer = bundled_images.spec_layer(spec, busybox, trees)
        config = bundled_images.image_config(spec, layer)
        image_id = "sha256:" + hashlib.sha256(config).hexdigest()
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()  # one layer: its chain ID is its diff ID
        cache_id = _derived_id("cache", diff_id)
        link = base64.b32encode(bytes.fromhex(_derived_id("link", cache_id))[:16]).decode()[:26]

        layer_dir = output / DRIVER / cache_id
        size = unpack_layer(layer, layer_dir / "diff")
        (layer_dir / "link").write_text(link)
        (output / DRIVER / "l").mkdir(parents=True, exist_ok=True)
        os.symlink(f"../{cache_id}/diff", output / DRIVER / "l" / link)

        record = store / "layerdb" / "sha256" / diff_id.split(":")[1]
        record.mkdir(parents=True)
        (record / "diff").write_text(diff_id)
        (record / "size").write_text(str(size))
        (record / "cache-id").write_text(cache_id)
        (record / "tar-split.json.gz").write_bytes(tar_split(layer))

        content = store / "imagedb" / "content" / "sha256"
        content.mkdir(parents=True, exist_ok=True)
        (content / image_id.split(":")[1]).write_bytes(config)
        (store / "imagedb" / "metadata" / "sha256").mkdir(parents=True, exist_ok=True)
        for tag in spec.tags:
            repositories.setdefault(tag.rpartition(":")[0], {})[tag] = image_id
    (store / "repositories.json").write_text(json.dumps({"Repositories": repositories}, separators=(",", ":")))
    # the modes dockerd gives its own directories and files
    for directory in (output / "image", store, output / DRIVER):
        os.chmod(directory, 0o700 if directory != output / DRIVER else 0o710)
    os.chmod(output / DRIVER / "l", 0o700)
    for layer_dir in (output / DRIVER).iterdir():
        if layer_dir.name != "l":
            os.chmod(layer_dir, 0o710)
    os.chmod(store / "repositories.json", 0o600)
    return sorted(tag for repo in repositories.values() for tag in repo)


def main(argv: list[str]) -> int:
    parser = bundled_images.source_options(__doc__ or "")
    parser.add_argument("output", type=Path)
    opts = parser.parse_args(argv)
    if not bundled_images.busybox_found(opts.busybox, "docker_seed"):
        return 1
    tags = build_seed(opts.output, opts.busybox, opts.tree)
    print(f"{opts.output}\t{', '.join(tags)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
