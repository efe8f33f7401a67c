"""The user-data's swarm section checked (pid1/swarm_config.py), the swarm
phase's judgements (a refusal or a retry, which node a newer one replaced)
and VT2's swarm line. The swarm itself runs in tests/docker/test_swarm.py."""

from __future__ import annotations

import asyncio

import pytest

from pid1.phases.swarm import NodeView, join_listen_addr, refusal, replaced_nodes, unlabelled_nodes
from pid1.state_schema import SwarmState
from pid1.swarm_config import SwarmConfigError, is_interface, parse_swarm
from pid1.userdata import parse_userdata
from pid1.view.header import swarm_line
from pid1.view.statefile import decode

TOKEN = "SWMTKN-1-" + "3" * 50 + "-" + "a" * 25


def test_init_and_join_sections_parse() -> None:
    init = parse_swarm({"init": {"advertise_addr": "eth1"}, "labels": {"zone": "a", "rack": 4}})
    assert (init.role, init.advertise_addr, init.labels) == ("init", "eth1", {"zone": "a", "rack": "4"})
    assert is_interface(init.advertise_addr) and not is_interface("10.0.0.5") and not is_interface(None)
    assert parse_swarm({"init": None}).advertise_addr is None  # `init:` alone: dockerd chooses
    join = parse_swarm({"join": {"managers": ["10.0.0.1", "10.0.0.2:2400", "[fd00::1]:2377", "mgr.lan"],
                                 "token": TOKEN}})  # fmt: skip
    assert join.managers == ("10.0.0.1:2377", "10.0.0.2:2400", "[fd00::1]:2377", "mgr.lan:2377")
    assert join.token == TOKEN and join.role == "join"


@pytest.mark.parametrize(
    ("advertise", "listen"),
    [
        (None, "0.0.0.0:2377"),  # nothing to advertise: dockerd's default, and dockerd's choice
        ("eth1", "eth1:2377"),  # dockerd resolves the interface when it joins, and keeps the address
        ("10.0.0.5", "10.0.0.5:2377"),
        ("10.0.0.5:2400", "10.0.0.5:2400"),
        ("fd00::5", "[fd00::5]:2377"),
    ],
)
def test_a_join_listens_on_the_address_it_advertises(advertise: str | None, listen: str) -> None:
    section = {"managers": ["10.0.0.1"], "token": TOKEN} | ({"advertise_addr": advertise} if advertise else {})
    assert parse_swarm({"join": section}).listen_addr == listen


@pytest.mark.parametrize(
    ("managers", "listen"),
    [
        (["127.0.0.1:2377"], "127.0.0.1:2377"),  # the address the route to the manager leaves from
        (["255.255.255.255:2377"], "0.0.0.0:2377"),  # no usable route: dockerd's default
    ],
)
def test_a_join_without_advertise_addr_listens_where_its_route_leaves_from(managers: list[str], listen: str) -> None:
    config = parse_swarm({"join": {"managers": managers, "token": TOKEN}})
    assert asyncio.run(join_listen_addr(config)) == listen


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"init": {}, "join": {"managers": ["a"], "token": TOKEN}}, "exactly one of init and join, not both"),
        ({}, "exactly one of init and join"),
        ({"init": {}, "lables": {}}, "unknown key 'lables'"),
        ({"init": {"advertise": "eth0"}}, "swarm.init: unknown key 'advertise'"),
        ({"join": {"managers": ["10.0.0.1"], "token": "SWMTKN-1-abc"}}, "is not a join token"),
        ({"join": {"managers": ["10.0.0.1"], "token": TOKEN.upper()}}, "is not a join token"),
        ({"join": {"managers": ["10.0.0.1"]}}, "token is missing"),
        ({"join": {"managers": [], "token": TOKEN}}, "managers is missing"),
        ({"join": {"managers": ["10.0.0.1:99999"], "token": TOKEN}}, "is not a port"),
        ({"join": {"managers": ["bad host"], "token": TOKEN}}, "neither an address nor a host name"),
        ({"init": {}, "labels": {"": "x"}}, "is not a label name"),
        ({"init": {}, "labels": {"a": {"b": 1}}}, "not a short plain value"),
        (["init"], "not a mapping"),
    ],
)
def test_a_bad_section_is_refused_with_the_reason(section: object, says: str) -> None:
    with pytest.raises(SwarmConfigError) as caught:
        parse_swarm(section)
    assert says in str(caught.value), caught.value


