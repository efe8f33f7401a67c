"""Kernel command line parsing: good keys, unknown keys, malformed values."""

from __future__ import annotations

from pathlib import Path

from pid1.config import Config, describe_keys, parse_cmdline


def test_defaults_without_pid1_keys() -> None:
    config, warnings = parse_cmdline("BOOT_IMAGE=/vmlinuz console=tty1 console=ttyS0 quiet\n")
    assert config == Config()
    assert warnings == []


def test_good_keys_are_typed() -> None:
    config, warnings = parse_cmdline(
        "pid1.cgroups=v1 pid1.console=ttyS0 pid1.net_timeout=2.5 pid1.storage_wait=0 "
        "pid1.phases=mounts,storage pid1.net=static:10.0.2.15/24,10.0.2.2,10.0.2.3 pid1.storage-label=DATA"
    )
    assert warnings == []
    assert config.cgroups == "v1"
    assert config.console == ["ttyS0"]
    assert config.net_timeout == 2.5
    assert config.storage_wait == 0.0
    assert config.phases == ["mounts", "storage"]
    assert config.net.startswith("static:")
    assert config.storage_label == "DATA"


def test_unknown_key_is_named_and_ignored() -> None:
    config, warnings = parse_cmdline("pid1.consol=ttyS1 pid1.cgroups=v1")
    assert config.cgroups == "v1"
    assert config.console == Config().console
    assert len(warnings) == 1 and "pid1.consol=ttyS1" in warnings[0]


def test_malformed_values_keep_the_default() -> None:
    config, warnings = parse_cmdline(
        "pid1.cgroups=v3 pid1.net_timeout=soon pid1.storage_wait=maybe pid1.net=wifi pid1.hostname= pid1.stop_grace"
    )
    assert config == Config()
    text = "\n".join(warnings)
    for key in (
        "pid1.cgroups",
        "pid1.net_timeout",
        "pid1.storage_wait",
        "pid1.net",
        "pid1.hostname",
        "pid1.stop_grace",
    ):
        assert key in text, text
    assert len(warnings) == 6
    assert "'v3'" in text and "v1, v2" in text


def test_negative_number_is_malformed() -> None:
    config, warnings = parse_cmdline("pid1.stop_grace=-1")
    assert config.stop_grace == Config().stop_grace
    assert "pid1.stop_grace" in warnings[0]


def test_unbalanced_quote_does_not_break_parsing() -> None:
    config, _ = parse_cmdline('pid1.hostname=box "unterminated')
    assert config.hostname == "box"


def test_every_key_is_documented() -> None:
    rows = describe_keys()
    assert {key for key, _, _ in rows} == {f"pid1.{name}" for name in Config.__dataclass_fields__} - {"pid1.origins"}
    assert all(doc for _, _, doc in rows)


def test_readme_lists_every_key_as_keys_prints_it() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- keys:start -->\n", 1)[1].split("<!-- keys:end -->", 1)[0]
    expected = "| key | default | meaning |\n|---|---|---|\n" + "".join(
        f"| `{key}` | `{default}` | {doc} |\n" for key, default, doc in describe_keys()
    )
    assert table == expected, "README key table is stale: regenerate it with `python -m pid1 keys`"
