"""The console log level (pid1.linux.procfs, set by pid1/phases/console_log.py) against a temporary
printk file (the kernel keeps the three other fields when one number is
written; a plain file just holds that number), and the pid1.console_log key."""

from __future__ import annotations

from pathlib import Path

from pid1.config import parse_cmdline
from pid1.linux.procfs import ConsoleLevel
from pid1.phases.console_log import QUIET_LEVEL


def printk(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "printk"
    path.write_text(text)
    return path


def test_lowered_to_errors_only_and_put_back(tmp_path: Path) -> None:
    path = printk(tmp_path, "7\t4\t1\t7\n")
    level = ConsoleLevel(str(path))
    assert level.lower(QUIET_LEVEL) == 7
    assert level.read() == QUIET_LEVEL == 4
    level.restore()
    assert level.read() == 7
    level.restore()  # a second stop request changes nothing
    assert level.read() == 7


def test_a_quieter_console_is_not_made_louder(tmp_path: Path) -> None:
    path = printk(tmp_path, "3 4 1 7\n")  # booted with loglevel=3
    level = ConsoleLevel(str(path))
    assert level.lower(QUIET_LEVEL) == 3 and level.saved is None
    level.restore()
    assert level.read() == 3


def test_console_log_key() -> None:
    assert parse_cmdline("")[0].console_log == "quiet"
    config, warnings = parse_cmdline("pid1.console_log=all")
    assert config.console_log == "all" and not warnings
    config, warnings = parse_cmdline("pid1.console_log=loud")
    assert config.console_log == "quiet"
    assert any("pid1.console_log" in w and "loud" in w and "quiet" in w for w in warnings), warnings
