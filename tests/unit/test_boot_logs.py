"""The last boots' logs in the host state: rotation keeps five, files are capped."""

from __future__ import annotations

from pathlib import Path

from pid1.boot_logs import CAPPED, CappedFile, rotate


def test_rotation_keeps_the_last_five_boots(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for boot in range(7):
        current = Path(rotate(str(logs)))
        (current / "pid1.log").write_text(f"boot {boot}\n")
    assert sorted(p.name for p in logs.iterdir()) == ["0", "1", "2", "3", "4"]
    assert [(logs / str(i) / "pid1.log").read_text() for i in range(5)] == [f"boot {b}\n" for b in (6, 5, 4, 3, 2)]


def test_a_file_stops_at_its_cap_with_one_marker(tmp_path: Path) -> None:
    path = tmp_path / "dockerd.log"
    file = CappedFile(str(path), cap=100)
    for _ in range(50):
        file.write("0123456789\n")
    file.close()
    text = path.read_text()
    assert text.endswith(CAPPED) and text.count(CAPPED) == 1
    assert len(text) <= 100 + len(CAPPED)
    again = CappedFile(str(path), cap=100)  # reopened (a phase retried): still capped
    again.write("more\n")
    again.close()
    assert path.read_text() == text
