"""The whole screen: the header, the phase table, the container table, then
the log tail filling what is left, newest last.

A pure function of (state, rows, cols, now), so VT2, the status file and
`python -m pid1 status` show the same thing and the tests need no terminal.
No line is wider than `cols` terminal cells. When rows are short, finished
phases collapse into a summary so the log keeps a few lines. Owns the
tables' layout; uses pid1.view.text and pid1.view.header, and reads the
state's dataclasses only.
"""

from __future__ import annotations

from pid1.state import LogLine, State
from pid1.state_schema import ContainerState, ContainerStatus, PhaseState, PhaseStatus
from pid1.view.header import header_lines
from pid1.view.text import ELLIPSIS, MISSING, SEP, at, clean, clip, duration, pad, wrap_words

MIN_LOG_LINES = 3
LEVEL_MARK = {"error": "E", "warning": "W", "notice": "N", "info": "I", "debug": "D"}
PHASE_NAME_MIN, PHASE_NAME_MAX, PHASE_STATE_W, PHASE_NUM_W = 11, 16, 9, 7
CT_ROLE_W, CT_STATE_W, CT_UP_W, CT_RESTARTS_W = 8, 9, 8, 4
RETRY_SHOWN = (ContainerStatus.BACKOFF, ContainerStatus.EXITED, ContainerStatus.STARTING, ContainerStatus.PENDING)


# --- phases ----------------------------------------------------------------------------
def sorted_phases(state: State) -> list[PhaseState]:
    return sorted(state.phases.values(), key=lambda p: (p.started is None, p.started or 0.0))


def name_width(phases: list[PhaseState]) -> int:
    longest = max((len(clean(p.name)) for p in phases), default=0)
    return min(max(longest, PHASE_NAME_MIN), PHASE_NAME_MAX)


def phase_row(p: PhaseState, now: float, cols: int, name_w: int) -> str:
    status = clean(p.status)
    if p.attempts > 1:
        status += f"#{p.attempts}"
    took = p.duration
    if took is None and p.started is not None and p.status in (PhaseStatus.RUNNING, PhaseStatus.RETRYING):
        took = now - p.started  # still going: time so far
    detail = "error: " + clean(p.error) if p.error and p.status != PhaseStatus.DONE else clean(p.detail or "")
    row = " ".join(
        (pad(clean(p.name), name_w), pad(status, PHASE_STATE_W), pad(at(p.started), PHASE_NUM_W),
         pad(duration(took), PHASE_NUM_W), detail)
    )  # fmt: skip
    return clip(row.rstrip(), cols)


def phase_lines(state: State, now: float, cols: int, budget: int) -> list[str]:
    phases = sorted_phases(state)
    name_w = name_width(phases)
    columns = (pad("PHASE", name_w), pad("STATE", PHASE_STATE_W), pad("START", PHASE_NUM_W), pad("TIME", PHASE_NUM_W))
    title = clip(" ".join(columns) + " DETAIL", cols)
    if not phases:
        return [title, MISSING]
    if len(phases) + 1 <= budget:
        return [title] + [phase_row(p, now, cols, name_w) for p in phases]
    # Short screen: finished phases become one wrapped summary; what is still
    # running or has failed keeps its own row (that is what a person looks for).
    done = [p for p in phases if p.status == PhaseStatus.DONE]
    rest = [p for p in phases if p.status != PhaseStatus.DONE]
    summary = wrap_words([f"{clean(p.name)} {duration(p.duration)}" for p in done], cols, "done: ")
    lines = [title, *summary, *(phase_row(p, now, cols, name_w) for p in rest)]
    if len(lines) > budget and budget >= 2:
        hidden = len(lines) - budget + 1
        lines = [*lines[: budget - 1], clip(f"{ELLIPSIS} {hidden} more phase lines", cols)]
    return lines


# --- containers -------------------------------------------------------------------------
def container_row(c: ContainerState, now: float, cols: int) -> str:
    up = duration(now - c.up_since) if c.up_since is not None and c.status == ContainerStatus.RUNNING else MISSING
    notes = [clean(c.image) + (f" ({clean(c.image_reason)})" if c.image_reason else "") if c.image else "no image"]
    if c.fallback_reason:
        notes.append("fallback: " + clean(c.fallback_reason))
    if c.name_conflict:
        notes.append("name: " + clean(c.name_conflict))
    if c.next_retry is not None and c.status in RETRY_SHOWN:
        notes.append(f"retry in {duration(c.next_retry - now)}")
    if c.last_exit is not None:
        notes.append(f"last exit {c.last_exit}")
    if c.container_id:
        notes.append(clean(c.container_id)[:12])
    row = " ".join(
        (pad(clean(c.role), CT_ROLE_W), pad(clean(c.status), CT_STATE_W), pad(up, CT_UP_W),
         pad(str(c.restarts), CT_RESTARTS_W), SEP.join(notes))
    )  # fmt: skip
    return clip(row.rstrip(), cols)


def container_lines(state: State, now: float, cols: int) -> list[str]:
    columns = (pad("ROLE", CT_ROLE_W), pad("STATE", CT_STATE_W), pad("UP", CT_UP_W), pad("RST", CT_RESTARTS_W))
    title = clip(" ".join(columns) + " IMAGE (WHY)", cols)
    rows = [container_row(c, now, cols) for c in state.containers.values()]
    return [title, *(rows or [MISSING])]


# --- log ------------------------------------------------------------------------------
def log_line(entry: LogLine, cols: int) -> str:
    mark = LEVEL_MARK.get(entry.level, "?")
    return clip(f"[{entry.time:9.3f}] {mark} {clean(entry.message)}".rstrip(), cols)


def log_lines(state: State, cols: int, count: int) -> list[str]:
    if count <= 0:
        return []
    title = clip(f"LOG (newest last, {len(state.log)} in the ring)", cols)
    if count == 1:
        return [title]
    tail = list(state.log)[-(count - 1) :]
    return [title, *(log_line(e, cols) for e in tail)] if tail else [title, MISSING]


# --- the whole screen --------------------------------------------------------------------
def render(state: State, rows: int, cols: int, now: float, wall: float | None = None) -> list[str]:
    """The view as at most `rows` lines of at most `cols` cells each. `now`
    is the uptime to show the state at; `wall` the wall clock (default: now),
    for the DHCP lease, which is stamped with it."""
    if rows <= 0 or cols <= 0:
        return []
    head = [clip(line, cols) for line in header_lines(state, now, wall)]
    containers = container_lines(state, now, cols)
    log_min = min(MIN_LOG_LINES + 1, max(rows - len(head) - len(containers) - 2, 0))
    phase_budget = max(rows - len(head) - len(containers) - log_min, 2)
    phases = phase_lines(state, now, cols, phase_budget)
    lines = [*head, *phases, *containers]
    lines += log_lines(state, cols, rows - len(lines))
    return lines[:rows]


def render_long(state: State, cols: int, now: float, log_count: int = 40, wall: float | None = None) -> list[str]:
    """Everything (every phase, every container) and the last `log_count`
    log lines: the status file and `status` when not on a terminal."""
    head = [clip(line, cols) for line in header_lines(state, now, wall)]
    phases = phase_lines(state, now, cols, budget=10**6)
    containers = container_lines(state, now, cols)
    lines = [*head, *phases, *containers]
    return lines + log_lines(state, cols, log_count + 1)
