"""End-to-end: the real image booted under qemu (TCG), driven through the
serial console and QMP. Few boots, each carrying several scenarios in order
(a TCG boot costs about a minute):

  RAM boot:   milestones, console prompt, docker ps, state.json, the guest's
              DHCP address, console switching, dockerd killed with -9 and
              back, `docker run` printing only its own output on the console
              (pid1.console_log=quiet, the default), the seed's manual flow:
              `mke2fs -L DOCKER /dev/vda` on the blank disk it has, then
              `reboot` typed in the console -> the machine boots again to its
              console (qemu without -no-reboot) with /var/lib/docker on that
              disk, then Ctrl-Alt-Del (QMP send-key) -> reboot.

The disk boots (Docker's data kept across boots, the poweroff's order, a
crash mid-write, the power button) boot the disk image: test_disk_image.py.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from devtools.vm import ANSI, VM, BootTimeout

pytestmark = pytest.mark.vm

STEP = 90.0  # a bound for any one step after boot
REBOOT_TIMEOUT = 300.0  # a second boot, as the conftest's BOOT_TIMEOUT
STOP_TIMEOUT = 120.0
MILESTONE_LINES = [
    r"pid1: phase devices done in \d+ ms \(uptime [0-9.]+ s\)",
    r"pid1: phase mounts done in \d+ ms",
    r"pid1: phase modules done in \d+ ms",
    r"pid1: phase storage done in \d+ ms",
    r"pid1: dockerd ready\b.*\(uptime [0-9.]+ s\)",
    r"pid1: network up 10\.0\.2\.15\b.*",
    r"pid1: console started \S+.*\(uptime [0-9.]+ s\)",
]


def shell_ready(vm: VM, timeout: float = STEP) -> None:
    """The console shell answers (the prompt may have scrolled by in the log).
    Keys typed while the console is (re)starting are dropped by design, so
    the question is asked again every 15 s until the bound."""
    deadline = time.monotonic() + timeout
    while True:
        vm.send("\n")
        try:
            assert vm.shell("echo $((6 * 7))", 15).strip().endswith("42"), vm.tail()
            return
        except BootTimeout:
            if time.monotonic() >= deadline:
                raise


def wait_running(vm: VM, roles: set[str], timeout: float = STEP) -> str:
    """Ask `docker ps` in the console until every role in `roles` is Up
    (dom0 starts after the console, the dhcp container beside it: the
    prompt comes first). Returns the last listing; fails at the bound."""
    deadline = time.monotonic() + timeout
    while True:
        out = vm.shell("docker ps --format '{{.Label \"pid1.role\"}} {{.Status}}'", STEP)
        up = {line.split()[0] for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == "Up"}
        if roles <= up:
            return out
        if time.monotonic() >= deadline:
            raise AssertionError(f"not all of {sorted(roles)} Up within {timeout:.0f} s:\n{out}\n{vm.tail()}")


def wait_logged(vm: VM, pattern: str, timeout: float) -> str:
    """Wait until pattern is in the kernel's log: on the serial console, or
    (after the prompt, where only errors print) in `dmesg` read in the
    console. Returns where it was found."""
    if re.search(pattern, vm.text()):
        return "serial"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if re.search(pattern, vm.shell("dmesg | grep pid1:", STEP)):
                return "dmesg"
        except BootTimeout:  # the console restarting
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"/{pattern}/ neither on the serial console nor in dmesg\n{vm.tail()}")
        time.sleep(2)


@pytest.fixture(scope="module")
def ram_vm(boot, tmp_path_factory) -> VM:
    # A blank disk, as a user adds one: no label, so this boot runs from RAM
    # (nothing formats it unasked) until the console's mke2fs makes it DOCKER.
    blank = tmp_path_factory.mktemp("ram") / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(1 << 30)
    vm = boot("ram", no_reboot=False, disk=str(blank))
    shell_ready(vm)
    return vm


def test_ram_boot_milestones(ram_vm: VM):
    # The console does not wait for DHCP, so "network up" may follow the
    # prompt: each line gets a bound of its own.
    for pattern in MILESTONE_LINES:
        wait_logged(ram_vm, pattern, 60)
    print("milestones (guest uptime, s):", ram_vm.milestones())


def test_console_runs_docker_ps(ram_vm: VM):
    wait_running(ram_vm, {"dom0", "console", "dhcp"})


def read_state(vm: VM) -> dict:
    out = vm.shell("cat /run/pid1/state.json", STEP)
    return json.loads(out[out.index("{") : out.rindex("}") + 1])


def boot_done_state(vm: VM, timeout: float = STEP) -> dict:
    """state.json once the boot is done (every phase ended). Phases after the
    console's (ntp, runcmd) may still run when its prompt comes; with
    pid1.console_log=quiet their lines do not reach the serial console, so
    the state is read again, a bounded number of times."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(vm)
        if state["mode"] == "running" or time.monotonic() > deadline:
            return state
        time.sleep(2)


