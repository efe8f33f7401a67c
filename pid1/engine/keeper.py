"""One system container's keeper: the state machine of one role, and its
crash-loop accounting. No Docker calls here (pid1/engine/system_containers.py
drives the keepers; pid1/engine/starter.py makes and starts containers).

Owns `Keeper`, `TRANSITIONS` and `choose_image`. A keeper's status
(`ContainerStatus`, shown as state.containers.ROLE.status) moves only by
`Keeper.move`, along TRANSITIONS:

    PENDING -> STARTING -> RUNNING -> EXITED -> STARTING (at once), or BACKOFF -> STARTING
    STARTING -> EXITED (the start failed, or it died before the start returned)
    EXITED -> RUNNING (a reconcile found it running)
    any but STOPPED -> EXITED (a restart asked for); any -> STOPPED (pid1's stop)

A start attempt is STARTING from its first step (resolving the image) until
the container runs (RUNNING) or its end is booked (EXITED): a run whose end
is not booked yet is `live`, and only a live run's die event counts. Each
end (a die, a failed create or start, an exit found by a reconcile) is
booked once by `book_end`: the first restart after a stable run
(pid1.restart_stable seconds) is immediate, then RESTART_BACKOFF; an image
that ends FALLBACK_AFTER times in a row within the stable time (a SIGKILL
exit does not count: docker kill, the OOM killer, a force removal) is set
aside for the spec's fallback, and `fallback_reason` says why. A new image
under the tag gets its chance again (`choose_image`).

May use: pid1.backoff, pid1.container_spec, pid1.engine.status, pid1.state
(ContainerState); the log it is given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pid1.backoff import Backoff
from pid1.container_spec import ContainerSpec
from pid1.engine.status import ContainerStatus
from pid1.state import ContainerState

if TYPE_CHECKING:
    from pid1.log import Log

FALLBACK_AFTER = 5
SIGKILL_EXIT = 137  # docker kill, the OOM killer, a force removal: not the image's fault
# No wait after the first end in a row; then 100 ms doubling to 10 s.
RESTART_BACKOFF = Backoff(0.1, 10.0, immediate=True)

S = ContainerStatus
TRANSITIONS: dict[ContainerStatus, frozenset[ContainerStatus]] = {
    S.PENDING: frozenset({S.STARTING, S.EXITED, S.STOPPED}),
    S.STARTING: frozenset({S.RUNNING, S.EXITED, S.STOPPED}),
    S.RUNNING: frozenset({S.EXITED, S.STOPPED}),
    # RUNNING: a reconcile that finds the container running after its end was booked
    S.EXITED: frozenset({S.BACKOFF, S.STARTING, S.RUNNING, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.EXITED, S.STOPPED}),
    S.STOPPED: frozenset(),
}


@dataclass
class Keeper:
    """What pid1 knows about one role between events."""

    spec: ContainerSpec
    state: ContainerState
    log: Log
    container_id: str | None = None
    image_id: str | None = None  # the image the current container was made from
    made_from: ContainerSpec | None = None  # the spec the current container was made from
    # The image the current attempt resolved: what a failure (to create, to
    # start, or a crash) counts against; image_id is cleared before a create.
    tried_image_id: str | None = None
    bad_image_id: str | None = None  # set aside for the fallback (kept crashing)
    quick_failures: int = 0  # ends in a row within the stable time, SIGKILLs not counted
    start_ns: int = 0  # wall clock (event timeNano) when the current attempt began
    started_mono: float = 0.0
    task: asyncio.Task | None = None  # the start attempts under way
    attach_task: asyncio.Task | None = None  # the console bridge's attach
    stable_timer: asyncio.TimerHandle | None = None
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Event = field(default_factory=asyncio.Event)  # set while status is RUNNING

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def status(self) -> ContainerStatus:
        return ContainerStatus(self.state.status)

    @property
    def live(self) -> bool:
        """A run under way whose end is not booked yet."""
        return self.status in (S.STARTING, S.RUNNING)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def move(self, to: ContainerStatus) -> None:
        """The one way the status changes. A move TRANSITIONS does not allow
        is a bug in pid1: it is logged, and made anyway (the state must
        show what is true)."""
        now = self.status
        if to is now:
            return
        if to not in TRANSITIONS[now]:
            self.log.error(f"{self.role}: unexpected status change {now} -> {to} (a pid1 bug; going on)")
        self.state.status = to
        if to is S.RUNNING:
            self.running.set()
        else:
            self.running.clear()

    def begin_attempt(self) -> None:
        """A start attempt begins: its run is live from here."""
        self.start_ns = time.time_ns()
        self.started_mono = time.monotonic()
        self.tried_image_id = None
        self.move(S.STARTING)

    def ran_for(self) -> float:
        return time.monotonic() - self.started_mono

    def started_on_todays_clock(self) -> int:
        """When the current attempt began, on the wall clock as it is now: a
        clock stepped since (NTP, `date -s`) moves the start with it, so a die
        event after the step is never taken for one from before the start."""
        return time.time_ns() - int((time.monotonic() - self.started_mono) * 1e9)

    def forget_failures(self) -> None:
        self.state.failures_in_row = self.quick_failures = 0

    def forget_container(self) -> None:
        self.container_id = self.image_id = self.made_from = None

    def book_end(
        self, code: int | None, stable_run: float, error: str | None = None, event_lag_ms: float | None = None
    ) -> str:
        """Book the end of the live run (exit `code`, or None: it failed to
        start, `error` says why): EXITED, the counts, maybe the fallback.
        Returns how it ended, for the console's waiting line."""
        state = self.state
        ran = self.ran_for()
        if self.stable_timer is not None:
            self.stable_timer.cancel()
            self.stable_timer = None
        if ran >= stable_run:
            self.forget_failures()
        state.failures_in_row += 1
        if code != SIGKILL_EXIT:
            self.quick_failures += 1
        state.last_exit = code
        state.up_since = None
        self.move(S.EXITED)
        shown = (
            f"exited with status {code}" if code is not None else "failed to start" + (f" ({error})" if error else "")
        )
        lag = f" (die event {event_lag_ms:.0f} ms old)" if event_lag_ms is not None else ""
        self.log.warning(f"{self.role}: {state.image} {shown} after {ran:.2f} s{lag}")
        tried = self.tried_image_id
        if self.quick_failures >= FALLBACK_AFTER and state.image != self.spec.fallback_image and tried is not None:
            self.bad_image_id = tried
            state.fallback_reason = (
                f"{state.image} ({tried[7:19]}) {shown}, {self.quick_failures} times in a row "
                f"within {stable_run:.0f} s of starting: using {self.spec.fallback_image}"
            )
            self.log.error(f"{self.role}: {state.fallback_reason}")
            self.forget_failures()  # the fallback starts at once
        return shown

    def next_delay(self) -> float:
        """How long to wait before the next start attempt."""
        return RESTART_BACKOFF.delay(self.state.failures_in_row)


def candidate_tags(spec: ContainerSpec) -> list[str]:
    """The tags to look up for a start: the candidates, then the fallback."""
    return [*(tag for tag in spec.images if tag != spec.fallback_image), spec.fallback_image]


def choose_image(spec: ContainerSpec, found: Sequence[str | None], bad_image_id: str | None) -> tuple[str, str, str]:
    """(tag, image id, why): the first candidate present and not set aside,
    else the fallback. `found` has the image ids of candidate_tags(spec)
    (None: missing). RuntimeError when not even the fallback is there."""
    *tags, fallback = candidate_tags(spec)
    tried = []
    for tag, image_id in zip(tags, found, strict=False):
        if image_id is None:
            tried.append(f"{tag} missing")
        elif image_id == bad_image_id:
            tried.append(f"{tag} set aside (kept crashing)")
        else:
            return tag, image_id, f"{tag} present"
    if found[-1] is None:
        raise RuntimeError(f"no image to run: {'; '.join(tried)}; the fallback {fallback} is missing")
    return fallback, found[-1], "fallback: " + ("; ".join(tried) or "no candidate")
