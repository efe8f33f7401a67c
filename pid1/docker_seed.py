"""Seeds a Docker data root dockerd has never used with the image store the
initrd carries (image/docker_seed.py builds it: the bundled images as a
`docker load` leaves them in dockerd 20.10's overlay2 store).

The dockerd phase calls seed_data_root before dockerd's first start. A RAM
boot, or a boot on a new disk, then has the bundled images when dockerd
answers, and the images phase finds them present instead of importing
them (each import makes dockerd re-execute itself: seconds under
emulation). Only an empty data root is seeded, one with no `image`
directory: a store dockerd has written is never touched. The `image`
directory is copied under a temporary name, flushed to the disk, and
renamed last, so a copy cut short (a crash) leaves no half store that
dockerd would read; the next boot seeds again over the leftovers: the copy
is idempotent (a file or link that is there already is replaced).

The copy runs in a thread the dockerd phase bounds (pid1.threads): when the
phase gives up on it (a slow disk, a stop), it sets `stop`, and the copy
checks it before each entry and before the rename, so an abandoned copy
never puts a store in place under a dockerd that has started meanwhile.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable

STORE = "image"  # what dockerd creates in its data root before anything else is written
PARTIAL = ".pid1-seed-image"

CopyFile = Callable[[str, str], object]


class SeedStopped(Exception):
    """The copy was given up (stop set): the next boot seeds again."""


def _clear(path: str) -> None:
    """Make room for an entry of another kind than the one at `path`."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def copy_tree(source: str, target: str, stop: threading.Event, copy_file: CopyFile = shutil.copy2) -> None:
    """Copy the tree at `source` onto `target`, keeping links, modes and
    times; what a copy cut short left there is completed, not an error."""
    fresh = not os.path.lexists(target)
    if not fresh and not (os.path.isdir(target) and not os.path.islink(target)):
        _clear(target)
        fresh = True
    os.makedirs(target, exist_ok=True)
    with os.scandir(source) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    # In a directory made just now nothing is in the way: the checks for
    # leftovers are skipped (the seed's store is hundreds of links, each
    # syscall counts under emulation), and the directory entries' own types
    # stand in for an lstat of each.
    for entry in entries:
        if stop.is_set():
            raise SeedStopped(f"stopped before {entry.path}")
        destination = os.path.join(target, entry.name)
        if entry.is_symlink():
            link = os.readlink(entry.path)
            if not fresh:
                if os.path.islink(destination) and os.readlink(destination) == link:
                    continue
                if os.path.lexists(destination):
                    _clear(destination)
            os.symlink(link, destination)
        elif entry.is_dir(follow_symlinks=False):
            copy_tree(entry.path, destination, stop, copy_file)
        elif entry.is_file(follow_symlinks=False):
            if not fresh and (
                os.path.islink(destination) or (os.path.lexists(destination) and not os.path.isfile(destination))
            ):
                _clear(destination)  # copy_file would write through a link
            copy_file(entry.path, destination)
        else:
            raise OSError(f"{entry.path}: not a file, directory or symlink")
    shutil.copystat(source, target, follow_symlinks=False)


def seed_data_root(
    seed: str,
    data_root: str,
    driver: str | None,
    stop: threading.Event | None = None,
    copy_file: CopyFile = shutil.copy2,
) -> str | None:
    """Copy `seed` into `data_root` when it can be used there; returns what
    was done, or None when there was nothing to do (no seed for this storage
    driver, or a data root dockerd has used). Raises SeedStopped when `stop`
    is set meanwhile."""
    stop = stop or threading.Event()
    if not seed or driver is None or not os.path.isdir(os.path.join(seed, STORE, driver)):
        return None
    if os.path.lexists(os.path.join(data_root, STORE)):
        return None
    os.makedirs(data_root, exist_ok=True)
    partial = os.path.join(data_root, PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    for name in sorted(os.listdir(seed)):
        if name == STORE:
            continue
        source, target = os.path.join(seed, name), os.path.join(data_root, name)
        if os.path.isdir(source) and not os.path.islink(source):
            copy_tree(source, target, stop, copy_file)
        else:
            if os.path.lexists(target):
                _clear(target)
            shutil.copy2(source, target, follow_symlinks=False)
    copy_tree(os.path.join(seed, STORE), partial, stop, copy_file)
    if stop.is_set():
        raise SeedStopped("stopped before the store was put in place")
    # The rename is the mark that the store is whole, so the copied data
    # must be on the disk before it: ext4 may commit a directory's rename
    # before the delayed allocation of the files in it, and a crash then
    # leaves a store of empty files that dockerd refuses at every start.
    os.sync()
    os.rename(partial, os.path.join(data_root, STORE))
    return f"data root seeded from {seed}"
