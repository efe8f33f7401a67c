"""Drives a qemu boot of dist/ for the VM tests and bench/boot.py: the serial
console on a pipe (every byte kept, lines stamped with host time), QMP on a
unix socket, and waits with a bound on every step.

Boots use `qemu/run --kernel` (the same command a user runs, so the tests
cover it), or the ISO or a disk image under BIOS or UEFI firmware, TCG
unless QEMU_ACCEL says otherwise.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
# pid1's milestone lines on the serial console (kernel printk of /dev/kmsg lines)
PHASE_DONE = re.compile(r"pid1: phase (\S+) done in (\d+) ms \(uptime ([0-9.]+) s\)")
MILESTONE = re.compile(r"pid1: (dockerd ready|network up|console started)\b(.*?)\(uptime ([0-9.]+) s\)")
# Before each boot's own words (a later word wins): the ntp container asks the
# host (qemu's user network: 10.0.2.2 is 127.0.0.1 here), never pool.ntp.org,
# which no test may reach. Nothing answers there unless a test serves it.
DEFAULT_APPEND = ("pid1.ntp_servers=10.0.2.2",)
# The ISO's and the disk image's command lines are fixed: such a boot with no
# volume of its test's gets this one, for the same reason.
ISO_USER_DATA = "#cloud-config\nntp:\n  servers: [10.0.2.2]\n"
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")  # a printk line on the serial console
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")
# A cursor report the console's cooked TTY echoed (ECHOCTL spells ESC `^[`):
# pid1's bridge answered a query while a typed line was on its way (pid1.cursor).
REPORT_ECHO = re.compile(r"\^\[\[\d+;\d+R")


def nocloud_iso(path: Path, user_data: str, meta_data: str = "") -> str:
    """A NoCloud volume as cloud-localds makes one: ISO 9660 labelled cidata
    (xorriso's mkisofs) holding user-data and meta-data."""
    files = path.with_suffix(".d")
    files.mkdir(parents=True, exist_ok=True)
    (files / "user-data").write_text(user_data)
    (files / "meta-data").write_text(meta_data)
    path.unlink(missing_ok=True)  # xorriso would add to an image already there
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-volid", "cidata", "-joliet", "-rock",
                    str(files)], check=True, capture_output=True, timeout=60)  # fmt: skip
    return str(path)


class BootTimeout(AssertionError):
    """A wait ran out of time; the message says what was awaited and the log tail."""


