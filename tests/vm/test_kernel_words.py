"""The real image booted with what users put on a kernel command line and
pid1 does not take: stray words (which the kernel passes to init as its
arguments: `keys` used to end PID 1, any other word sent it to last_resort),
a quoted host name with a space, a non-finite number. The machine boots to
its console, and the serial log names what was ignored."""

from __future__ import annotations

import json

import pytest
from test_boot import STEP, shell_ready

from devtools.vm import VM

pytestmark = pytest.mark.vm


def test_stray_words_and_bad_values_boot_to_the_console(boot) -> None:
    vm: VM = boot("stray-words", append=["splash", "single", "keys", 'pid1.hostname="my box"', "pid1.stop_grace=inf"])
    shell_ready(vm)
    vm.wait_for(
        r"pid1: (warning: )?ignoring \d+ argument\(s\) the kernel passed to init: 'splash' 'single' 'keys'", 10, False
    )
    vm.wait_for(r"bad value for pid1\.hostname: 'my box': label 'my box' is not", 10, False)
    vm.wait_for(r"bad value for pid1\.stop_grace: expected a finite number, got 'inf'", 10, False)
    out = vm.shell("cat /run/pid1/state.json", STEP)
    state = json.loads(out[out.index("{") : out.rindex("}") + 1])
    # not emergency mode (later phases, dom0 and the network, may still be coming up)
    assert state["mode"] in ("booting", "running") and state["pid"] == 1, state["mode"]
    assert state["phases"]["hostname"]["detail"].startswith("hostname only-docker"), state["phases"]["hostname"]
