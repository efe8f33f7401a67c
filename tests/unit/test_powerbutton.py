"""The power button phase's parts: the capability bitmap, input_event
parsing, and the watcher on a real pipe under a real loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable

from pid1.phases.powerbutton import EV_KEY, EVENT, KEY_POWER, ButtonWatcher, has_key, power_button_devices


def event(kind: int, code: int, value: int) -> bytes:
    return EVENT.pack(1, 2, kind, code, value)


def test_has_key_reads_sysfs_bitmaps():
    # what /sys/class/input/eventN/device/capabilities/key shows for qemu's ACPI power button
    assert has_key("10000000000000 0", KEY_POWER)
    assert not has_key("0", KEY_POWER)
    assert not has_key("10000000000000 0", 115)
    # a keyboard-like bitmap with many words: bit 116 is in the second word from the right
    assert has_key("ffff 0 0 0 10000000000000 0", KEY_POWER)


def test_devices_found_from_a_sysfs_tree(tmp_path):
    for index, (name, keys) in enumerate([("Power Button", "10000000000000 0"), ("AT keyboard", "fffe")]):
        device = tmp_path / f"sys/class/input/event{index}/device"
        (device / "capabilities").mkdir(parents=True)
        (device / "capabilities/key").write_text(keys + "\n")
        (device / "name").write_text(name + "\n")
    found = power_button_devices(str(tmp_path / "sys"), "/dev")
    assert found == [("/dev/input/event0", "Power Button")]


def unread_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def until(what: str, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `condition` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.001)


def test_watcher_calls_once_per_press_across_split_reads():
    presses: list[str] = []

    async def scenario() -> None:
        read_end, write_end = os.pipe()
        watcher = ButtonWatcher(on_press=presses.append)
        watcher.watch(read_end, "Power Button")
        press = event(EV_KEY, KEY_POWER, 1) + event(0, 0, 0)
        release = event(EV_KEY, KEY_POWER, 0) + event(0, 0, 0)
        other = event(EV_KEY, 30, 1)  # KEY_A: not a power press
        data = press + release + other + press
        os.write(write_end, data[:30])  # a record split across reads
        await until("the watcher reads the first part", lambda: unread_bytes(read_end) == 0)
        os.write(write_end, data[30:])
        await until("two presses", lambda: len(presses) >= 2)
        os.close(write_end)
        await until("EOF: the watcher drops the device", lambda: watcher.fds == {})

    asyncio.run(scenario())
    assert presses == ["Power Button", "Power Button"]
