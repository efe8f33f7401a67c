"""SSH into dom0 for real, without a VM: pid1 as PID 1 of a namespace with
its own dockerd runs dom0 from the bundled pid1-dom0:latest (busybox and the
host's dropbear, as image/bundled_images.py builds it), its SSH server on a
free loopback port (pid1.ssh_listen=127.0.0.1:PORT: the test shares the
host's network, and never takes its port 22). The host's OpenSSH client
and docker CLI talk to it.

- with a key in the user-data: `ssh ... docker ps` lists the system
  containers, `docker -H ssh://` runs a container, the fingerprint pid1
  reports is the one the client recorded, a wrong key and a password are
  refused, a malformed key line is skipped with a warning while the other
  key works, and the host key is the same after `restart dom0` and after a
  second boot on the same data root (a disk);
- with no key: no SSH server (nothing answers), and the state and VT2 say
  why and how to add one;
- from RAM, 1,000 keys: the first 256 are kept, with a warning, and SSH
  works; the log says the host key is new at each boot. Then a dom0 image of
  the user's own without an SSH server: "no SSH in dom0".
"""

from __future__ import annotations

import base64
import os
import struct
import tempfile
from pathlib import Path

import pytest
from conftest import System, skip_without_docker
from test_userdata import put_user_data

from devtools.harness import SshClient, free_port, ssh_banner, wait_for

pytestmark = pytest.mark.docker
PHASES = "userdata,console,dom0,ssh,control,vt2"
DISK = {"PID1_TEST_STORAGE": "disk"}
RAM = {"PID1_TEST_STORAGE": "ram"}


def user_data(*keys: str) -> str:
    return "#cloud-config\nssh_authorized_keys:\n" + "".join(f"  - {key}\n" for key in keys)


def ssh_state(system: System) -> dict:
    return (system.run.state() or {}).get("ssh") or {}


def other_keys(count: int) -> list[str]:
    """Distinct well-formed ed25519 public key lines nobody holds the private half of."""

    def line(n: int) -> str:
        blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
        return f"ssh-ed25519 {base64.b64encode(blob).decode()} filler-{n}"

    return [line(n) for n in range(count)]


def boot(start_system, workdir: Path, port: int, extra: str = "", env: dict[str, str] = DISK) -> System:
    cmdline = f"pid1.ssh_listen=127.0.0.1:{port} pid1.view_tty=none {extra}"
    system = start_system(cmdline, phases=PHASES, workdir=workdir, env=env)
    system.run.wait_phase("ssh", timeout=120)
    return system