def test_the_token_secret_stays_out_of_the_error() -> None:
    secretish = "SWMTKN-1-" + "3" * 50 + "-" + "a" * 24 + "!"
    with pytest.raises(SwarmConfigError) as caught:
        parse_swarm({"join": {"managers": ["m"], "token": secretish}})
    assert "a" * 24 not in str(caught.value)


def test_the_user_data_keeps_the_rest_when_the_section_is_refused() -> None:
    data = parse_userdata(b"#cloud-config\nhostname: n1\nswarm:\n  init: {}\n  join: {}\n")
    assert data.swarm is None and data.hostname == "n1" and "not both" in (data.swarm_error or "")
    assert any("the swarm section is ignored" in warning for warning in data.warnings), data.warnings
    good = parse_userdata(f"#cloud-config\nswarm:\n  join: {{managers: [m1], token: {TOKEN}}}\n".encode())
    assert good.swarm is not None and good.summary() == ["swarm join (1 manager)"] and not good.warnings


def test_what_is_retried_and_what_is_not() -> None:
    assert refusal("rpc error: code = Unknown desc = remote CA does not match fingerprint. Expected: 1234")
    assert refusal("invalid join token")
    assert not refusal("Timeout was reached before node joined. The attempt to join the swarm will continue")
    assert not refusal("rpc error: code = Unavailable desc = connection error: dial tcp 10.0.0.1:2377: refused")
    assert not refusal("x509: certificate has expired or is not yet valid")  # a wrong clock: the next try may pass


def node(node_id: str, hostname: str, state: str, created: str, manager: bool = False) -> dict:
    entry = {"ID": node_id, "CreatedAt": created, "Description": {"Hostname": hostname}, "Status": {"State": state}}
    return {**entry, "ManagerStatus": {"Reachability": "reachable"}} if manager else entry


def test_a_down_node_a_newer_ready_one_replaced_is_the_one_removed() -> None:
    nodes = [
        node("old", "web", "down", "2026-12-01T10:00:00.5Z"),
        node("new", "web", "ready", "2026-12-01T10:00:00.45Z"),  # Go cuts trailing zeros: .45 < .5 still
        node("later", "db", "ready", "2026-12-01T11:00:00Z"),
        node("gone", "db2", "down", "2026-12-01T09:00:00Z"),  # no replacement: kept
        node("mgr", "m", "down", "2026-12-01T09:00:00Z", manager=True),
        node("mgr2", "m", "ready", "2026-12-01T12:00:00Z"),
    ]
    assert replaced_nodes(nodes) == []  # .45 is before .5: "new" is older, so it replaced nothing
    nodes[1]["CreatedAt"] = "2026-12-01T10:00:00.51Z"
    assert replaced_nodes(nodes) == [("old", "web", "new")]


def test_the_leader_labels_the_ready_nodes_without_the_host_name_label() -> None:
    labelled = {**node("a", "web", "ready", ""), "Spec": {"Labels": {"only-docker.hostname": "web"}}}
    wrong = {**node("b", "db", "ready", ""), "Spec": {"Labels": {"only-docker.hostname": "web", "zone": "a"}}}
    bare, down = node("c", "cache", "ready", ""), node("d", "old", "down", "")
    assert [n["ID"] for n in unlabelled_nodes([labelled, wrong, bare, down])] == ["b", "c"]


def test_the_node_view_and_the_vt2_line() -> None:
    swarm = {"LocalNodeState": "active", "NodeID": "abcdefghijklmnop", "NodeAddr": "10.0.0.1",
             "ControlAvailable": True, "RemoteManagers": [{}], "Nodes": 3, "Error": ""}  # fmt: skip
    info = {"Name": "n1", "Swarm": swarm}
    view = NodeView.from_info(info)
    assert (view.manager, view.nodes, view.error, view.hostname) == (True, 3, None, "n1")
    assert NodeView.from_info({}).local_state == "inactive"
    assert swarm_line(SwarmState()) is None and swarm_line(decode(SwarmState, {"status": "none"})) is None
    active = decode(SwarmState, {"status": "active", "role": "manager", "node_id": "abcdefghijklmnop", "nodes": 3,
                                 "managers": "reachable, leader"})  # fmt: skip
    assert swarm_line(active) == "swarm:   manager abcdefghijkl · 3 nodes · managers reachable, leader"
    retrying = decode(SwarmState, {"status": "retrying", "wanted": "join", "attempts": 2, "error": "no route"})
    assert swarm_line(retrying) == "swarm:   join: retrying (try 2) · error: no route"
    invalid = decode(SwarmState, {"status": "invalid", "error": "swarm.join.token 'x' is not a join token"})
    assert swarm_line(invalid) == "swarm:   invalid · error: swarm.join.token 'x' is not a join token"
