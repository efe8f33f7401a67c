"""pid1.net parsing, the choice of links, and the pieces of the network phase
that need no kernel: the netlink view, the lease file, the worker's arguments."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pid1.container_spec import ContainerSpec
from pid1.net.dhcp import lease_values, read_lease, resolv_conf_text, sysfs_dhcp_link
from pid1.net.mode import Interface, Method, NetConfigError, NetMode, net_mode_text, parse_net_mode
from pid1.net.netlink import ARPHRD_ETHER, Link, View, apply_addr_msg, apply_route_msg, is_managed_link
from pid1.net.worker import worker_args


def first(method: Method, *args: object, **kw: object) -> NetMode:
    """A one-interface NetMode for the first ethernet link."""
    interface = Interface(None, method, *args, **kw)  # type: ignore[arg-type]
    owns = method == Method.DHCP or interface.gateway is not None
    return NetMode(method.value, (replace(interface, default_route=owns),))


S, D = Method.STATIC, Method.DHCP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dhcp", first(D)),
        ("none", NetMode("none")),
        (" dhcp ", first(D)),
        ("static:10.0.2.15/24,10.0.2.2,10.0.2.3", first(S, "10.0.2.15/24", "10.0.2.2", ("10.0.2.3",))),
        ("static:10.0.2.15/24,10.0.2.2", first(S, "10.0.2.15/24", "10.0.2.2", ())),
        ("static:192.168.1.9/16", first(S, "192.168.1.9/16", None, ())),
        ("static:10.0.2.15/24,,1.1.1.1", first(S, "10.0.2.15/24", None, ("1.1.1.1",))),
        (
            "static:10.0.2.15/24,10.0.2.2,1.1.1.1,2606:4700::1111",
            first(S, "10.0.2.15/24", "10.0.2.2", ("1.1.1.1", "2606:4700::1111")),
        ),
        ("static: 10.0.2.15/24 , 10.0.2.2 ", first(S, "10.0.2.15/24", "10.0.2.2", ())),
        ("dhcp,mtu=1400", first(D, mtu=1400)),
        ("static:10.0.2.15/24,10.0.2.2,mtu=9000", first(S, "10.0.2.15/24", "10.0.2.2", mtu=9000)),
    ],
)
def test_parse_net_mode_accepts(value: str, expected: NetMode) -> None:
    assert parse_net_mode(value) == expected
    assert parse_net_mode(net_mode_text(expected)) == expected  # written back, read the same


def test_several_interfaces_one_default_route() -> None:
    mode = parse_net_mode("eth0:dhcp+eth1:static:10.0.0.5/24,,10.0.0.1,mtu=9000+eth2:dhcp")
    eth0, eth1, eth2 = mode.interfaces
    assert (mode.kind, mode.primary) == ("dhcp", eth0)
    assert (eth0.name, eth0.method, eth0.default_route) == ("eth0", D, True)
    assert (eth1.address, eth1.gateway, eth1.dns, eth1.mtu, eth1.default_route) == (
        "10.0.0.5/24", None, ("10.0.0.1",), 9000, False,
    )  # fmt: skip
    assert not eth2.default_route  # a second DHCP interface does not steal the route
    assert mode.dns == ("10.0.0.1",)
    # A gateway takes the route from DHCP; `default` gives it to another DHCP interface.
    gw = parse_net_mode("eth0:dhcp+eth1:static:10.0.0.5/24,10.0.0.1")
    assert (gw.kind, gw.primary.name, gw.interfaces[0].default_route) == ("static", "eth1", False)
    later = parse_net_mode("eth0:dhcp+eth1:dhcp,default")
    assert [i.default_route for i in later.interfaces] == [False, True] and later.primary.name == "eth1"
    assert parse_net_mode(net_mode_text(mode)) == mode and parse_net_mode(net_mode_text(later)) == later


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("dchp", "'dchp': expected dhcp, none, static:ADDR/PREFIX"),
        ("static:", "the address is missing"),
        ("static:10.0.2.15", "has no prefix length"),
        ("static:10.0.2.300/24,10.0.2.2", "bad IPv4 address"),
        ("static:10.0.2.15/33", "bad IPv4 address"),
        ("static:10.0.2.15/0", "prefix length 0"),
        ("static:fe80::1/64", "bad IPv4 address"),
        ("static:10.0.2.15/24,gateway", "bad gateway"),
        ("static:10.0.2.15/24,10.0.3.1", "not in 10.0.2.0/24"),
        ("static:10.0.2.15/24,10.0.2.15", "is the address itself"),
        ("static:10.0.2.15/24,10.0.2.2,dns.example", "bad DNS server"),
        ("dhcp,mtu=12", "bad mtu '12' (a number, 68-65535)"),
        ("dhcp,mtu=big", "bad mtu 'big'"),
        ("dhcp,speed=10", "unknown option 'speed=10'"),
        ("dhcp,10.0.0.1", "dhcp takes only default and mtu=N"),
        ("static:10.0.2.15/24,10.0.2.2,default", "static takes the default route by its GATEWAY"),
        ("eth0:dhcp+static:10.0.0.5/24", "each needs its name"),
        ("eth0:dhcp+eth0:static:10.0.0.5/24", "interface eth0 is configured twice"),
        ("eth0:dhcp+eth1:dhcp,default+eth2:static:10.0.0.5/24,10.0.0.1", "only one interface may have the default"),
        ("eth0:none", "none is for the whole machine"),
        ("eth0:dchp", "eth0: 'dchp': expected dhcp"),
        ("averyveryverylongname:dhcp", "is no interface name"),
        ("eth1:static:10.0.0.5/24,10.9.0.1", "eth1: static: the gateway 10.9.0.1 is not in 10.0.0.0/24"),
    ],
)
def test_parse_net_mode_rejects_with_a_clear_reason(value: str, says: str) -> None:
    with pytest.raises(NetConfigError, match=re.escape(says)):
        parse_net_mode(value)


def test_a_bad_static_value_falls_back_to_dhcp_with_one_warning() -> None:
    """The one parser checks the value where every key is checked: the
    command line's and the user-data's, with the same warning."""
    from pid1.config import apply_settings, parse_cmdline

    config, warnings = parse_cmdline("pid1.net=static:10.0.2.15,10.0.2.2")
    assert config.net == "dhcp" and "net" not in config.origins
    assert warnings == [
        "bad value for pid1.net: 'static:10.0.2.15,10.0.2.2': static: '10.0.2.15' has no prefix length "
        "(e.g. 10.0.2.15/24); keeping default 'dhcp'"
    ]
    later: list[str] = []
    assert apply_settings(config, {"net": "static:10.0.2.15/24,10.0.3.1"}, "user-data", later) == []
    assert config.net == "dhcp" and "is not in 10.0.2.0/24" in later[0] and "in the user-data" in later[0]
    good, none = parse_cmdline("pid1.net=static:10.0.2.15/24,10.0.2.2")
    assert none == [] and parse_net_mode(good.net) == first(S, "10.0.2.15/24", "10.0.2.2", ())
    # A bad word in a several-interface value falls back the same way, naming it.
    config, warnings = parse_cmdline("pid1.net=eth0:dhcp+eth1:static:10.0.0.5/24,mtu=1")
    assert config.net == "dhcp" and "eth1: bad mtu '1'" in warnings[0] and "keeping default 'dhcp'" in warnings[0]


def link(name: str, kind: str | None = None, link_type: int = ARPHRD_ETHER, master: int | None = None) -> Link:
    return Link(index=2, name=name, kind=kind, link_type=link_type, master=master)


@pytest.mark.parametrize(
    ("candidate", "managed"),
    [
        (link("eth0"), True),  # a NIC (virtio_net, e1000): no link kind
        (link("enp0s3"), True),
        (link("lo", link_type=772), False),  # ARPHRD_LOOPBACK
        (link("wg0", link_type=65534), False),  # not ethernet
        (link("docker0", "bridge"), False),
        (link("br-1a2b3c", "bridge"), False),
        (link("veth1a2b3c4", "veth"), False),  # Docker's end of a container's pair
        (link("veth1a2b3c4", "veth", master=3), False),
        (link("eth0", "veth"), True),  # a veth handed to the machine (tests, some VM hosts)
        (link("eth1", master=5), False),  # enslaved to a bond or bridge
        (link("vx0", "vxlan"), False),
        (link("dummy0", "dummy"), False),
    ],
)
def test_which_links_are_managed(candidate: Link, managed: bool) -> None:
    assert is_managed_link(candidate) is managed


class Msg(dict):
    """A pyroute2 message as far as the view reads it: .get() of fields and attrs."""


def addr(event: str, address: str, index: int = 2, scope: int = 0, valid: int | None = 60) -> Msg:
    msg = Msg(event=event, family=2, index=index, address=address, prefixlen=24, scope=scope)
    if valid is not None:
        msg["cacheinfo"] = {"ifa_valid": valid, "ifa_preferred": valid}
    return msg


def route(event: str, gateway: str | None, index: int = 2, dst_len: int = 0, table: int = 254) -> Msg:
    return Msg(event=event, family=2, dst_len=dst_len, table=table, oif=index, gateway=gateway)


def test_view_is_ready_with_an_address_and_a_default_route_on_the_same_link() -> None:
    view = View()
    apply_addr_msg(view, addr("RTM_NEWADDR", "127.0.0.1", index=1, scope=254))  # host scope: ignored
    apply_addr_msg(view, addr("RTM_NEWADDR", "10.0.2.15"))
    assert view.ready_on(2) is None
    apply_route_msg(view, route("RTM_NEWROUTE", None, dst_len=24))  # the subnet route is no default route
    apply_route_msg(view, route("RTM_NEWROUTE", "10.0.2.2", table=255))  # nor is one in the local table
    apply_route_msg(view, route("RTM_NEWROUTE", "10.9.0.1", index=3))  # nor one via another link
    assert view.ready_on(2) is None
    apply_route_msg(view, route("RTM_NEWROUTE", "10.0.2.2"))
    assert view.ready_on(2) == {"address": "10.0.2.15", "prefixlen": 24, "gateway": "10.0.2.2", "valid_lft": 60}
    apply_addr_msg(view, addr("RTM_NEWADDR", "10.0.2.15", valid=0xFFFFFFFF))  # "forever"
    assert view.ready_on(2)["valid_lft"] is None
    apply_addr_msg(view, addr("RTM_DELADDR", "10.0.2.15"))
    assert view.ready_on(2) is None


def test_a_deleted_default_route_is_forgotten() -> None:
    view = View()
    apply_addr_msg(view, addr("RTM_NEWADDR", "10.0.2.15"))
    apply_route_msg(view, route("RTM_NEWROUTE", "10.0.2.2"))
    apply_route_msg(view, route("RTM_DELROUTE", "10.0.2.2"))
    assert view.ready_on(2) is None


LEASE_FILE = """event=renew
interface=eth0
ip=10.0.2.15
prefixlen=24
router=10.0.2.2
dns=10.0.2.3 10.0.2.4
domain=example.test
lease=86400
serverid=10.0.2.2
obtained=1795920000
renewals=2
"""


def test_lease_file_values_for_the_state(tmp_path) -> None:
    path = tmp_path / "lease"
    path.write_text(LEASE_FILE)
    lease = read_lease(str(path))
    ready = {"address": "10.0.2.15", "valid_lft": 86399}
    assert lease_values(lease, ready) == {
        "lease_seconds": 86400,
        "lease_obtained": 1795920000,
        "lease_expires": 1795920000 + 86400,
        "dns": ["10.0.2.3", "10.0.2.4"],
        "domain": "example.test",
        "server": "10.0.2.2",
        "renewals": 2,
    }
    # A lease file for another address (a stale one) is not believed.
    assert lease_values(lease, {"address": "10.0.2.99", "valid_lft": 50}) == {"lease_seconds": 50}
    assert read_lease(str(tmp_path / "missing")) == {}


def test_resolv_conf_text() -> None:
    assert resolv_conf_text(("10.0.2.3",)) == "nameserver 10.0.2.3\n"
    assert resolv_conf_text(("1.1.1.1", "9.9.9.9"), "lan") == "search lan\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"


def test_worker_args() -> None:
    assert worker_args(NetMode("none"), 5.0) == ["--only-lo"]
    assert worker_args(parse_net_mode("dhcp"), 12.5) == ["--deadline", "12.500", "--link-wait", "5", "--net", "dhcp"]
    value = "eth0:static:10.0.2.15/24,10.0.2.2,mtu=1400+eth1:dhcp"
    assert worker_args(parse_net_mode(value), 1.0)[-2:] == ["--net", value]


def test_dhcp_spec_runs_udhcpc_in_the_foreground_unprivileged_on_the_host_network() -> None:
    from devtools.phase_context import phase_context
    from pid1.net.dhcp import dhcp_spec
    from pid1.phases.network import PHASE

    ctx = phase_context(PHASE, root="/tmp/r")  # dhcp_spec reads only the config and the root
    spec = dhcp_spec(ctx, "eth0", "/run/pid1/network")
    assert isinstance(spec, ContainerSpec) and spec.role == "dhcp"
    assert spec.cmd[:4] == ("udhcpc", "-f", "-i", "eth0")
    assert spec.net_host and not spec.pid_host and not spec.privileged
    assert set(spec.cap_add) == {"NET_ADMIN", "NET_RAW"}
    assert "PID1_DEFAULT_ROUTE=yes" in spec.env
    # Another DHCP interface: its own container, and its script leaves the route alone.
    extra = dhcp_spec(ctx, "eth1", "/run/pid1/network/eth1", default_route=False)
    assert extra.role == "dhcp-eth1" and "PID1_DEFAULT_ROUTE=no" in extra.env
    assert extra.cmd[:4] == ("udhcpc", "-f", "-i", "eth1")
    assert "/tmp/r/etc/resolv.conf:/etc/resolv.conf" in spec.binds
    assert "/run/pid1/network:/run/pid1-net" in spec.binds


def test_the_phase_module_does_not_import_pyroute2() -> None:
    """pyroute2 costs ~10 MiB of RSS that PID 1 would keep for good."""
    import subprocess

    code = "import pid1.phases.network, pid1.net.netlink, sys; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def fake_sysfs(root: Path, links: dict[str, tuple[int, int, bool, bool]]) -> list[tuple[int, str]]:
    """name -> (ifindex, type, has a device, enslaved); returns the matching if_nameindex()."""
    for name, (index, link_type, device, master) in links.items():
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "ifindex").write_text(f"{index}\n")
        (directory / "type").write_text(f"{link_type}\n")
        if device:
            (directory / "device").mkdir()
        if master:
            (directory / "master").symlink_to(root)
    return sorted((index, name) for name, (index, *_rest) in links.items())


def test_the_dhcp_link_from_sysfs_is_the_first_physical_ethernet_link(tmp_path: Path) -> None:
    ours = fake_sysfs(tmp_path / "a", {
        "lo": (1, 772, False, False),          # ARPHRD_LOOPBACK
        "eth0": (3, 1, True, True),            # a NIC enslaved to a bridge
        "docker0": (2, 1, False, False),       # virtual: no device
        "ens4": (4, 1, True, False),
        "ens5": (5, 1, True, False),
    })  # fmt: skip
    assert sysfs_dhcp_link(str(tmp_path / "a"), ours) == "ens4"
    # another namespace's sysfs (a test's namespace under the host's /sys): not used
    assert sysfs_dhcp_link(str(tmp_path / "a"), [(1, "lo"), (2, "eth0")]) is None
    # only virtual links (a veth: netlink's kind tells what it is) or nothing readable: the worker decides
    only_virtual = fake_sysfs(tmp_path / "b", {"lo": (1, 772, False, False), "eth0": (2, 1, False, False)})
    assert sysfs_dhcp_link(str(tmp_path / "b"), only_virtual) is None
    assert sysfs_dhcp_link(str(tmp_path / "missing"), [(1, "lo")]) is None


def test_interface_addresses_answers_now_or_after_a_bounded_wait() -> None:
    """What the network phase gives a phase that needs an interface's address
    (Wiring.interface_addresses): the state's addresses, now or once they come."""
    import asyncio

    from pid1.net.addresses import InterfaceAddresses
    from pid1.state_schema import InterfaceState, NetworkState

    network = NetworkState(interfaces={"eth1": InterfaceState("eth1", "dhcp")})
    addresses = InterfaceAddresses(lambda: network)

    async def scenario() -> tuple[list[str], list[str], list[str], float]:
        assert addresses.of("eth1") == [] and addresses.of("eth9") == []
        loop = asyncio.get_running_loop()
        began = loop.time()
        nothing = await addresses.wait("eth9", 0.2)  # bounded: absent stays absent
        waited = loop.time() - began
        waiter = asyncio.ensure_future(addresses.wait("eth1", 5))
        await asyncio.sleep(0)
        addresses.changed()  # a change that does not give eth1 an address: it keeps waiting
        await asyncio.sleep(0)
        assert not waiter.done()
        network.interfaces["eth1"].addresses = ["10.0.0.9/24"]
        addresses.changed()
        return nothing, await asyncio.wait_for(waiter, 1), addresses.of("eth1"), waited

    nothing, came, now, waited = asyncio.run(scenario())
    assert nothing == [] and 0.2 <= waited < 1
    assert came == now == ["10.0.0.9/24"]


