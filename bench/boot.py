#!/usr/bin/env python3
"""Boot to a console prompt: pid1's image beside the shell-init anchor, in one run.

    .venv/bin/python bench/boot.py [--runs 3] [--skip-build] [--only ram|disk]
                                   [--media-runs 1] [--no-media | --media-only]

Builds both (image/build; the anchor's build.sh with OUT=/var/tmp/...), then
boots each RUNS times from RAM and RUNS times with a fresh disk labelled
DOCKER, under TCG with the same kernel, dockerd, 2 vCPUs and 2 GiB, pid1 and
the anchor alternately. The anchor
is run as its README says (boot.sh, its own milestone lines); pid1 is booted
with `quiet` like the anchor, and once its console shell prompt is on the
serial line, its own record (/run/pid1/state.json, read through that shell)
gives each milestone's guest uptime. Prints each milestone's median for both,
the ratio pid1/anchor (goal for the console: <= 0.8) and both initrd sizes
(goal: pid1's <= the anchor's + 10 MB). Then one more pid1 boot per mode with
a NoCloud user-data (a hostname, a daemon.json, one runcmd) on a second
CD-ROM, and its console-started time against the plain boots' median (goal:
at most +5%); `--no-userdata` skips it.

Then (`--ssh-runs N`, default 1; `--no-ssh` skips it, `--ssh-only` runs only
this) N boots per mode whose user-data gives root a key, with qemu/run
--ssh-port: beside "console started" (the prompt on the serial line), "SSH
answers" is the first byte of dom0's SSH banner through the forward, both
timed from the host from qemu's start (goal: SSH within 1.2x the console),
and the guest's own times of the milestones around them (dom0 running, `ssh
answers`, the DHCP lease). On the last of them: dom0's image size, and its
memory idle, read at the console (`docker stats`, and each of dom0's
processes' VmRSS); then `docker version` p50 over 20 rounds of three, taken
in turn: `docker -H ssh://` from the host, typed at the console (the serial
round trip included), and in the guest itself (busybox `time` around that
console command: a local call; goal: over SSH within 2x of it).

Then (`--media-runs N`, default 1; `--no-media` skips it, `--media-only`
runs only this) the boot media beside `-kernel`, in one run, each boot
alternately: `-kernel` from RAM and with a fresh DOCKER disk, the ISO under
BIOS and UEFI, the disk image (a fresh copy) under BIOS and UEFI, and the
ISO with Secure Boot; every boot with the same command line (the media's)
and the same NoCloud volume. Wall clock from qemu's start to the console
prompt on the serial line, and each one's ratio to `-kernel` (the ISO's to
RAM, the image's to the disk: it runs Docker from its DOCKER partition;
goal: within 1.5x), then the size of each artefact.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from devtools.anchor import ANCHOR, ANCHOR_OUT, build_anchor_if_missing
from devtools.harness import REPO, SshClient, free_port
from devtools.vm import VM, BootTimeout, nocloud_iso

BOOT_TIMEOUT = 300.0
# (label, the anchor's mark, how to read it from pid1's state)
MILESTONES = [
    ("init starts", "INIT_START"),
    ("modules done", "MODULES_DONE"),
    ("storage done", "STORAGE_DONE"),
    ("dockerd answers", "DOCKERD_READY"),
    ("bundled images in", "IMAGE_LOADED"),
    ("DHCP lease", "DHCP_DONE"),
    ("console started", "CONSOLE_STARTED"),
]


def pid1_milestones(state: dict) -> dict[str, float]:
    phases = state.get("phases", {})
    marks = state.get("milestones", {})

    def ended(name: str) -> float | None:
        return (phases.get(name) or {}).get("ended")

    console = (state.get("containers", {}).get("console") or {}).get("up_since")
    found = {
        "INIT_START": state.get("booted_at"),
        "MODULES_DONE": ended("modules"),
        "STORAGE_DONE": ended("storage"),
        "DOCKERD_READY": marks.get("dockerd ready") or marks.get("dockerd_ready") or ended("dockerd"),
        "IMAGE_LOADED": ended("images"),
        "DHCP_DONE": marks.get("network up") or ended("network"),
        "CONSOLE_STARTED": marks.get("console started") or console or ended("console"),
        "DOM0_STARTED": (state.get("containers", {}).get("dom0") or {}).get("up_since"),
        "SSH_ANSWERS": marks.get("ssh answers"),
    }
    return {k: round(v, 2) for k, v in found.items() if v is not None}


USER_DATA = """#cloud-config
hostname: bench
runcmd:
  - echo ran > /root/bench-runcmd
