"""Reading a state.json back: the file checked, then decoded into the
state's dataclasses (pid1/state.py, pid1/state_schema.py), the one schema
the writers use.

A file that cannot be shown at all (missing, a FIFO, empty, truncated, not
JSON, not a pid1 state) is a StateFileError whose message is one line for
the person. Inside a file that is a pid1 state, nothing raises: the file may
come from another version of pid1 or be hand-edited, so each value that is
missing or of the wrong type becomes its field's default (None, 0, empty),
which the view shows as "—". Stdlib only, besides the state's classes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import stat
import types
import typing
from typing import Any, TypeVar

from pid1.state import LogLine, LogRing, State

MAX_BYTES = 64 * 1024 * 1024
KNOWN = {"phases", "mode", "log", "milestones", "containers"}  # one of these makes a JSON object a pid1 state
OBJECTS = ("phases", "containers", "milestones", "storage", "network", "dockerd")
R = TypeVar("R")


class StateFileError(Exception):
    """A state file that cannot be shown; the message is one line for the user."""


def load_state(path: str) -> State:
    """state.json as a State, or StateFileError saying in one line what is wrong."""
    try:
        # non-blocking: a FIFO (or a device) at the path must not hang `status`
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise StateFileError(f"{path}: not a regular file ({file_kind(mode)}), not a pid1 state")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_BYTES)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if not raw.strip():
        raise StateFileError(f"{path}: empty file (not a pid1 state)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StateFileError(f"{path}: not UTF-8 text (not a pid1 state)") from None
    except ValueError as exc:
        hint = " (truncated?)" if not raw.rstrip().endswith(b"}") else ""
        raise StateFileError(f"{path}: not valid JSON{hint}: {getattr(exc, 'msg', exc)} ({exc_where(exc)})") from None
    if not isinstance(data, dict):
        raise StateFileError(f"{path}: a JSON {type(data).__name__}, not a pid1 state object")
    if not KNOWN & data.keys():
        raise StateFileError(f"{path}: a JSON object without any pid1 state field ({', '.join(sorted(KNOWN))})")
    for key in OBJECTS:
        if key in data and not isinstance(data[key], dict):
            raise StateFileError(f"{path}: field {key!r} is a {type(data[key]).__name__}, expected an object")
    if "log" in data and not isinstance(data["log"], list):
        raise StateFileError(f"{path}: field 'log' is a {type(data['log']).__name__}, expected a list")
    return decode(State, data)


def file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device"}
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def exc_where(exc: ValueError) -> str:
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    return f"line {line} column {col}" if line is not None else "?"


# --- JSON back into the dataclasses ---------------------------------------------------------
NOT = object()  # a value that does not fit the field's type


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(cls: type[R], data: Any, key: str | None = None) -> R:
    """A `cls` record from a JSON object of unknown origin. `key` (the
    record's name in its table) fills its first field when the object lacks it."""
    data = data if isinstance(data, dict) else {}
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for f in fields:
        value = fit(hints(cls)[f.name], data.get(f.name))
        if value is NOT and key is not None and f is fields[0]:
            value = key
        if value is not NOT:
            values[f.name] = value
        elif f.default is dataclasses.MISSING and not isinstance(f.default_factory, type):
            values[f.name] = zero(hints(cls)[f.name])  # no default, or one made at run time (a pid, the uptime)
    return cls(**values)


def fit(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` says, or NOT."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None) and (fitted := fit(arg, value)) is not NOT:
                return fitted
        return NOT
    if origin is list:
        return [v for item in value if (v := fit(args[0], item)) is not NOT] if isinstance(value, list) else NOT
    if origin is dict:
        if not isinstance(value, dict):
            return NOT
        if dataclasses.is_dataclass(args[1]):
            return {k: decode(args[1], v, k) for k, v in value.items() if isinstance(v, dict)}
        return {k: v for k, item in value.items() if (v := fit(args[1], item)) is not NOT}
    if hint is LogRing:
        if not isinstance(value, list):
            return NOT
        return LogRing(decode(LogLine, item) for item in value if isinstance(item, dict))
    if dataclasses.is_dataclass(hint):
        return decode(hint, value) if isinstance(value, dict) else NOT
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except (ValueError, TypeError):  # not one of its values, or not even hashable
            return NOT
    if hint is bool:
        return value if isinstance(value, bool) else NOT
    if hint is int:
        whole = isinstance(value, float) and value.is_integer()
        return int(value) if (isinstance(value, int) and not isinstance(value, bool)) or whole else NOT
    if hint is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else NOT
    if hint is str:
        return value if isinstance(value, str) else NOT
    return value if hint is Any else NOT


def zero(hint: Any) -> Any:
    """The empty value of a type, for a field without a default."""
    if type(None) in typing.get_args(hint):
        return None
    origin = typing.get_origin(hint) or hint
    return {list: [], dict: {}, str: "", int: 0, float: 0.0, bool: False}.get(origin)
