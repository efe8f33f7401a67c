#!/usr/bin/env python3
"""Idle cost of the live view: pid1 as PID 1 of a fresh PID namespace, with
the vt2 view drawing on a pty that stands in for VT2 and the control FIFO
open.

(a) a simulated boot (bench/boot_phases.py: the real DAG's shape and
    durations, with a log line every 0.1-0.2 s): state writes vs frames drawn.
(b) then idle for --seconds (default 60): pid1's CPU time (utime + stime
    from /proc/PID/stat), its context switches (how often it woke), and the
    frames drawn (goal: 0; an idle PID 1 wakes only for events).

Goal: idle CPU < 1% of one core. Run as root: `python3 bench/idle.py`.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import struct
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import Pid1  # noqa: E402

HOME = b"\x1b[H"
TICKS = os.sysconf("SC_CLK_TCK")


class PtyScreen:
    """A pty whose master side is drained by a thread, counting frames."""

    def __init__(self, rows: int = 25, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.path = os.ttyname(self.slave)
        self.frames = 0
        self.bytes = 0
        self.last = b""
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.frames += chunk.count(HOME)
            self.bytes += len(chunk)
            self.last = (self.last + chunk)[-8192:]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def context_switches(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def render_cost(rounds: int = 300) -> float:
    """Seconds per frame for the work a redraw does, on a full running state."""
    sys.path.insert(0, str(REPO / "tests/unit"))
    sys.path.insert(0, str(REPO))
    import sample_states

    from pid1 import view
    from pid1.phases.vt2 import snapshot
    from pid1.state import LogLine

    state = sample_states._state(None)  # every phase done
    for i in range(300):  # a full log ring
        state.log.append(LogLine(time=float(i), level="info", message=f"a log line of a usual length, number {i}"))
    started = time.perf_counter()
    for _ in range(rounds):
        data = snapshot(state)
        view.render(data, 25, 80, 300.0)
        view.render_long(data, 80, 300.0)
    return (time.perf_counter() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--seconds", type=float, default=60.0, help="idle period to measure")
    parser.add_argument("--no-view", action="store_true", help="the same without the vt2 phase (the baseline)")
    args = parser.parse_args()
    screen = PtyScreen()
    with tempfile.TemporaryDirectory(prefix="bench-idle-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        root = work / "root"
        (root / "dev").mkdir(parents=True)
        (work / "pid1").mkdir()
        run = Pid1(
            workdir=work / "pid1",
            cmdline=f"pid1.phases={'' if args.no_view else 'vt2,'}control,sim-console,sim-dom0 "
            "pid1.extra_phases=bench.boot_phases "
            f"pid1.view_tty={screen.path}",
            root=str(root),
            wrapper=["sh", "-c", 'mount -t tmpfs benchdev "$0/dev" && exec "$@"', str(root)],
            env={"PID1_BENCH_OUT": str(work / "flushes")},
        )
        started = time.monotonic()
        run.start()
        try:
            state = run.wait_state("the boot to end", lambda s: s["mode"] == "running" and s, 60)
            boot_seconds = time.monotonic() - started
            time.sleep(1.0)  # the last coalesced frame
            boot_frames = screen.frames
            boot_cpu = cpu_seconds(run.pid)
            flushes = int((work / "flushes").read_text())
            log_lines = len(state["log"])

            cpu0, switches0, frames0 = cpu_seconds(run.pid), context_switches(run.pid), screen.frames
            t0 = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(run.pid) - cpu0
            switches = context_switches(run.pid) - switches0
            idle_frames = screen.frames - frames0
            status_ok = (run.state_dir / "status").exists()
        finally:
            run.stop()
    share = cpu / elapsed * 100
    per_frame = render_cost()
    view = "view off (baseline)" if args.no_view else "view on a 25x80 pty"
    print(f"idle benchmark: pid1 as PID 1 of a PID namespace, {view}, control FIFO open")
    print(f"(a) simulated boot: {boot_seconds:.1f} s, {log_lines} log lines, {flushes} state writes,")
    print(f"    {boot_frames} frames drawn ({boot_frames / max(boot_seconds, 0.001):.1f}/s; cap 4/s)")
    print(f"    pid1 CPU from exec to boot end: {boot_cpu:.2f} s (Python start and imports included)")
    print(
        f"    one frame (snapshot, render 25x80, the 80-column status text; 300 log lines): {per_frame * 1000:.2f} ms"
    )
    print(f"(b) idle {elapsed:.0f} s: CPU {cpu:.2f} s = {share:.3f}% of one core (clock tick {1 / TICKS:.2f} s)")
    print(f"    {switches} context switches ({switches / elapsed:.2f}/s), {idle_frames} frames drawn")
    print(f"status file written: {status_ok}")
    print(
        f"goal: idle CPU < 1% of one core -> {'met' if share < 1 else 'NOT met'}; idle frames == 0 -> "
        f"{'met' if idle_frames == 0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
