"""SSH keys: fingerprints against the host's own ssh-keygen, key lines as
authorized_keys has them, the listen setting, the SSH line of VT2, and the
dom0 image's content (built as image/build builds it, from the host's
dropbear-bin)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from image import bundled_images
from pid1.config import listen_problem
from pid1.host_state import HostState
from pid1.phases.ssh import probe_address, read_host_keys, remember
from pid1.ssh_keys import KeyLineError, authorized_keys, key_problem, parse_key
from pid1.state import State
from pid1.state_schema import SshState
from pid1.view.header import ssh_lines
from pid1.view.render import render_long
from pid1.view.statefile import decode

REPO = Path(__file__).resolve().parents[2]

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) missing")


def keygen(tmp_path: Path, kind: str, bits: int | None = None, comment: str = "me@laptop") -> Path:
    path = tmp_path / f"id_{kind}_{bits}"
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)]
    if bits:
        argv += ["-b", str(bits)]
    subprocess.run(argv, check=True, capture_output=True)
    return path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")


@needs_keygen
@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("rsa", 2048), ("rsa", 3072), ("ecdsa", 256),
                                            ("ecdsa", 384), ("ecdsa", 521)])  # fmt: skip
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path, kind: str, bits: int | None) -> None:
    pub = keygen(tmp_path, kind, bits)
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
    assert parse_key(pub.read_text()).fingerprint() == expected.stdout.strip()


@needs_keygen
def test_fingerprint_without_a_comment(tmp_path: Path) -> None:
    pub = keygen(tmp_path, "ed25519", comment="")
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
    assert parse_key(pub.read_text()).fingerprint() == expected.stdout.strip()
    assert "no comment" in expected.stdout


@pytest.mark.skipif(shutil.which("dropbearkey") is None, reason="dropbearkey (dropbear-bin) missing")
def test_fingerprint_of_dropbears_public_key_matches_dropbear(tmp_path: Path) -> None:
    """dom0's host key is made by dropbearkey; its .pub (dropbearkey -y) fingerprints as dropbear says."""
    made = subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(tmp_path / "k")], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    line = next(x for x in made.splitlines() if x.startswith("ssh-"))
    said = next(x for x in made.splitlines() if x.startswith("Fingerprint:")).split()[-1]
    assert parse_key(line).sha256 == said


def test_key_lines_options_and_bad_ones() -> None:
    good = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + b"k" * 32).decode()
    assert key_problem(good) is None
    assert key_problem(f'from="10.0.2.2",no-pty {good} me') is None
    assert "does not match its type" in key_problem(good.replace("ssh-ed25519", "ssh-rsa", 1))
    assert "not base64" in key_problem("ssh-ed25519 !!!notbase64")
    assert "no key type" in key_problem("hello world")
    assert "one line" in key_problem(f"{good}\n{good}")
    assert "one line" in key_problem("ssh-ed25519 " + "A" * 20000)
    truncated = "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x03\x01\x00").decode()
    assert "ends early" in key_problem(truncated)
    with pytest.raises(KeyLineError):
        parse_key(truncated)
    keys, warnings = authorized_keys(f"# mine\n{good} a\n\nnot a key\n{good} b\n")
    assert keys == [f"{good} a", f"{good} b"]
    assert warnings == ["line 4: no key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ...) in 'not a key'; skipped"]


def test_listen_setting() -> None:
    assert listen_problem("22") is None
    assert listen_problem("127.0.0.1:2222") is None
    assert listen_problem("[::1]:22") is None
    assert "not a port" in listen_problem("0")
    assert "not a port" in listen_problem("ssh")
    assert "not an IP address" in listen_problem("example.org:22")
    assert probe_address("22") == ("127.0.0.1", 22)
    assert probe_address("0.0.0.0:22") == ("127.0.0.1", 22)
    assert probe_address("10.0.2.15:2222") == ("10.0.2.15", 2222)
    assert probe_address("[::1]:22") == ("::1", 22)


