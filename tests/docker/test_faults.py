"""Faults a running machine meets, against the real parts (pid1 as PID 1 of a
namespace, its own containerd + dockerd, see conftest.py): each test injects
one fault, checks what the user sees (the console and dom0 come back, or
stay up; the state and log say what happened) and that nothing of the
user's was lost (their containers, the files in them, their images).

docs/faults.md's table points here. test_system_containers.py
covers the restart mechanics of a killed dockerd or containerd; this module
adds the containerd shim and what survives each of the three kills.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import System, run_key
from test_system_containers import assert_one_each, booted, cpu_seconds, import_image

from devtools.harness import namespace_processes

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

KEPT = "kept-across-the-fault"


def with_user_data(system: System) -> None:
    """What a user has on the machine: a running container with a file in its
    writable layer, a stopped one, and an image tag of their own."""
    system.docker("tag", "busybox:latest", "mine:1")
    system.docker("run", "-d", "--name", "work", "--net", "host", "busybox:latest",
                  "sh", "-c", f"echo {KEPT} > /data; exec sleep 100000")  # fmt: skip
    system.docker("run", "--name", "notes", "--net", "host", "busybox:latest", "sh", "-c", f"echo {KEPT} > /notes")
    system.wait("the user's file written", lambda: KEPT in system.docker("exec", "work", "cat", "/data", check=False))


def assert_user_data_kept(system: System) -> None:
    """The user's containers exist with their files, and their image tag is there."""
    assert "mine:1" in system.docker("images", "--format", "{{.Repository}}:{{.Tag}}"), system.describe()
    names = system.docker("ps", "-a", "--format", "{{.Names}}").split()
    assert {"work", "notes"} <= set(names), f"{names}\n{system.describe()}"
    if system.inspect("work")["State"]["Running"] is False:
        system.docker("start", "work")  # not restarted by dockerd (no restart policy): the user's own call
    assert system.docker("exec", "work", "cat", "/data").strip() == KEPT, system.describe()
    copied = system.docker("cp", "notes:/notes", "-")  # a tar stream of the stopped container's file
    assert KEPT in copied, system.describe()


def processes_named(system: System, name: str) -> list[dict[str, str]]:
    return [p for p in namespace_processes(system.run.pid) if p["Name"] == name]


