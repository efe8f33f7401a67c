"""User-data parsing (pid1.userdata) and daemon.json checking
(pid1.daemon_json) against real cloud-config documents: the examples
cloud-init's documentation gives for the keys this system applies, a
RancherOS cloud-config, and hostile ones."""

from __future__ import annotations

import base64
import gzip

import pytest

from pid1.config import parse_cmdline
from pid1.daemon_json import check_daemon_json
from pid1.userdata import (
    MAX_USERDATA_BYTES,
    Kind,
    UserDataError,
    parse_meta_data,
    parse_userdata,
    ssh_key_problem,
    writable_path,
)

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHyXlQ7L0k0pZ3bW1m8Xr2tO6D9mJb8+6b3fXoWkE0aH user@laptop"
# an RSA blob as SSH writes it: type, exponent (65537), a 2048-bit modulus
RSA_BLOB = b"\x00\x00\x00\x07ssh-rsa" + b"\x00\x00\x00\x03\x01\x00\x01" + b"\x00\x00\x01\x01\x00" + b"\xc5" * 256
RSA_OPTIONS = 'from="10.0.2.2" ' + "ssh-rsa " + base64.b64encode(RSA_BLOB).decode()

GZIPPED = base64.b64encode(gzip.compress(b"gzipped" + bytes([10]))).decode()

# cloud-init's documentation examples for these modules, as users copy them.
CLOUD_INIT_EXAMPLE = f"""#cloud-config
hostname: web-01
write_files:
  - content: |
      # My new /etc/sysconfig/samba file
      SMBDOPTIONS="-D"
    path: /etc/sysconfig/samba
  - content: !!binary |
      f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAwARAAAAAAABAAAAAAAAAAJAVAAAAAAAAAAAAAEAAOAAI
    path: /root/bin/hello
    permissions: '0555'
  - encoding: gzip
    content: !!binary |
      {GZIPPED}
    path: /usr/local/share/gz.txt
  - encoding: b64
    content: {base64.b64encode(b"decoded").decode()}
    path: /etc/b64.txt
    permissions: 0600
ssh_authorized_keys:
  - {ED25519}
  - {RSA_OPTIONS}
ntp:
  enabled: true
  servers: [ntp.example.org]
  pools: [0.pool.ntp.org, 1.pool.ntp.org]
runcmd:
  - [ls, -l, /]
  - [sh, -xc, "echo $(date) ': hello world!'"]
  - echo "two words" > /root/out
"""

RANCHEROS_EXAMPLE = f"""#cloud-config
hostname: rancher-01
ssh_authorized_keys:
  - {ED25519}
rancher:
  docker:
    tls: true
runcmd:
  - echo hello
"""


def test_cloud_init_documentation_examples_parse_to_what_they_say() -> None:
    data = parse_userdata(CLOUD_INIT_EXAMPLE.encode())
    assert data.kind is Kind.CLOUD_CONFIG
    assert data.warnings == []
    assert data.hostname == "web-01"
    files = {f.path: f for f in data.write_files}
    assert files["/etc/sysconfig/samba"].content == b'# My new /etc/sysconfig/samba file\nSMBDOPTIONS="-D"\n'
    assert files["/etc/sysconfig/samba"].permissions == 0o644
    assert files["/root/bin/hello"].content.startswith(b"\x7fELF")
    assert files["/root/bin/hello"].permissions == 0o555
    assert files["/usr/local/share/gz.txt"].content == b"gzipped\n"
    assert files["/etc/b64.txt"].content == b"decoded"
    assert files["/etc/b64.txt"].permissions == 0o600  # YAML reads 0600 as octal 384
    assert data.ssh_authorized_keys == [ED25519, RSA_OPTIONS]
    assert data.ntp_servers == ["ntp.example.org", "0.pool.ntp.org", "1.pool.ntp.org"]
    assert data.runcmd == [["ls", "-l", "/"], ["sh", "-xc", "echo $(date) ': hello world!'"],
                           ["sh", "-c", 'echo "two words" > /root/out']]  # fmt: skip


def test_a_rancheros_cloud_config_applies_its_standard_keys_and_names_the_rest() -> None:
    data = parse_userdata(RANCHEROS_EXAMPLE.encode())
    assert data.hostname == "rancher-01"
    assert data.ssh_authorized_keys == [ED25519]
    assert data.runcmd == [["sh", "-c", "echo hello"]]
    assert len(data.warnings) == 1 and "unknown key 'rancher'" in data.warnings[0]


