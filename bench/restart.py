#!/usr/bin/env python3
"""Restart benchmark: pid1's console restarts against Docker's own
`--restart=always`, on the same image and the same daemon, in one run.

pid1 runs as PID 1 of a fresh PID + mount namespace and starts containerd,
dockerd (own data root, exec root and sockets under a temporary directory,
`--bridge=none --iptables=false`), loads the bundled images and runs dom0 and
the console (busybox `sh` with a TTY, `--net host`). Then:

(a) pid1: CYCLES times the console's process is SIGKILLed (a crash); the latency is Docker's own
    `die` event -> the next `start` event of the console (their timeNano).
    Each kill comes after the console has run pid1.restart_stable (0.2 s
    here), so each restart is a first restart after a stable run, the case
    crash-loop backoff leaves alone.
(b) Docker: `docker run -dit --restart=always --net host busybox:latest sh`,
    killed the same way, measured the same way. Docker backs off from its very
    first restart (100 ms, doubling) unless the container ran 10 s, so each
    cycle uses a fresh container: its first restart, Docker's best case.
(c) containerd + dockerd spawn -> /_ping OK (pid1's containerd phase start to
    its "dockerd ready" milestone), over BOOTS boots.
(d) SIGTERM to pid1 -> dockerd and containerd both exited (each daemon's
    SIGTERM -> exit, and the whole stop), over the same boots.

Run as root: `.venv/bin/python bench/restart.py [--cycles N] [--boots N]`.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from devtools.engine import engine_cmdline
from devtools.harness import Pid1, wait_for
from image import bundled_images

STABLE = 0.2


class Events:
    """`docker events` (die and start of containers) read on a thread."""

    def __init__(self, socket: Path) -> None:
        self.proc = subprocess.Popen(
            ["docker", "-H", f"unix://{socket}", "events", "--format", "{{json .}}",
             "--filter", "type=container", "--filter", "event=die", "--filter", "event=start"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.queue: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                self.queue.put(json.loads(line))
            except ValueError:
                pass

    def next(self, name: str, action: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {action} event for {name} within {timeout} s")
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("Action") == action and event["Actor"]["Attributes"].get("name") == name:
                return event

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_pid1(workdir: Path, images: Path) -> Pid1:
    cmdline = engine_cmdline("console,dom0", workdir, images, f"pid1.restart_stable={STABLE}")
    run = Pid1(workdir=workdir / "run", cmdline=cmdline)
    run.workdir.mkdir(parents=True)
    run.start()
    run.wait_phase("console", timeout=120)
    run.wait_phase("dom0", timeout=60)
    return run


def docker(socket: Path, *args: str) -> str:
    done = subprocess.run(["docker", "-H", f"unix://{socket}", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr}")
    return done.stdout


def crash(run: Pid1, socket: Path, name: str) -> None:
    """SIGKILL the container's main process from outside, as a crash would
    (`docker kill` marks a container manually stopped: Docker would not restart it).
    The kill runs in pid1's PID namespace, where dockerd's pids are valid."""
    ns_pid = docker(socket, "inspect", "--format", "{{.State.Pid}}", name).strip()
    done = run.nsenter(["kill", "-KILL", ns_pid])
    if done.returncode != 0:
        raise RuntimeError(f"kill {name} (pid {ns_pid}): {done.stderr.decode(errors='replace')}")


def console_state(run: Pid1) -> dict:
    return ((run.state() or {}).get("containers") or {}).get("console") or {}


def pid1_cycles(run: Pid1, socket: Path, events: Events, cycles: int) -> list[float]:
    latencies = []
    for _ in range(cycles):
        # Running and past pid1.restart_stable: a first restart after a stable run.
        wait_for(
            "a stable console",
            lambda: (s := console_state(run)).get("status") == "running" and s.get("failures_in_row") == 0,
            30,
            run.describe,
        )
        events.drain()
        crash(run, socket, "console")
        died = events.next("console", "die")
        started = events.next("console", "start")
        latencies.append((started["timeNano"] - died["timeNano"]) / 1e9)
    return latencies


def docker_cycles(run: Pid1, socket: Path, events: Events, cycles: int) -> list[float]:
    latencies = []
    for index in range(cycles):
        name = f"ref-{index}"
        docker(socket, "run", "-dit", "--restart=always", "--net", "host", "--name", name, "busybox:latest", "sh")
        events.next(name, "start")
        events.drain()
        crash(run, socket, name)
        died = events.next(name, "die")
        started = events.next(name, "start")
        latencies.append((started["timeNano"] - died["timeNano"]) / 1e9)
        docker(socket, "rm", "-f", name)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def describe(name: str, values: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(values), percentile(values, 0.95)
    print(f"{name:<34} p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
          f"min {min(values) * 1000:6.1f}   max {max(values) * 1000:6.1f}   (n={len(values)})")  # fmt: skip
    return p50, p95


def stop_figures(run: Pid1) -> tuple[float, float, float]:
    """SIGTERM to pid1 -> (dockerd SIGTERM->exit, containerd SIGTERM->exit, whole stop) in seconds."""
    began = time.monotonic()
    run.kill(signal.SIGTERM)
    run.wait_exit(90)
    whole = time.monotonic() - began
    state = run.state() or {}
    daemons = state.get("dockerd") or {}
    return daemons["dockerd"]["stopped_in"], daemons["containerd"]["stopped_in"], whole


def ready_figure(run: Pid1) -> float:
    state = run.state() or {}
    return state["milestones"]["dockerd ready"] - state["phases"]["containerd"]["started"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--boots", type=int, default=3)
    opts = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="p1b-", dir="/var/tmp"))
    images = top / "images"
    bundled_images.build(images)
    readies, dockerd_stops, containerd_stops, wholes = [], [], [], []
    try:
        for boot in range(opts.boots):
            workdir = top / f"boot{boot}"
            run = start_pid1(workdir, images)
            try:
                readies.append(ready_figure(run))
                if boot == 0:
                    socket = workdir / "d.sock"
                    events = Events(socket)
                    try:
                        time.sleep(0.2)  # `docker events` has no "subscribed" signal either
                        mine = pid1_cycles(run, socket, events, opts.cycles)
                        reference = docker_cycles(run, socket, events, opts.cycles)
                    finally:
                        events.close()
                dockerd_stop, containerd_stop, whole = stop_figures(run)
                dockerd_stops.append(dockerd_stop)
                containerd_stops.append(containerd_stop)
                wholes.append(whole)
            finally:
                run.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)

    print(f"\nconsole restart latency, die event -> start event, {opts.cycles} cycles each, same daemon and image:")
    p50, p95 = describe("pid1 (event-driven supervisor)", mine)
    docker_p50, _ = describe("docker --restart=always", reference)
    print(f"ratio pid1/docker p50: {p50 / docker_p50:.2f} (goal <= 0.5); "
          f"pid1 p95/p50: {p95 / p50:.2f} (goal < 2)")  # fmt: skip
    print(f"\nover {opts.boots} boots:")
    describe("containerd+dockerd spawn -> /_ping", readies)
    describe("SIGTERM -> dockerd exited", dockerd_stops)
    describe("SIGTERM -> containerd exited", containerd_stops)
    describe("pid1 SIGTERM -> namespace gone", wholes)
    print("(the whole stop includes stopping the console and dom0 first, each on SIGHUP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
