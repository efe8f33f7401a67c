#!/usr/bin/env python3
"""Idle cost of the live view: pid1 as PID 1 of a fresh PID namespace, with
the vt2 view drawing on a pty that stands in for VT2 and the control FIFO
open.

(a) a boot: state writes vs frames drawn. By default a simulated one
    (bench/boot_phases.py: the real DAG's shape and durations, a log line
    every 0.1-0.2 s); with --docker a real one: pid1's own containerd and
    dockerd, the bundled images, dom0 and the console (as in tests/docker).
(b) then idle for --seconds (default 60): pid1's CPU time (utime + stime
    from /proc/PID/stat), its context switches (how often it woke), and the
    frames drawn (goal: 0; an idle PID 1 wakes only for events).

Goal: idle CPU < 1% of one core. Run as root: `.venv/bin/python bench/idle.py
[--docker [--userdata FILE]] [--no-view] [-s SECONDS]` (--no-view: the baseline
without vt2; --userdata: pid1's RSS with a user-data applied).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from devtools.engine import engine_cmdline
from devtools.harness import Pid1
from devtools.pty import ViewScreen

TICKS = os.sysconf("SC_CLK_TCK")


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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def imported_modules(pid: int) -> list[str]:
    """Shared objects mapped into pid1 (what the imports cost in RSS)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1].rsplit("/", 1)[-1] for line in maps if line.endswith(".so") or ".so." in line})


def render_cost(rounds: int = 300) -> float:
    """Seconds per frame for the work a redraw does, on a full running state."""
    from devtools import sample_states
    from pid1.state import LogLine
    from pid1.view.render import render, render_long

    state = sample_states.boot_state(None)  # every phase done
    for i in range(300):  # a full log ring
        state.log.append(LogLine(time=float(i), level="info", message=f"a log line of a usual length, number {i}"))
    started = time.perf_counter()
    for _ in range(rounds):
        state.to_json()  # what the vt2 phase fingerprints
        render(state, 25, 80, 300.0)
        render_long(state, 80, 300.0)
    return (time.perf_counter() - started) / rounds


def simulated(work: Path, screen: ViewScreen, view: bool) -> Pid1:
    """pid1 over a temporary root (a private tmpfs /dev) with the simulated boot."""
    root = work / "root"
    (root / "dev").mkdir(parents=True)
    (work / "pid1").mkdir()
    return Pid1(
        workdir=work / "pid1",
        cmdline=f"pid1.phases={'vt2,' if view else ''}control,sim-console,sim-dom0,bench-count "
        f"pid1.extra_phases=bench.boot_phases pid1.view_tty={screen.path}",
        root=str(root),
        wrapper=["sh", "-c", 'mount -t tmpfs benchdev "$0/dev" && exec "$@"', str(root)],
        env={"PID1_BENCH_OUT": str(work / "writes"), "PID1_BENCH_UNTIL": "sim-console,sim-dom0"},
    )


