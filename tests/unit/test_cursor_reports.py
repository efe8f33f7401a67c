"""pid1 answers cursor position queries (ESC[6n) itself, from the output it
relays (pid1.cursor): the terminals never see a query, so no answer of
theirs can arrive late and land in a command's output."""

from __future__ import annotations

import pytest

from pid1.cursor import LINE_TRANSIT_SECONDS, MAX_UNECHOED, QUERY, CursorTracker, UnechoedLines


def relayed(*chunks: bytes, rows: int = 25, columns: int = 80) -> tuple[bytes, list[bytes], CursorTracker]:
    tracker = CursorTracker(rows, columns)
    out = b""
    reports: list[bytes] = []
    for chunk in chunks:
        data, found = tracker.relay(chunk)
        out += data
        reports += [query.report for query in found]
    return out, reports, tracker


def test_the_query_after_a_prompt_is_answered_with_the_prompt_column_and_never_forwarded() -> None:
    out, reports, _ = relayed(b"\r\n/ # " + QUERY)
    assert out == b"\r\n/ # "
    assert reports == [b"\x1b[2;5R"]


def test_a_query_split_across_reads_is_held_back_then_answered() -> None:
    for cut in (1, 2, 3):
        tracker = CursorTracker()
        first, reports = tracker.relay(b"ab" + QUERY[:cut])
        assert (first, reports) == (b"ab", [])
        assert tracker.holds_output()
        rest, queries = tracker.relay(QUERY[cut:] + b"cd")
        assert rest == b"cd" and [(q.at, q.report) for q in queries] == [(0, b"\x1b[1;3R")], cut


def test_held_bytes_that_were_no_query_are_released_and_tracked() -> None:
    tracker = CursorTracker()
    assert tracker.relay(b"x\x1b[") == (b"x", [])
    assert tracker.relay(b"2Cy") == (b"\x1b[2Cy", [])
    assert tracker.report() == b"\x1b[1;5R"
    assert tracker.relay(b"\x1b") == (b"", [])
    assert tracker.take_held() == b"\x1b" and not tracker.holds_output()


def test_each_query_gets_the_position_where_it_was_asked() -> None:
    _, reports, _ = relayed(b"12" + QUERY + b"\r\n345" + QUERY)
    assert reports == [b"\x1b[1;3R", b"\x1b[2;4R"]


def test_each_query_says_where_in_the_output_it_was() -> None:
    out, queries = CursorTracker().relay(b"12" + QUERY + b"\r\n345" + QUERY + b"6")
    assert out == b"12\r\n3456"
    assert [q.at for q in queries] == [2, 7]


def test_a_typed_line_is_on_its_way_until_its_own_echo_and_a_new_line_come_back() -> None:
    lines = UnechoedLines()
    lines.received(b"one-2\r\n/ # ")
    assert not lines.on_their_way(now=0)  # nothing typed: nothing to wait for
    lines.sent(b"cat /proc/cmdline\r", now=0)
    lines.received(b"\r\n")  # the end of the last command's output, read after the line went
    lines.received(b"/ # ")  # the prompt the shell printed before the line reached it
    assert lines.on_their_way(now=0)
    lines.received(b"cat /proc/cm")  # the echo, in two reads
    assert lines.on_their_way(now=0)
    lines.received(b"dline\r\n")
    assert not lines.on_their_way(now=0)


def test_a_banner_printed_before_the_line_reached_the_shell_is_not_its_echo() -> None:
    # A line typed as soon as the console starts, before busybox sh's first prompt (the VM
    # harness's first command; `^[[6;5R` in the output of `cat /proc/cmdline` on the 512 MiB ISO boot).
    lines = UnechoedLines()
    lines.sent(b"echo BEGIN1; cat /proc/cmdline; echo END1\n", now=0)
    lines.received(b"\r\n\r\nBusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)\r\n")
    lines.received(b"Enter 'help' for a list of built-in commands.\r\n\r\n/ # ")
    assert lines.on_their_way(now=0.5)
    lines.received(b"echo BEGIN1; cat /proc/cmdline; echo END1\r\n")
    assert not lines.on_their_way(now=0.5)


