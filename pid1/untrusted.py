"""Reading files that a container can write (the dhcp client's lease directory).

Such a path may be anything by the time pid1 reads it: a FIFO, whose open
blocks until a writer comes (PID 1's loop would freeze); a symlink to
/dev/zero or to a file elsewhere; a huge file. So the open never blocks
(O_NONBLOCK), follows no link (O_NOFOLLOW), only a regular file is read
(fstat), and the read is bounded. Anything else is an OSError saying what.
"""

from __future__ import annotations

import errno
import os
import stat


def read_untrusted(path: str, limit: int) -> bytes:
    """The content of the regular file at `path`, at most `limit` bytes;
    OSError when it is something else, or larger."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed", path) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file (mode {stat.filemode(mode)})", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    finally:
        os.close(fd)
