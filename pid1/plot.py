"""The boot timeline as a picture: `python -m pid1 plot --state state.json -o boot.svg`.

Each phase is a bar on a time axis (seconds of uptime, like
`systemd-analyze plot`), coloured by outcome and labelled with its name and
duration; milestones are vertical lines. Plain SVG text, no plotting
library, so it runs anywhere pid1 runs. Works on the State that
pid1.view.statefile decodes from state.json (values of the wrong shape are
already defaults there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from pid1.state import State
from pid1.view.statefile import StateFileError, load_state

COLOURS = {
    "done": "#4caf50",
    "failed": "#e53935",
    "retrying": "#fb8c00",
    "running": "#fdd835",
    "cancelled": "#9e9e9e",
    "pending": "#cfd8dc",
}
ROW = 22
BAR = 16
LEFT = 24  # room for the first tick's label
RELATIVE_AFTER = 120.0  # a first phase later than this uptime is not a machine's boot
TOP = 60
CHART_WIDTH = 1000  # pixels for the time axis
LABEL_ROOM = 260  # right of the last bar, for its label


@dataclass
class Bar:
    name: str
    status: str
    start: float
    end: float
    attempts: int
    error: str


def bars(state: State) -> list[Bar]:
    """One bar per phase that started; an unfinished one ends at the state's last update."""
    out = []
    for p in state.phases.values():
        start = p.started
        if start is None:
            continue
        end = p.ended
        if end is None:
            end = start + p.duration if p.duration is not None else max(state.updated or start, start)
        out.append(
            Bar(name=p.name, status=p.status, start=start, end=max(end, start), attempts=p.attempts or 1,
                error=p.error or "")
        )  # fmt: skip
    return sorted(out, key=lambda b: (b.start, b.name))


def milestones(state: State) -> list[tuple[str, float]]:
    return sorted(state.milestones.items(), key=lambda m: m[1])


def nice_step(span: float, ticks: int = 10) -> float:
    """A 1/2/5 x 10^k tick step giving about `ticks` ticks over span."""
    raw = max(span, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def axis_origin(times: list[float], booted_at: float | None) -> float:
    """0 for a real boot (uptime: the time before pid1 shows too); for a pid1
    started long after the kernel (development, tests) the moment pid1
    started, and the axis counts from there."""
    earliest = min(times) if times else 0.0
    if earliest < RELATIVE_AFTER:
        return 0.0
    if booted_at is not None and booted_at <= earliest:
        return booted_at
    return earliest


def label(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def svg(state: State) -> str:
    phase_bars = bars(state)
    marks = milestones(state)
    times = [b.start for b in phase_bars] + [t for _, t in marks]
    ends = [b.end for b in phase_bars] + [t for _, t in marks]
    booted = state.booted_at or None  # 0: a file that did not say
    origin = axis_origin(times, booted)
    relative = origin > 0  # the axis counts from pid1's start, not from the kernel's
    span = max((max(ends) if ends else 1.0) - origin, 0.001)
    scale = CHART_WIDTH / span

    def x(t: float) -> float:
        return LEFT + (t - origin) * scale

    height = TOP + ROW * max(len(phase_bars), 1) + 40
    width = LEFT + CHART_WIDTH + LABEL_ROOM
    mode = state.mode
    last = max((b.end for b in phase_bars), default=origin) - origin
    if relative:
        title = (
            f"only-docker boot: {len(phase_bars)} phases, mode {mode}, last phase ended {label(last)} "
            f"after pid1 started (at uptime {origin:.2f} s; the axis counts from there)"
        )
    else:
        title = f"only-docker boot: {len(phase_bars)} phases, mode {mode}, last phase ended at {label(last)} of uptime"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not relative and booted and booted > 0:
        # what happened before pid1 ran: firmware, kernel, unpacking the initrd
        out.append(
            f'<rect class="before-pid1" x="{LEFT}" y="{TOP - 8}" width="{x(booted) - LEFT:.1f}" '
            f'height="{height - 30 - TOP + 8}" fill="#f5f5f5"/>'
        )
        out.append(f'<text x="{LEFT + 4}" y="{TOP + 6}" fill="#777">kernel, initrd</text>')
    step = nice_step(span)
    ticks = 0
    while ticks * step <= span + 1e-9:
        offset = ticks * step
        tx = x(origin + offset)
        out.append(f'<line class="tick" x1="{tx:.1f}" y1="{TOP - 8}" x2="{tx:.1f}" y2="{height - 30}" stroke="#eee"/>')
        out.append(f'<text x="{tx:.1f}" y="{height - 16}" text-anchor="middle" fill="#555">{offset:g}s</text>')
        ticks += 1
    for i, (name, t) in enumerate(marks):
        mx = x(t)
        ty = 32 + (i % 2) * 12  # alternate rows so close milestones do not overlap
        out.append(
            f'<line class="milestone" x1="{mx:.1f}" y1="{ty + 2}" x2="{mx:.1f}" y2="{height - 30}" '
            f'stroke="#1e88e5" stroke-dasharray="4,3"/>'
        )
        out.append(f'<text x="{mx + 3:.1f}" y="{ty}" fill="#1e88e5">{escape(f"{name} {t - origin:.2f}s")}</text>')
    for row, bar in enumerate(phase_bars):
        by = TOP + row * ROW
        bx, bw = x(bar.start), max((bar.end - bar.start) * scale, 1.0)
        colour = COLOURS.get(bar.status, "#bdbdbd")
        text = f"{bar.name} {label(bar.end - bar.start)}"
        if bar.status != "done":
            text += f" ({bar.status})"
        if bar.attempts > 1:
            text += f" {bar.attempts} attempts"
        tip = f"{bar.name}: {bar.status}, {bar.start:.3f} to {bar.end:.3f}" + (f": {bar.error}" if bar.error else "")
        out.append(
            f"<rect class={quoteattr('phase ' + bar.status)} data-phase={quoteattr(bar.name)} "
            f'x="{bx:.1f}" y="{by}" width="{bw:.1f}" height="{BAR}" fill="{colour}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        out.append(f'<text x="{bx + bw + 4:.1f}" y="{by + BAR - 4}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plot_main(state_path: str, output: str) -> int:
    """`python -m pid1 plot`: write the SVG. Exit 2 on a bad state file."""
    import os
    import sys

    from pid1.state import write_atomically

    try:
        picture = svg(load_state(state_path))
    except StateFileError as exc:
        print(f"pid1 plot: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a shape load_state did not foresee: still one line
        print(f"pid1 plot: {state_path}: cannot plot this state: {exc!r}", file=sys.stderr)
        return 2
    try:
        if output == "-":
            sys.stdout.write(picture)
        else:
            write_atomically(os.path.abspath(output), picture)
    except OSError as exc:
        print(f"pid1 plot: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
