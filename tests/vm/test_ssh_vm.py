"""SSH into the real image under qemu: a NoCloud volume (vm.nocloud_iso:
xorriso, as cloud-localds makes one) holds a key made with the host's ssh-keygen and a
malformed key line; qemu forwards 127.0.0.1:PORT to the guest's port 22
(qemu/run --ssh-port, loopback only). The host's OpenSSH client and docker
CLI drive it. One boot with a disk serves every check; the last test boots
the same disk again.

The console log stays quiet (the default): the host key's fingerprint must
reach the serial console as a user sees it, through the console bridge, or
as pid1's own log lines when SSH answered before the console started.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import time

import pytest
from test_boot import STEP, shell_ready

from devtools.harness import SshClient, free_port, ssh_banner, wait_for
from devtools.vm import REPO, nocloud_iso

pytestmark = pytest.mark.vm

MALFORMED = "ssh-ed25519 AAAA-not-base64 broken@laptop"
# Through the console bridge ("[pid1] ..."), or as pid1's own log lines ("pid1: ssh: ...") when SSH
# answered before the console started and those still reached the terminals; other kernel lines may
# come between the two then, so each is looked for alone.
FINGERPRINTS_WHEN = r"(?:\[pid1\] |pid1: ssh: )SSH host key fingerprints of dom0 \(22\), ([^:\n]*):"
FINGERPRINT = r"(?:\[pid1\]|pid1: ssh:)\s+256 (SHA256:\S+) [^\n]*\(ED25519\)"


def fingerprints_on_console(vm) -> tuple[str, str]:
    """(when the key was made, as the console says it; the fingerprint the console printed)."""
    when = vm.wait_for(FINGERPRINTS_WHEN, STEP, since_mark=False).group(1)
    return when, vm.wait_for(FINGERPRINT, STEP, since_mark=False).group(1)


FLOOD = 200


@pytest.fixture(scope="module")
def machine(boot, tmp_path_factory):
    base = tmp_path_factory.mktemp("ssh")
    port = free_port()
    client = SshClient(base / "client", port)
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {MALFORMED}\n  - {client.public_key}\n"
    cidata = nocloud_iso(base / "cidata.iso", user_data, "instance-id: iid-ssh-vm\n")
    disk = str(base / "docker.img")
    subprocess.run([str(REPO / "qemu/mkdisk"), disk, "2G"], check=True, capture_output=True, timeout=60)
    vm = boot("ssh", disk=disk, cdroms=[cidata], ssh_port=port)
    return {"vm": vm, "client": client, "port": port, "disk": disk, "cidata": cidata, "boot": boot}


def state(client: SshClient) -> dict:
    out = client.ssh("cat", "/run/pid1/state.json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_ssh(port: int, vm, timeout: float = STEP) -> None:
    wait_for("the SSH banner through hostfwd", lambda: ssh_banner(port).startswith(b"SSH-2.0-"), timeout, vm.tail)


def test_the_fingerprint_is_on_the_serial_console_and_ssh_docker_ps_lists_the_system_containers(machine) -> None:
    vm, client = machine["vm"], machine["client"]
    when, fingerprint = fingerprints_on_console(vm)
    assert when.startswith("new, a first boot on this disk"), when
    wait_ssh(machine["port"], vm)
    listed = client.ssh("docker", "ps", "--format", "{{.Names}}")
    assert listed.returncode == 0, (listed.stderr, vm.tail())
    assert {"console", "dom0", "dhcp"} <= set(listed.stdout.split()), listed.stdout
    # what the console printed is the key the client met
    assert client.host_key_fingerprints() == [fingerprint], (client.host_key_fingerprints(), fingerprint)
    record = state(client)["ssh"]
    assert record["status"] == "running" and record["keys"] == 1, record
    status = client.ssh("cat", "/run/pid1/status").stdout  # what VT2 shows, the fingerprint whole
    assert "host key new this boot" in status and f" 256 {fingerprint} (ED25519)" in status, status


def test_the_malformed_key_line_is_skipped_with_a_warning(machine) -> None:
    warnings = state(machine["client"])["userdata"]["warnings"]
    assert any("ssh_authorized_keys[0]" in w and "not base64" in w for w in warnings), warnings


def test_docker_over_ssh_runs_a_container(machine) -> None:
    ran = machine["client"].docker("run", "--rm", "busybox", "echo", "ok")
    assert (ran.returncode, ran.stdout) == (0, "ok\n"), (ran.stderr, machine["vm"].tail())


def test_a_wrong_key_and_a_password_are_refused(machine, tmp_path) -> None:
    other = SshClient(tmp_path / "other", machine["port"])
    refused = other.ssh("true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    options = ("-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no")
    password = machine["client"].ssh("true", options=options)
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr, password


def knock(port: int) -> str:
    """One connection attempt of the flood: read the banner, send junk, hang up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.settimeout(20)
            sock.recv(64)
            sock.sendall(b"SSH-2.0-flood\r\n" + b"\x00" * 64)
            return "answered"
    except OSError as exc:
        return type(exc).__name__


def test_an_ssh_flood_leaves_pid1_and_the_console_responsive(machine) -> None:
    vm, client = machine["vm"], machine["client"]
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(knock, [machine["port"]] * FLOOD))
    print(f"flood: {FLOOD} attempts in {time.monotonic() - began:.1f} s: "
          f"{ {o: outcomes.count(o) for o in set(outcomes)} }")  # fmt: skip
    shell_ready(vm)
    status = vm.shell("cat /run/pid1/status", STEP)
    assert "ssh:     port 22" in status, status
    assert state(client)["mode"] == "running"
    wait_for("SSH works again after the flood", lambda: client.ssh("true").returncode == 0, STEP, vm.tail)


def test_the_host_key_is_the_same_after_restart_dom0(machine) -> None:
    vm, client = machine["vm"], machine["client"]
    before = client.host_key_fingerprints()
    old = client.ssh("docker", "inspect", "-f", "{{.Id}}", "dom0").stdout.strip()
    vm.send("echo restart dom0 > /run/pid1/control\n")

    def new_dom0() -> bool:
        out = client.ssh("docker", "inspect", "-f", "{{.Id}}", "dom0", timeout=30)
        return out.returncode == 0 and out.stdout.strip() not in ("", old)

    wait_for("a new dom0, reached over SSH", new_dom0, STEP, vm.tail)
    client.forget_host()  # the key is met afresh: compared below, not trusted from before
    assert client.ssh("true").returncode == 0
    assert client.host_key_fingerprints() == before


def test_the_host_key_is_the_same_after_a_reboot_with_the_disk(machine) -> None:
    vm, client = machine["vm"], machine["client"]
    before = client.host_key_fingerprints()
    vm.send("echo reboot > /run/pid1/control\n")
    vm.wait_exit(STEP * 2)  # qemu/run --no-reboot: the guest's reboot ends qemu
    again = machine["boot"]("ssh-again", disk=machine["disk"], cdroms=[machine["cidata"]], ssh_port=machine["port"])
    when, fingerprint = fingerprints_on_console(again)
    assert when == "kept from the earlier boots", when
    wait_ssh(machine["port"], again)
    client.forget_host()
    out = client.ssh("echo", "back")
    assert (out.returncode, out.stdout) == (0, "back\n"), (out.stderr, again.tail())
    assert client.host_key_fingerprints() == before
    assert fingerprint == before[0], (fingerprint, before)
