"""The typed wiring between phases (pid1/wiring.py): the start-up check of
the slot declarations, the per-phase views, the mount table."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

from pid1.config import Config
from pid1.log import Log
from pid1.phases import BUILTIN_MODULES, Phase, PhaseContext, load_phases, select_phases
from pid1.reaper import Reaper
from pid1.state import StateStore
from pid1.supervisor import Supervisor
from pid1.wiring import MountTable, UndeclaredSlot, UnfilledSlot, Wiring, check_wiring, slots


def builtin() -> dict[str, Phase]:
    phases, warnings = load_phases(BUILTIN_MODULES)
    assert not warnings
    return phases


async def nothing(ctx: PhaseContext) -> None:
    return None


def test_the_builtin_dag_is_wired_soundly() -> None:
    phases = builtin()
    assert check_wiring(phases) == []
    chosen, warnings = select_phases(phases, [])
    assert chosen.keys() == phases.keys() and not warnings


def test_every_slot_is_filled_by_the_builtin_phase_it_names() -> None:
    phases = builtin()
    for slot in slots():
        assert slot.filled_by in phases, slot
        assert slot in phases[slot.filled_by].fills, f"{slot.filled_by} does not declare fills={slot.name}"


def test_the_docs_table_names_every_slot_its_fillers_and_users() -> None:
    """docs/phases-and-wiring.md's table, row by row, against the declarations."""
    table = Path(__file__).resolve().parents[2] / "docs/phases-and-wiring.md"
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in table.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0] != "`slot`":
            users = set() if cells[2].startswith("(") else {name.strip() for name in cells[2].split(",")}
            rows[cells[0].strip("`")] = ({name.strip() for name in cells[1].split(",")}, users)
    phases = builtin()
    declared = {
        slot.name: (
            {name for name, phase in phases.items() if slot in phase.fills},
            {name for name, phase in phases.items() if slot in phase.uses},
        )
        for slot in slots()
    }
    assert rows == declared


def test_selecting_the_console_alone_brings_its_bridge() -> None:
    """The bug the check exists for: pid1.phases=console started the console
    without console_tty (it did not need it), so unbridged."""
    chosen, _ = select_phases(builtin(), ["console"])
    assert "console_tty" in chosen
    assert Wiring.console_bridge in chosen["console"].uses


def test_a_phase_using_a_slot_without_needing_its_filler_is_refused() -> None:
    """Negative control: the console as it was (needs images only, reads the bridge)."""
    phases = builtin()
    phases["console"] = dataclasses.replace(phases["console"], needs=("images",))
    with pytest.raises(ValueError) as raised:
        select_phases(phases, [])
    message = str(raised.value)
    assert "phase console uses slot console_bridge, filled by console_tty" in message, message
    with pytest.raises(ValueError, match="console_bridge"):
        select_phases(phases, ["console"])


def test_a_need_through_another_phase_counts_and_a_missing_filler_is_named() -> None:
    fill = Phase("fill", nothing, fills=(Wiring.userdata,))
    middle = Phase("middle", nothing, needs=("fill",))
    user = Phase("user", nothing, needs=("middle",), uses=(Wiring.userdata,))
    assert check_wiring({p.name: p for p in (fill, middle, user)}) == []
    problems = check_wiring({p.name: p for p in (middle, user)})
    assert problems == [
        "phase user uses slot userdata, filled by nobody here (the built-in filler is userdata), "
        "but does not need that phase (directly or through its needs)"
    ]


def test_a_view_enforces_the_declarations() -> None:
    wiring = Wiring()
    filler = wiring.view(Phase("userdata", nothing, fills=(Wiring.userdata,)))
    user = wiring.view(Phase("runcmd", nothing, needs=("userdata",), uses=(Wiring.userdata,)))
    stranger = wiring.view(Phase("other", nothing))
    with pytest.raises(UnfilledSlot, match="slot userdata is not filled: the userdata phase fills it"):
        _ = user.userdata
    assert user.maybe(Wiring.userdata) is None
    with pytest.raises(UndeclaredSlot, match="runcmd writes slot userdata but does not fill it"):
        user.userdata = "x"  # type: ignore[assignment]
    filler.userdata = "applied"  # type: ignore[assignment]
    assert user.userdata == "applied"
    with pytest.raises(UndeclaredSlot, match="phase other reads slot userdata but does not declare it"):
        _ = stranger.userdata
    with pytest.raises(UndeclaredSlot):
        stranger.maybe(Wiring.userdata)
    with pytest.raises(UndeclaredSlot, match="the core writes"):
        wiring.docker = object()
    assert wiring.userdata == "applied"  # the core's own view reads everything


def test_the_context_has_no_silent_defaults() -> None:
    with pytest.raises(TypeError):
        PhaseContext(config=Config(), log=None, store=None, reaper=None, wiring=Wiring())  # type: ignore[arg-type, call-arg]


def test_phases_under_the_supervisor_pass_values_through_their_slots(tmp_path: Path) -> None:
    seen: list[object] = []

    async def fill(ctx: PhaseContext) -> None:
        await asyncio.sleep(0.01)
        ctx.wiring.module_index = "the index"  # type: ignore[assignment]

    async def use(ctx: PhaseContext) -> None:
        seen.append(ctx.wiring.module_index)

    async def sneak(ctx: PhaseContext) -> None:
        seen.append(ctx.wiring.module_index)  # undeclared: the phase fails, naming the slot

    phases = [
        Phase("modules", fill, fills=(Wiring.module_index,)),
        Phase("docker_modules", use, needs=("modules",), uses=(Wiring.module_index,)),
        Phase("sneak", sneak, needs=("modules",), required=False),
    ]
    store = StateStore(str(tmp_path / "state"))
    log = Log(store=store, kmsg_path=str(tmp_path / "no-kmsg"))
    sup = Supervisor(config=Config(), log=log, store=store, reaper=Reaper(), phases={p.name: p for p in phases})
    asyncio.run(sup.run_phases())
    assert seen == ["the index"]
    record = store.state.phases["sneak"]
    assert record.status == "failed" and "reads slot module_index but does not declare it" in record.error


def test_the_mount_table_keeps_every_add_from_threads_in_order() -> None:
    table = MountTable()
    per_thread = 500

    def add(prefix: str) -> None:
        for n in range(per_thread):
            table.add(f"{prefix}{n}")

    threads = [threading.Thread(target=add, args=(f"/t{i}/",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    targets = table.targets()
    assert len(targets) == 4 * per_thread
    for i in range(4):
        mine = [t for t in targets if t.startswith(f"/t{i}/")]
        assert mine == [f"/t{i}/{n}" for n in range(per_thread)]


@pytest.mark.parametrize(
    "module",
    ["bench.boot_phases", "devtools.noop_host_phases", "tests.namespace.control_phases",
     "tests.namespace.scenario_phases", "tests.namespace.storage_phases"],  # stop_phases: only what PID1_TEST_STOP asks
)  # fmt: skip
def test_the_repositorys_extra_phase_modules_load_without_a_warning(module: str) -> None:
    """pid1 leaves a broken pid1.extra_phases module out with a warning and
    boots on, so a bench whose phases stopped loading (a Phase argument that
    went away) measured nothing without failing: this catches it here."""
    phases, warnings = load_phases([], [module])
    assert phases and warnings == [], warnings
