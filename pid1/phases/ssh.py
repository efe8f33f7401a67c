"""ssh: the way in from outside, SSH into dom0; checked and shown. Needs dom0.

The SSH server is dom0's: the bundled image pid1-dom0:latest runs dropbear
on pid1.ssh_listen (port 22 of the host network) when root has a key
(image/dom0-start). pid1 gives dom0 the host state's ssh/ directory
(authorized_keys, written by the userdata phase from the user-data's
ssh_authorized_keys and docker-machine's userdata.tar; the host key, made by
dom0 at its first start there) and the port, as PID1_SSH_LISTEN.

This phase says how it went, in the log, the state (`state.ssh`) and VT2:
- no key: no SSH server, and how to add a key;
- the server answers (its banner read on the port): milestone `ssh answers`,
  and the host key's fingerprint (SHA256, as `ssh-keygen -l` prints it),
  computed here from dom0's .pub file (dom0 writes that directory: the read
  is bounded, pid1.untrusted). pid1 keeps the fingerprint it saw last, out of
  dom0's reach, to say whether the key is the one of the earlier boots or a
  new one; from RAM it is new at each boot, and the log says so. With
  pid1.console_log=quiet the terminals no longer show pid1's log lines, so
  the fingerprint is written to them through the console bridge too;
- nothing answers within ANSWER_WAIT (OTHER_IMAGE_WAIT): "no SSH in dom0" for a dom0 image of
  the user's own, an error for the bundled one.
Optional: nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from pid1.host_state import HostState
from pid1.kmsg import LEVELS
from pid1.linux.procfs import ConsoleLevel
from pid1.phases import Phase, PhaseContext
from pid1.state_schema import SshState, SshStatus
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.ssh_keys import PublicKey

DOM0_SSH_IMAGE = "pid1-dom0:latest"  # image/bundled_images.py's DOM0_TAG
IN_DOM0 = "/var/lib/only-docker/ssh"  # image/dom0-start's $SSH
HOST_KEY_PUBS = ("dropbear_ed25519_host_key.pub",)
SEEN = "ssh-host-keys"  # in the host state, not under ssh/: dom0 cannot change what pid1 remembers
ANSWER_WAIT = 30.0  # dom0 makes its host key first (docs/benchmarks.md), then dropbear listens
OTHER_IMAGE_WAIT = 10.0  # a dom0 image of the user's own: its server (if any) gets this long
RETRY = 0.2  # the port refuses until dropbear listens: one try every RETRY, up to ANSWER_WAIT
PUB_LIMIT = 16 * 1024
HOW_TO_ADD = "add ssh_authorized_keys to the user-data (docs/remote-access.md)"


def host_state(ctx: PhaseContext) -> HostState:
    """The userdata phase's host state, or the same place when that phase failed.
    (The dom0 phase and this one both use Wiring.userdata and Wiring.storage.)"""
    kept = getattr(ctx.wiring.maybe(Wiring.userdata), "host_state", None)
    if kept is not None:
        return kept
    storage = ctx.wiring.maybe(Wiring.storage)
    return HostState.under(ctx.path(ctx.config.docker_root), storage is not None and storage.mode == "disk")


def dom0_binds(ctx: PhaseContext) -> tuple[str, ...]:
    """The host state's ssh/ directory for dom0 (made here when missing: a bind needs its source)."""
    directory = host_state(ctx).path("ssh")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        ctx.log.warning(f"ssh: no {directory} for dom0: {exc.strerror or exc}")
        return ()
    return (f"{directory}:{IN_DOM0}",)


def dom0_env(ctx: PhaseContext) -> tuple[str, ...]:
    return (f"PID1_SSH_LISTEN={ctx.config.ssh_listen}",)


def probe_address(listen: str) -> tuple[str, int]:
    """Where to knock for pid1.ssh_listen's server: its address, or loopback for all addresses."""
    address, _, port = listen.rpartition(":")
    address = address.strip("[]")
    if address in ("", "0.0.0.0", "::"):
        address = "127.0.0.1" if address != "::" else "::1"
    return address, int(port)


