"""A small SNTP server for the clock tests: it answers every request with
this machine's time plus a fixed offset (busybox ntpd serves only the local
clock, and no test may change that). Run in a network namespace the test
made, or on 127.0.0.1 for a VM (the guest reaches it as 10.0.2.2):

    python -m devtools.sntp_server ADDRESS OFFSET_SECONDS [PORT]
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

PACKET = struct.Struct("!BBbbII4sQQQQ")
NTP_EPOCH_OFFSET = 2208988800


def ntp_stamp(seconds: float) -> int:
    return int((seconds + NTP_EPOCH_OFFSET) * 2**32) & (2**64 - 1)


def reply(request: bytes, offset: float, received: float) -> bytes | None:
    if len(request) < PACKET.size:
        return None
    flags, *_, transmit = PACKET.unpack_from(request)
    version = (flags >> 3) & 7 or 4
    now = time.time() + offset
    return PACKET.pack(
        (0 << 6) | (version << 3) | 4, 2, 6, -20, 0, 1 << 10, b"TEST",
        ntp_stamp(now - 16), transmit, ntp_stamp(received + offset), ntp_stamp(now),
    )  # fmt: skip


class SntpServer:
    """Serves on (address, port) in a thread until close(); counts requests."""

    def __init__(self, address: str, offset: float, port: int = 123) -> None:
        self.offset = offset
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = reply(data, self.offset, time.time())
            if answer is not None:
                self.requests += 1
                self.sock.sendto(answer, peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


def main(argv: list[str]) -> int:
    server = SntpServer(argv[0], float(argv[1]), int(argv[2]) if len(argv) > 2 else 123)
    print(f"sntp_server: {argv[0]}:{server.sock.getsockname()[1]}, offset {server.offset:+g} s", flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
