"""The boot timeline SVG (pid1/plot.py): valid XML, one bar per started
phase placed on the time axis, milestones marked, bad files refused."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devtools import sample_states
from pid1 import plot
from pid1.state import State
from pid1.view.statefile import decode

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text.encode())
    assert root.tag == f"{SVG}svg"
    return root


def phase_bars(root: ET.Element) -> dict[str, ET.Element]:
    return {r.get("data-phase"): r for r in root.iter(f"{SVG}rect") if r.get("data-phase")}


def test_a_bar_for_each_phase_in_time_order(tmp_path: Path) -> None:
    state = sample_states.running()
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    out = tmp_path / "boot.svg"
    done = subprocess.run(
        [sys.executable, "-m", "pid1", "plot", "--state", str(path), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    root = parse(out.read_text())
    bars = phase_bars(root)
    assert set(bars) == {name for name, *_ in sample_states.BOOT}
    # x is proportional to the start, width to the duration (one scale for all)
    starts = {name: start for name, _, start, _ in sample_states.BOOT}
    tooks = {name: took for name, _, _, took in sample_states.BOOT}
    scale = (float(bars["dockerd"].get("x")) - float(bars["devices"].get("x"))) / (
        starts["dockerd"] - starts["devices"]
    )
    assert scale > 0
    for name, rect in bars.items():
        assert float(rect.get("x")) == pytest.approx(
            float(bars["devices"].get("x")) + (starts[name] - 4.10) * scale, abs=0.2
        )
        assert float(rect.get("width")) == pytest.approx(max(tooks[name] * scale, 1.0), abs=0.2)
        assert "done" in rect.get("class")
    # rows go down in start order
    ys = [float(bars[name].get("y")) for name, *_ in sorted(sample_states.BOOT, key=lambda p: (p[2], p[0]))]
    assert ys == sorted(ys)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("dockerd 4.15 s") for t in texts), texts
    for name in state["milestones"]:
        assert any(t.startswith(name) for t in texts), texts
    assert len([line for line in root.iter(f"{SVG}line") if line.get("class") == "milestone"]) == 3


def test_unfinished_and_failed_phases() -> None:
    state = sample_states.booting()
    state["phases"]["modules"].update(status="failed", error="OSError: <no such module> & more")
    state["updated"] = 7.0
    root = parse(plot.svg(decode(State, state)))
    bars = phase_bars(root)
    assert "running" in bars["dockerd"].get("class")
    assert "failed" in bars["modules"].get("class")
    assert "console" not in bars  # pending: never started, no bar
    dockerd_width = float(bars["dockerd"].get("width"))
    devices_x, dockerd_x = float(bars["devices"].get("x")), float(bars["dockerd"].get("x"))
    assert dockerd_width == pytest.approx((7.0 - 5.05) / (5.05 - 4.10) * (dockerd_x - devices_x), rel=0.01)
    tips = [t.text for r in root.iter(f"{SVG}rect") for t in r.iter(f"{SVG}title")]
    assert any("<no such module> & more" in (t or "") for t in tips)  # escaped in the file, intact when parsed


def test_odd_states_still_make_valid_svg() -> None:
    for state in ({}, {"phases": {}}, {"phases": {"x": {"started": 100000.5}}, "milestones": {"m": "bad"}}):
        parse(plot.svg(decode(State, state)))


def test_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"phases": {"devices": {"started": 4.1, "ended"')
    done = subprocess.run(
        [sys.executable, "-m", "pid1", "plot", "--state", str(path), "-o", str(tmp_path / "x.svg")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("pid1 plot: ") and done.stderr.count("\n") == 1, done.stderr
    assert "truncated" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.svg").exists()
