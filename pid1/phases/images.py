"""images: put the bundled image tarballs into dockerd, only those missing.

Needs dockerd (its client, pid1/engine/client.py). Every `*.tar` in pid1.images_dir is a `docker save` tarball
(the busybox fallback for the console and dom0, tagged for the dhcp client
too). Its manifest.json and config are read without unpacking the rest, each
tag is looked up through the API, and only a tarball with a missing tag goes
in, one at a time, the one with pid1.fallback_image (what the console runs
when nothing else resolves) first. On a persistent disk the second boot
loads nothing.

A one-layer image whose config Dockerfile instructions can say (CMD,
ENTRYPOINT, ENV, LABEL, WORKDIR, USER) is imported: its layer is streamed to
/images/create?fromSrc=- with those instructions as `changes`, then tagged
with the rest of its tags. /images/load would make dockerd re-execute itself
twice (untar the whole tarball to a temporary directory, then apply the
layer); the import applies the layer straight from the stream, one
re-execution (the time it saves: docs/benchmarks.md#the-docker-seed-and-the-import). Only the missing tags are
set: a tag the user moved to another image stays where it is. Anything
else, or an import dockerd refuses, goes to /images/load (which sets every
tag the tarball names). The imported image has a new ID and
creation time; its content and config are the tarball's.
A broken tarball (unreadable, a manifest.json or config of the wrong
shape, a tag dockerd refuses) is reported in the log and the phase's detail,
with why, and skipped: the other images still load.

Owns: the tarball reading (manifest, config, import changes) and the
phase. May use: the Docker client (`Wiring.docker`, pid1/engine/client.py),
the phase API and the wiring; tarfile and json.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pid1.phases import Phase, PhaseContext
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.engine.client import DockerClient


@dataclass(frozen=True)
class Tarball:
    """A `docker save` tarball, as its manifest and config describe it."""

    path: str
    tags: list[str]
    # the member holding the image's only layer, and the Dockerfile
    # instructions that recreate its config: set when it can be imported
    layer: str | None = None
    changes: list[str] = field(default_factory=list)


# config key -> the Dockerfile instruction that sets it
_LIST_INSTRUCTIONS = {"Cmd": "CMD", "Entrypoint": "ENTRYPOINT"}
_TEXT_INSTRUCTIONS = {"WorkingDir": "WORKDIR", "User": "USER"}


def _plain(text: str) -> bool:
    """A value Dockerfile quoting carries unchanged: no escapes, no line breaks."""
    return "\\" not in text and '"' not in text and text.isprintable()


def _quoted(text: str) -> str:
    return f'"{text}"'


def import_changes(config: dict[str, Any]) -> list[str] | None:
    """Dockerfile instructions giving an imported layer this image config's
    settings, or None when the config holds something they cannot say."""
    changes: list[str] = []
    for key, value in config.items():
        if not value:
            continue  # docker save writes every field, most of them empty
        if key in _LIST_INSTRUCTIONS and isinstance(value, list) and all(isinstance(v, str) for v in value):
            changes.append(f"{_LIST_INSTRUCTIONS[key]} {json.dumps(value, ensure_ascii=False)}")
        elif key in _TEXT_INSTRUCTIONS and isinstance(value, str) and _plain(value):
            changes.append(f"{_TEXT_INSTRUCTIONS[key]} {value}")
        elif key == "Env" and isinstance(value, list) and all(isinstance(v, str) and _plain(v) for v in value):
            for entry in value:
                name, _, text = entry.partition("=")
                changes.append(f"ENV {name}={_quoted(text)}")
        elif key == "Labels" and isinstance(value, dict) and all(_plain(k + v) for k, v in value.items()):
            changes.append("LABEL " + " ".join(f"{_quoted(k)}={_quoted(v)}" for k, v in sorted(value.items())))
        else:
            return None
    return changes


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(tar.getmember(name))
    if handle is None:
        raise ValueError(f"{name} is not a file")
    return handle.read()


def _strings(entry: dict[str, Any], key: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"manifest.json: {key} is {json.dumps(value)[:60]}, not a list of strings")
    return value


def parse_manifest(text: bytes) -> list[dict[str, Any]]:
    """manifest.json: a list of {Config, RepoTags, Layers}; anything else is a
    ValueError saying what is wrong (the tarball is skipped, never retried)."""
    manifest = json.loads(text)
    if not isinstance(manifest, list) or not manifest:
        raise ValueError(f"manifest.json is {json.dumps(manifest)[:60]}, not a list of images")
    for entry in manifest:
        if not isinstance(entry, dict):
            raise ValueError(f"manifest.json: an entry is {json.dumps(entry)[:60]}, not an object")
        if not isinstance(entry.get("Config"), str):
            raise ValueError("manifest.json: an entry has no Config file name")
        _strings(entry, "RepoTags")
        _strings(entry, "Layers")
    return manifest


def read_tarball(path: str) -> Tarball:
    """The tags (and, for a one-layer image, what importing it needs) of a
    `docker save` tarball, from manifest.json and the config."""
    with tarfile.open(path, "r:") as tar:
        manifest = parse_manifest(_member_bytes(tar, "manifest.json"))
        tags = [tag for entry in manifest for tag in _strings(entry, "RepoTags")]
        if len(manifest) != 1 or len(_strings(manifest[0], "Layers")) != 1 or not tags:
            return Tarball(path, tags)
        image_config = json.loads(_member_bytes(tar, manifest[0]["Config"]))
    if not isinstance(image_config, dict) or not isinstance(image_config.get("config") or {}, dict):
        raise ValueError(f"{manifest[0]['Config']} is not an image config object")
    changes = import_changes(image_config.get("config") or {})
    if changes is None:
        return Tarball(path, tags)
    return Tarball(path, tags, layer=manifest[0]["Layers"][0], changes=changes)


def split_reference(reference: str) -> tuple[str, str]:
    """'repo[:port]/name:tag' -> (repository, tag); the tag defaults to latest."""
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, "latest"
    return repository, tag


async def load_tarball(docker: DockerClient, path: str) -> None:
    """The tarball into /images/load, streamed from the file."""
    with open(path, "rb") as f:
        await docker.load_image(f)


async def import_tarball(docker: DockerClient, tarball: Tarball, tags: list[str]) -> None:
    """Stream the one layer to /images/create?fromSrc=- as the first of
    `tags`, with the config as `changes`; then give the image the others."""
    assert tarball.layer is not None and tags
    repository, tag = split_reference(tags[0])
    with tarfile.open(tarball.path, "r:") as tar:
        layer = tar.extractfile(tarball.layer)
        if layer is None:
            raise ValueError(f"{tarball.layer} is not a file")
        await docker.import_layer(layer, repository, tag, tarball.changes)
    for other in tags[1:]:
        repository, tag = split_reference(other)
        await docker.tag_image(tags[0], repository, tag)


async def run(ctx: PhaseContext) -> str:
    docker = ctx.wiring.docker
    directory = ctx.config.images_dir
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".tar"))
    except OSError as exc:
        ctx.log.warning(f"images: cannot read {directory}: {exc.strerror}; no bundled image loaded")
        return f"no bundled images ({directory}: {exc.strerror})"
    loaded: list[str] = []
    present: list[str] = []
    broken: list[str] = []

    tarballs: list[Tarball] = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            tarballs.append(read_tarball(path))
        except Exception as exc:  # its content is anybody's: whatever is wrong skips this one, never the phase
            ctx.log.error(f"images: {path} is not a docker save tarball ({exc}): skipped")
            broken.append(f"{name} ({exc})")

    async def put_in(tarball: Tarball, missing: list[str]) -> str:
        """Import the tarball as its missing tags when it can be, else load
        it (which sets every tag it names); returns how."""
        if tarball.layer is not None:
            try:
                await import_tarball(docker, tarball, missing)
                return "imported"
            except Exception as exc:
                ctx.log.warning(f"images: importing {tarball.path} failed ({exc}); loading it instead")
        await load_tarball(docker, tarball.path)
        return "loaded"

    async def ensure_tarball(tarball: Tarball) -> None:
        name = os.path.basename(tarball.path)
        began = time.monotonic()
        try:  # a tag dockerd calls malformed fails the lookup: that tarball is skipped
            missing = [tag for tag in tarball.tags if await docker.image_id(tag) is None]
            if tarball.tags and not missing:
                present.extend(tarball.tags)
                return
            how = await put_in(tarball, missing)
        except Exception as exc:
            ctx.log.error(f"images: loading {tarball.path} failed: {exc}")
            broken.append(f"{name} ({exc})")
            return
        took = (time.monotonic() - began) * 1000
        put = missing if how == "imported" else tarball.tags
        ctx.log.info(f"images: {how} {', '.join(put) or name} from {name} in {took:.0f} ms")
        loaded.extend(put or [name])
        present.extend(tag for tag in tarball.tags if tag not in put)

    # One after the other: putting an image in is CPU-bound in dockerd (it
    # re-executes itself to untar), so side by side they gain nothing. The
    # tarball with the fallback image (the console's) goes first.
    fallback = ctx.config.fallback_image
    for tarball in sorted(tarballs, key=lambda t: fallback not in t.tags):
        await ensure_tarball(tarball)
    loaded.sort()
    present.sort()
    parts = [f"loaded {', '.join(loaded)}" if loaded else "", f"present {', '.join(present)}" if present else ""]
    if broken:
        parts.append(f"broken {', '.join(broken)}")
    return "; ".join(p for p in parts if p) or f"no tarballs in {directory}"


PHASE = Phase(name="images", run=run, needs=("dockerd",), uses=(Wiring.docker,))