def test_the_own_section_takes_pid1_keys_by_name_and_the_docker_section() -> None:
    data = parse_userdata(
        b"#cloud-config\nonly_docker:\n  console_image: debian:12\n  pid1.net_timeout: 30\n"
        b"  dockerd-args: [--debug]\n  docker:\n    registry-mirrors: [http://10.0.2.2:5000]\n"
        b"  frobnicate: 1\n"
    )
    assert data.settings == {"console_image": "debian:12", "net_timeout": "30", "dockerd_args": "--debug"}
    assert data.docker == {"registry-mirrors": ["http://10.0.2.2:5000"]}
    assert data.warnings == ["only_docker.frobnicate: not a pid1 key (python -m pid1 keys): ignored"]


def test_the_kernel_command_line_wins_over_user_data_which_wins_over_defaults() -> None:
    data = parse_userdata(b"#cloud-config\nonly_docker:\n  net_timeout: 30\n  console_image: debian:12\n")
    config, warnings = parse_cmdline("quiet pid1.console_image=alpine:3", data.settings)
    assert warnings == []
    assert config.console_image == "alpine:3"  # the command line
    assert config.net_timeout == 30.0  # the user-data
    assert config.stop_grace == 5.0  # the default
    assert config.origins == {"console_image": "kernel command line", "net_timeout": "user-data"}


def test_a_bad_user_data_value_is_a_warning_and_keeps_the_default() -> None:
    config, warnings = parse_cmdline("", {"net_timeout": "soon"})
    assert config.net_timeout == 15.0
    assert warnings == ["bad value for pid1.net_timeout in the user-data: expected a number, got 'soon'; "
                        "keeping default 15.0"]  # fmt: skip


def test_a_script_is_kept_whole_and_a_gzipped_user_data_is_read() -> None:
    script = b"#!/bin/sh\necho hi > /root/hi\n"
    assert parse_userdata(script).kind is Kind.SCRIPT
    assert parse_userdata(script).script == script
    assert parse_userdata(gzip.compress(b"#cloud-config\nhostname: gz\n")).hostname == "gz"
    assert parse_userdata(b"").kind is Kind.NONE
    assert parse_userdata(b"#cloud-config\n").kind is Kind.CLOUD_CONFIG


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"#cloud-config\nhostname: [unclosed\n", "malformed YAML at line 3"),
        (b"#cloud-config\n- a\n- b\n", "is a list, not a mapping"),
        (b"hostname: x\n", "expected '#cloud-config'"),
        (b"#cloud-config\n\xff\xfe\n", "not UTF-8"),
        (b"#cloud-config\n" + b"a" * MAX_USERDATA_BYTES, "larger than the 1024 KiB"),
        (gzip.compress(b"#cloud-config\n" + b"#" * (8 * MAX_USERDATA_BYTES)), "unpacks to more than"),
        (b"#cloud-config\nx: !!python/object/apply:os.system [id]\n", "malformed YAML"),  # safe_load refuses
    ],
)
def test_a_document_that_cannot_be_used_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(UserDataError, match=reason.replace("(", r"\(").replace("[", r"\[")):
        parse_userdata(raw)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/../run/pid1/control", "climbs out"),
        ("etc/motd", "not an absolute path"),
        ("/run/pid1/control", "outside what write_files may write"),
        ("/var/lib/docker/containers/x", "outside"),
        ("/proc/sys/kernel/modprobe", "outside"),
        ("/etc\0/x", "climbs out"),
    ],
)
def test_write_files_paths_that_escape_are_refused(path: str, reason: str) -> None:
    with pytest.raises(UserDataError, match=reason):
        writable_path(path)
    data = parse_userdata(f"#cloud-config\nwrite_files:\n  - path: {path!r}\n    content: x\n".encode())
    assert data.write_files == [] and "skipped" in data.warnings[0], data.warnings


def test_a_bad_entry_is_skipped_and_the_others_apply() -> None:
    data = parse_userdata(
        f"#cloud-config\nhostname: 'bad name!'\nssh_authorized_keys:\n  - ssh-rsa notbase64!!\n  - {ED25519}\n"
        "  - just a comment\nwrite_files:\n  - path: /etc/ok\n    content: ok\n  - path: /etc/bad\n"
        "    encoding: rot13\n    content: x\n  - path: /etc/mode\n    permissions: '0999'\n"
        "  - path: /run/pid1/control\n    content: poweroff\n".encode()
    )
    assert data.hostname is None
    assert data.ssh_authorized_keys == [ED25519]
    assert [f.path for f in data.write_files] == ["/etc/ok"]
    assert len(data.warnings) == 6, data.warnings


