"""pid1/docker_seed.py against temporary directories: which data roots are
seeded, what the copy keeps, and a copy cut short."""

from __future__ import annotations

import os
from pathlib import Path

from pid1.docker_seed import PARTIAL, seed_data_root


def make_seed(root: Path) -> Path:
    seed = root / "seed"
    (seed / "image/overlay2/layerdb").mkdir(parents=True)
    (seed / "image/overlay2/repositories.json").write_text("{}")
    (seed / "overlay2/abc/diff/bin").mkdir(parents=True)
    (seed / "overlay2/abc/diff/bin/busybox").write_text("#!")
    os.chmod(seed / "overlay2/abc/diff/bin/busybox", 0o755)
    os.chmod(seed / "overlay2/abc", 0o710)
    (seed / "overlay2/l").mkdir()
    os.symlink("../abc/diff", seed / "overlay2/l/LINK")
    return seed


def test_an_empty_data_root_gets_the_seed(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o710)
    assert seed_data_root(str(seed), str(data), "overlay2") == f"data root seeded from {seed}"
    assert (data / "image/overlay2/repositories.json").read_text() == "{}"
    assert os.readlink(data / "overlay2/l/LINK") == "../abc/diff"
    assert (data / "overlay2/l/LINK/bin/busybox").read_text() == "#!"
    assert os.stat(data / "overlay2/abc/diff/bin/busybox").st_mode & 0o777 == 0o755
    assert os.stat(data / "overlay2/abc").st_mode & 0o777 == 0o710
    assert os.stat(data).st_mode & 0o777 == 0o710, "the data root's own mode is dockerd's business"
    assert not (data / PARTIAL).exists()


def test_a_used_data_root_another_driver_or_no_seed_is_left_alone(tmp_path: Path) -> None:
    seed = make_seed(tmp_path)
    used = tmp_path / "used"
    (used / "image").mkdir(parents=True)
    assert seed_data_root(str(seed), str(used), "overlay2") is None
    assert os.listdir(used) == ["image"]
    fresh = tmp_path / "fresh"
    assert seed_data_root(str(seed), str(fresh), "vfs") is None
    assert seed_data_root(str(seed), str(fresh), None) is None, "driver chosen by pid1.dockerd_args"
    assert seed_data_root("", str(fresh), "overlay2") is None
    assert seed_data_root(str(tmp_path / "missing"), str(fresh), "overlay2") is None
    assert not fresh.exists()


def test_a_copy_cut_short_is_seeded_again(tmp_path: Path) -> None:
    """A crash mid-copy leaves the layer files and a partial store under
    another name, never `image`: the next boot seeds over them."""
    seed = make_seed(tmp_path)
    data = tmp_path / "data"
    (data / PARTIAL / "half").mkdir(parents=True)
    (data / "overlay2/abc/diff").mkdir(parents=True)
    assert seed_data_root(str(seed), str(data), "overlay2") is not None
    assert sorted(os.listdir(data)) == ["image", "overlay2"]
    assert not (data / "image/half").exists()
