"""The user-data applied for real: pid1 as PID 1 of a namespace with its own
dockerd, the user-data in the host state on its data root (the copy a disk
keeps from an earlier boot), dom0 and the console from the bundled busybox.
daemon.json reaches dockerd (`docker info`), write_files reach both
containers with their modes, the proxies their environment, runcmd runs in
dom0 once per instance (not again at the next boot on the same disk), and a
docker section dockerd would refuse leaves it running on its defaults with
the reason in the state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import System, skip_without_docker

from devtools.harness import serve_files

pytestmark = pytest.mark.docker

USER_DATA = """#cloud-config
hostname: ud-test
write_files:
  - path: /etc/ud-test.conf
    content: |
      written by the user-data
    permissions: '0640'
runcmd:
  - echo "ran in $(hostname)" >> /run/pid1/runcmd-marker
  - [sh, -c, "exit 3"]
only_docker:
  restart_stable: 20
  docker:
    registry-mirrors: [http://10.0.2.2:5000]
    log-opts: {max-size: 1m, max-file: 2}
    proxies: {http-proxy: "http://10.0.2.2:3128", no-proxy: localhost}
frobnicate: true
"""
META_DATA = "instance-id: iid-test-1\nlocal-hostname: ud-test\n"
PHASES = "console,dom0,runcmd"


def put_user_data(workdir: Path, user_data: str, meta_data: str = META_DATA) -> None:
    state = workdir / "data" / "only-docker"
    state.mkdir(parents=True, exist_ok=True)
    (state / "user-data").write_text(user_data)
    (state / "meta-data").write_text(meta_data)


def userdata_state(system: System) -> dict:
    return (system.run.state() or {}).get("userdata") or {}


def test_a_user_data_configures_dockerd_the_containers_and_runs_runcmd_once(start_system) -> None:
    skip_without_docker()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="p1u-", dir="/var/tmp"))
    put_user_data(workdir, USER_DATA)
    system = start_system(phases=PHASES, workdir=workdir, env={"PID1_TEST_STORAGE": "disk"})
    state = system.run.wait_phase("runcmd", timeout=120)
    record = state["userdata"]
    assert record["source"] == "kept copy" and record["instance_id"] == "iid-test-1", system.describe()
    assert "pid1.restart_stable" in record["applied"] and any(a.startswith("daemon.json") for a in record["applied"])
    assert any("unknown key 'frobnicate'" in w for w in record["warnings"]), record
    assert state["phases"]["runcmd"]["detail"] == "ran 2 for instance iid-test-1, 1 failed", state["phases"]["runcmd"]

    mirrors = json.loads(system.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}"))
    assert mirrors == ["http://10.0.2.2:5000/"], mirrors
    assert system.docker("info", "--format", "{{.LoggingDriver}}").strip() == "json-file"
    for role in ("console", "dom0"):
        system.wait_running(role, timeout=60)
        out = system.docker("exec", role, "sh", "-c", "stat -c %a /etc/ud-test.conf; cat /etc/ud-test.conf")
        assert out == "640\nwritten by the user-data\n", (role, out)
        env = system.docker("exec", role, "env")
        assert "HTTP_PROXY=http://10.0.2.2:3128" in env and "no_proxy=localhost" in env, env
    marker = system.run.state_dir / "runcmd-marker"
    assert marker.read_text().count("ran in") == 1, marker.read_text()
    assert "$ sh -c exit 3" in (workdir / "data/only-docker/runcmd/iid-test-1.log").read_text()

    # The next boot on the same disk: the same instance, so runcmd does not run again.
    system.run.stop()
    again = start_system(phases=PHASES, workdir=workdir, env={"PID1_TEST_STORAGE": "disk"})
    state = again.run.wait_phase("runcmd", timeout=120)
    assert state["phases"]["runcmd"]["detail"] == "ran already for instance iid-test-1", again.describe()
    assert not (again.run.state_dir / "runcmd-marker").exists()  # a new state dir: nothing ran into it
    # Each boot's logs are kept on the disk: the first boot's is now logs/1.
    logs = workdir / "data/only-docker/logs"
    assert "runcmd (2/2): sh -c exit 3: exit 3" in (logs / "1/pid1.log").read_text()
    assert "starting as pid 1" in (logs / "0/pid1.log").read_text()  # the ring from before the disk was known
    assert (logs / "1/dockerd.log").stat().st_size > 0


def test_a_docker_section_dockerd_would_refuse_leaves_it_on_its_defaults(start_system) -> None:
    skip_without_docker()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="p1u-", dir="/var/tmp"))
    put_user_data(workdir, "#cloud-config\nonly_docker:\n  docker:\n    storage-driver: vfs\n    debug: true\n")
    system = start_system(phases="dockerd", workdir=workdir)
    state = system.run.wait_phase("dockerd", timeout=120)
    errors = state["userdata"]["errors"]
    assert any("docker section refused (storage-driver: pid1 sets it itself" in e for e in errors), errors
    assert system.docker("info", "--format", "{{.Debug}}").strip() == "false"  # none of the section applied


def test_without_a_user_data_nothing_changes_and_yaml_is_never_loaded(start_system) -> None:
    skip_without_docker()
    system = start_system(phases="dockerd")
    state = system.run.wait_phase("userdata", timeout=60)
    assert state["phases"]["userdata"]["detail"] == "no user-data", state["phases"]["userdata"]
    maps = Path(f"/proc/{system.run.pid}/maps").read_text()
    assert "_yaml" not in maps and "libyaml" not in maps


URL_PHASES = "console,dom0,runcmd,userdata_url"
STANDINS = ""  # noop_host_phases stands in for the network: the host's is not the test's


def test_a_user_data_url_is_fetched_once_the_network_is_up_and_its_runcmd_runs(start_system) -> None:
    skip_without_docker()
    files = {
        "/seed/user-data": b"#cloud-config\nhostname: from-url\nruncmd:\n  - echo url-ran >> /run/pid1/url-marker\n",
        "/seed/meta-data": b"instance-id: iid-url-1\n",
    }
    with serve_files(files) as port:
        url = f"http://127.0.0.1:{port}/seed/"
        system = start_system(f"{STANDINS} pid1.userdata={url}", phases=URL_PHASES)
        state = system.run.wait_phase("runcmd", timeout=120)
        assert state["phases"]["userdata_url"]["detail"] == f"url {url}: changed, 0 warnings", system.describe()
        assert state["phases"]["runcmd"]["detail"] == "ran 1 for instance iid-url-1, 0 failed", system.describe()
        assert (system.run.state_dir / "url-marker").read_text() == "url-ran\n"
        assert state["userdata"]["source"] == f"url {url}"
        kept = system.workdir / "data/only-docker"
        assert (kept / "source").read_text() == f"url {url}\n" and b"from-url" in (kept / "user-data").read_bytes()
        assert system.run.nsenter(["hostname"], capture_output=True, text=True).stdout.strip() == "from-url"
        # dom0 and the console started before the URL was fetched: they share the machine's name, live
        for role in ("dom0", "console"):
            assert system.docker("exec", role, "hostname").strip() == "from-url", (role, system.describe())


def test_a_user_data_url_that_does_not_answer_is_a_warning_and_the_boot_goes_on(start_system) -> None:
    skip_without_docker()
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    system = start_system(f"{STANDINS} pid1.userdata=http://127.0.0.1:{port}/user-data", phases=URL_PHASES)
    state = system.run.wait_phase("runcmd", timeout=120)
    assert state["phases"]["userdata_url"]["detail"].startswith(f"not fetched: http://127.0.0.1:{port}/user-data: ")
    assert state["phases"]["runcmd"]["detail"] == "nothing to run"
    system.wait_running("console", timeout=60)
