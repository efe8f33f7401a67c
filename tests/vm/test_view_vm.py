"""VT2, the status file, the control channel and the boot timeline in the
real image under qemu (one RAM boot, scenarios in order):

  1. /run/pid1/status, read with busybox cat in the console, is the view.
  2. Alt-F2 (QMP send-key) switches to VT2, which shows the view: the
     kernel's active VT is tty2 and its text (/dev/vcs2) is the view; a
     screendump of it is kept in artifacts/.
  3. `echo restart console > /run/pid1/control` typed in the console
     restarts the console (a new container), and the shell comes back.
  4. The boot's state.json, drawn by `python -m pid1 plot`, has a bar for
     every phase; the SVG is kept in artifacts/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from devtools.harness import wait_for
from devtools.vm import ARTIFACTS, REPO, VM

pytestmark = pytest.mark.vm

STEP = 90.0
SWITCH_WAIT = 30.0  # seconds a VT switch may take on a busy TCG host


def shell_ready(vm: VM) -> None:
    vm.send("\n")
    assert vm.shell("echo $((6 * 7))", STEP).strip().endswith("42"), vm.tail()


@pytest.fixture(scope="module")
def view_vm(boot) -> VM:
    # this module reads pid1's notice lines on the serial console after the prompt
    vm = boot("view", append=["pid1.console_log=all"])
    shell_ready(vm)
    return vm


def test_status_file_is_the_view(view_vm: VM) -> None:
    # the console's prompt can come a moment before the boot's last phase ends
    deadline = time.monotonic() + STEP
    while True:
        out = view_vm.shell("cat /run/pid1/status", STEP)
        if "· running" in out.partition("\n")[0] or time.monotonic() > deadline:
            break
        time.sleep(1)
    lines = out.splitlines()
    header = next((line for line in lines if line.startswith("only-docker pid1")), None)
    assert header and "running" in header, out
    assert any(line.startswith("boot:    running from RAM") for line in lines), out
    # the address, or why there is none (a busy TCG host can miss the network phase's wait)
    assert any(
        line.startswith(("net:     dhcp eth0 10.0.2.15/24", "net:     dhcp eth0 offline: ")) for line in lines
    ), out
    assert any(line.startswith("dockerd: pid ") for line in lines), out
    for role in ("console", "dom0"):
        assert any(line.split()[:2] == [role, "running"] for line in lines), out
    assert all(len(line) <= 80 for line in lines), out


def switch_vt(vm: VM, keys: tuple[str, ...], want: str) -> None:
    """Press `keys` (QMP send-key) and wait, bounded, until `want` is the
    active VT. The kernel switches VTs from a work item after the key's
    interrupt, so the QMP reply (and a command typed right after it) can
    come before the switch."""
    reply = vm.qmp("send-key", keys=[{"type": "qcode", "data": k} for k in keys])
    assert "return" in reply, reply

    def active() -> list[str]:
        return vm.output("cat /sys/class/tty/tty0/active", STEP)

    def seen() -> str:
        # what a failure needs: whether the keyboard's interrupts came at all
        keyboard = vm.shell("grep i8042 /proc/interrupts; grep -A4 -i keyboard /proc/bus/input/devices", STEP)
        return f"active: {active()}\nkeyboard:\n{keyboard}\n--- serial tail ---\n{vm.tail()}"

    wait_for(f"{want} active after {'+'.join(keys)}", lambda: active() == [want], SWITCH_WAIT, seen)


def test_alt_f2_shows_the_view_on_vt2(view_vm: VM) -> None:
    # the negative control: the console's VT is the active one until the keys
    before = view_vm.output("cat /sys/class/tty/tty0/active", STEP)
    assert before == ["tty1"], before
    switch_vt(view_vm, ("alt", "f2"), "tty2")
    # /dev/vcs2: VT2's screen as text, 80 cells a row, no newlines
    screen = view_vm.shell("cut -c 1-2000 /dev/vcs2 | fold -w 80", STEP)
    rows = screen.splitlines()
    assert rows and rows[0].startswith("only-docker pid1 | up "), screen
    assert any(row.startswith("PHASE") for row in rows), screen
    assert any(row.startswith("ROLE") for row in rows), screen
    ARTIFACTS.mkdir(exist_ok=True)
    dump = ARTIFACTS / "vt2-screendump.png"
    reply = view_vm.qmp("screendump", filename=str(dump), format="png")
    assert "return" in reply, reply
    assert dump.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    switch_vt(view_vm, ("alt", "f1"), "tty1")


def test_restart_console_from_the_console(view_vm: VM) -> None:
    before = view_vm.shell("docker ps -q --no-trunc --filter label=pid1.role=console", STEP).strip()
    assert before, view_vm.tail()
    view_vm.mark()
    view_vm.send("echo restart console > /run/pid1/control\n")
    view_vm.wait_for(r"pid1: control: restart console", STEP)
    view_vm.wait_for(r"pid1: console: restart requested", STEP)
    view_vm.wait_for(r"BusyBox v\S+ .*built-in shell", 2 * STEP)  # the new console's shell greets
    shell_ready(view_vm)
    after = view_vm.shell("docker ps -q --no-trunc --filter label=pid1.role=console", STEP).strip()
    assert after and after != before, (before, after)


def test_boot_timeline_plot(view_vm: VM, tmp_path) -> None:
    out = view_vm.shell("cat /run/pid1/state.json", STEP)
    state = json.loads(out[out.index("{") : out.rindex("}") + 1])
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    ARTIFACTS.mkdir(exist_ok=True)
    svg = ARTIFACTS / "boot-vm.svg"
    done = subprocess.run(
        [sys.executable, "-m", "pid1", "plot", "--state", str(path), "-o", str(svg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    drawn = {r.get("data-phase") for r in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}rect")}
    started = {name for name, p in state["phases"].items() if p.get("started") is not None}
    assert started and started <= drawn, (started, drawn)
