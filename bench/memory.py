#!/usr/bin/env python3
"""The RAM the OS leaves to containers: pid1's image beside the shell-init anchor.

    .venv/bin/python bench/memory.py [--runs 1] [--mem 1024 --mem 512] [--iso] [--skip-build]

Boots pid1's image (`qemu/run --kernel`, or the ISO with --iso) and the
anchor (its vmlinuz and initrd, interactive mode), alternately, in VMs of
each --mem size (MiB; default 1024 and 512), under TCG with 2 vCPUs and the
same kernel. 20 s after the console's shell prompt it reads /proc/meminfo
through that shell (the console shares the machine's /proc/meminfo) and, for
pid1, checks in its state file that dom0 runs and the network is up (the
anchor's console starts only after its DHCP lease). Prints MemTotal,
MemAvailable and their ratio per boot, the medians, and pid1's RSS. A boot
that never reaches the prompt is reported with the last serial lines (a VM
too small for the image says so on its serial console).
Goals (issue 14): boots in 512 MiB with at least the anchor's MemAvailable;
in 1 GiB, MemAvailable >= 75% of MemTotal.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time

from devtools.anchor import ANCHOR_OUT, build_anchor_if_missing
from devtools.vm import REPO, VM, BootTimeout

BOOT_TIMEOUT = 300.0
SETTLE = 20.0  # seconds after the prompt before reading /proc/meminfo
PROMPT = r"/ # "
# a boot that ends before the prompt: stop waiting at once
GAVE_UP = r"Kernel panic|only-docker needs a machine"
FIELDS = ("MemTotal", "MemAvailable", "MemFree", "Cached", "Shmem", "AnonPages", "Slab")


def meminfo(text: str) -> dict[str, int]:
    """KiB per field of a /proc/meminfo text."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+) kB", line.strip())
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def rss_kib(status: str) -> int | None:
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else None


def read_after_prompt(vm: VM, prompt_at: float) -> dict[str, int]:
    time.sleep(max(0.0, prompt_at + SETTLE - time.monotonic()))
    return meminfo(vm.shell("cat /proc/meminfo", 60))


def boot_pid1(name: str, mem: int, iso: bool) -> dict:
    vm = VM(name=name, mem=mem, iso=iso)
    vm.start()
    try:
        if vm.wait_for(f"{PROMPT}|{GAVE_UP}", BOOT_TIMEOUT + (60 if iso else 0)).group(0) != PROMPT:
            raise BootTimeout("the boot gave up")
        prompt_at = time.monotonic()
        info = read_after_prompt(vm, prompt_at)
        out = vm.shell("cat /run/pid1/state.json; echo; cat /proc/1/status", 60)
        state = json.loads(out[out.index("{") : out.rindex("}") + 1])
        dom0 = (state.get("containers", {}).get("dom0") or {}).get("status")
        network = "network up" in state.get("milestones", {})
        return {"ok": True, "mem": info, "pid1_rss": rss_kib(out), "dom0": dom0, "network": network,
                "wall": round(prompt_at - vm.started, 1)}  # fmt: skip
    except (BootTimeout, ValueError) as exc:
        return no_prompt(vm, f"pid1 {name}", exc)
    finally:
        vm.kill()


def no_prompt(vm: VM, who: str, exc: Exception) -> dict:
    """A boot that reached no prompt: said, with its serial log kept and its tail."""
    log = vm.save_log(f"memory-{who.split()[-1]}")
    print(f"  {who}: no prompt ({str(exc).splitlines()[0]}); serial log {log}")
    print("    " + "\n    ".join(vm.tail(6).splitlines()))
    return {"ok": False}


def boot_anchor(name: str, mem: int) -> dict:
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", str(mem),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(ANCHOR_OUT / "vmlinuz"), "-initrd", str(ANCHOR_OUT / "initrd.img"),
            "-append", "console=ttyS0 quiet panic=-1 anchor.mode=interactive",
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip
    vm = VM(name=name)
    vm.start_argv(argv)
    try:
        vm.wait_for(r"@@ CONSOLE_STARTED", BOOT_TIMEOUT)
        vm.wait_for(PROMPT, 60)
        prompt_at = time.monotonic()
        return {"ok": True, "mem": read_after_prompt(vm, prompt_at), "wall": round(prompt_at - vm.started, 1)}
    except BootTimeout as exc:
        return no_prompt(vm, f"anchor {name}", exc)
    finally:
        vm.kill()


def mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.0f}"


def describe(who: str, run: dict) -> str:
    if not run["ok"]:
        return f"  {who}: FAILED"
    m = run["mem"]
    text = (
        f"  {who}: MemTotal {mib(m.get('MemTotal'))} MiB, MemAvailable {mib(m.get('MemAvailable'))} MiB "
        f"({m['MemAvailable'] / m['MemTotal']:.0%}); "
        + ", ".join(f"{k} {mib(m.get(k))}" for k in FIELDS[2:])
        + f"; prompt at {run['wall']} s wall"
    )
    if "pid1_rss" in run:
        network = "up" if run["network"] else "DOWN"
        text += f"; pid1 RSS {run['pid1_rss'] / 1024:.1f} MiB; dom0 {run['dom0']}, network {network}"
    return text


def summary(mem: int, pid1: list[dict], anchor: list[dict]) -> None:
    print(f"\n== {mem} MiB VM: medians, MiB")
    print(f"{'':8} {'boots':>6} {'MemTotal':>9} {'MemAvailable':>13} {'ratio':>6}")
    for who, runs in (("pid1", pid1), ("anchor", anchor)):
        good = [r["mem"] for r in runs if r["ok"]]
        if not good:
            print(f"{who:8} {'0/' + str(len(runs)):>6}")
            continue
        total = statistics.median(m["MemTotal"] for m in good)
        avail = statistics.median(m["MemAvailable"] for m in good)
        print(f"{who:8} {f'{len(good)}/{len(runs)}':>6} {mib(total):>9} {mib(avail):>13} {avail / total:6.0%}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--mem", type=int, action="append", help="VM RAM in MiB (repeatable; default 1024 and 512)")
    parser.add_argument("--iso", action="store_true", help="boot pid1's ISO instead of vmlinuz + initrd.img")
    parser.add_argument("--no-anchor", action="store_true", help="pid1's image only")
    parser.add_argument("--skip-build", action="store_true")
    opts = parser.parse_args(argv)
    if not opts.skip_build:
        subprocess.run([str(REPO / "image/build"), *([] if opts.iso else ["--no-iso"])], check=True)
    if not opts.no_anchor:
        build_anchor_if_missing()
    for mem in opts.mem or [1024, 512]:
        pid1_runs, anchor_runs = [], []
        for i in range(opts.runs):
            # alternately: the host's speed drifts over minutes
            pid1_runs.append(boot_pid1(f"mem{mem}-{i + 1}", mem, opts.iso))
            print(describe(f"pid1 {mem} MiB run {i + 1}", pid1_runs[-1]), flush=True)
            if not opts.no_anchor:
                anchor_runs.append(boot_anchor(f"anchor-mem{mem}-{i + 1}", mem))
                print(describe(f"anchor {mem} MiB run {i + 1}", anchor_runs[-1]), flush=True)
        summary(mem, pid1_runs, anchor_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