def test_ssh_and_docker_over_ssh_into_dom0(start_system, tmp_path: Path) -> None:
    skip_without_docker()
    port = free_port()
    client = SshClient(tmp_path / "client", port)
    malformed = "ssh-ed25519 this-is-not-base64 broken@key"
    workdir = Path(tempfile.mkdtemp(prefix="p1s-", dir="/var/tmp"))
    put_user_data(workdir, user_data(malformed, client.public_key), "instance-id: ssh-1\n")
    system = boot(start_system, workdir, port)

    record = ssh_state(system)
    assert record["status"] == "running" and record["keys"] == 1, (record, system.describe())
    assert record["banner"].startswith("SSH-2.0-dropbear"), record
    warnings = system.run.state()["userdata"]["warnings"]
    assert any("ssh_authorized_keys[0]" in w and "not base64" in w for w in warnings), warnings

    listed = client.ssh("docker", "ps", "--format", "{{.Names}}")
    assert listed.returncode == 0, (listed.stderr, system.describe())
    assert {"console", "dom0"} <= set(listed.stdout.split()), listed.stdout
    # pid1's fingerprint (from dom0's .pub) is the key the client met
    reported = [line.split()[1] for line in record["host_keys"]]
    assert client.host_key_fingerprints() == reported, (client.host_key_fingerprints(), record)
    assert record["host_key_origin"] == "new"
    status = system.run.state_dir / "status"  # what VT2 shows: the fingerprint whole within its 80 columns
    shown = f"         256 {reported[0]} (ED25519)"
    wait_for("the fingerprint on VT2", lambda: status.exists() and shown in status.read_text(), 10, system.describe)

    ran = client.docker("run", "--rm", "busybox:latest", "echo", "ok")
    assert (ran.returncode, ran.stdout) == (0, "ok\n"), (ran.stderr, system.describe())

    other = SshClient(tmp_path / "other", port)  # a key the user-data does not hold
    refused = other.ssh("true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    password = client.ssh("true", options=("-o", "PreferredAuthentications=password,keyboard-interactive",
                                           "-o", "PubkeyAuthentication=no"))  # fmt: skip
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr, password

    # restart dom0 on the control channel: a new container, the same host key
    before = system.inspect("dom0")["Id"]
    (system.run.state_dir / "control").write_text("restart dom0\n")
    system.wait("a new dom0", lambda: (i := system.inspect("dom0")) and i["Id"] != before and i["State"]["Running"])
    wait_for("SSH again after restart dom0", lambda: ssh_banner(port).startswith(b"SSH-2.0-"), 60, system.describe)
    again = client.ssh("true")  # StrictHostKeyChecking: a changed key would fail here
    assert again.returncode == 0, again.stderr
    system.wait("the ssh check after the restart", lambda: ssh_state(system).get("host_key_origin") == "kept")

    # a second boot on the same data root: the host key kept
    system.run.stop()
    system = boot(start_system, workdir, port)
    assert ssh_state(system)["host_key_origin"] == "kept", ssh_state(system)
    again = client.ssh("echo", "back")
    assert (again.returncode, again.stdout) == (0, "back\n"), (again.stderr, system.describe())


def test_without_a_key_there_is_no_ssh_server_and_the_state_says_how_to_add_one(start_system) -> None:
    skip_without_docker()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="p1s-", dir="/var/tmp"))
    put_user_data(workdir, "#cloud-config\nhostname: nokey\n")
    system = boot(start_system, workdir, port)
    record = ssh_state(system)
    assert record["status"] == "off" and "ssh_authorized_keys" in record["reason"], record
    assert system.inspect("dom0")["State"]["Running"]
    assert ssh_banner(port, timeout=1) == b""  # nothing listens
    logs = system.docker("logs", "dom0")
    assert "no SSH key" in logs, logs
    status = system.run.state_dir / "status"  # what VT2 shows
    line = "ssh:     no SSH key: add ssh_authorized_keys to the user-data"
    wait_for("VT2's ssh line", lambda: status.exists() and line in status.read_text(), 10, system.describe)


def test_from_ram_1000_keys_are_bounded_then_a_dom0_image_without_ssh_says_so(start_system, tmp_path: Path) -> None:
    skip_without_docker()
    port = free_port()
    client = SshClient(tmp_path / "client", port)
    workdir = Path(tempfile.mkdtemp(prefix="p1s-", dir="/var/tmp"))
    put_user_data(workdir, user_data(client.public_key, *other_keys(999)))
    first = boot(start_system, workdir, port, env=RAM)
    record = ssh_state(first)
    assert record["status"] == "running" and record["keys"] == 256 and record["persistent"] is False, record
    warnings = first.run.state()["userdata"]["warnings"]
    assert any("more than 256 keys" in w for w in warnings), warnings
    first.run.wait_log("new at each boot, the host state being in RAM", timeout=5)
    listed = client.ssh("echo", "in")  # the first key, among 255 others
    assert (listed.returncode, listed.stdout) == (0, "in\n"), (listed.stderr, first.describe())
    first.docker("tag", "busybox:latest", "dom0-image:latest")  # the user's own dom0, no SSH server in it
    first.run.stop()
    system = boot(start_system, workdir, port)
    record = ssh_state(system)
    assert record["status"] == "none" and record["reason"].startswith("no SSH in dom0"), record
    assert system.container_state("dom0")["image"] == "dom0-image:latest"