def test_host_key_read_is_bounded_and_remembered(tmp_path: Path) -> None:
    state = HostState(str(tmp_path), persistent=True)
    (tmp_path / "ssh").mkdir()
    pub = tmp_path / "ssh" / "dropbear_ed25519_host_key.pub"
    keys, problems = read_host_keys(state)
    assert keys == [] and "No such file" in problems[0]
    pub.symlink_to("/dev/zero")  # dom0 writes this directory: a link is not followed
    keys, problems = read_host_keys(state)
    assert keys == [] and "symbolic link" in problems[0]
    pub.unlink()
    pub.write_bytes(b"x" * 100_000)
    keys, problems = read_host_keys(state)
    assert keys == [] and "larger than" in problems[0]
    line = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + b"h" * 32).decode()
    pub.write_text(f"{line} root@dom0\n")
    keys, problems = read_host_keys(state)
    assert problems == [] and keys[0].fingerprint().endswith("root@dom0 (ED25519)")
    fingerprints = [keys[0].fingerprint()]
    assert remember(state, fingerprints) == "new"
    assert remember(state, fingerprints) == "kept"
    assert remember(state, ["256 SHA256:other x (ED25519)"]) == "new"


def test_vt2_ssh_lines() -> None:
    assert ssh_lines(SshState()) == []
    off = ssh_lines(
        decode(SshState, {"status": "off", "reason": "no SSH key: add ssh_authorized_keys to the user-data"})
    )
    assert off == ["ssh:     no SSH key: add ssh_authorized_keys to the user-data"]
    fingerprint = "SHA256:3Uzp/rksqxJvgLA1dzfJS3JF6TR8awkIh7xpMO5kp9c"  # a real one's length
    running = ssh_lines(decode(SshState, {"status": "running", "listen": "22", "keys": 2, "host_key_origin": "kept",
                                          "host_keys": [f"256 {fingerprint} root@dom0 (ED25519)"]}))  # fmt: skip
    assert running == ["ssh:     port 22 · 2 keys · host key kept", f"         256 {fingerprint} (ED25519)"]
    # the fingerprint is whole in the status file's (and an 80-column VT2's) width
    state = {"ssh": {"status": "running", "listen": "22", "keys": 1, "host_key_origin": "new",
                     "host_keys": [f"256 {fingerprint} a-very-long-comment@some.host.example (ED25519)"]}}  # fmt: skip
    assert f"         256 {fingerprint} (ED25519)" in render_long(decode(State, state), 80, 0.0)
    unknown = ssh_lines(decode(SshState, {"status": "running", "keys": 1, "host_keys": "junk"}))
    assert unknown == ["ssh:     port ? · 1 key · host key unknown"]


@pytest.mark.skipif(not Path("/usr/sbin/dropbear").exists(), reason="dropbear-bin missing (tests/run installs it)")
def test_dom0_image_is_reproducible_and_holds_dropbear_and_its_libraries(tmp_path: Path) -> None:
    module = bundled_images
    first = module.build(tmp_path / "a")
    second = module.build(tmp_path / "b")
    assert first["dom0.tar"].read_bytes() == second["dom0.tar"].read_bytes()  # same inputs, same image ID
    with tarfile.open(first["dom0.tar"]) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["pid1-dom0:latest"]
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        layer = outer.extractfile(manifest[0]["Layers"][0]).read()
    assert config["config"]["Cmd"] == ["/usr/lib/pid1-dom0/start"]
    assert config["config"]["Labels"]["org.only-docker.ssh"] == "dropbear"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = set(tar.getnames())
        start = tar.extractfile("usr/lib/pid1-dom0/start").read().decode()
    for name in ("usr/sbin/dropbear", "usr/bin/dropbearkey", "lib64/ld-linux-x86-64.so.2", "bin/busybox",
                 "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libtomcrypt.so.1", "etc/shells"):  # fmt: skip
        assert name in names, name
    assert " -s " in start  # no password logins
    with pytest.raises(module.MissingProgram, match="dropbear"):
        module.program_files(("usr/sbin/dropbear",), [tmp_path / "empty"])
