"""The supervisor's phase DAG: dependency order, concurrency, policies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pid1.config import Config
from pid1.log import Log
from pid1.phases import Phase, PhaseContext, select_phases
from pid1.reaper import Reaper
from pid1.state import StateStore
from pid1.supervisor import Supervisor


def make_supervisor(tmp_path: Path, phases: list[Phase]) -> Supervisor:
    store = StateStore(str(tmp_path / "state"))
    log = Log(store=store, kmsg_path=str(tmp_path / "no-kmsg"))
    return Supervisor(config=Config(), log=log, store=store, reaper=Reaper(), phases={p.name: p for p in phases})


def recorder(events: list[str], name: str, delay: float = 0.0, fail_times: int = 0):
    failures = {"left": fail_times}

    async def run(ctx: PhaseContext) -> str:
        events.append(f"start {name}")
        await asyncio.sleep(delay)
        if failures["left"]:
            failures["left"] -= 1
            events.append(f"fail {name}")
            raise RuntimeError(f"{name} broke")
        events.append(f"end {name}")
        return name

    return run


def test_needs_run_first_and_independent_phases_overlap(tmp_path: Path) -> None:
    events: list[str] = []
    phases = [
        Phase("d", recorder(events, "d"), needs=("b", "c")),
        Phase("b", recorder(events, "b", 0.05), needs=("a",)),
        Phase("c", recorder(events, "c", 0.05), needs=("a",)),
        Phase("a", recorder(events, "a")),
    ]
    sup = make_supervisor(tmp_path, phases)
    asyncio.run(sup.run_phases())
    assert events[:2] == ["start a", "end a"]
    # b and c both start before either ends: they ran concurrently
    assert set(events[2:4]) == {"start b", "start c"}
    assert set(events[4:6]) == {"end b", "end c"}
    assert events[6:] == ["start d", "end d"]
    assert all(p.status == "done" for p in sup.store.state.phases.values())
    assert sup.store.state.mode == "running"


def test_concurrent_phases_take_the_longest_not_the_sum(tmp_path: Path) -> None:
    events: list[str] = []
    phases = [Phase(f"p{i}", recorder(events, f"p{i}", 0.2)) for i in range(5)]
    sup = make_supervisor(tmp_path, phases)
    loop = asyncio.new_event_loop()
    started = loop.time()
    loop.run_until_complete(sup.run_phases())
    took = loop.time() - started
    loop.close()
    assert took < 0.6, took  # serial would be 1.0 s


def test_optional_failure_lets_dependents_go_on(tmp_path: Path) -> None:
    events: list[str] = []
    phases = [
        Phase("flaky", recorder(events, "flaky", fail_times=1), required=False),
        Phase("after", recorder(events, "after"), needs=("flaky",)),
    ]
    sup = make_supervisor(tmp_path, phases)
    asyncio.run(sup.run_phases())
    state = sup.store.state.phases
    assert state["flaky"].status == "failed" and "flaky broke" in state["flaky"].error
    assert state["after"].status == "done"


def test_required_failure_is_retried_until_done(tmp_path: Path) -> None:
    events: list[str] = []
    phases = [
        Phase("needed", recorder(events, "needed", fail_times=2)),
        Phase("after", recorder(events, "after"), needs=("needed",)),
    ]
    sup = make_supervisor(tmp_path, phases)
    sup.retry_first = 0.01
    asyncio.run(sup.run_phases())
    assert events == ["start needed", "fail needed"] * 2 + ["start needed", "end needed", "start after", "end after"]
    assert sup.store.state.phases["needed"].attempts == 3


def test_select_pulls_in_needs_and_warns_on_unknown() -> None:
    async def noop(ctx: PhaseContext) -> None:
        return None

    phases = {
        "a": Phase("a", noop),
        "b": Phase("b", noop, needs=("a",)),
        "c": Phase("c", noop, needs=("b",)),
        "x": Phase("x", noop),
    }
    chosen, warnings = select_phases(phases, ["c", "nope"])
    assert set(chosen) == {"a", "b", "c"}
    assert any("nope" in w for w in warnings)


def test_cycle_is_refused() -> None:
    async def noop(ctx: PhaseContext) -> None:
        return None

    phases = {"a": Phase("a", noop, needs=("b",)), "b": Phase("b", noop, needs=("a",))}
    with pytest.raises(ValueError, match="cycle"):
        select_phases(phases, [])


def test_state_file_is_written_and_valid_json(tmp_path: Path) -> None:
    import json

    events: list[str] = []
    sup = make_supervisor(tmp_path, [Phase("a", recorder(events, "a"))])
    asyncio.run(sup.run_phases())
    data = json.loads((tmp_path / "state" / "state.json").read_text())
    assert data["phases"]["a"]["status"] == "done"
    assert any("phase a done" in line["message"] for line in data["log"])
