"""The clock's client: SNTP (RFC 4330) against the configured servers, run by
the `ntp` system container as `python -m pid1.sntp`.

Why not busybox ntpd: Debian's busybox builds (busybox and busybox-static,
which the bundled image is made of) leave the ntpd applet out, and every NTP
daemon Debian has would add its own libraries to the image. pid1's Python is
in the image already: the container gets it bound in read-only (see
pid1.phases.ntp) and runs this module with only CAP_SYS_TIME.

Each round asks every address of every server once (one UDP request each,
bounded in time), keeps the answers that pass the checks (a server reply to
our request: our random transmit stamp echoed, stratum 1-15, not
"unsynchronised", a sane delay and root distance) and takes the one with the
smallest round-trip delay. Then, unless `--query-only`:
an offset above STEP_THRESHOLD steps the clock (clock_settime), a smaller one
is slewed (adjtime), as ntpd does. The round's outcome goes to
`<status dir>/status` (JSON, replaced atomically) and a word ("sync",
"unsync") to the FIFO `<status dir>/events`, which pid1 reads; pid1 treats
both as hostile (a container wrote them). Rounds repeat every POLL_FIRST
seconds doubling to POLL_MAX while synced, every RETRY_FIRST doubling to
RETRY_MAX while not (pid1.backoff). Standard library and pid1.backoff only:
this runs in a container, with the pid1 package bound in.

Owns: the SNTP client (request, reply checks, the rounds, the status file).
May use: the standard library, pid1.backoff and pid1.linux.syscalls.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import socket
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from pid1.backoff import Backoff

NTP_PORT = 123
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP's epoch) to 1970-01-01
PACKET = struct.Struct("!BBbbII4sQQQQ")  # RFC 4330 section 4, without the optional fields
REQUEST_TIMEOUT = 1.5  # per address
MAX_ADDRESSES = 4  # per server name (a pool name resolves to many)
MAX_DELAY = 5.0  # a round trip longer than this says nothing useful about the offset
MAX_ROOT_DISTANCE = 1.5  # seconds, as ntpd and chrony bound it
STEP_THRESHOLD = 0.5  # above: step; below: slew (ntpd's is 0.128 s; slewing 0.5 s at 500 ppm takes ~17 min)
POLL_FIRST, POLL_MAX = 64.0, 1024.0
RETRY_FIRST, RETRY_MAX = 2.0, 64.0
STATUS_NAME = "status"
EVENTS_NAME = "events"


class BadReply(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    server: str  # the name asked for
    address: str
    offset: float  # seconds to add to the local clock
    delay: float
    stratum: int


def to_ntp(seconds: float) -> int:
    """A Unix time as a 64-bit NTP timestamp."""
    return int((seconds + NTP_EPOCH_OFFSET) * 2**32) & (2**64 - 1)


def from_ntp(stamp: int) -> float:
    """A 64-bit NTP timestamp as a Unix time (era 0; good until 2036)."""
    return stamp / 2**32 - NTP_EPOCH_OFFSET


def request(cookie: int) -> bytes:
    """A client request (version 4, mode 3). Its transmit stamp is a random
    cookie, not our clock: the reply must echo it (RFC 4330 section 5), which
    off-path spoofing cannot guess, and our time is not told to the network."""
    return PACKET.pack((0 << 6) | (4 << 3) | 3, 0, 0, 0, 0, 0, b"\0" * 4, 0, 0, 0, cookie)


def parse_reply(data: bytes, cookie: int, sent: float, received: float) -> tuple[float, float, int]:
    """(offset, delay, stratum) of a server's reply; BadReply says why not.
    `sent` and `received` are the local clock at the request and the reply."""
    if len(data) < PACKET.size:
        raise BadReply(f"{len(data)} bytes, shorter than an NTP packet")
    flags, stratum, _poll, _precision, root_delay, root_dispersion, _ref_id, _ref, origin, rx, tx = PACKET.unpack_from(
        data
    )
    leap, version, mode = flags >> 6, (flags >> 3) & 7, flags & 7
    if mode != 4:
        raise BadReply(f"mode {mode}, not a server reply")
    if version not in (3, 4):
        raise BadReply(f"NTP version {version}")
    if origin != cookie:
        raise BadReply("not an answer to our request (origin stamp)")
    if stratum == 0:
        raise BadReply("kiss-o'-death (stratum 0)")
    if stratum > 15:
        raise BadReply(f"stratum {stratum}: the server is not synchronised")
    if leap == 3:
        raise BadReply("the server says its clock is not synchronised (leap 3)")
    if rx == 0 or tx == 0:
        raise BadReply("no receive or transmit time")
    t2, t3 = from_ntp(rx), from_ntp(tx)
    delay = (received - sent) - (t3 - t2)
    if not 0 <= delay <= MAX_DELAY:
        raise BadReply(f"round-trip delay {delay:.3f} s")
    distance = (root_delay / 2**16) / 2 + root_dispersion / 2**16
    if distance > MAX_ROOT_DISTANCE:
        raise BadReply(f"root distance {distance:.2f} s")
    offset = ((t2 - sent) + (t3 - received)) / 2
    return offset, delay, stratum


def addresses(server: str) -> list[tuple[int, tuple]]:
    """(family, sockaddr) of the server's first addresses; [] when it does not resolve."""
    try:
        found = socket.getaddrinfo(server, NTP_PORT, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    except (OSError, UnicodeError):
        return []
    unique = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    return unique[:MAX_ADDRESSES]


def ask(server: str, family: int, address: tuple, timeout: float = REQUEST_TIMEOUT) -> Sample:
    cookie = secrets.randbits(64)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(address)  # replies from anyone else are not delivered
        sent = time.time()
        sock.send(request(cookie))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise BadReply(f"no answer within {timeout:g} s")
            try:
                data = sock.recv(512)
            except OSError as exc:  # ICMP port unreachable and the like
                raise BadReply(exc.strerror or str(exc)) from None
            received = time.time()
            try:
                offset, delay, stratum = parse_reply(data, cookie, sent, received)
            except BadReply as exc:
                if "origin stamp" in str(exc):
                    continue  # a late answer to an earlier request: wait for ours
                raise
            return Sample(server=server, address=address[0], offset=offset, delay=delay, stratum=stratum)


def best_sample(servers: Iterable[str]) -> tuple[Sample | None, list[str]]:
    """The answer with the smallest delay, and why the others were not taken."""
    samples: list[Sample] = []
    problems: list[str] = []
    for server in servers:
        found = addresses(server)
        if not found:
            problems.append(f"{server}: does not resolve")
        for family, address in found:
            try:
                samples.append(ask(server, family, address))
            except (BadReply, OSError) as exc:
                problems.append(f"{server} ({address[0]}): {exc}")
    return (min(samples, key=lambda s: s.delay) if samples else None), problems


@dataclass
class Status:
    """What the status file says (pid1.phases.ntp reads it, bounded)."""

    synced: bool = False
    mode: str = "set"  # "set" (steps and slews the clock) or "query" (only measures)
    server: str | None = None
    address: str | None = None
    offset: float | None = None  # seconds the clock was off at the last answer
    delay: float | None = None
    stratum: int | None = None
    stepped: float | None = None  # the last step, in seconds (set mode)
    steps: int = 0
    poll: float = 0.0  # seconds to the next round
    checked: float = 0.0  # wall clock of the last round (after any step)
    error: str | None = None


def adjust(offset: float) -> float | None:
    """Correct the clock by `offset`; the step taken, or None for a slew."""
    from pid1.linux import syscalls

    if abs(offset) > STEP_THRESHOLD:
        syscalls.set_realtime(time.time() + offset)
        return offset
    syscalls.adjtime(offset)
    return None


def write_status(directory: str, status: Status) -> None:
    path = os.path.join(directory, STATUS_NAME)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(status), f)
    os.replace(tmp, path)


