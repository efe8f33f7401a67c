"""Two network namespaces joined by a veth, with busybox udhcpd on the
server end: the network the DHCP and clock tests (and bench/soak.py) give
pid1 instead of the host's. Needs root, iproute2 and busybox-static.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

LEASE_SECONDS = 20  # busybox udhcpc renews after ~3/4 of it here (15 s)


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return done


@dataclass
class NetPair:
    """Two network namespaces joined by a veth: `eth0` in the client, `srv0`
    (SERVER_IP/24) in the server, and optionally udhcpd serving on it."""

    client: str
    server: str
    subnet: str  # "10.X.Y"
    workdir: Path
    udhcpd: subprocess.Popen | None = None

    @property
    def server_ip(self) -> str:
        return f"{self.subnet}.1"

    def create(self) -> NetPair:
        sh("ip", "netns", "add", self.client)
        sh("ip", "netns", "add", self.server)
        sh("ip", "-n", self.client, "link", "add", "eth0", "type", "veth", "peer", "name", "srv0", "netns", self.server)
        sh("ip", "-n", self.server, "link", "set", "lo", "up")
        sh("ip", "-n", self.server, "addr", "add", f"{self.server_ip}/24", "dev", "srv0")
        sh("ip", "-n", self.server, "link", "set", "srv0", "up")
        return self

    def start_udhcpd(self, lease: int = LEASE_SECONDS, options: tuple[str, ...] = ()) -> None:
        """`options`: more udhcpd `option` lines, e.g. "ntpsrv 10.1.2.1" (option 42)."""
        conf = self.workdir / "udhcpd.conf"
        leases = self.workdir / "udhcpd.leases"
        leases.write_text("")
        conf.write_text(
            f"start {self.subnet}.10\nend {self.subnet}.20\ninterface srv0\nlease_file {leases}\n"
            f"min_lease 10\noption subnet 255.255.255.0\noption router {self.server_ip}\n"
            f"option dns {self.server_ip}\noption domain test.invalid\noption lease {lease}\n"
            + "".join(f"option {line}\n" for line in options)
        )
        self.udhcpd_log = open(self.workdir / "udhcpd.log", "wb")
        self.udhcpd = subprocess.Popen(
            ["ip", "netns", "exec", self.server, "busybox", "udhcpd", "-f", str(conf)],
            stdout=self.udhcpd_log,
            stderr=subprocess.STDOUT,
        )

    def server_log(self) -> str:
        try:
            return (self.workdir / "udhcpd.log").read_text(errors="replace")
        except OSError:
            return ""

    def acks(self) -> int:
        return self.server_log().count("sending ACK")

    def client_addresses(self) -> list[dict]:
        out = sh("ip", "-n", self.client, "-j", "-4", "addr", "show", "dev", "eth0").stdout
        return [a for link in json.loads(out or "[]") for a in link.get("addr_info", [])]

    def client_routes(self) -> str:
        return sh("ip", "-n", self.client, "-4", "route").stdout

    def describe(self) -> str:
        return (
            f"--- client addresses ---\n{self.client_addresses()}\n--- client routes ---\n{self.client_routes()}"
            f"--- udhcpd log ---\n{self.server_log()[-3000:]}"
        )

    def destroy(self) -> None:
        if self.udhcpd is not None:
            self.udhcpd.terminate()
            try:
                self.udhcpd.wait(5)
            except subprocess.TimeoutExpired:
                self.udhcpd.kill()
                self.udhcpd.wait(5)
            self.udhcpd_log.close()
        for ns in (self.client, self.server):
            sh("ip", "netns", "del", ns, check=False)