only_docker:
  docker:
    registry-mirrors: [http://10.0.2.2:5000]
    log-opts: {max-size: 10m}
"""


class BannerWatch:
    """Knocks on 127.0.0.1:port from qemu's start until the first byte of an
    SSH banner comes back; `answered` is then seconds since `started`. (qemu's
    forward accepts at once and hangs up while the guest's port refuses: only
    a byte of the banner says the server answers.)"""

    def __init__(self, port: int, started: float) -> None:
        import threading

        self.port, self.started, self.answered = port, started, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        import socket

        while not self.done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.settimeout(2)
                    if sock.recv(1) == b"S":
                        self.answered = round(time.monotonic() - self.started, 2)
                        return
            except OSError:
                pass
            self.done.wait(0.1)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def boot_pid1(name: str, disk: str | None, cdroms: list[str] | None = None, ssh: SshClient | None = None,
              after: object = None, append: tuple[str, ...] = ("quiet",), **medium) -> dict:  # fmt: skip
    """One boot to the console prompt; with `ssh`, the SSH banner's time too, and after(vm, ssh) before the end.
    medium: VM's iso, image and firmware (a medium's command line is its own: append must be empty)."""
    vm = VM(name=name, append=list(append), disk=disk, cdroms=cdroms or [], ssh_port=ssh.port if ssh else None,
            **medium)  # fmt: skip
    vm.start()
    watch = BannerWatch(ssh.port, vm.started) if ssh else None
    try:
        vm.wait_for(r"/ # ", BOOT_TIMEOUT)
        wall = round(time.monotonic() - vm.started, 2)
        out = vm.shell("cat /run/pid1/state.json", 90)
        state = json.loads(out[out.index("{") : out.rindex("}") + 1])
        result = {"ok": True, "wall_console": wall, "milestones": pid1_milestones(state)}
        if watch is not None:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while watch.answered is None and time.monotonic() < deadline:
                time.sleep(0.1)
            result["wall_ssh"] = watch.answered
            out = vm.shell("cat /run/pid1/state.json", 90)  # again: dom0 and ssh come after the prompt
            state = json.loads(out[out.index("{") : out.rindex("}") + 1])
            result["milestones"] = pid1_milestones(state)
            if after is not None:
                after(vm, ssh)
        return result
    except (BootTimeout, ValueError) as exc:
        log = vm.save_log(f"bench-{name}")
        print(f"  pid1 {name}: FAILED ({str(exc).splitlines()[0]}); serial log {log}")
        return {"ok": False, "milestones": {}}
    finally:
        if watch is not None:
            watch.stop()
        vm.kill()


def boot_anchor(runs: int, disk: str) -> list[dict]:
    began = time.time()
    env = dict(os.environ, OUT=str(ANCHOR_OUT))
    argv = [str(ANCHOR / "boot.sh"), "-n", str(runs)] + (["-d", "fresh"] if disk == "disk" else [])
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    print("\n".join("  anchor: " + line for line in result.stdout.splitlines() if line.startswith("run ")))
    if result.returncode != 0:  # no anchor run means no ratio: say why instead of a table of dashes
        print(f"  anchor: boot.sh exited {result.returncode}: {result.stderr.strip()[-600:]}")
    files = sorted(f for f in glob.glob(str(ANCHOR_OUT / "runs/*.json")) if os.path.getmtime(f) >= began)
    runs_data = []
    for path in files:
        data = json.loads(Path(path).read_text())
        runs_data.append({"ok": data["ok"], "milestones": {k: v["uptime"] for k, v in data["milestones"].items()}})
    return runs_data


def median(runs: list[dict], key: str) -> float | None:
    values = [r["milestones"][key] for r in runs if r["ok"] and key in r["milestones"]]
    return statistics.median(values) if values else None


def table(title: str, pid1: list[dict], anchor: list[dict]) -> None:
    print(f"\n== {title}: median guest uptime (s), pid1 {sum(r['ok'] for r in pid1)}/{len(pid1)} ok, "
          f"anchor {sum(r['ok'] for r in anchor)}/{len(anchor)} ok")  # fmt: skip
    print(f"{'milestone':20} {'pid1':>8} {'anchor':>8} {'ratio':>7}")
    for label, key in MILESTONES:
        a, b = median(pid1, key), median(anchor, key)
        ratio = f"{a / b:7.2f}" if a is not None and b else "      —"
        shown = [f"{v:8.2f}" if v is not None else "       —" for v in (a, b)]
        print(f"{label:20} {shown[0]} {shown[1]} {ratio}")
    walls = [r["wall_console"] for r in pid1 if r.get("wall_console")]
    if walls:
        print(f"{'(pid1 prompt, wall)':20} {statistics.median(walls):8.2f}")


def build(skip: bool) -> None:
    """pid1's image (unless `skip`), and the anchor whenever it is missing:
    --skip-build is about pid1's image, and without the anchor there is no ratio."""
    if not skip:
        print("building pid1's image (image/build --no-iso)")
        subprocess.run([str(REPO / "image/build"), "--no-iso"], check=True)
        subprocess.run(
            [str(REPO / "image/build"), "--no-iso", "--compress", "zstd", "--dist", str(REPO / "build/dist-zstd")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    build_anchor_if_missing()


def sizes() -> None:
    ours = (REPO / "dist/initrd.img").stat().st_size
    zstd = REPO / "build/dist-zstd/initrd.img"
    anchor = (ANCHOR_OUT / "initrd.img").stat().st_size
    print("\n== initrd sizes")
    print(f"pid1   {ours / 1e6:7.1f} MB as booted (uncompressed cpio: unpacks faster under TCG)")
    if zstd.exists():
        print(f"pid1   {zstd.stat().st_size / 1e6:7.1f} MB zstd (same content)")
    print(f"anchor {anchor / 1e6:7.1f} MB zstd -19")


def userdata_boot(mode: str, plain: list[dict]) -> None:
    disk = None
    if mode == "disk":
        disk = str(REPO / "build/bench-disk-ud.img")
        Path(disk).unlink(missing_ok=True)
        subprocess.run([str(REPO / "qemu/mkdisk"), disk, "1G"], check=True, stdout=subprocess.DEVNULL)
    result = boot_pid1(
        f"{mode}-userdata",
        disk,
        [nocloud_iso(REPO / "build/bench-cidata.iso", USER_DATA, f"instance-id: bench-{time.time_ns()}\n")],
    )
    if disk:
        Path(disk).unlink(missing_ok=True)
    with_ud, without = median([result], "CONSOLE_STARTED"), median(plain, "CONSOLE_STARTED")
    if with_ud is None or not without:
        print(f"  {mode} with a user-data: no console time")
        return
    print(
        f"{'console, user-data':20} {with_ud:8.2f} against plain {without:.2f}: x{with_ud / without:.3f} (goal <= 1.05)"
    )


def p50(seconds: list[float]) -> str:
    low, high = min(seconds) * 1000, max(seconds) * 1000
    return f"p50 {statistics.median(seconds) * 1000:6.0f} ms (min {low:.0f}, max {high:.0f})"


# Each of dom0's processes and its VmRSS: those whose cgroup names dom0's container (the console shares the PIDs).
DOM0_RSS = ("id=$(docker inspect -f '{{.Id}}' dom0); for d in /proc/[0-9]*; do grep -q $id $d/cgroup 2>/dev/null && "
            "echo \"rss ${d#/proc/} $(cat $d/comm) $(grep VmRSS $d/status | tr -s ' \\t' ' ')\"; done")  # fmt: skip


def dom0_memory(vm: VM) -> None:
    """dom0 idle, read at the console (no SSH session in dom0 meanwhile): its
    image's size, its cgroup's memory (docker stats) and each process's RSS."""
    size = vm.output("docker image inspect --format '{{.Size}}' pid1-dom0:latest", 90)
    stats = vm.output("docker stats --no-stream --format '{{.MemUsage}}' dom0", 90)
    processes = [line.split(maxsplit=1)[1] for line in vm.output(DOM0_RSS, 90) if line.startswith("rss ")]
    megabytes = int(size[0]) / 1e6 if size and size[0].strip().isdigit() else 0.0
    print(f"  dom0 image pid1-dom0:latest {megabytes:.2f} MB; dom0 idle: {' '.join(stats)} (docker stats); "
          f"processes: {'; '.join(processes) or '?'}")  # fmt: skip


VERSION = ("version", "--format", "{{.Server.Version}}")


def ssh_figures(vm: VM, ssh: SshClient) -> None:
    """dom0's size and memory; `docker version` 20 times three ways, taken in
    turn so that the host's load drifting over the minutes falls on all three:
    over SSH from the host, typed at the console (its round trip seen from
    the host, the serial line included), and in the guest (busybox time
    around the same console command: a local call)."""
    dom0_memory(vm)
    over_ssh, console, in_guest = [], [], []
    for _ in range(20):
        began = time.monotonic()
        ran = ssh.docker(*VERSION)
        over_ssh.append(time.monotonic() - began)
        if ran.returncode != 0:
            print(f"  docker -H ssh:// failed: {ran.stderr.strip()[-200:]}")
            return
        began = time.monotonic()
        out = vm.shell(f"busybox time -p docker {' '.join(VERSION)} 2>&1 >/dev/null", 90)
        console.append(time.monotonic() - began)
        in_guest += [float(line.split()[1]) for line in out.splitlines() if line.startswith("real ")]
    print(f"  docker version, 20 runs: over ssh:// {p50(over_ssh)}")
    print(f"                           at the console {p50(console)}")
    if in_guest:
        print(f"                           in the guest   {p50(in_guest)} (busybox time: 10 ms steps)")
        ratio = statistics.median(over_ssh) / statistics.median(in_guest)
        print(f"  over ssh:// against the local call: x{ratio:.2f} (goal <= 2)")


SSH_USER_DATA = "#cloud-config\nssh_authorized_keys:\n  - {key}\n"


def ssh_boots(mode: str, runs: int) -> None:
    client = SshClient(REPO / "build/bench-ssh", free_port())
    user_data = SSH_USER_DATA.format(key=client.public_key)
    iso = nocloud_iso(REPO / "build/bench-ssh/cidata.iso", user_data, "instance-id: bench-ssh\n")
    results = []
    for i in range(runs):
        disk = None
        if mode == "disk":
            disk = str(REPO / "build/bench-disk-ssh.img")
            Path(disk).unlink(missing_ok=True)
            subprocess.run([str(REPO / "qemu/mkdisk"), disk, "1G"], check=True, stdout=subprocess.DEVNULL)
        client.forget_host()
        result = boot_pid1(f"{mode}-ssh{i + 1}", disk, [iso], client, ssh_figures if i == runs - 1 else None)
        results.append(result)
        print(
            f"  pid1 {mode} ssh run {i + 1}: prompt {result.get('wall_console')} s, "
            f"SSH answers {result.get('wall_ssh')} s (host time from qemu's start); guest: {result['milestones']}"
        )
        if disk:
            Path(disk).unlink(missing_ok=True)
    ok = [r for r in results if r["ok"] and r.get("wall_ssh")]
    if not ok:
        print(f"  {mode}: SSH never answered")
        return
    console = statistics.median(r["wall_console"] for r in ok)
    answers = statistics.median(r["wall_ssh"] for r in ok)
    print(f"{'console started':20} {console:8.2f}\n{'SSH answers':20} {answers:8.2f}  x{answers / console:.2f} "
          f"of the console (goal <= 1.2; host wall time, median of {len(ok)})")  # fmt: skip


# (label, what -kernel boot it is measured against, VM keyword arguments; "IMAGE" is a fresh copy)
MEDIA = [
    ("-kernel, RAM", None, {}),
    ("-kernel, disk", None, {"disk": "DISK"}),
    ("ISO, BIOS", "-kernel, RAM", {"iso": True}),
    ("ISO, UEFI", "-kernel, RAM", {"iso": True, "firmware": "uefi"}),
    ("image, BIOS", "-kernel, disk", {"image": "IMAGE"}),
    ("image, UEFI", "-kernel, disk", {"image": "IMAGE", "firmware": "uefi"}),
    ("ISO, Secure Boot", "-kernel, RAM", {"iso": True, "firmware": "secure-boot"}),
]
MEDIA_WORDS = ("console=tty1", "console=ttyS0", "printk.devkmsg=on")  # what the media's grub.cfg gives the kernel


def media_boots(runs: int, skip_build: bool) -> None:
    if not skip_build:
        print("building the boot media (image/build)")
        subprocess.run([str(REPO / "image/build")], check=True, stdout=subprocess.DEVNULL)
    cidata = nocloud_iso(REPO / "build/bench-media-cidata.iso", "#cloud-config\nntp:\n  servers: [10.0.2.2]\n",
                         "instance-id: bench-media\n")  # fmt: skip
    walls: dict[str, list[float]] = {label: [] for label, _, _ in MEDIA}
    for i in range(runs):
        for label, _, medium in MEDIA:
            medium = dict(medium)
            scratch = REPO / "build/bench-media.img"
            scratch.unlink(missing_ok=True)
            if medium.get("image") == "IMAGE":
                subprocess.run(["cp", "--sparse=always", str(REPO / "dist/only-docker.img"), str(scratch)], check=True)
                medium["image"] = str(scratch)
            disk = None
            if medium.pop("disk", None) == "DISK":
                subprocess.run([str(REPO / "qemu/mkdisk"), str(scratch), "1G"], check=True, stdout=subprocess.DEVNULL)
                disk = str(scratch)
            # -kernel gets the media's words; qemu/run adds them itself, so nothing more is appended
            result = boot_pid1(f"media-{i + 1}-{label.replace(', ', '-').replace(' ', '_')}", disk, [cidata],
                               append=(), **medium)  # fmt: skip
            scratch.unlink(missing_ok=True)
            print(f"  run {i + 1} {label:18} prompt {result.get('wall_console')} s (wall, from qemu's start)")
            if result["ok"]:
                walls[label].append(result["wall_console"])
    print(f"\n== the boot media: console prompt, wall clock from qemu's start (median of {runs})")
    print(f"{'boot':18} {'wall s':>8} {'ratio':>7}  against")
    for label, against, _ in MEDIA:
        if not walls[label]:
            print(f"{label:18} {'—':>8}")
            continue
        wall = statistics.median(walls[label])
        base = statistics.median(walls[against]) if against and walls[against] else None
        ratio = f"{wall / base:7.2f}  {against} (goal <= 1.5)" if base else ""
        print(f"{label:18} {wall:8.2f} {ratio}")
    media_sizes()


def media_sizes() -> None:
    dist = REPO / "dist"
    built = json.loads((dist / "sizes.json").read_text())
    print("\n== artefact sizes")
    for name in ("vmlinuz", "initrd.img", "only-docker.iso", "only-docker.img", "only-docker.qcow2"):
        path = dist / name
        if path.exists():
            written = path.stat().st_blocks * 512
            print(f"{name:18} {path.stat().st_size / 1e6:8.1f} MB ({written / 1e6:.1f} MB written)")
    for key, what in (("iso_initrd", "the ISO's initrd"), ("image_initrd", "the image's initrd")):
        if built.get(key):
            print(f"{what:18} {built[key] / 1e6:8.1f} MB ({built['iso_compress']})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--only", choices=["ram", "disk"])
    parser.add_argument("--no-userdata", action="store_true", help="skip the boot with a NoCloud user-data")
    parser.add_argument("--ssh-runs", type=int, default=1, help="boots per mode with an SSH key (SSH answers)")
    parser.add_argument("--no-ssh", action="store_true", help="skip the SSH boots")
    parser.add_argument("--ssh-only", action="store_true", help="only the SSH boots (no anchor, no plain boots)")
    parser.add_argument("--media-runs", type=int, default=1, help="rounds of the boot media beside -kernel")
    parser.add_argument("--no-media", action="store_true", help="skip the boot media")
    parser.add_argument("--media-only", action="store_true", help="only the boot media")
    opts = parser.parse_args(argv)
    if opts.media_only:
        media_boots(opts.media_runs, opts.skip_build)
        return 0
    build(opts.skip_build)
    for mode in ("ram", "disk"):
        if opts.only and opts.only != mode:
            continue
        if not opts.no_ssh:
            print(f"\n== {mode.upper()} boot with an SSH key")
            ssh_boots(mode, opts.ssh_runs)
        if opts.ssh_only:
            continue
        # Alternately, one boot each: this machine's speed drifts over minutes,
        # and three of one then three of the other would measure the drift.
        pid1_runs, anchor_runs = [], []
        for i in range(opts.runs):
            disk = None
            if mode == "disk":
                disk = str(REPO / f"build/bench-disk-{i}.img")
                Path(disk).unlink(missing_ok=True)
                subprocess.run([str(REPO / "qemu/mkdisk"), disk, "1G"], check=True, stdout=subprocess.DEVNULL)
            result = boot_pid1(f"{mode}{i + 1}", disk)
            print(f"  pid1 {mode} run {i + 1}: {result['milestones']}")
            pid1_runs.append(result)
            if disk:
                Path(disk).unlink(missing_ok=True)
            anchor_runs += boot_anchor(1, mode)
        table(f"{mode.upper()} boot", pid1_runs, anchor_runs)
        if not opts.no_userdata:
            userdata_boot(mode, pid1_runs)
    if not opts.ssh_only:
        sizes()
    if not (opts.ssh_only or opts.no_media):
        media_boots(opts.media_runs, opts.skip_build)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
