"""The docker seed (image/docker_seed.py, pid1/docker_seed.py) against a real
dockerd: its files are what dockerd writes for a `docker load` of the same
tarball, a seeded data root has the bundled images when dockerd answers (the
images phase loads nothing), they run and `docker save` rebuilds their layer
(dockerd checks it against the diff ID), and a data root dockerd has used is
never seeded again.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

BOOT_TIMEOUT = 120
STORE = Path("image/overlay2")


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, link target) for everything under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size, os.readlink(path) if path.is_symlink() else "")
    return found


def layer_records(data_root: Path) -> dict[str, tuple[Path, Path]]:
    """diff ID -> (layerdb record, overlay2 layer directory) of each layer in the store (one per image)."""
    found = {}
    for record in (data_root / STORE / "layerdb/sha256").iterdir():
        found[record.name] = (record, data_root / "overlay2" / (record / "cache-id").read_text())
    return found


def test_the_seed_is_what_dockerd_writes_for_docker_load(start_system, bundled_images_dir: Path, docker_seed_dir: Path):
    system = start_system(phases="dockerd")
    system.run.wait_phase("dockerd", timeout=BOOT_TIMEOUT)
    for tarball in ("busybox.tar", "dom0.tar"):
        system.docker("load", "-i", str(bundled_images_dir / tarball))
    data = system.workdir / "data"
    loaded_records, seeded_records = layer_records(data), layer_records(docker_seed_dir)
    assert sorted(loaded_records) == sorted(seeded_records) and len(seeded_records) == 2, "the same diff IDs"
    for diff_id, (seeded, seeded_layer) in seeded_records.items():
        loaded, loaded_layer = loaded_records[diff_id]
        for name in ("diff", "size"):
            assert (seeded / name).read_text() == (loaded / name).read_text(), name
        tar_split = gzip.decompress((seeded / "tar-split.json.gz").read_bytes())
        assert tar_split == gzip.decompress((loaded / "tar-split.json.gz").read_bytes())
        assert tree(seeded_layer / "diff") == tree(loaded_layer / "diff")
        assert len((seeded_layer / "link").read_text()) == len((loaded_layer / "link").read_text()) == 26
    repositories = STORE / "repositories.json"
    assert (docker_seed_dir / repositories).read_text() == (data / repositories).read_text()
    content = "imagedb/content/sha256"
    assert sorted(os.listdir(docker_seed_dir / STORE / content)) == sorted(os.listdir(data / STORE / content))


def test_a_seeded_boot_has_the_images_and_they_work(start_system, docker_seed_dir: Path, tmp_path: Path):
    system = start_system(f"pid1.docker_seed={docker_seed_dir}")
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    state = system.run.state()
    assert f"data root seeded from {docker_seed_dir}" in state["phases"]["dockerd"]["detail"], system.describe()
    images = state["phases"]["images"]["detail"]
    assert images == "present busybox:latest, pid1-dhcp:latest, pid1-dom0:latest", system.describe()
    system.wait_running("console")
    assert system.docker("run", "--rm", "busybox:latest", "cat", "/etc/group").startswith("root:x:0:")
    saved = tmp_path / "saved.tar"
    system.docker("save", "-o", str(saved), "pid1-dhcp:latest")  # dockerd checks the rebuilt layer's digest
    with tarfile.open(saved) as tar:
        assert any(name.endswith("/layer.tar") for name in tar.getnames())
    # A data root dockerd has used is never seeded again: the images phase
    # puts back only the tag that went missing, and busybox:latest stays put.
    busybox = system.docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip()
    system.docker("rmi", "pid1-dhcp:latest")
    system.run.stop()
    again = start_system(f"pid1.docker_seed={docker_seed_dir}", workdir=system.workdir)
    again.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    state = again.run.state()
    assert "seeded" not in state["phases"]["dockerd"]["detail"], again.describe()
    images = state["phases"]["images"]["detail"]
    assert images == "loaded pid1-dhcp:latest; present busybox:latest, pid1-dom0:latest", again.describe()
    assert again.docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip() == busybox


def test_without_a_seed_the_images_phase_puts_them_in(start_system):
    """The negative control: the same boot with no seed imports the tarball."""
    system = start_system("pid1.docker_seed=")
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    state = system.run.state()
    assert "seeded" not in state["phases"]["dockerd"]["detail"], system.describe()
    assert "loaded busybox:latest, pid1-dhcp:latest" in state["phases"]["images"]["detail"], system.describe()
