"""Test-only phases (pid1.extra_phases=devtools.noop_host_phases, as
devtools.engine's command line says) that stand in for the host phases: in a test namespace pid1 must
not make device nodes in the host's /dev or mount over /tmp and /run, and
dockerd needs nothing from them there (the host has /proc, /sys, cgroups and
the modules loaded). Extra modules override the built-in phases of the same
name, and declare the slots of the phases they replace. `disks` reads none of
the host's block devices, and `storage` says "disk" when the environment
asks for it (PID1_TEST_STORAGE).

`network` is a stand-in too: these tests share the host's network namespace,
and the real phase's DHCP client (udhcpc's deconfig flushes the link's IPv4
addresses) would take the host's address away. Only the tests that run pid1
in a network namespace of their own (test_network.py's start_networked) ask
for the real phase, with PID1_TEST_REAL_NETWORK=1.

`console_tty` is a stand-in too, which opens nothing: the real phase would
open the host's /dev/ttyS0 and /dev/tty1 (pid1.console's default) and leave
them in raw mode when the test kills pid1. The console then runs unbridged.
A test that gives pid1.console a pty of its own asks for the real phase with
PID1_TEST_REAL_CONSOLE=1.

`ntp` is a stand-in too: the clock is not namespaced, and an ntp container
with CAP_SYS_TIME would set the host's clock (from pool.ntp.org, which no
test may reach). test_clock.py asks for the real phase with
PID1_TEST_REAL_NTP=1, and then the real phase runs only with pid1.ntp=query
(measure, never set) or off: anything else fails the phase."""

from __future__ import annotations

import os

from pid1.blockdev import Scan
from pid1.phases import Phase, PhaseContext
from pid1.phases import ntp as real_ntp
from pid1.state_schema import NetworkStatus, StorageMode
from pid1.wiring import StorageResult, Wiring


async def noop(ctx: PhaseContext) -> str:
    return "skipped in the docker tests"


async def storage(ctx: PhaseContext) -> str:
    mode = StorageMode(os.environ.get("PID1_TEST_STORAGE", "ram"))
    ctx.state.storage.mode = mode
    ctx.wiring.storage = StorageResult(mode=mode)
    return f"{mode} (test stand-in)"


async def no_disks(ctx: PhaseContext) -> str:
    ctx.wiring.block_scan = Scan(labelled=[], nodes={}, problems=[])  # the host's disks are not the test's
    return "no disks in the docker tests (the host's are not the test's)"


async def no_console_terminals(ctx: PhaseContext) -> str:
    return "no console terminals in the docker tests (the host's are not the test's)"


async def ntp_stand_in(ctx: PhaseContext) -> str:
    ctx.wiring.clock = real_ntp.Clock()  # never synced: the host's clock is the host's
    return "the host's clock is the host's (test stand-in)"


async def ntp_query_only(ctx: PhaseContext) -> str:
    if ctx.config.ntp not in ("query", "off"):
        raise RuntimeError(f"pid1.ntp={ctx.config.ntp} in a test: it would set the host's clock; use query")
    return await real_ntp.run(ctx)


async def network(ctx: PhaseContext) -> str:
    import asyncio

    ctx.state.network.update(mode="host", status=NetworkStatus.UP)
    ctx.wiring.network_up = up = asyncio.Event()
    up.set()
    return "the host's network (test stand-in)"


PHASES = [
    Phase(name="devices", run=noop),
    Phase(name="mounts", run=noop, needs=("devices",)),
    Phase(name="hostname", run=noop, needs=("mounts",)),
    Phase(name="modules", run=noop, needs=("mounts",), fills=(Wiring.module_index, Wiring.disk_drivers_loaded_at)),
    Phase(name="disks", run=no_disks, needs=("modules",), fills=(Wiring.block_scan,)),
    Phase(name="storage", run=storage, needs=("modules", "disks", "autoformat"), fills=(Wiring.storage,)),
    *(
        []
        if os.environ.get("PID1_TEST_REAL_NETWORK") == "1"
        else [Phase(name="network", run=network, needs=("images",), fills=(Wiring.network_up,))]
    ),
    *(
        []
        if os.environ.get("PID1_TEST_REAL_CONSOLE") == "1"
        else [Phase(name="console_tty", run=no_console_terminals, needs=("mounts",), fills=(Wiring.console_bridge,))]
    ),
    Phase(
        name="ntp",
        run=ntp_query_only if os.environ.get("PID1_TEST_REAL_NTP") == "1" else ntp_stand_in,
        needs=real_ntp.PHASE.needs,
        required=False,
        fills=real_ntp.PHASE.fills,
        uses=real_ntp.PHASE.uses,  # the real phase's slots, which ntp_query_only runs
    ),
]
