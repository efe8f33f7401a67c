"""Kernel command line parsing: good keys, unknown keys, malformed values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pid1.config import Config, describe_keys, kernel_words, parse_cmdline, quoting_hints


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


def test_a_number_out_of_bounds_is_set_to_the_bound() -> None:
    config, warnings = parse_cmdline("pid1.stop_grace=-1 pid1.restart_stable=0 pid1.net_timeout=1e6")
    assert (config.stop_grace, config.restart_stable, config.net_timeout) == (0.0, 1.0, 600.0)
    assert warnings == [
        "pid1.stop_grace=-1 is below the minimum 0: using 0",
        "pid1.restart_stable=0 is below the minimum 1: using 1",
        "pid1.net_timeout=1e6 is above the maximum 600: using 600",
    ]


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "NaN", "Infinity"])
@pytest.mark.parametrize("key", ["stop_grace", "net_timeout", "restart_stable", "storage_wait"])
def test_non_finite_numbers_keep_the_default(key: str, raw: str) -> None:
    config, warnings = parse_cmdline(f"pid1.{key}={raw}")
    assert getattr(config, key) == getattr(Config(), key)
    assert warnings == [
        f"bad value for pid1.{key}: expected a finite number, got {raw!r}; keeping default {getattr(Config(), key)!r}"
    ]


def test_every_number_key_has_bounds() -> None:
    for f in dataclasses.fields(Config):
        if isinstance(f.default, float):
            low, high = f.metadata["minimum"], f.metadata["maximum"]
            assert low is not None and high is not None and low <= f.default <= high, f.name


@pytest.mark.parametrize(
    "cmdline, value",
    [
        ('pid1.hostname="my box" quiet', "my box"),  # a quoted value keeps its space
        ('"pid1.hostname=my box" quiet', "my box"),  # so does a quoted word
        ("pid1.hostname=it's", "it's"),  # single quotes are ordinary characters
        ("pid1.hostname=a\\b", "a\\b"),  # and so are backslashes
        ('pid1.hostname=a"b c"d', 'a"b c"d'),  # inner quotes group but stay
    ],
)
def test_words_are_split_as_the_kernel_does(cmdline: str, value: str) -> None:
    expected = [("pid1.hostname", value)] + ([("quiet", None)] if cmdline.endswith(" quiet") else [])
    assert kernel_words(cmdline) == expected


@pytest.mark.parametrize(
    "name, why",
    [
        ("my box", "label 'my box' is not"),  # what `pid1.hostname="my box"` gives
        ("a" * 65, "longer than 64 bytes"),
        ("-box", "label '-box' is not"),
        ("box..local", "label '' is not"),
        ("b\u00f6x", "label 'b\u00f6x' is not"),
        ("a" * 64 + ".b", "longer than 64 bytes"),
    ],
)
def test_a_bad_hostname_is_a_warning_with_the_default(name: str, why: str) -> None:
    config, warnings = parse_cmdline(f'pid1.hostname="{name}"')
    assert config.hostname == "only-docker"
    assert len(warnings) == 1 and warnings[0].startswith(f"bad value for pid1.hostname: {name!r}: {why}"), warnings
    assert warnings[0].endswith("keeping default 'only-docker'")


@pytest.mark.parametrize("name", ["box", "my-box.example.org", "a" * 63, ".".join(["a" * 31] * 2), "9box"])
def test_good_hostnames_are_taken(name: str) -> None:
    assert parse_cmdline(f"pid1.hostname={name}") == (dataclasses.replace(Config(), hostname=name), [])


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


def test_a_value_split_by_a_space_gets_a_quoting_hint() -> None:
    cmdline = "console=ttyS0 pid1.hostname=my host quiet splash pid1.view_tty=none"
    assert quoting_hints(cmdline, ["host", "splash"]) == ['pid1.hostname="my host"']
    assert quoting_hints("splash pid1.x=1", ["splash"]) == []
