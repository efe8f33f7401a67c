"""PID 1's argv (the kernel's stray words) never fails to parse; only
--cmdline and --root are taken from it."""

from __future__ import annotations

import pytest

from pid1.__main__ import pid1_args


@pytest.mark.parametrize(
    "argv, options, ignored",
    [
        ([], {}, []),
        (["init"], {}, []),
        (["keys"], {}, ["keys"]),
        (["splash", "single", "host"], {}, ["splash", "single", "host"]),
        (["--root", "/r", "--cmdline", "pid1.x=1", "quiet"], {"--root": "/r", "--cmdline": "pid1.x=1"}, ["quiet"]),
        (["--root=/r", "--state", "-o", "--help"], {"--root": "/r"}, ["--state", "-o", "--help"]),
        (["status", "--root"], {}, ["status", "--root"]),  # an option without its value is a stray word too
        (["--cmdline="], {"--cmdline": ""}, []),
    ],
)
def test_pid1_args(argv: list[str], options: dict[str, str], ignored: list[str]) -> None:
    assert pid1_args(argv) == (options, ignored)
