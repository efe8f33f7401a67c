"""The user-data's network (cloud-init network config v2, the subset
pid1.net.netconfig reads): turned into pid1.net's value, read back by the
one parser; what is not applied is a warning naming it."""

from __future__ import annotations

import pytest

from pid1.net.mode import Method, parse_net_mode
from pid1.net.netconfig import network_from_document, parse_network_config
from pid1.userdata import parse_userdata

TWO_NICS = b"""\
version: 2
ethernets:
  eth0:
    dhcp4: true
  eth1:
    addresses: [10.0.0.5/24]
    nameservers: {addresses: [10.0.0.1, 10.0.0.2]}
    mtu: 9000
"""


def test_a_network_config_file_with_two_interfaces() -> None:
    warnings: list[str] = []
    text = parse_network_config(TWO_NICS, warnings)
    assert warnings == []
    assert text == "eth0:dhcp,default+eth1:static:10.0.0.5/24,,10.0.0.1,10.0.0.2,mtu=9000"
    eth0, eth1 = parse_net_mode(text).interfaces
    assert (eth0.method, eth0.default_route) == (Method.DHCP, True)
    assert (eth1.address, eth1.dns, eth1.mtu, eth1.default_route) == (
        "10.0.0.5/24",
        ("10.0.0.1", "10.0.0.2"),
        9000,
        False,
    )


def test_the_static_gateway_takes_the_default_route_from_dhcp() -> None:
    document = {
        "version": 2,
        "ethernets": {
            "eth0": {"dhcp4": True},
            "eth1": {"addresses": ["10.0.0.5/24"], "routes": [{"to": "default", "via": "10.0.0.1"}]},
        },
    }
    warnings: list[str] = []
    mode = parse_net_mode(network_from_document(document, warnings) or "")
    assert warnings == [] and mode.primary.name == "eth1" and mode.primary.gateway == "10.0.0.1"
    assert not mode.interfaces[0].default_route
    # gateway4, the older spelling, and a file that wraps it in `network:`.
    wrapped = {
        "network": {"version": 2, "ethernets": {"ens4": {"addresses": ["192.168.9.2/24"], "gateway4": "192.168.9.1"}}}
    }
    assert network_from_document(wrapped, warnings) == "ens4:static:192.168.9.2/24,192.168.9.1"


def test_use_routes_false_leaves_the_route_to_the_next_dhcp_interface() -> None:
    document = {"version": 2, "ethernets": {
        "eth0": {"dhcp4": True, "dhcp4-overrides": {"use-routes": False}}, "eth1": {"dhcp4": True},
    }}  # fmt: skip
    mode = parse_net_mode(network_from_document(document, []) or "")
    assert [i.default_route for i in mode.interfaces] == [False, True]


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"version": 1, "config": []}, "network.version is 1: only version 2 is read"),
        ("dhcp", "network is not a mapping"),
        ({"version": 2}, "network.ethernets is missing"),
        ({"version": 2, "ethernets": {"eth0": {}}}, "network.ethernets.eth0: neither dhcp4: true nor an IPv4 address"),
        ({"version": 2, "ethernets": {"eth0": {"addresses": ["10.0.0.5"]}}}, "has no prefix length"),
        ({"version": 2, "ethernets": {"eth0": {"addresses": ["10.0.0.5/24"], "gateway4": "10.1.0.1"}}},
         "not in 10.0.0.0/24"),
        ({"version": 2, "ethernets": {"eth0": {"dhcp4": True, "mtu": 20}}}, "bad mtu '20'"),
        ({"version": 2, "ethernets": {"bad name": {"dhcp4": True}}}, "is no interface name"),
        ({"version": 2, "ethernets": {
            "eth0": {"addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1"},
            "eth1": {"addresses": ["10.1.0.5/24"], "gateway4": "10.1.0.1"},
        }}, "only one interface may have the default route"),
    ],
)  # fmt: skip
def test_unusable_network_config_is_ignored_with_the_reason(document: object, says: str) -> None:
    warnings: list[str] = []
    assert network_from_document(document, warnings) is None
    assert any(says in w for w in warnings), warnings


def test_what_is_not_applied_is_named_and_the_rest_applies() -> None:
    document = {
        "version": 2,
        "bonds": {"bond0": {}},
        "ethernets": {
            "eth0": {"dhcp4": True, "match": {"macaddress": "52:54:00:12:34:56"},
                     "nameservers": {"addresses": ["1.1.1.1"]}},
            "eth1": {"addresses": ["10.0.0.5/24", "10.0.0.6/24", "fd00::5/64"],
                     "routes": [{"to": "10.9.0.0/16", "via": "10.0.0.1"}]},
            "eth2": "dhcp",
        },
    }  # fmt: skip
    warnings: list[str] = []
    text = network_from_document(document, warnings)
    assert text == "eth0:dhcp,default+eth1:static:10.0.0.5/24"
    expected = [
        "network.bonds: not supported (only ethernets): ignored",
        "network.ethernets.eth0.match: not applied by this system (interfaces are named, IPv4 only)",
        "network.ethernets.eth0.nameservers: ignored with dhcp4 (the lease gives them)",
        "network.ethernets.eth1.addresses: only the first IPv4 address, 10.0.0.5/24, is applied",
        "network.ethernets.eth1.routes: only a default route is applied;",
        "network.ethernets.eth2: not a mapping of settings; skipped",
    ]
    assert len(warnings) == len(expected), warnings
    assert all(w.startswith(e) for w, e in zip(warnings, expected, strict=True)), warnings


def test_malformed_network_config_file() -> None:
    warnings: list[str] = []
    assert parse_network_config(b"version: [2\n", warnings) is None and "malformed YAML" in warnings[0]
    assert parse_network_config(b"", []) is None


def test_the_cloud_config_network_key_becomes_pid1_net() -> None:
    data = parse_userdata(
        b"#cloud-config\nnetwork:\n" + b"".join(b"  " + line + b"\n" for line in TWO_NICS.splitlines())
    )
    assert data.settings["net"].startswith("eth0:dhcp,default+eth1:static:10.0.0.5/24") and data.warnings == []
    both = parse_userdata(
        b"#cloud-config\nonly_docker: {net: none}\nnetwork: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n"
    )
    assert both.settings["net"] == "none" and "only_docker.net is given too, and wins" in both.warnings[0]


def test_the_network_config_file_and_the_kept_copy(tmp_path) -> None:
    """The userdata phase takes NoCloud's network-config as pid1.net unless
    the user-data says; the copy kept for the next boot keeps the file."""
    from pid1.host_state import HostState
    from pid1.phases.userdata import keep_copy, kept_copy, take_network_config
    from pid1.phases.userdata_volume import Found

    found = Found("nocloud /dev/sr0", b"#cloud-config\n", b"instance-id: a\n", TWO_NICS)
    data = parse_userdata(found.userdata)
    take_network_config(data, found)
    assert data.settings["net"].startswith("eth0:dhcp,default+eth1:")
    own = parse_userdata(b"#cloud-config\nonly_docker: {net: dhcp}\n")
    take_network_config(own, found)
    assert own.settings["net"] == "dhcp" and "wins over it" in own.warnings[0]
    state = HostState.under(str(tmp_path), True)
    keep_copy(state, found)
    assert kept_copy(state, found.userdata).network_config == TWO_NICS
    keep_copy(state, Found("url http://x", b"#cloud-config\n", b""))
    assert kept_copy(state, b"").network_config == b""