def test_a_lease_before_the_netlink_child_answers_is_up_not_offline(tmp_path) -> None:
    """Under emulation the child's pyroute2 import can outlast the phase's
    deadline while the dhcp container already has the lease: the phase goes
    up on the lease (applied by the script), not offline until a renewal."""
    from devtools.phase_context import phase_context
    from pid1.log import Log
    from pid1.phases.network import PHASE, NetworkPhase
    from pid1.state import StateStore
    from pid1.state_schema import NetworkState, NetworkStatus

    store = StateStore(str(tmp_path))
    log = Log(store=store, kmsg_path=str(tmp_path / "kmsg"))
    ctx = phase_context(PHASE, root=str(tmp_path), log=log, store=store)
    phase = NetworkPhase(ctx=ctx, mode=parse_net_mode("dhcp"), net_dir=str(tmp_path / "network"))
    store.state.network = NetworkState(mode="dhcp", status=NetworkStatus.WAITING, link="eth0")
    # Negative control first: no lease yet, so it is offline.
    assert phase.offline("netlink worker: late").startswith("offline: ")
    assert store.state.network.status == NetworkStatus.OFFLINE and not phase.up.is_set()
    store.state.network.update(address="10.0.2.15", prefixlen=24, lease_event="bound")
    assert phase.offline("netlink worker: late") == "dhcp: 10.0.2.15 on eth0 (the lease; netlink worker: late)"
    assert store.state.network.status == NetworkStatus.UP and phase.up.is_set()
    assert "network up" in store.state.milestones
