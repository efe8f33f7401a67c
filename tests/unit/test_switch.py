"""qemu/switch, run as qemu/cluster runs it, with three datagram sockets
standing in for three VMs' NICs: broadcasts reach every other port, a
learned address reaches only its port, a port that went away is dropped,
and a runt frame is ignored. And qemu/run --switch's command line."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import wait_for

REPO = Path(__file__).resolve().parents[2]
BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0x76, 0, n])


def frame(to: bytes, origin: bytes, payload: bytes) -> bytes:
    return to + origin + b"\x08\x00" + payload


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "switch.sock"
    proc = subprocess.Popen([str(REPO / "qemu/switch"), str(path)])
    try:
        wait_for("the switch's socket", lambda: path.is_socket() or proc.poll() is not None, 10)
        assert proc.poll() is None, "the switch exited"
        yield path
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not path.exists(), "the switch leaves no socket behind"


def port(tmp_path: Path, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / name))
    sock.settimeout(5)
    return sock


def nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        sock.recv(65536)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_floods_then_learns(switch: Path, tmp_path: Path) -> None:
    a, b, c = (port(tmp_path, name) for name in "abc")
    for n, sock in enumerate((a, b, c), 1):  # each says hello, so the switch knows its port
        sock.sendto(frame(BROADCAST, mac(n), b"hello"), str(switch))
    hello = frame(BROADCAST, mac(3), b"hello")
    wait_for("c's broadcast at a", lambda: a.recv(65536) == hello, 10)
    assert b.recv(65536) == hello
    # a learned address: only its port gets the frame
    to_b = frame(mac(2), mac(1), b"for b only")
    a.sendto(to_b, str(switch))
    assert b.recv(65536) == to_b
    assert nothing_arrives(c)
    assert nothing_arrives(a), "a frame never comes back to its sender"
    # a runt is dropped; the switch goes on
    a.sendto(b"short", str(switch))
    a.sendto(to_b, str(switch))
    assert b.recv(65536) == to_b
    # c's VM stops: its socket is gone; broadcasts still reach b
    c.close()
    (tmp_path / "c").unlink()
    again = frame(BROADCAST, mac(1), b"still here")
    a.sendto(again, str(switch))
    assert b.recv(65536) == again


def test_qemu_run_puts_a_second_nic_on_the_switch(switch: Path, tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"")
    (tmp_path / "initrd.img").write_bytes(b"")
    base = [str(REPO / "qemu/run"), "--kernel", "--accel", "tcg", "--dist", str(tmp_path), "--dry-run"]
    done = subprocess.run([*base, "--switch", str(switch), "--switch-mac", "52:54:00:76:00:01"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    argv = done.stdout.split()
    assert any(w.startswith("dgram,id=net1,local.type=unix,") and f"remote.path={switch}" in w for w in argv), argv
    assert "virtio-net-pci,netdev=net1,mac=52:54:00:76:00:01" in argv
    # a multicast MAC, or no switch at that path: refused, saying why
    bad = subprocess.run([*base, "--switch", str(switch), "--switch-mac", "01:00:5e:00:00:01"], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode != 0 and "expected a unicast MAC" in bad.stderr
    missing = subprocess.run([*base, "--switch", str(tmp_path / "none.sock")], capture_output=True, text=True)
    assert missing.returncode != 0 and "no switch listens there" in missing.stderr
