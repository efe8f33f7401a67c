"""powerbutton: the ACPI power button leads to the orderly stop and power-off, like busybox `poweroff`. Needs modules.

The `button` driver (loaded by the modules phase, with `evdev`) turns the
ACPI power button event into a KEY_POWER press on an input device; this phase
opens every /dev/input/event* whose key capabilities include KEY_POWER and
reads `struct input_event` records on the loop (add_reader: no thread, no
timer). A press asks the supervisor for a power-off (`request_stop`); a second
press during the stop is logged and ignored there. qemu's `system_powerdown`
(QMP) presses this button. Optional: a machine without one boots the same.
"""

from __future__ import annotations

import asyncio
import glob
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pid1.linux.fds import close_watched
from pid1.phases import Phase, PhaseContext

EV_KEY = 1
KEY_POWER = 116
# struct input_event on 64-bit: struct timeval (two longs), __u16 type, __u16 code, __s32 value
EVENT = struct.Struct("llHHi")
WAIT_FOR_DEVICE = 2.0  # the button registers while the modules phase loads it; a short bounded look


def has_key(capabilities_key: str, code: int) -> bool:
    """Whether a sysfs `capabilities/key` bitmap (hex words, most significant
    first, each a long) has bit `code` set."""
    words = capabilities_key.split()
    bit = 0
    for word in reversed(words):
        value = int(word, 16)
        if bit <= code < bit + 64:
            return bool(value >> (code - bit) & 1)
        bit += 64
    return False


def power_button_devices(sys_root: str = "/sys", dev_root: str = "/dev") -> list[tuple[str, str]]:
    """(device node, name) of every input device that can send KEY_POWER."""
    found = []
    for entry in sorted(glob.glob(f"{sys_root}/class/input/event*")):
        try:
            with open(f"{entry}/device/capabilities/key") as f:
                keys = f.read()
            with open(f"{entry}/device/name") as f:
                name = f.read().strip()
        except OSError:
            continue
        if has_key(keys, KEY_POWER):
            found.append((f"{dev_root}/input/{os.path.basename(entry)}", name))
    return found


def power_presses(data: bytes) -> int:
    """How many KEY_POWER presses (value 1) the input_event records hold."""
    count = 0
    for offset in range(0, len(data) - EVENT.size + 1, EVENT.size):
        _sec, _usec, kind, code, value = EVENT.unpack_from(data, offset)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            count += 1
    return count


@dataclass
class ButtonWatcher:
    """Reads input events from the given fds and calls on_press per press."""

    on_press: Callable[[str], None]
    fds: dict[int, str] = field(default_factory=dict)
    _partial: dict[int, bytes] = field(default_factory=dict)

    def watch(self, fd: int, name: str) -> None:
        os.set_blocking(fd, False)
        self.fds[fd] = name
        asyncio.get_running_loop().add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, EVENT.size * 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the device went away
            self.close_one(fd)
            return
        data = self._partial.pop(fd, b"") + data
        whole = len(data) - len(data) % EVENT.size
        if whole < len(data):
            self._partial[fd] = data[whole:]
        for _ in range(power_presses(data[:whole])):
            self.on_press(self.fds.get(fd, "?"))

    def close_one(self, fd: int) -> None:
        self.fds.pop(fd, None)
        close_watched(fd)

    def close(self) -> None:
        for fd in list(self.fds):
            self.close_one(fd)


async def run(ctx: PhaseContext) -> str:
    def pressed(name: str) -> None:
        ctx.log.notice(f"power button pressed ({name}): powering off")
        ctx.request_stop("poweroff", "ACPI power button")

    watcher = ButtonWatcher(on_press=pressed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_FOR_DEVICE
    devices = power_button_devices(ctx.path("sys"), ctx.path("dev"))
    while not devices and loop.time() < deadline:
        await asyncio.sleep(0.1)
        devices = power_button_devices(ctx.path("sys"), ctx.path("dev"))
    opened = []
    for node, name in devices:
        try:
            fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            ctx.log.warning(f"powerbutton: cannot open {node} ({name}): {exc.strerror}")
            continue
        watcher.watch(fd, name)
        opened.append(f"{node} ({name})")
    if not opened:
        return "no power button input device (is the button module loaded?)"

    async def close() -> None:
        watcher.close()

    ctx.add_stop_hook("powerbutton", close)
    return "watching " + ", ".join(opened)


PHASE = Phase(name="powerbutton", run=run, needs=("modules", "devices"), required=False)
