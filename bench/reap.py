#!/usr/bin/env python3
"""Reaping benchmark: pid1 and tini, each as PID 1 of a fresh PID namespace, in one run.

(a) storm: 10,000 orphans made by double fork inside the namespace; the time
    for the storm to finish and the zombies left afterwards (must be 0).
(b) drain: PID 1 is SIGSTOPped, 10,000 orphans exit and wait as zombies; from
    SIGCONT, the time until PID 1 has reaped them all (the reaper's own rate).
Then pid1's RSS once its loop is idle. Run as root: `.venv/bin/python bench/reap.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from devtools.harness import REPO, Pid1, namespace_processes, wait_for

STORM = str(REPO / "tests/namespace/orphan_storm.py")


def start(kind: str, workdir: Path) -> Pid1:
    workdir.mkdir(parents=True)
    if kind == "pid1":
        run = Pid1(workdir=workdir, cmdline="pid1.phases=none")
        run.start()
        run.wait_state("pid1 running", lambda s: s["mode"] == "running", 20)
    else:
        tini = shutil.which("tini") or sys.exit("tini is missing: apt-get install tini")
        run = Pid1(workdir=workdir, cmdline="", program=[tini, "-s", "--", "sleep", "100000"])
        run.start()
    return run


def children_of(pid: int) -> int:
    return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def zombies(run: Pid1) -> int:
    return sum(1 for p in namespace_processes(run.pid) if p.get("State", "").startswith("Z"))


def storm(run: Pid1, count: int) -> float:
    started = time.monotonic()
    done = run.nsenter([sys.executable, STORM, str(count)], timeout=300)
    assert done.returncode == 0, done.stderr
    took = time.monotonic() - started
    wait_for("zombies reaped after the storm", lambda: zombies(run) == 0, 30, run.describe)
    return took


def drain(run: Pid1, count: int) -> float:
    baseline = children_of(run.pid)
    os.kill(run.pid, signal.SIGSTOP)
    try:
        done = run.nsenter([sys.executable, STORM, str(count)], timeout=300)
        assert done.returncode == 0, done.stderr
        wait_for("zombies to pile up", lambda: children_of(run.pid) >= baseline + count, 30)
    finally:
        started = time.monotonic()
        os.kill(run.pid, signal.SIGCONT)
    while children_of(run.pid) > baseline:
        if time.monotonic() - started > 60:
            raise SystemExit(f"drain did not finish: {children_of(run.pid) - baseline} left")
    return time.monotonic() - started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--orphans", type=int, default=10_000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {
        "pid1": {"storm": [], "drain": []},
        "tini": {"storm": [], "drain": []},
    }
    left: dict[str, int] = {"pid1": 0, "tini": 0}
    rss = 0
    with tempfile.TemporaryDirectory(prefix="bench-reap-", dir="/var/tmp") as tmp:
        for round_no in range(args.rounds):
            for kind in ("pid1", "tini"):  # interleaved, so drift hits both alike
                run = start(kind, Path(tmp) / f"{kind}-{round_no}")
                try:
                    results[kind]["storm"].append(storm(run, args.orphans))
                    results[kind]["drain"].append(drain(run, args.orphans))
                    left[kind] = max(left[kind], zombies(run))
                    if kind == "pid1":
                        time.sleep(1)  # let the loop go idle before reading RSS
                        rss = max(rss, rss_kib(run.pid))
                finally:
                    run.stop()
    print(f"reap benchmark: {args.orphans} orphans, {args.rounds} rounds, medians")
    print(f"{'':18}{'pid1':>10}{'tini':>10}{'ratio':>8}")
    for what, label in (("storm", "(a) storm s"), ("drain", "(b) drain ms")):
        scale = 1000 if what == "drain" else 1
        a = statistics.median(results["pid1"][what]) * scale
        b = statistics.median(results["tini"][what]) * scale
        print(f"{label:18}{a:10.1f}{b:10.1f}{a / b:8.2f}")
    print(f"{'zombies left':18}{left['pid1']:10d}{left['tini']:10d}")
    print(f"pid1 RSS idle: {rss / 1024:.1f} MiB (goal <= 40 MiB)")
    ratio = statistics.median(results["pid1"]["drain"]) / statistics.median(results["tini"]["drain"])
    print(f"goal: drain ratio <= 1.25 -> {'met' if ratio <= 1.25 else 'NOT met'}")


if __name__ == "__main__":
    main()
