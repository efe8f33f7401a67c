"""pid1/engine/ without a daemon: a keeper's state machine and crash-loop
accounting, the image choice, the create payload, the stop budget, and the
layer's boundaries (aiodocker only in the client, no role names in the
engine). The engine with a real dockerd: tests/docker/test_system_containers.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pid1 import shutdown
from pid1.container_spec import ContainerSpec
from pid1.engine import stop
from pid1.engine.container_config import create_config
from pid1.engine.keeper import FALLBACK_AFTER, SIGKILL_EXIT, TRANSITIONS, Keeper, choose_image
from pid1.engine.status import ContainerStatus
from pid1.log import Log
from pid1.state import ContainerState, StateStore

REPO = Path(__file__).resolve().parents[2]
S = ContainerStatus
FALLBACK = "busybox:latest"
GOOD, BAD, BUSYBOX = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64


def spec(**changes) -> ContainerSpec:
    return ContainerSpec(
        **{"role": "console", "images": ("console-image:latest",), "fallback_image": FALLBACK, **changes}
    )


@pytest.fixture
def keeper(tmp_path: Path) -> Keeper:
    store = StateStore(str(tmp_path))
    return Keeper(spec=spec(), state=ContainerState(role="console", name="console"), log=Log(store=store))


def logged(keeper: Keeper, level: str) -> list[str]:
    return [line.message for line in keeper.log.store.state.log if line.level == level]


def start(keeper: Keeper, image_id: str, image: str = "console-image:latest") -> None:
    keeper.begin_attempt()
    keeper.tried_image_id, keeper.state.image = image_id, image


def test_a_keeper_moves_along_its_transitions_and_names_a_wrong_move(keeper: Keeper) -> None:
    assert keeper.status is S.PENDING and not keeper.live
    for to in (S.STARTING, S.RUNNING, S.EXITED, S.BACKOFF, S.STARTING, S.EXITED, S.STOPPED):
        assert to in TRANSITIONS[keeper.status]
        keeper.move(to)
        assert keeper.state.status == to.value  # state.json carries the same words
        assert keeper.running.is_set() == (to is S.RUNNING)
    assert logged(keeper, "error") == []
    keeper.move(S.RUNNING)  # negative control: nothing leaves STOPPED
    assert logged(keeper, "error") == ["console: unexpected status change stopped -> running (a pid1 bug; going on)"]
    assert keeper.status is S.RUNNING, "the state shows what is true, even after a wrong move"


def test_quick_ends_back_off_and_set_the_image_aside_but_sigkills_do_not(keeper: Keeper) -> None:
    delays = []
    for _ in range(FALLBACK_AFTER - 1):
        start(keeper, BAD)
        assert keeper.live
        assert keeper.book_end(1, stable_run=30.0) == "exited with status 1"
        assert not keeper.live and keeper.status is S.EXITED
        delays.append(keeper.next_delay())
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.4])
    start(keeper, BAD)
    keeper.book_end(SIGKILL_EXIT, stable_run=30.0)  # docker kill: not the image's fault
    assert keeper.bad_image_id is None and keeper.state.failures_in_row == FALLBACK_AFTER
    start(keeper, BAD)
    keeper.book_end(None, stable_run=30.0, error="No command specified")
    assert keeper.bad_image_id == BAD
    assert keeper.state.fallback_reason.startswith("console-image:latest (bbbbbbbbbbbb) failed to start (No command")
    assert keeper.next_delay() == 0.0, "the fallback starts at once"


def test_a_stable_run_forgets_the_failures(keeper: Keeper) -> None:
    for _ in range(3):
        start(keeper, GOOD)
        keeper.book_end(1, stable_run=30.0)
    assert keeper.state.failures_in_row == 3
    start(keeper, GOOD)
    keeper.book_end(1, stable_run=0.0)  # it ran longer than the stable time
    assert keeper.state.failures_in_row == 1 and keeper.quick_failures == 1


def test_the_image_is_the_first_candidate_present_and_not_set_aside() -> None:
    two = spec(images=("mine:latest", "debian:latest", FALLBACK))  # the fallback among them is not a candidate
    assert choose_image(two, [None, GOOD, BUSYBOX], None) == ("debian:latest", GOOD, "debian:latest present")
    assert choose_image(two, [BAD, None, BUSYBOX], BAD) == (
        FALLBACK, BUSYBOX, "fallback: mine:latest set aside (kept crashing); debian:latest missing",
    )  # fmt: skip
    assert choose_image(two, [GOOD, None, BUSYBOX], BAD)[:2] == ("mine:latest", GOOD), "a new image gets its chance"
    with pytest.raises(RuntimeError, match="the fallback busybox:latest is missing"):
        choose_image(two, [None, None, None], None)


def test_the_stop_signal_is_the_spec_s_or_a_hang_up_for_the_fallback_s_shell() -> None:
    console = create_config(spec(tty=True, stop_signal="SIGHUP"), "debian:latest", "i1", [])
    assert console["StopSignal"] == "SIGHUP" and console["Labels"] == {"pid1.role": "console", "pid1.instance": "i1"}
    dom0 = spec(role="dom0", tty=True)
    assert create_config(dom0, FALLBACK, "i1", [])["StopSignal"] == "SIGHUP"
    assert "StopSignal" not in create_config(dom0, "my-dom0:latest", "i1", [])
    sandboxed = create_config(dom0, FALLBACK, "i1", ["SYS_MODULE"])["HostConfig"]
    assert sandboxed["Privileged"] is False and sandboxed["CapDrop"] == ["CAP_SYS_MODULE"]


def test_the_engine_stop_fits_in_one_stop_hook() -> None:
    assert stop.STOP_BUDGET < shutdown.HOOK_TIMEOUT


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_engine_client_imports_aiodocker() -> None:
    importers = sorted(
        str(path.relative_to(REPO)) for path in (REPO / "pid1").rglob("*.py") if "aiodocker" in imports_of(path)
    )
    assert importers == ["pid1/engine/client.py"]


def test_the_engine_tests_no_role_by_its_name() -> None:
    """What sets a role apart is a ContainerSpec field, not `role == "console"`."""
    named = []
    for path in sorted((REPO / "pid1" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in ("console", "dom0", "dhcp", "ntp"):
                named.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert named == []
