"""The console bridge lets one cursor position report through per query: a
shell (busybox ash, at each prompt) asks with ESC[6n, every bridged terminal
(the serial line's and VT1) answers, and an answer beyond the first would
reach the shell as typed text."""

from __future__ import annotations

from pid1.console import keep_answered_reports


def test_the_first_answer_passes_and_a_second_is_dropped() -> None:
    assert keep_answered_reports(b"\x1b[25;5R", 1) == (b"\x1b[25;5R", 0)
    assert keep_answered_reports(b"\x1b[24;3R", 0) == (b"", 0)


def test_typed_text_around_an_unwanted_report_is_kept() -> None:
    assert keep_answered_reports(b"ls\x1b[25;5R -l\r", 0) == (b"ls -l\r", 0)
    assert keep_answered_reports(b"\x1b[25;5R\x1b[24;3R", 1) == (b"\x1b[25;5R", 0)


def test_other_escape_sequences_are_not_reports() -> None:
    for keys in (b"\x1b[A", b"\x1b[1;5C", b"\x1b[3~", b"\x1b[25;5Rx"[:4], b"plain"):
        assert keep_answered_reports(keys, 0) == (keys, 0)
