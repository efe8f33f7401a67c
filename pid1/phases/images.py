"""images: load the bundled image tarballs into dockerd, only those missing.

Needs dockerd. Every `*.tar` in pid1.images_dir (`docker save` format: the
busybox fallback for the console and dom0, the dhcp client) names its tags in
manifest.json; that small member is read without unpacking the rest, each
tag is looked up through the API, and only a tarball with a missing tag is
sent to /images/load, one at a time, the one with pid1.fallback_image (what
the console runs when nothing else resolves) first. On a persistent disk the
second boot loads nothing.
A broken tarball is reported and skipped: the other images still load.
"""

from __future__ import annotations

import json
import os
import tarfile
import time

from pid1.phases import Phase, PhaseContext


def tarball_tags(path: str) -> list[str]:
    """RepoTags from a `docker save` tarball's manifest.json."""
    with tarfile.open(path, "r:") as tar:
        member = tar.getmember("manifest.json")
        handle = tar.extractfile(member)
        if handle is None:
            raise ValueError("manifest.json is not a file")
        manifest = json.loads(handle.read())
    return [tag for entry in manifest for tag in (entry.get("RepoTags") or [])]


async def image_present(docker, tag: str) -> bool:
    from aiodocker.exceptions import DockerError

    try:
        await docker.images.inspect(tag)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def load_tarball(docker, path: str) -> None:
    """POST the tarball to /images/load, streamed from the file."""
    with open(path, "rb") as f:
        result = await docker.images.import_image(data=f)
    for message in result if isinstance(result, list) else [result]:
        if isinstance(message, dict) and message.get("error"):
            raise RuntimeError(message["error"])


async def run(ctx: PhaseContext) -> str:
    docker = ctx.shared["docker"]
    directory = ctx.config.images_dir
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".tar"))
    except OSError as exc:
        ctx.log.warning(f"images: cannot read {directory}: {exc.strerror}; no bundled image loaded")
        return f"no bundled images ({directory}: {exc.strerror})"
    loaded: list[str] = []
    present: list[str] = []
    broken: list[str] = []

    tags_of: dict[str, list[str]] = {}
    for name in names:
        path = os.path.join(directory, name)
        try:
            tags_of[name] = tarball_tags(path)
        except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
            ctx.log.error(f"images: {path} is not a docker save tarball ({exc}): skipped")
            broken.append(name)

    async def ensure_tarball(name: str, tags: list[str]) -> None:
        path = os.path.join(directory, name)
        missing = [tag for tag in tags if not await image_present(docker, tag)]
        if tags and not missing:
            present.extend(tags)
            return
        began = time.monotonic()
        try:
            await load_tarball(docker, path)
        except Exception as exc:
            ctx.log.error(f"images: loading {path} failed: {exc}")
            broken.append(name)
            return
        took = (time.monotonic() - began) * 1000
        ctx.log.info(f"images: loaded {', '.join(tags) or name} from {name} in {took:.0f} ms")
        loaded.extend(tags or [name])

    # One after the other: a load is CPU-bound in dockerd (it re-executes
    # itself to untar and to apply each layer), so side by side they gain
    # nothing. The tarball with the fallback image (the console's) goes first.
    fallback = ctx.config.fallback_image
    for name in sorted(tags_of, key=lambda name: fallback not in tags_of[name]):
        await ensure_tarball(name, tags_of[name])
    loaded.sort()
    present.sort()
    ctx.shared["bundled_images"] = loaded + present
    parts = [f"loaded {', '.join(loaded)}" if loaded else "", f"present {', '.join(present)}" if present else ""]
    if broken:
        parts.append(f"broken {', '.join(broken)}")
    return "; ".join(p for p in parts if p) or f"no tarballs in {directory}"


PHASE = Phase(name="images", run=run, needs=("dockerd",), doc=__doc__ or "")
