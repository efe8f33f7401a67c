"""Text that fits a terminal, and the values the view shows.

Owns cell widths (wide characters count twice, combining marks not at all),
cleaning (control characters become spaces, so a log message cannot move
the cursor or change colours), clipping with an ellipsis, padding, word
wrapping, and the formats of durations and uptime stamps. Stdlib only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

MISSING = "—"
ELLIPSIS = "…"
SEP = " · "
# What the Linux VT's built-in font can show instead of the few non-ASCII
# glyphs the view itself uses (user text is left alone).
ASCII_GLYPHS = str.maketrans({"—": "-", "…": "~", "·": "|"})
# Below U+0300 (combining marks start there) every printable character is one cell.
NARROW_BELOW = "\u0300"


def cell_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def clean(text: Any) -> str:
    """One line of printable text: control characters (escape sequences,
    tabs, newlines) become spaces."""
    text = str(text)
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)


def clip(text: str, cols: int) -> str:
    """`text` cut to at most `cols` cells, ending in an ellipsis when cut."""
    if cols <= 0:
        return ""
    narrow = not text or max(text) < NARROW_BELOW
    if narrow:
        return text if len(text) <= cols else text[: cols - 1] + ELLIPSIS
    widths = [cell_width(ch) for ch in text]
    if sum(widths) <= cols:
        return text
    out, used = [], 0
    for ch, width in zip(text, widths, strict=True):
        if used + width > cols - 1:
            break
        out.append(ch)
        used += width
    return "".join(out) + ELLIPSIS


def text_width(text: str) -> int:
    if not text or max(text) < NARROW_BELOW:
        return len(text)
    return sum(cell_width(ch) for ch in text)


def pad(text: str, width: int) -> str:
    """`text` clipped and padded to exactly `width` cells."""
    text = clip(text, width)
    return text + " " * (width - text_width(text))


def wrap_words(words: Iterable[str], cols: int, lead: str) -> list[str]:
    """`words` joined with commas into lines of at most `cols` cells, the
    first starting with `lead`, the others indented."""
    lines: list[str] = []
    current = lead
    for word in words:
        candidate = current + (", " if current != lead else "") + word
        if text_width(candidate) > cols and current != lead:
            lines.append(current + ",")
            current = "  " + word
        else:
            current = candidate
    if current != lead:
        lines.append(clip(current, cols))
    return [clip(line, cols) for line in lines]


def duration(seconds: float | None) -> str:
    """12ms, 3.4s, 12m05s, 3h02m, 2d04h."""
    if seconds is None:
        return MISSING
    s = max(float(seconds), 0.0)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def at(t: float | None) -> str:
    """An uptime stamp: 12.34."""
    return MISSING if t is None else f"{t:.2f}"


def seconds_text(s: float | None) -> str:
    """A signed offset: +0.012s."""
    return MISSING if s is None else f"{s:+.3f}s"