def test_state_json_parses(ram_vm: VM):
    state = boot_done_state(ram_vm)
    assert state["pid"] == 1
    pending = {name: p["status"] for name, p in state["phases"].items() if p["status"] not in ("done", "failed")}
    assert state["mode"] == "running", (state["mode"], pending)
    assert state["storage"].get("mode") == "ram", state["storage"]
    assert all(p["status"] in ("done", "failed") for p in state["phases"].values()), state["phases"]
    # the initrd's docker seed: the bundled images are in dockerd's store before it starts
    assert "data root seeded from /usr/share/pid1/docker-seed" in state["phases"]["dockerd"]["detail"]
    images = state["phases"]["images"]["detail"]
    assert images == "present busybox:latest, pid1-dhcp:latest, pid1-dom0:latest", state["phases"]
    # the kernel's accounting switched on before anything runs beside pid1 (docs/faults.md, qemu's TCG)
    assert state["phases"]["mounts"]["detail"].endswith("; first memory cgroup made"), state["phases"]["mounts"]


def test_guest_has_qemu_dhcp_address(ram_vm: VM):
    out = ram_vm.shell("ip -4 addr show eth0", STEP)
    assert "inet 10.0.2.15/24" in out, out


def test_docker_run_init_has_docker_init(ram_vm: VM):
    """`docker run --init` works: the image ships tini as docker-init."""
    out = ram_vm.shell("docker run --rm --init --net host busybox:latest cat /proc/1/comm", STEP)
    assert "docker-init" in out.split(), out


def test_the_kernel_and_iptables_get_kmods_modprobe(ram_vm: VM):
    """kernel.modprobe is the image's kmod, and it loads on demand: the mangle
    table (which nothing loads at boot) appears when iptables first lists it."""
    script = (
        "cat /proc/sys/kernel/modprobe; grep -c '^iptable_mangle ' /proc/modules; "
        "nsenter -t 1 -m -- /usr/sbin/iptables -t mangle -nL >/dev/null && echo listed; "
        "grep -c '^iptable_mangle ' /proc/modules"
    )
    lines = [line.strip() for line in ram_vm.shell(script, STEP).splitlines() if line.strip()]
    assert lines[-4:] == ["/usr/sbin/modprobe", "0", "listed", "1"], lines


def test_console_switching(ram_vm: VM):
    """A locally made image tagged console-image:latest is the next console."""
    number = time.time_ns() % 10**6
    marker = f"SWITCHED-{number}"
    # typed as SWI""TCHED: the echo of this line on the serial console never shows the marker
    command = 'CMD ["sh", "-c", "echo SWI\\"\\"TCHED-' + str(number) + '; exec sh"]'
    out = ram_vm.shell(
        f"docker commit --change '{command}' $(docker ps -q --filter label=pid1.role=console) console-image:latest",
        STEP,
    )
    assert "sha256:" in out, out
    ram_vm.mark()
    ram_vm.send("exit\n")
    ram_vm.wait_for(marker, STEP)  # the marker is assembled by the new shell, never echoed whole
    shell_ready(ram_vm)
    out = ram_vm.shell("docker ps --filter label=pid1.role=console --format '{{.Image}}'", STEP)
    assert "console-image:latest" in out, out


