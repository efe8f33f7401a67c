"""`python -m pid1 status`: the view once, on stdout.

Owns the command's choices: the terminal's size on a terminal, the long
form otherwise, the moment to show a file from another boot at, and exit
code 2 with one line on stderr for a file that cannot be shown. Uses
pid1.view.statefile and pid1.view.render.
"""

from __future__ import annotations

import os
import shutil
import sys

from pid1.state import uptime
from pid1.view.render import render, render_long
from pid1.view.statefile import StateFileError, load_state


def status_main(state_path: str, rows: int | None, cols: int | None, long: bool) -> int:
    """The view of the state file at `state_path`. Exit 2 on a bad file."""
    try:
        state = load_state(state_path)
    except StateFileError as exc:
        print(f"pid1 status: {exc}", file=sys.stderr)
        return 2
    now = max(uptime(), state.updated)  # a file from another boot: shown as of its last write
    on_terminal = sys.stdout.isatty()
    size = shutil.get_terminal_size((80, 25))
    cols = cols or (size.columns if on_terminal else 80)
    try:
        if long or (rows is None and not on_terminal):
            lines = render_long(state, cols, now)
        else:
            lines = render(state, rows or size.lines, cols, now)
    except Exception as exc:  # a shape the decoder did not foresee: still one line
        print(f"pid1 status: {state_path}: cannot show this state: {exc!r}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `status | head`: not an error; keep exit quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
