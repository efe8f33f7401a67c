"""Reading what the unprivileged dhcp container can write (its lease file):
a FIFO, a symlink to /dev/zero or elsewhere, a directory, a huge file. Each
read runs in a child process with a time and memory bound, so a read that
blocks or never ends fails the test instead of hanging it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEASE = "ip=10.0.2.15\nprefixlen=24\nrouter=10.0.2.2\nlease=86400\n"
BOUND = 10  # seconds: a correct read takes milliseconds


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def read_lease_in_a_child(path: Path) -> dict[str, str]:
    code = (
        "import json, sys\nfrom pid1.net.dhcp import read_lease\n"
        "class Log:\n    def warning(self, text): print(text, file=sys.stderr)\n"
        "print(json.dumps(read_lease(sys.argv[1], Log())))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=BOUND,
            env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=limit_memory,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"read_lease({path}) did not return within {BOUND} s (a blocking open or an endless read)")
    assert done.returncode == 0, f"read_lease({path}) failed: {done.stderr[-2000:]}"
    print(done.stderr)
    return json.loads(done.stdout)


def test_a_lease_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "lease").write_text(LEASE)
    assert read_lease_in_a_child(tmp_path / "lease") == {
        "ip": "10.0.2.15", "prefixlen": "24", "router": "10.0.2.2", "lease": "86400",
    }  # fmt: skip
    assert read_lease_in_a_child(tmp_path / "missing") == {}


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "link to a lease", "directory", "huge file", "device"])
def test_a_hostile_lease_is_ignored_at_once(tmp_path: Path, kind: str) -> None:
    lease = tmp_path / "lease"
    if kind == "fifo":
        os.mkfifo(lease)  # open() without O_NONBLOCK waits for a writer for ever
    elif kind == "link to /dev/zero":
        os.symlink("/dev/zero", lease)  # read() without a bound never ends
    elif kind == "link to a lease":
        (tmp_path / "elsewhere").write_text(LEASE)
        os.symlink(tmp_path / "elsewhere", lease)  # what a link points at is not the lease pid1 trusts
    elif kind == "directory":
        lease.mkdir()
    elif kind == "huge file":
        with open(lease, "w") as f:
            f.write(LEASE)
            f.truncate(2 << 30)  # sparse: 2 GiB of zeroes after the lease
    else:
        os.mknod(lease, 0o600 | 0o020000, os.makedev(1, 5))  # a /dev/zero node of its own
    assert read_lease_in_a_child(lease) == {}