def with_docker(work: Path, screen: ViewScreen, view: bool, userdata: Path | None = None) -> Pid1:
    """pid1 with its own containerd, dockerd, the bundled images, dom0 and the
    console, the host phases replaced by no-ops (as in tests/docker); with
    `userdata`, that file as the copy kept on the data root."""
    if userdata is not None:
        (work / "data/only-docker").mkdir(parents=True)
        shutil.copy(userdata, work / "data/only-docker/user-data")
    from image import bundled_images

    bundled_images.build(work / "images")
    (work / "pid1").mkdir()
    phases = f"{'vt2,' if view else ''}control,console,dom0,bench-count"
    extra = f"pid1.view_tty={screen.path}"
    cmdline = engine_cmdline(phases, work, work / "images", extra, extra_phases=["bench.boot_phases"])
    return Pid1(
        workdir=work / "pid1",
        cmdline=cmdline,
        env={
            "PID1_BENCH_OUT": str(work / "writes"),
            "PID1_BENCH_UNTIL": "console,dom0",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--seconds", type=float, default=60.0, help="idle period to measure")
    parser.add_argument("--no-view", action="store_true", help="the same without the vt2 phase (the baseline)")
    parser.add_argument("--docker", action="store_true", help="a real containerd, dockerd, dom0 and console")
    parser.add_argument("--userdata", type=Path, help="with --docker: boot with this user-data (the kept copy)")
    args = parser.parse_args()
    screen = ViewScreen()
    # short paths: unix socket paths are limited to 108 bytes
    work = Path(tempfile.mkdtemp(prefix="p1b-", dir="/var/tmp"))
    try:
        if args.docker:
            run = with_docker(work, screen, not args.no_view, args.userdata)
        else:
            run = simulated(work, screen, not args.no_view)
        started = time.monotonic()
        run.start()
        try:
            state = run.wait_state("the boot to end", lambda s: s["mode"] == "running" and s, 120)
            boot_seconds = time.monotonic() - started
            time.sleep(1.0)  # the last coalesced frame
            boot_frames = screen.frame_count()
            boot_cpu = cpu_seconds(run.pid)
            writes = int((work / "writes").read_text())
            log_lines = len(state["log"])
            time.sleep(2.0)  # let the containers' start-up events settle

            cpu0, switches0, frames0 = cpu_seconds(run.pid), context_switches(run.pid), screen.frame_count()
            before = run.state() or {}
            idle_from = before.get("updated", 0.0) + 0.001  # log times are rounded to ms
            t0 = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(run.pid) - cpu0
            switches = context_switches(run.pid) - switches0
            idle_frames = screen.frame_count() - frames0
            status_ok = (run.state_dir / "status").exists()
            rss = rss_mib(run.pid)
            modules = imported_modules(run.pid)
            # what changed the state while idle (each change may cost a frame)
            after = run.state() or {}
            changes = [e for e in after.get("log", []) if e.get("time", 0) > idle_from]
            changed = sorted(k for k in after if k not in ("updated", "log") and after.get(k) != before.get(k))
        finally:
            run.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    share = cpu / elapsed * 100
    per_frame = render_cost()
    view = "view off (baseline)" if args.no_view else "view on a 25x80 pty"
    boot = "real containerd + dockerd + dom0 + console" if args.docker else "simulated boot"
    print(f"idle benchmark: pid1 as PID 1 of a PID namespace, {view}, control FIFO open, {boot}")
    print(f"(a) boot: {boot_seconds:.1f} s to mode running, {log_lines} log lines, {writes} state writes,")
    print(f"    {boot_frames} frames drawn ({boot_frames / max(boot_seconds, 0.001):.1f}/s; cap 4/s)")
    print(f"    pid1 CPU from exec to boot end: {boot_cpu:.2f} s (Python start and imports included)")
    print(
        f"    one frame (snapshot, render 25x80, the 80-column status text; 300 log lines): {per_frame * 1000:.2f} ms"
    )
    print(f"(b) idle {elapsed:.0f} s: CPU {cpu:.2f} s = {share:.3f}% of one core (clock tick {1 / TICKS:.2f} s)")
    print(f"    {switches} context switches ({switches / elapsed:.2f}/s), {idle_frames} frames drawn")
    print(f"    {len(changes)} log lines meanwhile, other state changed: {', '.join(changed) or 'nothing'}")
    for entry in changes[:3]:
        print(f"      [{entry['time']:.3f}] {entry['level']}: {entry['message'][:100]}")
    print(f"status file written: {status_ok}")
    print(f"pid1 RSS idle: {rss:.1f} MiB (goal <= 40 MiB); {len(modules)} shared objects mapped")
    print(
        f"goal: idle CPU < 1% of one core -> {'met' if share < 1 else 'NOT met'}; "
        f"no frame without a change -> {'met' if idle_frames == 0 or changes or changed else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
