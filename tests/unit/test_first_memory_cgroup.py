"""pid1.phases.mounts.make_first_memory_cgroup against a temporary root: the
first memory cgroup is made and kept (why: the mounts phase's docstring),
and a tree without a memory controller is said, not raised."""

from __future__ import annotations

import os
from pathlib import Path

from pid1.phases.mounts import FIRST_MEMORY_CGROUP, make_first_memory_cgroup


def test_v2_enables_memory_for_children_and_makes_one(tmp_path: Path) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert make_first_memory_cgroup(str(tmp_path), "v2") == "first memory cgroup made"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory"
    assert sorted(os.listdir(tmp_path)) == ["cgroup.subtree_control", FIRST_MEMORY_CGROUP]
    assert (tmp_path / FIRST_MEMORY_CGROUP).is_dir()
    assert make_first_memory_cgroup(str(tmp_path), "v2") == "first memory cgroup there already"


def test_v1_makes_it_in_the_memory_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert make_first_memory_cgroup(str(tmp_path), "v1") == "first memory cgroup made"
    assert os.listdir(tmp_path) == ["memory"]
    assert os.listdir(tmp_path / "memory") == [FIRST_MEMORY_CGROUP]


def test_no_memory_hierarchy_is_said_and_nothing_is_made(tmp_path: Path) -> None:
    detail = make_first_memory_cgroup(str(tmp_path), "v1")
    assert detail.startswith("no first memory cgroup ("), detail
    assert "No such file or directory" in detail, detail
    assert os.listdir(tmp_path) == []
