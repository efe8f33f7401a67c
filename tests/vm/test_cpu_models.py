"""Boots on a CPU without RDRAND: qemu's default model (no -cpu at all, as a
plain `qemu-system-x86_64 -kernel` runs it; qemu64), with no virtio-rng.

There the kernel's random pool is not ready when /init starts: Python's hash
seed comes from /dev/urandom in the initramfs (image/cpio.py), and whatever
reads random bytes later (dockerd's Go crypto/rand, which blocks until the
pool is ready) must not wait for it. One boot in CI; VM_CPU_MODELS="kvm64
Nehalem" boots those models too, one after another (each costs a boot).

The boots are also issue 14's `-kernel` boot of the minimum RAM (pid1.ram
MIN_RAM_MIB): the engine's squashfs mounted, a container run, and the
memory phase's setting in the kernel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from test_boot import STEP, shell_ready
from test_memory_vm import check_engine_mounted

from devtools.vm import VM
from pid1 import ram

pytestmark = pytest.mark.vm

MODELS = ["default", *os.environ.get("VM_CPU_MODELS", "").split()]
KERNEL_LINE = r"\[\s*([0-9.]+)\] {}"


@pytest.fixture(scope="module", params=MODELS)
def cpu_vm(boot, request: pytest.FixtureRequest) -> Iterator[VM]:
    # panic=-1 with qemu/run --no-reboot: a kernel panic (init died) ends qemu at once
    vm = boot(f"cpu-{request.param}", cpu=request.param, append=["panic=-1"], mem=ram.MIN_RAM_MIB)
    shell_ready(vm)
    yield vm
    vm.kill()  # the next model's boot gets the cores


def uptime_of(kernel_log: str, line: str) -> float:
    found = re.search(KERNEL_LINE.format(line), kernel_log)
    assert found, f"no /{line}/ in the kernel log:\n{kernel_log}"
    return float(found.group(1))


def test_the_default_model_has_no_rdrand(cpu_vm: VM) -> None:
    """The control: on this CPU the kernel cannot seed its pool from the CPU
    (without RDRAND the image used to panic before pid1 ran)."""
    if cpu_vm.cpu != "default":
        pytest.skip("only qemu's default model is known to lack RDRAND")
    flags = cpu_vm.shell("grep -m1 '^flags' /proc/cpuinfo", STEP)
    assert "flags" in flags and not re.search(r"\brd(rand|seed)\b", flags), flags


def test_a_container_runs_from_the_console(cpu_vm: VM) -> None:
    out = cpu_vm.shell("docker run --rm busybox echo o''k", STEP)
    # kernel lines (veth, bridge) may come around it on the serial console
    assert "ok" in [line.strip() for line in out.splitlines()], out


def test_the_random_pool_is_ready_before_dockerd_starts(cpu_vm: VM) -> None:
    """So dockerd's and containerd's getrandom() never block. Under TCG the
    kernel's jitter entropy fills it within a second or two of /init's first
    /dev/urandom read; no interrupts are awaited."""
    # dmesg, not the serial line: what reaches the console may be filtered
    kernel_log = cpu_vm.shell("dmesg | grep -E 'Run /init|random: |pid1: (notice: starting|dockerd started)'", STEP)
    init = uptime_of(kernel_log, "Run /init")
    ready = uptime_of(kernel_log, "random: crng init done")
    dockerd = uptime_of(kernel_log, "pid1: dockerd started")
    milestones = cpu_vm.milestones()
    print(f"cpu {cpu_vm.cpu}: /init at {init} s, crng ready at {ready} s, dockerd started at {dockerd} s, {milestones}")
    assert ready < dockerd, f"crng ready at {ready} s, after dockerd started ({dockerd} s)"


def test_the_minimum_mounts_the_engine_and_turns_huge_pages_off(cpu_vm: VM) -> None:
    """The memory phase's `never`: the kernel stops khugepaged and puts
    vm.min_free_kbytes back to its own default (4 * sqrt(lowmem KiB): ~2.7
    MB here), where khugepaged had raised it to about 5% of the RAM."""
    check_engine_mounted(cpu_vm)
    out = cpu_vm.shell("cat /sys/kernel/mm/transparent_hugepage/enabled /proc/sys/vm/min_free_kbytes", STEP)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert "always madvise [never]" in lines, out
    min_free = int(next(line for line in lines if line.isdigit()))
    assert min_free < 8192, f"vm.min_free_kbytes {min_free}: the huge pages' reserve is still there"
