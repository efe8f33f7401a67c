"""Seeds a Docker data root dockerd has never used with the image store the
initrd carries (image/docker_seed.py builds it: the bundled images as a
`docker load` leaves them in dockerd 20.10's overlay2 store).

The dockerd phase calls seed_data_root before dockerd's first start. A RAM
boot, or a boot on a new disk, then has the bundled images when dockerd
answers, and the images phase finds them present instead of importing
them (each import makes dockerd re-execute itself: seconds under
emulation). Only an empty data root is seeded, one with no `image`
directory: a store dockerd has written is never touched. The `image`
directory is copied under a temporary name and renamed last, so a copy cut
short (a crash) leaves no half store that dockerd would read; the next boot
seeds again over the leftovers.
"""

from __future__ import annotations

import os
import shutil

STORE = "image"  # what dockerd creates in its data root before anything else is written
PARTIAL = ".pid1-seed-image"


def seed_data_root(seed: str, data_root: str, driver: str | None) -> str | None:
    """Copy `seed` into `data_root` when it can be used there; returns what
    was done, or None when there was nothing to do (no seed for this storage
    driver, or a data root dockerd has used)."""
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
        if os.path.isdir(source):
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)
    shutil.copytree(os.path.join(seed, STORE), partial, symlinks=True)
    os.rename(partial, os.path.join(data_root, STORE))
    return f"data root seeded from {seed}"