def test_the_echo_is_recognised_through_a_wrap_a_completion_and_an_erase() -> None:
    lines = UnechoedLines()
    # busybox ash wraps a long line at the last column with CR CR LF: not yet the line's end
    lines.sent(b"echo " + b"x" * 80 + b"-end\r", now=0)
    lines.received(b"echo " + b"x" * 71 + b"\r\r\n")
    assert lines.on_their_way(now=0)
    lines.received(b"x" * 9 + b"-end\r\n")
    assert not lines.on_their_way(now=0)
    # a tab completed: the editor redraws the line with more than was typed
    lines.sent(b"ls /pr\t\r", now=0)
    lines.received(b"ls /pr\r/ # ls /proc/\x1b[J\r\n")
    assert not lines.on_their_way(now=0)
    # typed a key at a time, the characters echoed as they come, one erased
    lines.sent(b"l", now=0)
    lines.received(b"l")
    lines.sent(b"x\x7f", now=0)
    lines.received(b"x\b \b")
    lines.sent(b"s", now=0)
    lines.received(b"s")
    lines.sent(b"\r", now=0)
    assert lines.on_their_way(now=0)
    lines.received(b"\r\n")
    assert not lines.on_their_way(now=0)


def test_lines_typed_ahead_each_wait_for_their_own_echo() -> None:
    lines = UnechoedLines()
    lines.sent(b"sleep 1; echo two\recho three\r", now=0)
    lines.received(b"sleep 1; echo two\r\n")
    assert lines.on_their_way(now=0)
    lines.received(b"two\r\n")  # the first line's output: not the second one's echo
    assert lines.on_their_way(now=0)
    lines.received(b"/ # echo three\r\n")
    assert not lines.on_their_way(now=0)
    lines.sent(b"a\r\nb\n", now=0)  # CR LF is one line end
    assert lines.count == 2


def test_a_line_whose_echo_never_shows_stops_counting_once_it_must_have_arrived() -> None:
    lines = UnechoedLines()
    lines.sent(b"secret\r", now=10)  # echo off: a password
    lines.received(b"\r\nwelcome\r\n/ # ")
    assert lines.on_their_way(now=10 + LINE_TRANSIT_SECONDS - 0.1)
    assert not lines.on_their_way(now=10 + LINE_TRANSIT_SECONDS + 0.1)
    lines.sent(b"\x1b[A\r", now=20)  # a line from history: no typed text, its echo is the next new line
    lines.received(b"/ # ")
    assert lines.on_their_way(now=20)
    lines.received(b"secret\r\n")
    assert not lines.on_their_way(now=20)


def test_lines_typed_ahead_are_counted_up_to_a_bound() -> None:
    lines = UnechoedLines()
    lines.sent(b"\r" * 1000, now=0)
    assert lines.count == MAX_UNECHOED
    lines.received(b"x\n" * 64)
    assert not lines.on_their_way(now=0)


def test_busybox_resize_asks_from_the_far_corner_and_learns_the_size() -> None:
    # busybox `resize` (and vi): save, reset the scrolling region, go to 999;999, ask.
    out, reports, _ = relayed(b"\x1b7\x1b[r\x1b[999;999H" + QUERY + b"\x1b8", rows=30, columns=100)
    assert reports == [b"\x1b[30;100R"]
    assert QUERY not in out


@pytest.mark.parametrize(
    ("output", "row", "column"),
    [
        (b"a" * 80, 1, 80),  # the last column is written: the wrap waits for the next character
        (b"a" * 81, 2, 2),
        (b"a" * 80 + b"\r", 1, 1),
        (b"a" * 200, 3, 41),
        (b"\n" * 40, 25, 1),  # the screen scrolls at the bottom
        (b"ab\bc\tx", 1, 10),
        ("é€ok".encode(), 1, 5),  # continuation bytes take no cell
        (b"\x1b[1;31mred\x1b[0m\x1b[K", 1, 4),  # colours and erasing do not move it
        (b"\x1b]0;title\x07ab", 1, 3),  # a window title takes no cell
        (b"\x1b[10;20H\x1b[3A\x1b[2D\x1b[5C", 7, 23),
        (b"\x1b[5;5H\x1b[s\x1b[1;1H\x1b[u", 5, 5),
        (b"\x1b[?25l\x1b[?1049h", 1, 1),  # private modes: no movement
        (b"\x1b[999;999H", 25, 80),
    ],
)
def test_the_model_moves_the_cursor_as_a_vt_does(output: bytes, row: int, column: int) -> None:
    _, _, tracker = relayed(output)
    assert (tracker.row, tracker.column) == (row, column)


def test_a_sequence_cut_between_reads_is_tracked_as_one() -> None:
    _, _, tracker = relayed(b"\x1b[1", b"0;2", b"0H")
    assert (tracker.row, tracker.column) == (10, 20)