def shim_of(system: System, container_id: str) -> int:
    """The containerd-shim-runc-v2 process that runs container_id."""
    for proc in namespace_processes(system.run.pid):
        if not proc["Name"].startswith("containerd-shim"):
            continue
        try:
            argv = Path(f"/proc/{proc['pid']}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if container_id.encode() in argv:
            return int(proc["pid"])
    raise AssertionError(f"no shim for {container_id[:12]}\n{system.describe()}")


def both_reported_running(system: System) -> None:
    system.wait(
        "pid1 reports console and dom0 running",
        lambda: all(system.container_state(r).get("status") == "running" for r in ("console", "dom0")),
        timeout=60,
    )


def test_shim_containerd_and_dockerd_killed_keep_the_users_containers_and_images(start_system) -> None:
    system = start_system()
    booted(system)
    with_user_data(system)
    work_shim = shim_of(system, system.inspect("work")["Id"])

    # 1. The console's shim: the console exits and is replaced; dom0 and the
    # user's container, each with a shim of its own, do not notice.
    console, dom0 = system.wait_running("console"), system.wait_running("dom0")
    os.kill(shim_of(system, console["Id"]), signal.SIGKILL)
    console = system.wait_running("console", other_than=run_key(console), timeout=60)
    both_reported_running(system)
    assert run_key(system.inspect("dom0")) == run_key(dom0), f"dom0 was restarted\n{system.describe()}"
    assert system.container_state("dom0")["restarts"] == 0, system.describe()
    assert shim_of(system, system.inspect("work")["Id"]) == work_shim, system.describe()
    assert system.inspect("work")["State"]["Running"], system.describe()
    assert_user_data_kept(system)

    # 2. containerd, then 3. dockerd: pid1 restarts the daemons, the system
    # containers come back, and the user's containers, files and images are kept.
    # (dockerd 20.10 is restarted after containerd too, see test_system_containers.py)
    for daemon in ("containerd", "dockerd"):
        [proc] = processes_named(system, daemon)
        before = {d: (system.run.state()["dockerd"][d] or {}).get("restarts", 0) for d in ("containerd", "dockerd")}
        os.kill(int(proc["pid"]), signal.SIGKILL)
        system.run.wait_state(
            f"{daemon} (and dockerd) restarted and running",
            lambda s, d=daemon, b=before: (
                s["dockerd"][d].get("restarts", 0) > b[d]
                and s["dockerd"]["dockerd"].get("restarts", 0) > b["dockerd"]
                and s["dockerd"]["dockerd"]["status"] == "running"
            ),
            timeout=60,
        )
        system.wait_running("console", timeout=60)
        system.wait_running("dom0", timeout=60)
        both_reported_running(system)
        assert_user_data_kept(system)
    assert_one_each(system)


def test_console_image_deleted_under_the_running_console(start_system) -> None:
    """`docker rmi -f` of the console's image while it runs: the running
    console is not touched (Docker keeps an image in use); when it next
    starts, the tag is missing and the bundled busybox runs, with the reason."""
    system = start_system()
    booted(system)
    mine = import_image(system, "my-console:1", ["sh"])
    system.docker("tag", "my-console:1", "console-image:latest")
    before = system.wait_running("console")
    system.docker("kill", "console")
    running = system.wait_running("console", other_than=run_key(before))
    assert running["Image"] == mine, system.describe()
    system.docker("rmi", "-f", "console-image:latest", "my-console:1")
    assert "console-image" not in system.docker("images", "--format", "{{.Repository}}")
    # The user's shell keeps running from the deleted image.
    time.sleep(1)  # a window in which a wrong reaction (a restart) would show
    assert run_key(system.inspect("console")) == run_key(running), system.describe()
    assert system.docker("exec", "console", "cat", "/etc/flavour") == "my-console:1"
    # The user exits: the next console is the bundled busybox, and the state says why.
    system.docker("kill", "console")
    after = system.wait_running("console", other_than=run_key(running))
    busybox = system.docker("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip()
    assert after["Image"] == busybox, system.describe()
    recorded = system.wait(
        "the state names busybox and why",
        lambda: (
            (s := system.container_state("console")).get("image_id") == busybox and s.get("status") == "running" and s
        ),
    )
    assert recorded["image"] == "busybox:latest", recorded
    assert "console-image:latest missing" in recorded["image_reason"], recorded
    assert system.container_state("dom0")["restarts"] == 0, system.describe()
    assert_one_each(system)


# --- /var/lib/docker full ----------------------------------------------------------------------


@pytest.fixture
def small_data_root(tmp_path: Path):
    """A 96 MiB ext4 filesystem (no reserved blocks) loop-mounted where the
    next start_system() puts its data root; returns (workdir, mountpoint)."""
    if not shutil.which("mkfs.ext4") or not Path("/dev/loop-control").exists():
        pytest.skip("needs mkfs.ext4 and loop devices")
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="p1f-", dir="/var/tmp"))
    image = tmp_path / "docker.img"
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "DOCKER", str(image)], check=True)
    mountpoint = workdir / "data"
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield workdir, mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in directory until the filesystem has no block left (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 1):  # big writes first, then what is left of the last blocks
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler


