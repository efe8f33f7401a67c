"""pid1.docker_tcp: Docker's TCP API, only with TLS and client certificates.
pid1 as PID 1 with its own dockerd; the certificates are made here with
openssl (a CA, a server certificate for 127.0.0.1, a client certificate)
and given in the user-data (kept in the host state, as a disk keeps it).
The listener is on 127.0.0.1 only.

Without certificates, or with the key missing, nothing listens, and the
log and the state say why: pid1 never opens plain TCP."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import System, skip_without_docker
from test_userdata import put_user_data

pytestmark = pytest.mark.docker

PHASES = "images"  # dockerd and the userdata phase before it


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """ca.pem, server-{cert,key}.pem (127.0.0.1), client-{cert,key}.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=test CA", "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={who}",
                "-keyout", f"{who}-key.pem", "-out", f"{who}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}-cert.pem", cwd=directory)  # fmt: skip


def indented(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.splitlines())


def user_data(certs: Path, with_key: bool = True) -> str:
    text = "#cloud-config\nonly_docker:\n  docker_tls:\n"
    text += f"    ca: |\n{indented((certs / 'ca.pem').read_text())}"
    text += f"    cert: |\n{indented((certs / 'server-cert.pem').read_text())}"
    if with_key:
        text += f"    key: |\n{indented((certs / 'server-key.pem').read_text())}"
    return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def remote_docker(port: int, certs: Path, *args: str, client_cert: bool = True) -> subprocess.CompletedProcess:
    tls = ["--tlsverify", f"--tlscacert={certs / 'ca.pem'}"]
    if client_cert:
        tls += [f"--tlscert={certs / 'client-cert.pem'}", f"--tlskey={certs / 'client-key.pem'}"]
    return subprocess.run(
        ["docker", "-H", f"tcp://127.0.0.1:{port}", *tls, *args], capture_output=True, text=True, timeout=60
    )


def boot(start_system, port: int, user_data_text: str | None) -> System:
    skip_without_docker()
    workdir = Path(tempfile.mkdtemp(prefix="p1t-", dir="/var/tmp"))
    if user_data_text is not None:
        put_user_data(workdir, user_data_text)
    system = start_system(f"pid1.docker_tcp=127.0.0.1:{port}", phases=PHASES, workdir=workdir)
    system.run.wait_phase("dockerd", timeout=90)
    return system


def test_docker_over_tcp_with_tls_and_a_client_certificate(start_system, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs)
    port = free_port()
    system = boot(start_system, port, user_data(certs))
    state = system.run.state()
    expected = {"status": f"TLS on 127.0.0.1:{port}", "address": f"127.0.0.1:{port}", "tls": "verify", "error": None}
    assert state["dockerd"]["tcp"] == expected, system.describe()
    system.run.wait_log(f"dockerd: Docker's TCP API on 127.0.0.1:{port}, TLS with client certificates only")
    done = remote_docker(port, certs, "version", "--format", "{{.Server.Version}}")
    assert done.returncode == 0 and done.stdout.strip(), f"{done.stdout}{done.stderr}\n{system.describe()}"
    # The same engine as the unix socket's.
    assert done.stdout.strip() == system.docker("version", "--format", "{{.Server.Version}}").strip()
    # Negative control: --tlsverify on the server side refuses a client without a certificate.
    refused = remote_docker(port, certs, "version", client_cert=False)
    assert refused.returncode != 0 and "Server:" not in refused.stdout, refused.stdout + refused.stderr
    # The certificates are kept in the host state, the key readable by root only.
    key = system.workdir / "data" / "only-docker" / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600, oct(key.stat().st_mode)


def test_no_certificates_nothing_listens_and_the_error_says_why(start_system) -> None:
    port = free_port()
    system = boot(start_system, port, None)
    error = system.run.state()["dockerd"]["tcp"]["error"]
    assert "Docker's TCP API stays off: no TLS ca, cert, key" in error and "never listens on plain TCP" in error
    system.run.wait_log(f"dockerd: pid1.docker_tcp=127.0.0.1:{port}: Docker's TCP API stays off")
    assert not listening(port), f"something listens on 127.0.0.1:{port}\n{system.describe()}"
    system.docker("version")  # dockerd runs, on its unix socket


def test_a_certificate_without_its_key_is_refused_and_nothing_listens(start_system, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs)
    port = free_port()
    system = boot(start_system, port, user_data(certs, with_key=False))
    state = system.run.state()
    assert any("docker_tls.key is missing" in w for w in state["userdata"]["warnings"]), state["userdata"]
    assert "no TLS ca, cert, key" in state["dockerd"]["tcp"]["error"], state["dockerd"]
    assert not listening(port), f"something listens on 127.0.0.1:{port}\n{system.describe()}"
