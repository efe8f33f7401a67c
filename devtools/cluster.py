"""A cluster that qemu/cluster brought up, as the VM tests and
bench/cluster.py drive it: a command on node K over SSH (the cluster's own
key and known_hosts, in its state directory), the nodes' serial logs, and
the manager's Docker API over one SSH connection kept open, for what is
polled (the running tasks of a service, the Ready nodes)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from devtools.vm import REPO

CLUSTER = REPO / "qemu/cluster"


class DockerApiError(RuntimeError):
    def __init__(self, path: str, status: int, body: bytes) -> None:
        super().__init__(f"GET {path}: {status} {body[:200]!r}")
        self.status = status


class DockerApi:
    """A node's Docker API through `docker system dial-stdio` on one SSH
    connection, HTTP/1.1 kept alive over it. Polling with a command per
    poll (an SSH handshake and a docker client's start, each time) takes
    most of a 1-vCPU TCG node's CPU at two polls a second, and slows what
    is being timed; here a poll costs dockerd's answer alone."""

    def __init__(self, argv: list[str], timeout: float = 30) -> None:
        self.argv, self.timeout = argv, timeout
        self.proc: subprocess.Popen | None = None
        self.conn: http.client.HTTPConnection | None = None

    def open(self) -> http.client.HTTPConnection:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(self.argv, stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL)
        theirs.close()
        ours.settimeout(self.timeout)
        self.conn = http.client.HTTPConnection("docker", timeout=self.timeout)
        self.conn.sock = ours
        return self.conn

    def get(self, path: str, **filters: list[str]) -> Any:
        """GET `path` with `filters` (the API's JSON filters); the decoded
        answer. A connection that broke (the node rebooted) is opened once
        more."""
        query = f"?filters={urllib.parse.quote(json.dumps(filters))}" if filters else ""
        for attempt in (1, 2):
            conn = self.conn or self.open()
            try:
                conn.request("GET", path + query)
                answer = conn.getresponse()
                body = answer.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if answer.status != 200:
                raise DockerApiError(path, answer.status, body)
            return json.loads(body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Cluster:
    def __init__(self, state: Path, ssh_base: int) -> None:
        self.state, self.ssh_base = state, ssh_base
        self.manager = DockerApi(self.ssh_argv(1, "docker system dial-stdio"))

    def ssh_argv(self, node: int, command: str) -> list[str]:
        return ["ssh", "-p", str(self.ssh_base + node - 1), "-i", str(self.state / "id_ed25519"),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.state / 'known_hosts'}",
                "root@127.0.0.1", command]  # fmt: skip

    def ssh(self, node: int, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = self.ssh_argv(node, command)
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

    def node_names(self, state: str | None = None) -> dict[str, str]:
        """The manager's nodes (those in `state`, e.g. "ready", if given): id -> host name."""
        nodes = self.manager.get("/nodes")
        return {n["ID"]: n["Description"]["Hostname"] for n in nodes if state in (None, n["Status"]["State"])}

    def ready_nodes(self) -> set[str]:
        """The host names of the nodes the manager lists as Ready."""
        return set(self.node_names("ready").values())

    def tasks_running(self, service: str) -> dict[str, int]:
        """Per node (host name), the tasks of `service` that should run
        and do, as the manager lists them."""
        try:
            tasks = self.manager.get("/tasks", service=[service], **{"desired-state": ["running"]})
        except DockerApiError as exc:
            if exc.status == 404:  # no such service (yet, or any more): none of its tasks runs
                return {}
            raise
        names = self.node_names()
        running: dict[str, int] = {}
        for task in tasks:
            if task["Status"]["State"] == "running" and "NodeID" in task:
                node = names.get(task["NodeID"], task["NodeID"])
                running[node] = running.get(node, 0) + 1
        return running

    def qemu_pid(self, node: int) -> int:
        return int((self.state / f"node-{node}" / "qemu.pid").read_text())

    def kill(self, node: int) -> None:
        """Node K's VM gone at once, as a host that lost power."""
        os.kill(self.qemu_pid(node), signal.SIGKILL)

    def command(self, *words: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """qemu/cluster WORDS... on this cluster's state directory."""
        if words[:1] == ("down",):
            self.manager.close()  # its SSH connection would end with the manager's VM
        argv = [str(CLUSTER), *words, "--state", str(self.state), "--ssh-base", str(self.ssh_base)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
