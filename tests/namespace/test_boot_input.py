"""A typo never stops a boot: pid1 as PID 1 of a namespace, over a temporary
root, given what a user may put on the kernel command line: stray words
(which the kernel passes to init as arguments), a host name that is no host
name, a pid1.extra_phases module that does not exist. Each boots to its
phases with a warning that names what was ignored. Also the umask pid1 sets
for itself and what it starts."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from devtools.harness import Pid1, tmpfs_dev_wrapper, wait_for

pytestmark = pytest.mark.namespace


def boot(pid1_ns, tmp_path: Path, cmdline: str, **kwargs) -> Pid1:
    root = tmp_path / "root"
    kwargs.setdefault("wrapper", tmpfs_dev_wrapper(root))
    return pid1_ns(f"pid1.phases=hostname {cmdline}", root=str(root), **kwargs)


def hostname(run: Pid1) -> str:
    return run.nsenter(["hostname"]).stdout.decode().strip()


def stops_in_order(run: Pid1) -> None:
    run.kill(signal.SIGUSR2)  # busybox poweroff
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()  # reboot(POWER_OFF) as PID 1 of a namespace


@pytest.mark.parametrize(
    "args",
    [
        ["keys"],  # a subcommand of `python -m pid1`: as PID 1 it ended init and the kernel panicked
        ["quiet", "splash", "single", "keys", "host", "--help", "status"],
        ["plot", "--state", "-o", "--root"],  # options of other commands, and one without its value
    ],
)
def test_stray_kernel_words_boot_with_a_warning(pid1_ns, tmp_path: Path, args: list[str]) -> None:
    run = boot(pid1_ns, tmp_path, "pid1.hostname=nsbox", args=args)
    run.wait_phase("hostname")
    shown = " ".join(repr(arg) for arg in args)
    run.wait_log(f"ignoring {len(args)} argument(s) the kernel passed to init: {shown} ")
    run.wait_state("mode running", lambda s: s["mode"] == "running")
    assert hostname(run) == "nsbox"
    stops_in_order(run)


def test_a_value_with_a_space_boots_with_a_hint(pid1_ns, tmp_path: Path) -> None:
    """`pid1.hostname=my host`: the kernel gives init `host` as an argument
    (and /proc/cmdline the whole line): pid1 boots and says how to quote."""
    run = boot(pid1_ns, tmp_path, "pid1.hostname=my host", args=["host"])
    run.wait_phase("hostname")
    run.wait_log("ignoring 1 argument(s) the kernel passed to init: 'host' ")
    run.wait_log('a value with spaces needs double quotes on the kernel command line: pid1.hostname="my host"')
    assert hostname(run) == "my"
    stops_in_order(run)


@pytest.mark.parametrize(
    "value, why",
    [
        ("a" * 65, "longer than 64 bytes"),  # sethostname(2) refused it: the required phase retried forever
        ('"my box"', "label 'my box' is not 1-63 letters, digits or inner hyphens (RFC 1123)"),
    ],
)
def test_a_bad_hostname_boots_with_the_default(pid1_ns, tmp_path: Path, value: str, why: str) -> None:
    run = boot(pid1_ns, tmp_path, f"pid1.hostname={value}")
    state = run.wait_phase("hostname")
    assert state["phases"]["hostname"]["attempts"] == 1, run.describe()
    run.wait_log(f"bad value for pid1.hostname: {value.strip(chr(34))!r}: {why}; keeping default 'only-docker'")
    assert hostname(run) == "only-docker"
    assert (tmp_path / "root/etc/hostname").read_text() == "only-docker\n"


def test_a_typo_in_extra_phases_is_a_warning(pid1_ns, tmp_path: Path) -> None:
    run = boot(pid1_ns, tmp_path, "pid1.extra_phases=tests.namespace.scenario_phasez,pid1.phases.hostname.run")
    run.wait_phase("hostname")
    run.wait_log(
        "pid1.extra_phases: cannot load 'tests.namespace.scenario_phasez': "
        "ModuleNotFoundError(\"No module named 'tests.namespace.scenario_phasez'\"); its phases are left out"
    )
    run.wait_log("pid1.extra_phases: cannot load 'pid1.phases.hostname.run': ModuleNotFoundError(")
    run.wait_state("mode running", lambda s: s["mode"] == "running")
    stops_in_order(run)


def test_pid1_sets_umask_022_whatever_it_was_given(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = boot(pid1_ns, tmp_path, "", wrapper=tmpfs_dev_wrapper(root, shell_first="umask 0; "))
    run.wait_phase("hostname")
    status = Path(f"/proc/{run.pid}/status").read_text()
    assert "Umask:\t0022\n" in status, status
    for made in (root / "etc/hostname", run.state_dir / "state.json"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o644, made


def test_the_umask_wrapper_passes_its_umask(pid1_ns, tmp_path: Path) -> None:
    """Negative control for the test above: the wrapper's `umask 0` reaches
    the program it execs (here a sleep in pid1's place)."""
    root = tmp_path / "root"
    run = pid1_ns("", program=[*tmpfs_dev_wrapper(root, shell_first="umask 0; "), "sleep", "1000"])
    status = wait_for(
        "the sleep exec'd as PID 1",
        lambda: (text := Path(f"/proc/{run.pid}/status").read_text()).startswith("Name:\tsleep\n") and text,
        10,
    )
    assert "Umask:\t0000\n" in status, status


def test_an_infinite_stop_grace_still_ends_the_stop(pid1_ns, tmp_path: Path) -> None:
    """`pid1.stop_grace=inf` made the stop wait forever for a child that
    ignores SIGTERM; the key keeps its default (5 s) with a warning."""
    out = tmp_path / "events"
    run = pid1_ns(
        "pid1.phases=spawner pid1.stop_grace=inf pid1.extra_phases=tests.namespace.scenario_phases",
        env={"PID1_TEST_OUT": str(out), "PID1_TEST_SPAWN": "1"},
    )
    run.wait_phase("spawner")
    wait_for("the TERM-ignoring child", lambda: out.exists() and "ignorer-ready" in out.read_text(), 10, run.describe)
    run.kill(signal.SIGTERM)  # busybox reboot
    assert run.wait_exit(30) == -signal.SIGHUP, run.describe()  # reboot(RESTART) as PID 1 of a namespace
    log = run.log()
    assert "processes left after 5.0 s: sending SIGKILL" in log, log[-3000:]
    assert "bad value for pid1.stop_grace: expected a finite number, got 'inf'; keeping default 5.0" in log