def notify(directory: str, word: str) -> None:
    """A word to pid1's FIFO; never blocks (pid1 holds the FIFO open, and
    without a reader the open fails at once with ENXIO)."""
    try:
        fd = os.open(os.path.join(directory, EVENTS_NAME), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"{word}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def one_round(servers: list[str], status: Status, query_only: bool) -> None:
    sample, problems = best_sample(servers)
    if sample is None:
        status.synced = False
        status.error = "; ".join(problems)[:1000] or "no server"
        return
    status.synced, status.error = True, None
    status.server, status.address, status.delay, status.stratum = (
        sample.server, sample.address, round(sample.delay, 6), sample.stratum,
    )  # fmt: skip
    status.offset = round(sample.offset, 6)
    if not query_only:
        step = adjust(sample.offset)
        if step is not None:
            status.stepped, status.steps = round(step, 6), status.steps + 1


def run(servers: list[str], directory: str, query_only: bool) -> None:
    status = Status(mode="query" if query_only else "set")
    poll, retry = Backoff(POLL_FIRST, POLL_MAX), Backoff(RETRY_FIRST, RETRY_MAX)
    while True:
        try:
            one_round(servers, status, query_only)
        except OSError as exc:  # the clock could not be set (no CAP_SYS_TIME?): say so, try again
            status.synced, status.error = False, f"cannot set the clock: {exc.strerror or exc}"
        if status.synced:
            wait = poll.next()
            retry.reset()
            if abs(status.offset or 0) >= STEP_THRESHOLD:
                poll.reset()  # the clock was stepped: check it again soon
        else:
            wait = retry.next()
            poll.reset()
        status.poll, status.checked = wait, time.time()
        write_status(directory, status)
        notify(directory, "sync" if status.synced else "unsync")
        print(
            f"sntp: {'synced to ' + str(status.address) if status.synced else 'not synced: ' + str(status.error)}"
            + (f", offset {status.offset:+.3f} s" if status.synced else "")
            + f"; next round in {wait:.0f} s",
            flush=True,
        )
        time.sleep(wait)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pid1.sntp", description=__doc__.splitlines()[0])
    parser.add_argument("--status-dir", required=True)
    parser.add_argument("--query-only", action="store_true", help="measure the offset, never set the clock")
    parser.add_argument("servers", nargs="+")
    args = parser.parse_args(argv)
    run(args.servers, args.status_dir, args.query_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
