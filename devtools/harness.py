"""Runs pid1 as PID 1 of a new PID + mount (+ UTS, IPC) namespace, and waits
for conditions on it with bounded timeouts. Every failure message carries what
was seen: pid1's log and its state.json.

Also the small helpers the tests and benchmarks share: an HTTP server for a
user-data seed, the processes of a namespace, an SSH client of its own.
Uses the standard library and the host's tools (unshare, nsenter, ssh).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UNSHARE = ["unshare", "--pid", "--mount", "--uts", "--ipc", "--fork", "--mount-proc"]


def tmpfs_dev_wrapper(root: Path, shell_first: str = "") -> list[str]:
    """A Pid1.wrapper: mounts a private tmpfs on root/dev and execs pid1 (which
    stays PID 1), so the devices phase never writes into the host's devtmpfs.
    shell_first: shell commands run before (e.g. `umask 0;`)."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    return ["sh", "-c", shell_first + 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]


@contextlib.contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 for a test's user-data (a NoCloud seed:
    URL path -> body, anything else 404); yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Timeout(AssertionError):
    pass


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, seen: Callable[[], str] = lambda: "") -> Any:
    """Poll predicate until it returns something truthy; fail with `seen()` after timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout} s waiting for {what}\n{seen()}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class Pid1:
    """One pid1 run under unshare. `pid` is the namespace's PID 1 as the host sees it."""

    workdir: Path
    cmdline: str
    root: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    program: list[str] | None = None  # another PID 1 instead of pid1 (negative controls)
    prefix: list[str] = field(default_factory=list)  # runs unshare under this (e.g. ip netns exec NS)
    # Runs inside the namespace and execs pid1's argv (appended), keeping PID 1.
    wrapper: list[str] = field(default_factory=list)
    # More arguments after pid1's own, as the kernel passes its stray words to init.
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pid: int = 0

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pid1.log"

    def start(self) -> Pid1:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmdline = f"pid1.state_dir={self.state_dir} {self.cmdline}"
        argv = self.program or [
            *self.wrapper,
            self.python,
            "-m",
            "pid1",
            "--root",
            self.root,
            "--cmdline",
            cmdline,
            *self.args,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*self.prefix, *UNSHARE, *argv], stdout=self.log_file, stderr=subprocess.STDOUT, env=env
        )
        self.pid = wait_for("the namespace's PID 1", self._find_init, 10, self.describe)
        return self

    def _find_init(self) -> int:
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(kids[0]) if kids else 0

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None

    def describe(self) -> str:
        state = self.state()
        brief = (
            json.dumps({k: state[k] for k in ("mode", "phases", "reaper", "stop_reason")}, indent=1) if state else None
        )
        return f"--- pid1 log ---\n{self.log()[-6000:]}\n--- state (brief) ---\n{brief}"

    def wait_state(self, what: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20) -> Any:
        def check() -> Any:
            state = self.state()
            return predicate(state) if state else None

        return wait_for(what, check, timeout, self.describe)

    def wait_log(self, text: str, timeout: float = 20) -> None:
        wait_for(f"log line containing {text!r}", lambda: text in self.log(), timeout, self.describe)

    def wait_phase(self, name: str, status: str = "done", timeout: float = 20) -> dict[str, Any]:
        return self.wait_state(
            f"phase {name} {status}", lambda s: s["phases"].get(name, {}).get("status") == status and s, timeout
        )

    def kill(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def nsenter(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run argv inside the namespace (its PID and mount namespaces)."""
        cmd = ["nsenter", "-t", str(self.pid), "-p", "-m", "-u", "-i", "-r", "-w", "--", *argv]
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("capture_output", True)
        return subprocess.run(cmd, **kwargs)

    def wait_exit(self, timeout: float = 30) -> int:
        """The unshare process's return code: -SIGINT when PID 1 powered the
        namespace off, -SIGHUP when it rebooted it, its exit code otherwise."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"pid1 did not end within {timeout} s\n{self.describe()}") from None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "log_file"):
            self.log_file.close()


def namespace_processes(init_pid: int) -> list[dict[str, str]]:
    """Every process in the PID namespace of init_pid, as seen from the host."""
    target = os.readlink(f"/proc/{init_pid}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != target:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        found.append({"pid": entry, **{k: v.strip() for k, v in fields.items()}})
    return found


@dataclass
class SshClient:
    """The host's OpenSSH client and docker CLI, aimed at one SSH server on
    127.0.0.1:port with a key of their own (made with ssh-keygen) and a
    known_hosts file of their own: nothing of the host's ~/.ssh is read or
    written. `docker -H ssh://` runs `ssh` from PATH without options, so a
    wrapper first in PATH adds `-F` this client's config."""

    directory: Path
    port: int
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            self.keygen(self.key)
        self.config.write_text(
            f"Host {self.host}\n  Port {self.port}\n  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n"
            "  ConnectTimeout 20\n  LogLevel ERROR\n"
        )
        wrapper = self.directory / "bin" / "ssh"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {self.config} "$@"\n')
        wrapper.chmod(0o755)

    key = property(lambda self: self.directory / "id_ed25519")
    config = property(lambda self: self.directory / "config")
    known_hosts = property(lambda self: self.directory / "known_hosts")

    @staticmethod
    def keygen(path: Path, comment: str = "only-docker-test") -> str:
        """A new ed25519 key pair at path (and path.pub); returns the public line."""
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                       capture_output=True)  # fmt: skip
        return Path(f"{path}.pub").read_text().strip()

    @property
    def public_key(self) -> str:
        return Path(f"{self.key}.pub").read_text().strip()

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.directory / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def ssh(self, *command: str, options: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *options, self.host, *command], capture_output=True, text=True,
                              timeout=timeout, env=self.env())  # fmt: skip

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", f"ssh://root@{self.host}:{self.port}", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env())  # fmt: skip

    def host_key_fingerprints(self) -> list[str]:
        """The server's host keys as this client recorded them, as `ssh-keygen -l` prints them."""
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(self.known_hosts)], capture_output=True, text=True)
        return sorted(line.split()[1] for line in listed.stdout.splitlines() if line.strip())

    def forget_host(self) -> None:
        self.known_hosts.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ssh_banner(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """The first line an SSH server sends, b"" when none comes in time (refused, reset, silent)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(256).split(b"\n")[0]
    except OSError:
        return b""


# --- a disk image laid out as image/ builds dist/only-docker.img ----------------------
GPT_TYPES = {
    "bios": "21686148-6449-6E6F-744E-656564454649",  # BIOS boot: GRUB's core.img
    "ESP": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI system
    "DOCKER": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux filesystem
}
MIB = 1 << 20


def sfdisk(*args: str, script: str | None = None) -> str:
    """util-linux's sfdisk on a file or device (no root needed for a file); its stdout."""
    done = subprocess.run(["sfdisk", *args], input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"sfdisk {' '.join(args)}: {done.stderr}"
    return done.stdout


def grow_word(image: Path | str) -> str:
    """The pid1.grow word for a disk image: its primary GPT's entry-array CRC
    (LBA 1, offset 88, little-endian), read back as the image build does."""
    with open(image, "rb") as f:
        f.seek(512 + 88)
        return f"{int.from_bytes(f.read(4), 'little'):08x}"


def make_disk_image(path: Path, esp_mib: int = 4, docker_mib: int = 64, docker_to_last_lba: bool = False) -> str:
    """A sparse file with the disk image's GPT, made by sfdisk as a user (or
    the image build) makes it: bios (1 MiB at 1 MiB), ESP, DOCKER last and
    ending at the last 1 MiB boundary (sfdisk's default), or exactly at the
    last usable LBA. No filesystems. Returns the pid1.grow word."""
    sectors = (3 + esp_mib + docker_mib) * MIB // 512  # a MiB for the backup GPT at the end
    with open(path, "wb") as f:
        f.truncate(sectors * 512)
    last_usable, docker_start = sectors - 34, (2 + esp_mib) * MIB // 512
    docker_size = f", size={last_usable - docker_start + 1}" if docker_to_last_lba else ""
    script = (
        "label: gpt\n"
        f"start=1MiB, size=1MiB, type={GPT_TYPES['bios']}, name=bios\n"
        f"size={esp_mib}MiB, type={GPT_TYPES['ESP']}, name=ESP\n"
        f"type={GPT_TYPES['DOCKER']}, name=DOCKER{docker_size}\n"
    )
    sfdisk("-q", str(path), script=script)
    return grow_word(path)