def test_ssh_key_lines() -> None:
    assert ssh_key_problem(ED25519) is None
    assert ssh_key_problem(RSA_OPTIONS) is None
    assert "does not match its type" in ssh_key_problem(ED25519.replace("ssh-ed25519", "ssh-rsa"))
    assert "no key type" in ssh_key_problem("hello world")
    assert "one line" in ssh_key_problem(ED25519 + "\n" + ED25519)


def test_so_many_keys_are_bounded() -> None:
    keys = "".join(f"  - {ED25519}\n" for _ in range(1000))
    data = parse_userdata(f"#cloud-config\nssh_authorized_keys:\n{keys}".encode())
    assert len(data.ssh_authorized_keys) == 256
    assert any("more than 256 keys" in w for w in data.warnings)


def test_meta_data_gives_the_instance_id_from_nocloud_and_openstack() -> None:
    assert parse_meta_data(b"instance-id: iid-local01\nlocal-hostname: cloudimg\n").instance_id == "iid-local01"
    openstack = b'{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "test.novalocal"}'
    assert parse_meta_data(openstack).instance_id == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert parse_meta_data(b"").instance_id is None


# --- daemon.json ----------------------------------------------------------------------------------
def test_a_docker_section_becomes_daemon_json_and_proxies_the_environment() -> None:
    settings = check_daemon_json(
        {
            "registry-mirrors": ["http://10.0.2.2:5000"],
            "insecure-registries": ["10.0.2.2:5000"],
            "log-driver": "json-file",
            "log-opts": {"max-size": "10m", "max-file": 3},
            "default-address-pools": [{"base": "172.80.0.0/16", "size": 24}],
            "live-restore": True,
            "proxies": {"http-proxy": "http://proxy:3128", "no-proxy": "localhost"},
        },
        [],
    )
    assert settings.valid, settings.errors
    assert settings.config["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert "proxies" not in settings.config
    assert settings.env["HTTP_PROXY"] == "http://proxy:3128" and settings.env["no_proxy"] == "localhost"


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"registry-mirrors": "http://x"}, "expected a list of strings"),
        ({"registry-mirrors": ["ftp://x"]}, "not an http(s) URL"),
        ({"live-restore": "yes"}, "expected true or false"),
        ({"mtu": 10}, "from 68 to 65535"),
        ({"data-root": "/mnt"}, "pid1 sets it itself"),
        ({"storage-driver": "vfs"}, "pid1 sets it itself"),
        ({"bridge": "none"}, "also given in pid1.dockerd_args"),
        ({"frobnicate": True}, "not a daemon.json key"),
        ({"default-address-pools": [{"base": "nope", "size": 24}]}, "not an address/prefix"),
    ],
)
def test_an_invalid_docker_section_is_refused_whole_with_the_reason(section: dict, reason: str) -> None:
    settings = check_daemon_json({"debug": True, **section}, ["--bridge=none"])
    assert not settings.valid
    assert settings.config == {} and settings.env == {}
    assert any(reason in error for error in settings.errors), settings.errors


# --- python -m pid1 userdata check ------------------------------------------------------------------
def check(tmp_path, text: bytes) -> tuple[int, str]:
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "user-data"
    path.write_bytes(text)
    done = subprocess.run([sys.executable, "-m", "pid1", "userdata", "check", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_check_says_what_applies_and_exits_by_what_it_found(tmp_path) -> None:
    code, out = check(tmp_path, CLOUD_INIT_EXAMPLE.encode())
    assert code == 0, out
    assert "applies: hostname web-01" in out and "applies: 4 files" in out
    code, out = check(tmp_path, b"#cloud-config\nhostname: x\nonly_docker:\n  docker:\n    data-root: /mnt\n")
    assert code == 1, out
    assert "docker section refused: data-root: pid1 sets it itself" in out
    assert "applies: daemon.json" not in out
    code, out = check(tmp_path, b"#cloud-config\nhostname: [\n")
    assert code == 2 and "malformed YAML" in out and "none of it would apply" in out, out


def test_the_view_says_where_the_user_data_came_from_and_the_last_error() -> None:
    from pid1.state_schema import UserdataState
    from pid1.view.header import config_line
    from pid1.view.statefile import decode

    assert config_line(UserdataState()) is None
    record = {"source": "nocloud /dev/sr0", "instance_id": "i-1", "applied": ["a", "b"], "warnings": ["w"]}
    assert (
        config_line(decode(UserdataState, record))
        == "config:  user-data from nocloud /dev/sr0 · instance i-1 · 2 applied, 1 warning"
    )
    record["errors"] = ["docker section refused (mtu: ...)"]
    assert (
        config_line(decode(UserdataState, record))
        == "config:  user-data from nocloud /dev/sr0 · error: docker section refused (mtu: ...)"
    )
