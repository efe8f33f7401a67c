"""The clock's pure parts: the SNTP packet checks, the status file the ntp
container writes (hostile input), the servers' precedence, the VT2 line, and
docker_tcp's refusal to listen without TLS."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from devtools.sntp_server import reply
from pid1 import sntp
from pid1.engine.dockerd_args import docker_tcp_args
from pid1.phases import ntp
from pid1.state_schema import ClockState
from pid1.untrusted import read_untrusted
from pid1.userdata import parse_userdata
from pid1.view.header import clock_line
from pid1.view.statefile import decode


# --- SNTP -------------------------------------------------------------------------------------
def test_a_reply_ten_minutes_ahead_gives_that_offset() -> None:
    cookie = 0x1234_5678_9ABC_DEF0
    sent = time.time()
    answer = reply(sntp.request(cookie), 600.0, sent + 0.01)
    offset, delay, stratum = sntp.parse_reply(answer, cookie, sent, sent + 0.02)
    assert abs(offset - 600.0) < 0.05 and 0 <= delay < 0.05 and stratum == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p[:40], "shorter than an NTP packet"),
        (lambda p: bytes([p[0] & ~7 | 3]) + p[1:], "mode 3"),
        (lambda p: p[:1] + b"\0" + p[2:], "kiss-o'-death"),
        (lambda p: p[:1] + b"\x10" + p[2:], "stratum 16"),
        (lambda p: bytes([p[0] | 0xC0]) + p[1:], "leap 3"),
        (lambda p: p[:24] + b"\0" * 8 + p[32:], "origin stamp"),
        (lambda p: p[:8] + b"\x00\x02\x00\x00" + p[12:], "root distance"),
    ],
)
def test_replies_that_are_not_answers_are_refused(change, why: str) -> None:
    cookie = 42
    now = time.time()
    with pytest.raises(sntp.BadReply, match=why):
        sntp.parse_reply(change(reply(sntp.request(cookie), 0.0, now)), cookie, now - 0.01, now + 0.01)


def test_the_request_tells_nothing_of_our_clock() -> None:
    packet = sntp.request(7)
    assert packet[:1] == b"\x23" and packet[1:40] == b"\0" * 39 and packet[40:] == (7).to_bytes(8, "big")


# --- the status file ---------------------------------------------------------------------------
GOOD = {"synced": True, "mode": "set", "server": "ntp.example", "address": "10.0.0.1", "offset": 0.01,
        "delay": 0.002, "stratum": 2, "stepped": 600.0, "steps": 1, "poll": 64, "checked": 1.7e9,
        "error": None}  # fmt: skip


def test_a_good_status_is_read_whole() -> None:
    reading = ntp.parse_status(json.dumps(GOOD).encode())
    assert reading == ntp.ClockReading(**GOOD)
    assert reading.right


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe\x00binary", b"[1, 2]", b"not json", b'"a string"', b"", b'{"synced": tru'], ids=repr
)
def test_a_status_that_is_not_an_object_is_an_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        ntp.parse_status(raw)


def test_missing_fields_and_wrong_types_are_taken_as_absent() -> None:
    assert ntp.parse_status(b"{}") == ntp.ClockReading()
    hostile = {"synced": "yes", "mode": "evil", "offset": "600", "stratum": 1e9, "steps": -5, "delay": float("nan"),
               "server": "x\x1b[2J" * 1000, "error": ["list"], "checked": True}  # fmt: skip
    reading = ntp.parse_status(json.dumps(hostile).encode())
    assert reading.synced is False and reading.mode == "set" and reading.offset is None and reading.stratum is None
    assert reading.steps == 0 and reading.delay is None and reading.error is None and reading.checked is None
    assert len(reading.server) == ntp.TEXT_MAX and "\x1b" not in reading.server


def test_a_huge_or_special_status_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    huge = tmp_path / "status"
    huge.write_bytes(b'{"synced": true, "pad": "' + b"x" * ntp.STATUS_MAX + b'"}')
    with pytest.raises(OSError, match="larger than"):
        ntp.read_status(str(huge))
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    with pytest.raises(OSError, match="symbolic link"):
        ntp.read_status(str(link))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        ntp.read_status(str(fifo))  # and it did not block
    assert read_untrusted  # the one bounded reader


def test_measuring_is_a_right_clock_only_when_close() -> None:
    assert not ntp.ClockReading(synced=True, mode="query", offset=600.0).right
    assert ntp.ClockReading(synced=True, mode="query", offset=0.1).right
    assert not ntp.ClockReading(synced=False, mode="set").right


# --- which servers -----------------------------------------------------------------------------------
def test_servers_by_precedence() -> None:
    lease = {"ntp": "10.0.2.2 10.0.2.3"}
    assert ntp.choose_servers(["a"], ["b"], lease) == (["a"], "pid1.ntp_servers")
    assert ntp.choose_servers([], ["b"], lease) == (["b"], "user-data")
    assert ntp.choose_servers([], [], lease) == (["10.0.2.2", "10.0.2.3"], "DHCP option 42")
    assert ntp.choose_servers([], [], {"ntp": ""}) == (["pool.ntp.org"], "default")
    assert ntp.choose_servers([], [], {"ntp": " ".join(f"10.0.0.{n}" for n in range(40))})[0][-1] == "10.0.0.15"


@pytest.mark.parametrize("mode", ["on", "query"])
def test_the_ntp_container_gets_only_cap_sys_time_and_none_when_it_only_measures(mode: str) -> None:
    from devtools.phase_context import phase_context
    from pid1.config import Config

    config = Config()
    config.ntp = mode
    ctx = phase_context(ntp.PHASE, config=config, root="/tmp/r")  # ntp_spec reads only the config and the root
    spec = ntp.ntp_spec(ctx, ["10.0.2.2", "pool.example"], "/run/pid1/ntp")
    assert spec.role == "ntp" and spec.net_host and not spec.pid_host and not spec.privileged
    assert spec.cap_add == (("SYS_TIME",) if mode == "on" else ())
    assert ("--query-only" in spec.cmd) == (mode == "query")
    assert spec.cmd[-2:] == ("10.0.2.2", "pool.example") and "/run/pid1/ntp:/run/pid1-ntp" in spec.binds
    assert all(bind.endswith(":ro") for bind in spec.binds if "/run/pid1-ntp" not in bind)  # pid1's Python, read-only


def test_the_user_data_servers_reach_the_choice() -> None:
    data = parse_userdata(b"#cloud-config\nntp:\n  servers: [10.0.2.2]\n  pools: [pool.example]\n")
    assert ntp.choose_servers([], data.ntp_servers, {}) == (["10.0.2.2", "pool.example"], "user-data")


# --- VT2 -------------------------------------------------------------------------------------------------
def test_the_vt2_line() -> None:
    assert clock_line(ClockState()) is None
    synced = {"status": "synced", "mode": "set", "server": "ntp.example", "address": "10.0.0.1", "offset": 0.0012,
              "stratum": 2, "last_step": 600.0}  # fmt: skip
    assert clock_line(decode(ClockState, synced)) == (
        "clock:   synced to ntp.example (10.0.0.1) · offset +0.001s, stratum 2 · stepped +600.000s"
    )
    query = {**synced, "mode": "query", "server": "10.0.0.1", "offset": 600.01}
    assert clock_line(decode(ClockState, query)) == (
        "clock:   query only, not set · 10.0.0.1 · offset +600.010s, stratum 2"
    )
    assert clock_line(decode(ClockState, {"status": "unsynced", "error": "10.0.0.1: no answer"})) == (
        "clock:   not synced: 10.0.0.1: no answer"
    )
    assert clock_line(decode(ClockState, {"status": "synced", "offset": "x", "stratum": []})).startswith(
        "clock:   synced to ?"
    )


# --- docker_tcp ---------------------------------------------------------------------------------------------
def test_docker_tcp_never_listens_without_the_three_certificates(tmp_path: Path) -> None:
    assert docker_tcp_args("", None) == ([], None)
    args, error = docker_tcp_args("0.0.0.0:2376", None)
    assert args == [] and "no TLS ca, cert, key" in error and "never listens on plain TCP" in error
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "cert.pem").write_text("x")
    args, error = docker_tcp_args("0.0.0.0:2376", str(tmp_path))
    assert args == [] and "no TLS key" in error
    (tmp_path / "key.pem").write_text("x")
    args, error = docker_tcp_args("0.0.0.0:2376", str(tmp_path))
    assert error is None and args[:2] == ["--host=tcp://0.0.0.0:2376", "--tlsverify"]
    assert f"--tlskey={tmp_path}/key.pem" in args


def test_docker_tls_in_the_user_data() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    data = parse_userdata(
        f"#cloud-config\nonly_docker:\n  docker_tcp: 0.0.0.0:2376\n  docker_tls:\n"
        f"    ca: |\n      {pem.replace(chr(10), chr(10) + '      ')}\n"
        f"    cert: '{pem.replace(chr(10), ' ')}'\n    key: '-----BEGIN KEY-----'\n".encode()
    )
    assert data.settings == {"docker_tcp": "0.0.0.0:2376"} and set(data.docker_tls) == {"ca", "cert", "key"}
    missing = parse_userdata(b"#cloud-config\nonly_docker:\n  docker_tls: {ca: '-----BEGIN X', cert: nope}\n")
    assert missing.docker_tls is None and any("docker_tls.cert is missing or not PEM" in w for w in missing.warnings)
