"""The kernel's device events (uevents, "ACTION@DEVPATH\\0KEY=VALUE\\0..."),
from its netlink socket as udev receives them: the one socket for every part
of pid1 that waits on devices (the storage phase's late and removed disks,
the modules phase's devices added by new drivers).

Owns: UeventSocket (open, read every queued message, note lost ones).
May use: the standard library's socket; what a message means is its readers'
business (pid1.blockdev, pid1.kmod.coldplug).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

NETLINK_KOBJECT_UEVENT = 15
UEVENT_KERNEL_GROUP = 1
MAX_MESSAGE = 65536


class UeventSocket:
    """A non-blocking socket of uevents. `sock` is the kernel's netlink
    socket from `open()`, or any datagram socket carrying messages in the
    kernel's format (tests)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def open(cls, receive_buffer: int = 0) -> UeventSocket:
        """The kernel's uevent multicast group; `receive_buffer` (bytes, 0:
        the default) makes room for bursts. OSError where uevents cannot be
        had (no netlink, no permission)."""
        import socket  # here: the modprobe command line imports this module and never opens one

        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT
        )
        try:
            if receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind((0, UEVENT_KERNEL_GROUP))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> tuple[list[bytes], bool]:
        """Every message queued now, in order, and whether some were lost
        (the queue overflowed: ENOBUFS) since the last read."""
        messages: list[bytes] = []
        lost = False
        while True:
            try:
                messages.append(self.sock.recv(MAX_MESSAGE))
            except BlockingIOError:
                return messages, lost
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True

    def close(self) -> None:
        self.sock.close()