async def banner(address: str, port: int, timeout: float) -> str:
    """The SSH server's identification line (RFC 4253 4.2); OSError or TimeoutError when none comes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    text = line[:255].decode(errors="replace").strip()
    if not text.startswith("SSH-"):
        raise OSError(f"{address}:{port} answers, but not as an SSH server ({text[:40]!r})")
    return text


async def wait_for_banner(address: str, port: int, bound: float) -> str | None:
    deadline = time.monotonic() + bound
    while True:
        try:
            return await banner(address, port, max(0.5, deadline - time.monotonic()))
        except (OSError, TimeoutError):
            if time.monotonic() + RETRY >= deadline:
                return None
        await asyncio.sleep(RETRY)


def read_host_keys(state: HostState) -> tuple[list[PublicKey], list[str]]:
    """dom0's public host keys, and why any could not be read."""
    from pid1.ssh_keys import KeyLineError, parse_key
    from pid1.untrusted import read_untrusted

    keys, problems = [], []
    for name in HOST_KEY_PUBS:
        path = state.path("ssh", name)
        try:
            text = read_untrusted(path, PUB_LIMIT).decode(errors="replace").strip()
            keys.append(parse_key(text))
        except (OSError, KeyLineError) as exc:
            problems.append(f"{path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
    return keys, problems


def key_count(state: HostState) -> int:
    from pid1.untrusted import read_untrusted

    try:
        text = read_untrusted(state.path("ssh", "authorized_keys"), 4 * 1024 * 1024).decode(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def remember(state: HostState, fingerprints: list[str]) -> str:
    """'kept' when these are the fingerprints pid1 saw at the last boot (or dom0 start), else 'new'."""
    text = "".join(f"{line}\n" for line in fingerprints).encode()
    if state.read(SEEN) == text:
        return "kept"
    try:
        state.write(SEEN, text, 0o644)
    except OSError:
        pass  # then the next boot calls it new again: said, not fatal
    return "new"


def announce(ctx: PhaseContext, lines: list[str]) -> None:
    """On the terminals too when pid1's log lines no longer reach them
    (pid1.console_log=quiet once the console ran, or a `quiet` boot); while
    they still do (SSH answered before the console started), once is enough."""
    bridge = ctx.wiring.maybe(Wiring.console_bridge)
    if bridge is None or ctx.config.console_log == "all" or ConsoleLevel().prints(LEVELS["notice"]):
        return
    try:
        bridge.announce(lines)
    except Exception as exc:
        ctx.log.debug(f"ssh: the console bridge did not take the fingerprints: {exc!r}")


async def check(ctx: PhaseContext) -> str:
    """Look at dom0's SSH server as it is now; record and say it."""
    state = host_state(ctx)
    dom0 = ctx.state.containers.get("dom0")
    image = dom0.image if dom0 is not None else None
    listen = ctx.config.ssh_listen
    record = ctx.state.ssh = SshState(listen=listen, image=image, keys=key_count(state), persistent=state.persistent)
    if record.keys == 0:
        record.update(status=SshStatus.OFF, reason=f"no SSH key: {HOW_TO_ADD}")
        ctx.store.changed()
        ctx.log.notice(f"ssh: no SSH server: no key for root; {HOW_TO_ADD}")
        return "off: no key"
    address, port = probe_address(listen)
    began = time.monotonic()
    answer = await wait_for_banner(address, port, ANSWER_WAIT if image == DOM0_SSH_IMAGE else OTHER_IMAGE_WAIT)
    if answer is None:
        if image == DOM0_SSH_IMAGE:
            record.update(status=SshStatus.ERROR,
                          reason=f"dom0's SSH server did not answer on {listen} in {ANSWER_WAIT:.0f} s")  # fmt: skip
            ctx.log.error(f"ssh: {record.reason}")
        else:
            record.update(status=SshStatus.NONE,
                          reason=f"no SSH in dom0: {image or 'its image'} has no SSH server on {listen}")  # fmt: skip
            ctx.log.notice(f"ssh: {record.reason} (the bundled {DOM0_SSH_IMAGE} has one)")
        ctx.store.changed()
        return record.reason
    ctx.log.milestone("ssh answers", f"{answer} on {listen}")
    keys, problems = read_host_keys(state)
    fingerprints = [key.fingerprint() for key in keys]
    origin = remember(state, fingerprints) if keys else "unknown"
    record.update(status=SshStatus.RUNNING, banner=answer, host_keys=fingerprints, host_key_origin=origin,
                  answered_in=round(time.monotonic() - began, 3), problems=problems)  # fmt: skip
    ctx.store.changed()
    for problem in problems:
        ctx.log.warning(f"ssh: host key: {problem}")
    if not state.persistent:
        when = "new at each boot, the host state being in RAM"
    elif origin == "new":
        when = "new, a first boot on this disk or a replaced key"
    else:
        when = "kept from the earlier boots"
    lines = [f"SSH host key fingerprints of dom0 ({listen}), {when}:", *(f"  {line}" for line in fingerprints)]
    for line in lines:
        ctx.log.notice(f"ssh: {line}")
    announce(ctx, lines)
    return f"{answer}; {len(fingerprints)} host key{'s' if len(fingerprints) != 1 else ''}, {origin}"


def check_after_dom0_restarts(ctx: PhaseContext) -> None:
    """`restart dom0` resolves dom0's image again (a user's may have been
    tagged since): wrap the dom0 phase's restart action so the check runs
    after it, with this phase's context."""
    restart = ctx.restart_actions.snapshot().get("dom0")
    if restart is None:
        return

    async def restart_then_check() -> None:
        await restart()
        await check(ctx)

    ctx.restart_actions.register("dom0", restart_then_check)


async def run(ctx: PhaseContext) -> str:
    check_after_dom0_restarts(ctx)
    return await check(ctx)


PHASE = Phase(name="ssh", run=run, needs=("dom0", "console_tty"), required=False,
              uses=(Wiring.userdata, Wiring.storage, Wiring.console_bridge))  # fmt: skip
