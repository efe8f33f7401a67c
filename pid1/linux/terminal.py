"""A terminal pid1 opens: never as its controlling terminal, non-blocking,
in one of two modes, with its size and the settings to put back.

- RAW (the console bridge): cfmakeraw(3) with ISIG off, so Ctrl-C, Ctrl-Z,
  Ctrl-D and Ctrl-\\ are plain bytes passed on, never signals for pid1. A
  terminal whose settings cannot be read or set is refused (OSError).
- VIEW (the VT2 view): echo and line editing off, so keys typed on it do not
  scribble over what pid1 draws; a terminal that refuses that is still used.

Owns: Tty (open, size, restore, close), the two modes' attribute changes,
where a terminal name points.
May use: the standard library and pid1.linux.syscalls (the size ioctl).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import termios
from dataclasses import dataclass
from typing import Any

from pid1.linux import syscalls


class TerminalMode(enum.Enum):
    RAW = "raw"
    VIEW = "view"


def raw_mode(attrs: list[Any]) -> list[Any]:
    """cfmakeraw(3) of tcgetattr() attributes: no echo, no line editing, no
    signal characters (ISIG off), no output post-processing, 8-bit bytes,
    reads return as soon as one byte is there."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
        | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
    )  # fmt: skip
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8
    cc = list(cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


def view_mode(attrs: list[Any]) -> list[Any]:
    """Echo and line editing off; output processing (\\n -> \\r\\n) kept."""
    changed = list(attrs)
    changed[3] &= ~(termios.ECHO | termios.ICANON)
    return changed


MODES = {TerminalMode.RAW: raw_mode, TerminalMode.VIEW: view_mode}


def terminal_path(name: str, root: str = "/") -> str:
    """`ttyS0` -> <root>/dev/ttyS0; a full path (`/dev/pts/3`) is taken as it is."""
    if name.startswith("/"):
        return name
    return root.rstrip("/") + "/dev/" + name


@dataclass
class Tty:
    """An open terminal and the settings it had before pid1 changed them
    (None: they could not be read, nothing to put back)."""

    path: str
    fd: int
    saved: list[Any] | None

    def size(self) -> tuple[int, int]:
        """(rows, columns); (0, 0) when the terminal does not know (serial)."""
        try:
            return syscalls.get_window_size(self.fd)
        except OSError:
            return (0, 0)

    def restore(self) -> None:
        """Put back the settings the terminal had before pid1 opened it."""
        if self.saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_tty(path: str, mode: TerminalMode) -> Tty:
    """Open `path` O_NOCTTY (never pid1's controlling terminal), non-blocking,
    close-on-exec, and put it in `mode`. Raises OSError if it cannot be opened,
    is not a terminal, or (RAW) its settings cannot be changed."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    saved = None
    try:
        if not os.isatty(fd):
            raise OSError(errno.ENOTTY, f"{path} is not a terminal")
        try:
            saved = termios.tcgetattr(fd)
            termios.tcsetattr(fd, termios.TCSANOW, MODES[mode](saved))
        except termios.error as exc:
            if mode is TerminalMode.RAW:
                code, message = exc.args if len(exc.args) == 2 else (errno.EIO, str(exc))
                raise OSError(code, f"{path}: {message}") from None
            saved = None  # the view still works with echo on
    except BaseException:
        os.close(fd)
        raise
    return Tty(path=path, fd=fd, saved=saved)
