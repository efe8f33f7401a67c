"""A cluster that qemu/cluster brought up, as the VM tests and
bench/cluster.py drive it: a command on node K over SSH (the cluster's own
key and known_hosts, in its state directory), the nodes' serial logs, the
running tasks of a service as the manager lists them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from devtools.vm import REPO

CLUSTER = REPO / "qemu/cluster"


class Cluster:
    def __init__(self, state: Path, ssh_base: int) -> None:
        self.state, self.ssh_base = state, ssh_base

    def ssh(self, node: int, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = ["ssh", "-p", str(self.ssh_base + node - 1), "-i", str(self.state / "id_ed25519"),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.state / 'known_hosts'}",
                "root@127.0.0.1", command]  # fmt: skip
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 255, "", "timed out")

    def out(self, node: int, command: str) -> str:
        done = self.ssh(node, command)
        assert done.returncode == 0, (command, done.stdout, done.stderr, self.logs())
        return done.stdout

    def logs(self, lines: int = 30) -> str:
        parts = []
        for log in sorted(self.state.glob("node-*/serial.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.parent.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def busybox(self) -> str:
        """The bundled busybox by its image id, the same on every node: a
        task's image named by id is never pulled (a tag would be, from a
        registry these VMs must not reach)."""
        return self.out(1, "docker image inspect --format '{{.Id}}' busybox:latest").strip()

    def tasks_running(self, service: str) -> dict[str, int]:
        listing = "--filter desired-state=running --format '{{.Node}} {{.CurrentState}}'"
        done = self.ssh(1, f"docker service ps {service} {listing}")
        running: dict[str, int] = {}
        for line in done.stdout.splitlines():
            node, _, current = line.partition(" ")
            if current.startswith("Running"):
                running[node] = running.get(node, 0) + 1
        return running

    def qemu_pid(self, node: int) -> int:
        return int((self.state / f"node-{node}" / "qemu.pid").read_text())

    def kill(self, node: int) -> None:
        """Node K's VM gone at once, as a host that lost power."""
        os.kill(self.qemu_pid(node), signal.SIGKILL)

    def command(self, *words: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """qemu/cluster WORDS... on this cluster's state directory."""
        argv = [str(CLUSTER), *words, "--state", str(self.state), "--ssh-base", str(self.ssh_base)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