def test_data_root_full_keeps_console_and_dom0_and_recovers_when_freed(start_system, small_data_root) -> None:
    workdir, mountpoint = small_data_root
    system = start_system(workdir=workdir)
    booted(system)
    console, dom0 = system.wait_running("console"), system.wait_running("dom0")
    filler = fill(mountpoint)
    assert os.statvfs(mountpoint).f_bavail == 0, os.statvfs(mountpoint)

    # What the user sees: a new container cannot be made, and says why.
    done = subprocess.run(
        ["docker", "-H", f"unix://{system.socket}", "run", "--rm", "busybox:latest", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    print("docker run on a full disk:", done.returncode, done.stderr.strip())
    assert done.returncode != 0 and "no space left on device" in done.stderr, done.stderr
    # The console and dom0 stay up, untouched; pid1 and dockerd too.
    time.sleep(2)  # a window in which a wrong reaction (a restart, a crash) would show
    assert run_key(system.inspect("console")) == run_key(console), system.describe()
    assert run_key(system.inspect("dom0")) == run_key(dom0), system.describe()
    assert system.run.state()["dockerd"]["dockerd"]["status"] == "running", system.describe()
    # The user exits the shell: dockerd cannot write the container's config,
    # so the console cannot start again; pid1 says why in its log (and the
    # state's log ring) and retries with its capped backoff, without spinning.
    system.docker("kill", "console")
    system.run.wait_log("console: start failed", timeout=30)
    system.wait(
        "the state shows the console waiting and says why",
        lambda: (
            system.container_state("console").get("status") in ("backoff", "exited")
            and any("no space left on device" in line["message"] for line in system.run.state()["log"])
        ),
    )
    assert system.inspect("dom0")["State"]["Running"] and system.container_state("dom0")["status"] == "running"
    time.sleep(3)  # a window to count retries in
    failures = system.run.log().count("console: start failed")
    assert failures <= 12, f"{failures} start attempts in a few seconds: no backoff\n{system.describe()}"
    # Freeing the space recovers: a container can be made again.
    filler.unlink()
    system.wait_running("console", timeout=40)  # the next retry, within the backoff cap (10 s)
    system.wait(
        "pid1 reports the console running", lambda: system.container_state("console").get("status") == "running"
    )
    system.wait(
        "docker run works again",
        lambda: subprocess.run(
            ["docker", "-H", f"unix://{system.socket}", "run", "--rm", "busybox:latest", "true"],
            capture_output=True, timeout=60,
        ).returncode == 0,
    )  # fmt: skip
    assert_one_each(system)


# --- a control flood ---------------------------------------------------------------------------


def test_control_flood_leaves_pid1_responsive_and_the_stop_works(start_system) -> None:
    """Thousands of writes to the control FIFO from several writers at once
    (garbage, over-long lines, invalid UTF-8, repeated restarts) for several
    seconds: pid1 keeps its log bounded, still handles a console crash during
    the flood, and a poweroff after it stops the machine."""
    system = start_system(phases="console,dom0,control")
    booted(system)
    control = system.run.state_dir / "control"
    delivered = 0
    lock = threading.Lock()
    ends = threading.Event()

    def writer(payloads: list[bytes]) -> None:
        nonlocal delivered
        n = 0
        while not ends.is_set():
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, payloads[n % len(payloads)])
                n += 1
            except BlockingIOError:
                time.sleep(0.001)  # the FIFO is full for a moment: pid1 reads it at its own pace
            finally:
                os.close(fd)
        with lock:
            delivered += n

    payloads = [b"bogus command\n", b"restart nothing\n", b"x" * 5000 + b"\n", b"\xff\xfe\n", b"restart dom0\n"]
    cpu_before, wall_before = cpu_seconds(system.run.pid), time.monotonic()
    threads = [threading.Thread(target=writer, args=(payloads[i:] + payloads[:i],)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        # During the flood pid1 still handles a crash of the console.
        console = system.wait_running("console")
        system.docker("kill", "console")
        system.wait_running("console", other_than=run_key(console), timeout=30)
        time.sleep(max(0.0, 6 - (time.monotonic() - wall_before)))  # the flood lasts over one rate-limit window
    finally:
        ends.set()
        for thread in threads:
            thread.join(30)
    cpu = cpu_seconds(system.run.pid) - cpu_before
    wall = time.monotonic() - wall_before
    print(f"{delivered} control writes delivered in {wall:.1f} s; pid1 used {cpu:.2f} s CPU")
    assert delivered >= 2000, delivered
    both_reported_running(system)
    system.run.wait_log("messages rate-limited", timeout=15)  # the summary of what was held back
    log = system.run.log()
    errors = log.count("pid1: error: control:")
    assert errors <= 10 * (wall / 5 + 2), f"{errors} error lines: not rate-limited\n{system.describe()}"
    # The stop still works, from a writer after the flood: a blocking write,
    # bounded by the wait below (the FIFO may still hold the flood's tail).
    fd = os.open(control, os.O_WRONLY)
    writer = threading.Thread(target=os.write, args=(fd, b"poweroff\n"), daemon=True)
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), f"the poweroff write blocked 30 s: the FIFO is not read\n{system.describe()}"
    os.close(fd)
    code = system.run.wait_exit(90)
    assert code == -signal.SIGINT, f"unshare ended with {code}\n{system.describe()}"