@dataclass
class VM:
    name: str
    append: list[str] = field(default_factory=list)
    disk: str | None = None
    more_disks: list[str] = field(default_factory=list)  # after `disk`: vdb, vdc, ...
    cdroms: list[str] = field(default_factory=list)  # ISOs attached as CD-ROMs (a cidata volume)
    ssh_port: int | None = None  # qemu/run --ssh-port: 127.0.0.1:PORT on the host is the guest's port 22
    accel: str = field(default_factory=lambda: os.environ.get("QEMU_ACCEL", "tcg"))
    cpu: str = "max"  # qemu/run --cpu: a qemu CPU model, or "default" for no -cpu at all
    mem: int = 2048  # qemu/run --mem: the VM's RAM in MiB
    dist: Path = REPO / "dist"
    iso: bool = False  # boot dist/only-docker.iso (isolinux or shim + GRUB; its command line is fixed: no append)
    image: str | None = None  # boot this disk image (qemu/run --image; fixed command line: no append)
    firmware: str = "bios"  # bios, uefi or secure-boot (qemu/run --uefi, --secure-boot)
    no_reboot: bool = True  # qemu exits when the guest reboots (False: it boots again)
    switch: Path | None = None  # qemu/run --switch: a second NIC (eth1) on this qemu/switch socket
    switch_mac: str | None = None
    cpus: int = 2
    proc: subprocess.Popen | None = None
    serial: bytearray = field(default_factory=bytearray)
    lines: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    qmp_path: Path = field(init=False)
    _partial: bytes = b""
    _mark: int = 0

    def __post_init__(self) -> None:
        run_dir = Path("/run/only-docker")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.qmp_path = run_dir / f"test-{os.getpid()}-{self.name}.sock"

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> VM:
        media = self.iso or self.image is not None
        argv = [str(REPO / "qemu/run"), *(["--image", self.image] if self.image else [] if self.iso else ["--kernel"])]
        argv += {"bios": [], "uefi": ["--uefi"], "secure-boot": ["--secure-boot"]}[self.firmware]
        argv += ["--accel", self.accel, "--cpu", self.cpu, "--mem", str(self.mem), "--headless"]
        argv += ["--no-reboot"] if self.no_reboot else []
        argv += ["--qmp", str(self.qmp_path), "--dist", str(self.dist)]
        argv += [f"--append={a}" for a in [*([] if media else DEFAULT_APPEND), *self.append]]
        if self.disk:
            argv += ["--disk", self.disk]
        argv += [f"--disk={more}" for more in self.more_disks]
        cdroms = self.cdroms
        if media and not cdroms:
            run_dir = Path("/run/only-docker")
            cdroms = [nocloud_iso(run_dir / f"test-{os.getpid()}-ntp.iso", ISO_USER_DATA, "instance-id: test-iso\n")]
        argv += [f"--cdrom={cdrom}" for cdrom in cdroms]
        argv += [f"--ssh-port={self.ssh_port}"] if self.ssh_port else []
        argv += [f"--switch={self.switch}"] if self.switch else []
        argv += [f"--switch-mac={self.switch_mac}"] if self.switch_mac else []
        argv += [f"--cpus={self.cpus}"]
        return self.start_argv(argv)

    def start_argv(self, argv: list[str]) -> VM:
        """Start this qemu command line (bench/memory.py boots the anchor's kernel and initrd so)."""
        self.serial.clear()
        self.lines.clear()
        self._partial = b""
        self._mark = 0
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.pump(0)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def save_log(self, label: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.serial.log"
        path.write_bytes(bytes(self.serial))
        return path

    # --- the serial console -------------------------------------------------------------------
    def pump(self, timeout: float) -> None:
        """Read what the serial line has, waiting up to timeout for the first byte."""
        if self.proc is None:
            return
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout):
            while True:
                try:
                    chunk = self.proc.stdout.read(65536)
                except (BlockingIOError, ValueError):
                    chunk = None
                if not chunk:
                    break
                self.serial += chunk
                now = time.monotonic() - self.started
                *whole, self._partial = (self._partial + chunk).split(b"\n")
                for raw in whole:
                    self.lines.append((now, ANSI.sub(b"", raw).decode(errors="replace")))
        sel.close()

    def text(self) -> str:
        return ANSI.sub(b"", bytes(self.serial)).decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float, since_mark: bool = True) -> re.Match:
        """Wait until the (ANSI-stripped) serial output after the mark matches pattern."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = ANSI.sub(b"", bytes(self.serial[self._mark if since_mark else 0 :])).decode(errors="replace")
            found = regex.search(text)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or self.exited():
                self.pump(0.2)
                why = "qemu exited" if self.exited() else f"{timeout:.0f} s passed"
                raise BootTimeout(f"[{self.name}] waiting for /{pattern}/: {why}\n--- serial tail ---\n{self.tail()}")
            self.pump(min(left, 0.5))

    def mark(self) -> None:
        """Later waits only look at output from here on."""
        self.pump(0)
        self._mark = len(self.serial)

    def send(self, text: str) -> None:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def shell(self, command: str, timeout: float = 60.0) -> str:
        """Run one command in the console shell; returns its output (between markers)."""
        token = f"{time.monotonic_ns() % 10**9:x}"
        self.mark()
        # the markers are built by the shell, so the echoed command line never matches
        self.send(f"echo BEGIN{token}; {command}; echo END$((0x{token} * 0 + 0)){token}\n")
        found = self.wait_for(rf"(?s)BEGIN{token}\n(.*?)END0{token}", timeout)
        # Every command the tests type checks the console for this bug, in the
        # output a user would see it in.
        if REPORT_ECHO.search(found.group(1)):
            raise AssertionError(f"[{self.name}] a cursor report was echoed into the output of {command!r}: "
                                 f"{found.group(1)!r}")  # fmt: skip
        return found.group(1)

    def output(self, command: str, timeout: float = 60.0) -> list[str]:
        """The command's output lines, without the kernel log lines the serial
        console interleaves (pid1's own, with pid1.console_log=all): for
        commands whose output is not itself kernel log (dmesg)."""
        return [line for line in self.shell(command, timeout).splitlines() if not KERNEL_LINE.match(line)]

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                raise BootTimeout(f"[{self.name}] qemu still running after {timeout:.0f} s\n{self.tail()}")
            self.pump(0.5)
        self.pump(0)
        return self.proc.returncode

    # --- QMP ----------------------------------------------------------------------------------
    def qmp(self, command: str, **arguments) -> dict:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(10)
                sock.connect(str(self.qmp_path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with sock:
            reader = sock.makefile("rb")
            json.loads(reader.readline())  # greeting
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            self._qmp_reply(reader)
            message = {"execute": command}
            if arguments:
                message["arguments"] = arguments
            sock.sendall(json.dumps(message).encode() + b"\n")
            return self._qmp_reply(reader)

    @staticmethod
    def _qmp_reply(reader) -> dict:
        while True:
            reply = json.loads(reader.readline())
            if "return" in reply or "error" in reply:
                return reply

    # --- milestones -----------------------------------------------------------------------------
    def milestones(self) -> dict[str, float]:
        """Guest uptime of each milestone line seen so far (the first of each)."""
        found: dict[str, float] = {}
        for _, line in self.lines:
            phase = PHASE_DONE.search(line)
            if phase:
                found.setdefault(f"phase {phase.group(1)}", float(phase.group(3)))
            mile = MILESTONE.search(line)
            if mile:
                found.setdefault(mile.group(1), float(mile.group(3)))
        return found