def test_dockerd_killed_comes_back_with_the_console(ram_vm: VM):
    wait_running(ram_vm, {"dom0"})
    ram_vm.mark()
    ram_vm.send("docker exec dom0 sh -c 'kill -9 $(pidof dockerd)'\n")
    ram_vm.wait_for(r"pid1: dockerd exited with status", STEP)  # an error: on the console
    # notices: in dmesg only, once the console runs (pid1.console_log=quiet)
    wait_logged(ram_vm, r"pid1: dockerd is back", 3 * STEP)
    shell_ready(ram_vm, 3 * STEP)
    assert "Server Version" in ram_vm.shell("docker info 2>/dev/null | grep 'Server Version'", STEP)


BRIDGE_LINE = r"docker0: port \d+\(veth\w+\) entered (?:blocking|forwarding|disabled) state"


def count_in_dmesg(vm: VM, text: str) -> int:
    """How many kernel log lines hold `text` (only the count crosses the serial line)."""
    return int(vm.shell(f"dmesg | grep -c '{text}'", STEP).split()[-1])


def test_docker_run_prints_only_its_own_output(ram_vm: VM):
    """After the prompt only errors reach the console: the kernel's bridge
    and veth lines and pid1's lines of the run go to dmesg, not the serial
    console. Control: dmesg shows that the kernel did log them meanwhile."""
    before = count_in_dmesg(ram_vm, "entered disabled state")
    ram_vm.mark()
    mark = len(ram_vm.serial)
    out = ram_vm.shell("docker run --rm busybox:latest echo hi", STEP)
    assert [line.strip() for line in out.splitlines() if line.strip()] == ["hi"], out
    # the container's veth leaves the bridge after it exits: wait for that in dmesg
    deadline = time.monotonic() + STEP
    while count_in_dmesg(ram_vm, "entered disabled state") < before + 2:  # joined, then left
        assert time.monotonic() < deadline, f"the run's veth never left the bridge in dmesg\n{ram_vm.tail()}"
        time.sleep(1)
    ram_vm.shell("true", STEP)  # one more prompt, after the kernel logged it all
    seen = ANSI.sub(b"", bytes(ram_vm.serial[mark:])).decode(errors="replace")
    assert not re.search(BRIDGE_LINE, seen), seen
    assert "renamed from" not in seen and "pid1:" not in seen, seen


def test_mke2fs_in_the_console_then_reboot_comes_back_on_the_disk(ram_vm: VM):
    """The seed's manual flow: busybox `mke2fs -L DOCKER` on the blank disk,
    then busybox `reboot` (SIGTERM to PID 1): the orderly stop, a restart, and
    the machine boots again to its console (qemu runs without -no-reboot),
    now with docker's data on that disk."""
    assert "running from RAM" in ram_vm.shell("cat /run/pid1/status", STEP)
    out = ram_vm.shell("mke2fs -L DOCKER /dev/vda >/dev/null && echo FORMATTED", STEP)
    assert "FORMATTED" in out, ram_vm.tail()
    ram_vm.mark()
    ram_vm.send("reboot\n")
    ram_vm.wait_for(r"pid1: stop requested: reboot \(signal SIGTERM\)", STEP)
    ram_vm.wait_for(r"pid1: stopped: reboot", STOP_TIMEOUT)
    ram_vm.wait_for(r"reboot: Restarting system", STEP)
    ram_vm.mark()
    ram_vm.wait_for(r"Linux version", STEP)  # the same qemu, booting again
    ram_vm.wait_for(r"pid1: console started", REBOOT_TIMEOUT)
    shell_ready(ram_vm)
    assert not ram_vm.exited()
    uptime = float(ram_vm.shell("cut -d' ' -f1 /proc/uptime", STEP).split()[-1])
    assert uptime < REBOOT_TIMEOUT, f"uptime {uptime} s: not a new boot"
    status = ram_vm.shell("cat /run/pid1/status", STEP)
    assert "disk /dev/vda (ext2, DOCKER)" in status, status


def test_ctrl_alt_del_reboots(ram_vm: VM):
    ram_vm.mark()
    reply = ram_vm.qmp("send-key", keys=[{"type": "qcode", "data": k} for k in ("ctrl", "alt", "delete")])
    assert "return" in reply, reply
    ram_vm.wait_for(r"stop requested: reboot \(signal SIGINT\)", STEP)
    ram_vm.wait_for(r"reboot: Restarting system", STOP_TIMEOUT)  # the kernel's last line
    ram_vm.kill()  # this VM boots again on a reboot: the test ends here
