"""Which user-data applies when a source's cannot be used: the copy kept on
the disk from an earlier boot, and nothing when that one is broken too
(pid1.phases.userdata.parse_found, against a host state in a temporary root)."""

from __future__ import annotations

from pid1.host_state import HostState
from pid1.phases.userdata import Found, parse_found

GOOD = b"#cloud-config\nhostname: kept\n"
BROKEN = b"#cloud-config\nhostname: [unclosed\n"


def state(tmp_path, kept: bytes | None) -> HostState:
    host_state = HostState.under(str(tmp_path), persistent=True)
    if kept is not None:
        host_state.write("user-data", kept)
        host_state.write("meta-data", b"instance-id: iid-kept\n")
    return host_state


def test_a_usable_source_applies_and_the_kept_copy_is_not_read(tmp_path) -> None:
    data, found, errors = parse_found(Found("nocloud /dev/sr0", b"#cloud-config\nhostname: new\n", b""),
                                      state(tmp_path, BROKEN))  # fmt: skip
    assert data is not None and data.hostname == "new" and found.source == "nocloud /dev/sr0" and errors == []


def test_a_broken_source_falls_back_to_the_kept_copy(tmp_path) -> None:
    data, found, errors = parse_found(Found("nocloud /dev/sr0", BROKEN, b""), state(tmp_path, GOOD))
    assert data is not None and data.hostname == "kept", errors
    assert found.source == "kept copy" and found.metadata == b"instance-id: iid-kept\n"
    assert len(errors) == 1 and errors[0].startswith("user-data from nocloud /dev/sr0: malformed YAML"), errors


def test_a_broken_source_and_a_broken_kept_copy_apply_nothing_and_say_both(tmp_path) -> None:
    data, found, errors = parse_found(Found("nocloud /dev/sr0", BROKEN, b""), state(tmp_path, BROKEN))
    assert data is None and found.source == "kept copy"
    assert [e.split(":")[0] for e in errors] == [
        "user-data from nocloud /dev/sr0",
        "the copy kept from an earlier boot",
    ]


def test_a_broken_source_without_a_kept_copy_applies_nothing(tmp_path) -> None:
    data, found, errors = parse_found(Found("nocloud /dev/sr0", BROKEN, b""), state(tmp_path, None))
    assert data is None and found.source == "nocloud /dev/sr0" and len(errors) == 1


def test_a_broken_kept_copy_as_the_source_is_not_read_twice(tmp_path) -> None:
    data, _, errors = parse_found(Found("kept copy", BROKEN, b""), state(tmp_path, BROKEN))
    assert data is None and len(errors) == 1 and errors[0].startswith("user-data from kept copy:"), errors
