"""pid1 as PID 1 of a namespace runs containerd, dockerd, the images phase and
the dom0 and console system containers (see conftest.py); each test drives a
scenario with the docker CLI and checks what pid1 did, from Docker's side and
from pid1's state.json. Every wait is bounded and prints pid1's log, its state
and `docker ps -a` when it fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import System, run_key

from devtools.harness import namespace_processes
from devtools.pty import Terminal
from image import bundled_images

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

BOOT_TIMEOUT = 120
LOG_LINE = re.compile(r"^\[\s*([0-9.]+)\] pid1: \w+: (.*)$")


def booted(system: System) -> None:
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    system.run.wait_phase("dom0", timeout=30)
    system.wait_running("console")
    system.wait_running("dom0")


def import_image(system: System, tag: str, cmd: list[str]) -> str:
    """A busybox image with its own command (docker import of the bundled rootfs); returns its id."""
    layer = bundled_images.rootfs_layer("/bin/busybox", {"etc/flavour": (tag.encode(), 0o644)})
    system.docker("import", "-c", f"CMD {json.dumps(cmd)}", "-", tag, input=layer)
    return system.docker("image", "inspect", "--format", "{{.Id}}", tag).strip()


def image_id(system: System, tag: str) -> str:
    return system.docker("image", "inspect", "--format", "{{.Id}}", tag).strip()


def log_lines(system: System) -> list[tuple[float, str]]:
    found = []
    for line in system.run.log().splitlines():
        match = LOG_LINE.match(line)
        if match:
            found.append((float(match.group(1)), match.group(2)))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_one_each(system: System, roles: tuple[str, ...] = ("console", "dom0")) -> None:
    """Exactly one labelled container per role, each running, nothing else."""
    listed = system.containers()
    names = sorted(c["Names"] for c in listed)
    assert names == sorted(roles), f"expected one container per role {roles}, got {names}\n{system.describe()}"
    for container in listed:
        assert container["State"] == "running", f"{container['Names']} is {container['State']}\n{system.describe()}"


def test_boot_runs_dockerd_images_dom0_and_console(start_system) -> None:
    system = start_system()
    booted(system)
    state = system.run.state()
    assert state["dockerd"]["dockerd"]["status"] == "running", system.describe()
    assert state["dockerd"]["containerd"]["status"] == "running", system.describe()
    assert "loaded busybox:latest, pid1-dhcp:latest" in state["phases"]["images"]["detail"], system.describe()
    # the console runs the bundled busybox, dom0 the bundled dom0 image (busybox and an SSH server)
    tags = {"console": "busybox:latest", "dom0": "pid1-dom0:latest"}
    bundled = {role: image_id(system, tag) for role, tag in tags.items()}
    for role in ("console", "dom0"):
        info = system.inspect(role)
        assert info["Config"]["Labels"]["pid1.role"] == role
        assert info["Image"] == bundled[role], system.describe()
        assert info["HostConfig"]["NetworkMode"] == "host" and info["HostConfig"]["PidMode"] == "host"
        assert info["Config"]["Tty"] and info["Config"]["OpenStdin"], system.describe()
        binds = info["HostConfig"]["Binds"]
        assert f"{system.socket}:/var/run/docker.sock" in binds, binds
        assert f"{system.run.state_dir}:/run/pid1" in binds, binds
        recorded = system.container_state(role)
        assert recorded["status"] == "running" and recorded["image"] == tags[role], recorded
        assert recorded["image_id"] == bundled[role] and recorded["container_id"] == info["Id"], recorded
        assert "console-image:latest missing" in recorded["image_reason"] or role == "dom0", recorded
    # pid1's state dir is the container's /run/pid1; the docker client talks to pid1's dockerd.
    shown = system.docker("exec", "console", "cat", "/run/pid1/state.json")
    assert json.loads(shown)["containers"]["console"]["status"] == "running"
    system.docker("exec", "dom0", "test", "-S", "/var/run/docker.sock")
    if os.path.exists("/usr/bin/docker"):  # bound in; Debian's is dynamic, so busybox cannot run it
        system.docker("exec", "dom0", "test", "-x", "/usr/bin/docker")
    assert_one_each(system)


def test_console_killed_is_replaced_and_50_kills_leave_one(start_system) -> None:
    # A short stable time, so that each kill below counts as a first failure
    # (immediate restart) once the console has run that long (1 s: the key's minimum).
    stable = 1.0
    system = start_system(f"pid1.restart_stable={stable}")
    booted(system)
    first = system.wait_running("console")
    system.docker("kill", "console")
    second = system.wait_running("console", other_than=run_key(first))
    assert second["Image"] == image_id(system, "busybox:latest"), system.describe()
    assert_one_each(system)
    assert system.container_state("console")["restarts"] >= 1, system.describe()

    seen = {run_key(first), run_key(second)}
    current = second
    for _ in range(50):
        system.wait(
            "the console ran long enough to count as stable",
            lambda: (system.container_state("console").get("failures_in_row") == 0) or None,
            timeout=20,
        )
        system.docker("kill", "console")
        current = system.wait_running("console", other_than=run_key(current))
        seen.add(run_key(current))
    assert len(seen) == 52, f"{len(seen)} distinct console runs\n{system.describe()}"
    # A burst: kills as fast as the CLI goes, whatever state the console is in.
    for _ in range(20):
        system.docker("kill", "console", check=False)
    system.wait_running("console", timeout=40)
    system.wait(
        "pid1 reports the console running",
        lambda: system.container_state("console").get("status") == "running",
        timeout=40,
    )
    assert_one_each(system)
    assert system.container_state("console")["restarts"] >= 51, system.describe()
    assert system.container_state("dom0")["restarts"] == 0, system.describe()


def test_retagged_console_image_runs_at_the_next_start(start_system) -> None:
    system = start_system()
    booted(system)
    before = system.wait_running("console")
    flavour = import_image(system, "my-console:1", ["sh"])
    system.docker("tag", "my-console:1", "console-image:latest")
    system.docker("kill", "console")  # the console exits
    after = system.wait_running("console", other_than=run_key(before))
    assert after["Image"] == flavour, system.describe()
    assert system.docker("exec", "console", "cat", "/etc/flavour") == "my-console:1"
    recorded = system.wait(
        "the state names the new image",
        lambda: (s := system.container_state("console")).get("image_id") == flavour and s,
    )
    assert recorded["image"] == "console-image:latest" and recorded["image_reason"] == "console-image:latest present"
    assert recorded["fallback_reason"] is None, recorded
    assert_one_each(system)


def test_crash_looping_console_image_backs_off_then_falls_back(start_system) -> None:
    system = start_system()
    booted(system)
    crashy = import_image(system, "crashy:1", ["sh", "-c", "exit 3"])
    system.docker("tag", "crashy:1", "console-image:latest")
    cpu_before, wall_before = cpu_seconds(system.run.pid), time.monotonic()
    system.docker("kill", "console")
    recorded = system.wait(
        "the console falls back to busybox",
        lambda: (s := system.container_state("console")).get("fallback_reason") and s.get("status") == "running" and s,
        timeout=60,
    )
    cpu = cpu_seconds(system.run.pid) - cpu_before
    wall = time.monotonic() - wall_before
    assert recorded["image"] == "busybox:latest", recorded
    assert "console-image:latest" in recorded["fallback_reason"], recorded
    assert "exited with status 3, 5 times in a row" in recorded["fallback_reason"], recorded
    assert system.inspect("console")["Image"] == image_id(system, "busybox:latest"), system.describe()

    # The starts of the crashing image, from pid1's log: the gaps grow (backoff).
    lines = log_lines(system)
    started = re.compile(r"^console: (created and started|started again) console-image:latest ")
    starts = [t for t, text in lines if started.match(text)]
    exits = [t for t, text in lines if text.startswith("console: console-image:latest exited with status 3")]
    print("starts of console-image:latest (uptime s):", starts)
    print("its exits:", exits)
    assert len(starts) == 5 and len(exits) == 5, system.describe()
    waits = [round(start - exit_, 3) for exit_, start in zip(exits, starts[1:], strict=False)]
    print("wait from each exit to the next start (s):", waits, f"pid1 CPU {cpu:.2f} s over {wall:.2f} s")
    # The kill of the busybox console was the first failure (restarted at
    # once); the crashing image's exits then wait 0.1, 0.2, 0.4, 0.8 s.
    # Each gap holds the backoff plus a container start, which a loaded
    # machine makes slow: so the lower bounds (each at least its backoff)
    # are what shows the growth, not an ordering of the gaps.
    for wait, backoff in zip(waits, (0.1, 0.2, 0.4, 0.8), strict=True):
        assert backoff - 0.01 <= wait < backoff + 2.0, waits
    assert cpu < 0.5 * wall, f"pid1 used {cpu:.2f} s of CPU in {wall:.2f} s: a spin?\n{system.describe()}"
    assert_one_each(system)

    # A different image under the tag gets its chance again.
    fixed = import_image(system, "fixed:1", ["sh"])
    system.docker("tag", "fixed:1", "console-image:latest")
    before = system.wait_running("console")
    system.docker("kill", "console")
    after = system.wait_running("console", other_than=run_key(before))
    assert after["Image"] == fixed, system.describe()
    assert crashy != fixed
    system.wait("fallback reason cleared", lambda: system.container_state("console").get("fallback_reason") is None)


def test_dockerd_killed_is_restarted_and_the_containers_come_back(start_system) -> None:
    system = start_system()
    booted(system)
    console, dom0 = system.wait_running("console"), system.wait_running("dom0")
    dockerd = [p for p in namespace_processes(system.run.pid) if p["Name"] == "dockerd"]
    assert len(dockerd) == 1, dockerd
    subscriptions = system.run.state()["dockerd"]["event_subscriptions"]
    os.kill(int(dockerd[0]["pid"]), signal.SIGKILL)
    system.run.wait_state(
        "dockerd restarted and answering",
        lambda s: s["dockerd"]["dockerd"].get("restarts", 0) >= 1 and s["dockerd"]["dockerd"]["status"] == "running",
        timeout=60,
    )
    system.run.wait_state(
        "a new event subscription",
        lambda s: s["dockerd"].get("event_subscriptions", 0) > subscriptions,
        timeout=30,
    )
    new_console = system.wait_running("console", other_than=run_key(console), timeout=60)
    new_dom0 = system.wait_running("dom0", other_than=run_key(dom0), timeout=60)
    assert new_console["Id"] and new_dom0["Id"]
    system.wait(
        "pid1 reports both running",
        lambda: all(system.container_state(r).get("status") == "running" for r in ("console", "dom0")),
    )
    assert_one_each(system)
    # And the event stream works again: a kill now is handled as before.
    system.docker("kill", "console")
    system.wait_running("console", other_than=run_key(new_console))
    assert_one_each(system)


def test_containerd_killed_is_restarted_then_dockerd_and_the_containers(start_system) -> None:
    """dockerd 20.10 misses exits around a containerd restart, so pid1 restarts
    dockerd after containerd; the console and dom0 come back, and crashes are
    seen again afterwards."""
    system = start_system()
    booted(system)
    console = system.wait_running("console")
    containerd = [p for p in namespace_processes(system.run.pid) if p["Name"] == "containerd"]
    assert len(containerd) == 1, containerd
    os.kill(int(containerd[0]["pid"]), signal.SIGKILL)
    system.run.wait_state(
        "containerd, then dockerd, restarted",
        lambda s: (
            s["dockerd"]["containerd"].get("restarts", 0) >= 1
            and s["dockerd"]["containerd"]["status"] == "running"
            and s["dockerd"]["dockerd"].get("restarts", 0) >= 1
            and s["dockerd"]["dockerd"]["status"] == "running"
        ),
        timeout=60,
    )
    current = system.wait_running("console", other_than=run_key(console), timeout=60)
    system.wait_running("dom0", timeout=60)
    system.wait(
        "pid1 reports both running",
        lambda: all(system.container_state(r).get("status") == "running" for r in ("console", "dom0")),
    )
    # A crash (SIGKILL to the shell) is seen and handled as before.
    shell = system.docker("inspect", "--format", "{{.State.Pid}}", "console").strip()
    killed = system.run.nsenter(["kill", "-KILL", shell])
    assert killed.returncode == 0, killed.stderr
    system.wait_running("console", other_than=run_key(current), timeout=60)
    assert_one_each(system)


def test_a_one_layer_tarball_is_imported_with_its_config_and_others_loaded(start_system, tmp_path: Path) -> None:
    """The bundled image goes in by /images/create?fromSrc=- and keeps its
    command, environment, labels and both tags; a tarball whose config no
    Dockerfile instruction can say (a healthcheck) goes to /images/load."""
    module = bundled_images
    images = tmp_path / "images"
    module.build(images)
    other = module.ImageSpec("other.tar", ("other:1",), ("true",))
    (images / "other.tar").write_bytes(module.image_tarball(other, "/bin/busybox", {"Healthcheck": {"Test": ["NONE"]}}))
    system = start_system(f"pid1.images_dir={images}", phases="images")
    system.run.wait_phase("images", timeout=BOOT_TIMEOUT)
    log = system.run.log()
    assert "images: imported busybox:latest, pid1-dhcp:latest from busybox.tar" in log, system.describe()
    assert "images: loaded other:1 from other.tar" in log, system.describe()
    assert "loaded busybox:latest, other:1, pid1-dhcp:latest" in system.run.state()["phases"]["images"]["detail"]
    config = json.loads(system.docker("image", "inspect", "--format", "{{json .Config}}", "busybox:latest"))
    assert config["Cmd"] == ["sh"], config
    assert module.PATH_ENV in config["Env"], config
    assert config["Labels"] == {"org.only-docker.bundled": "busybox:latest"}, config
    assert image_id(system, "pid1-dhcp:latest") == image_id(system, "busybox:latest")
    healthcheck = system.docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", "other:1")
    assert json.loads(healthcheck) == {"Test": ["NONE"]}
    listing = system.docker("run", "--rm", "busybox:latest", "ls", "/bin/busybox", "/etc/passwd")
    assert "/etc/passwd" in listing, listing


def test_leftovers_of_an_earlier_boot_are_removed_and_images_not_reloaded(start_system) -> None:
    system = start_system()
    booted(system)
    old = {role: system.inspect(role)["Id"] for role in ("console", "dom0")}
    system.run.stop()  # SIGKILL: a crash, nothing cleaned up
    again = start_system(workdir=system.workdir)
    booted(again)
    assert "present busybox:latest, pid1-dhcp:latest" in again.run.state()["phases"]["images"]["detail"]
    assert "loaded" not in again.run.state()["phases"]["images"]["detail"]
    for role in ("console", "dom0"):
        assert again.inspect(role)["Id"] != old[role], again.describe()
    assert_one_each(again)
    assert "left by an earlier boot" in again.run.log(), again.describe()


def test_sigterm_stops_console_dom0_dockerd_then_containerd_in_order(start_system) -> None:
    system = start_system()
    booted(system)
    system.run.kill(signal.SIGTERM)
    code = system.run.wait_exit(60)
    assert code == -signal.SIGHUP, f"unshare ended with {code}\n{system.describe()}"  # SIGTERM: a reboot
    lines = log_lines(system)

    def when(pattern: str) -> float:
        found = [t for t, text in lines if re.search(pattern, text)]
        assert found, f"no log line matching {pattern!r}\n{system.describe()}"
        return found[0]

    requested = when(r"^stop requested: reboot \(signal SIGTERM\)")
    console, dom0 = when(r"^console: stopped in"), when(r"^dom0: stopped in")
    dockerd, containerd = when(r"^dockerd stopped in"), when(r"^containerd stopped in")
    print(
        f"after SIGTERM: console stopped at +{console - requested:.3f} s, dom0 +{dom0 - requested:.3f} s, "
        f"dockerd +{dockerd - requested:.3f} s, containerd +{containerd - requested:.3f} s"
    )
    assert requested <= console <= dom0 <= dockerd <= containerd, system.describe()
    assert console - requested < 1 + 1.5, system.describe()  # the console's stop timeout is 1 s
    assert dom0 - console < 5 + 1.5, system.describe()
    assert containerd - dom0 < 3, system.describe()  # dockerd and containerd end on SIGTERM, fast
    assert "stop failed" not in system.run.log() and "after SIGTERM: SIGKILL" not in system.run.log(), system.describe()


def test_pid1_cpu_stays_low_while_idle(start_system) -> None:
    """No polling loop stands in for the event stream: an idle system costs pid1 ~nothing."""
    system = start_system()
    booted(system)
    before = cpu_seconds(system.run.pid)
    time.sleep(3)  # a measuring window, not a wait for a condition
    used = cpu_seconds(system.run.pid) - before
    assert used < 0.1, f"pid1 used {used:.2f} s of CPU in 3 s idle\n{system.describe()}"


def test_console_is_bridged_to_the_terminal_across_restarts(start_system) -> None:
    """`pid1.phases=console` alone brings the console_tty phase (the console
    needs it: its bridge), and each console container is started through the
    bridge: the terminal gets its prompt, shows the waiting line while it
    restarts, and talks to the new shell afterwards. (Before the wiring check
    the console did not need console_tty and started unbridged here.)"""
    term = Terminal()
    try:
        system = start_system(f"pid1.console={term.path}", phases="console", env={"PID1_TEST_REAL_CONSOLE": "1"})
        system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
        tty_phase = system.run.state()["phases"].get("console_tty") or {}
        assert f"raw mode on {term.path}" in (tty_phase.get("detail") or ""), system.describe()
        first = system.wait_running("console")
        mark = term.expect(r"# ", 30, 0, system.describe).end()
        term.type("echo one-$((40+2))\r")
        mark = term.expect(r"one-42\r\n", 10, mark, system.describe).end()
        system.docker("kill", "console")
        mark = term.expect(
            r"\[pid1\] console restarting: console exited with status 137", 10, mark, system.describe
        ).end()
        system.wait_running("console", other_than=run_key(first))
        mark = term.expect(r"# ", 20, mark, system.describe).end()
        term.type("echo two-$((40+3))\r")
        term.expect(r"two-43\r\n", 10, mark, system.describe)
        assert_one_each(system, roles=("console",))
    finally:
        term.close()


def test_a_die_of_a_lookalike_container_is_ignored(start_system) -> None:
    """Docker's container=NAME event filter matches by prefix; pid1 filters by
    label and compares names, ids and its instance label exactly. A user's
    container named console-x with the console's role label dies first, then
    the real console: events are handled in order, so once pid1 has restarted
    the console, a wrong reaction to console-x would already show as a second
    restart."""
    system = start_system()
    booted(system)
    console = system.wait_running("console")
    system.docker("run", "-d", "--name", "console-x", "--label", "pid1.role=console", "--net", "host",
                  "busybox:latest", "sleep", "1000")  # fmt: skip
    system.docker("kill", "console-x")
    system.docker("kill", "console")
    system.wait_running("console", other_than=run_key(console))
    recorded = system.wait(
        "pid1 reports the console running again",
        lambda: (s := system.container_state("console")).get("status") == "running" and s,
    )
    assert recorded["restarts"] == 1, system.describe()
