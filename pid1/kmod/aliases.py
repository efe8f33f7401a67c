"""Module names and alias patterns: kmod's normalisation (`-` -> `_`), a
module's name from its file, and AliasTable, the glob-pattern table that
modules.alias, modules.builtin.modinfo and modprobe.d aliases fill.

Owns: MODULE_SUFFIXES, WILDCARD_CHARS, normalize, module_name_of, AliasTable.
May use: the standard library only (no I/O at all).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import translate
from functools import partial

# Module suffixes depmod knows; Debian 12 (6.1) ships plain .ko, newer kernels .ko.xz/.ko.zst.
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
WILDCARD_CHARS = frozenset("*?[")
_FIRST_WILDCARD = re.compile(r"[*?\[]")


def normalize(name: str) -> str:
    """kmod's alias_normalize: `-` becomes `_` outside `[...]` character classes."""
    if "-" not in name:
        return name
    out = []
    in_class = False
    for ch in name:
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append("_" if ch == "-" and not in_class else ch)
    return "".join(out)


def module_name_of(path: str) -> str:
    """`kernel/net/802/stp.ko.xz` -> `stp`; `crc32c-intel.ko` -> `crc32c_intel`."""
    base = os.path.basename(path)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return normalize(base)


def _star_match(parts: tuple[str, ...], name: str) -> bool:
    """fnmatch for a pattern whose only wildcard is `*`, split on it: the first
    part starts the name, the last ends it, the others follow in order
    between (placing each as far left as it goes never loses a match)."""
    first, last = parts[0], parts[-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    pos, end = len(first), len(name) - len(last)
    for middle in parts[1:-1]:
        found = name.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


@dataclass
class AliasTable:
    """Glob patterns -> module names. Exact aliases go in a dict; a wildcard
    pattern is filed under its literal prefix (the text before the first
    `*?[`), so that a lookup only tries the patterns whose prefix the name
    starts with, one dict probe per distinct prefix length. Patterns are
    compiled the first time they are tried (compiling them all would cost the
    boot seconds: docs/benchmarks.md); one with only `*` (nearly all) needs no
    regex at all."""

    exact: dict[str, list[str]] = field(default_factory=dict)
    by_prefix: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # prefix -> [(pattern, module)]
    prefix_lengths: list[int] = field(default_factory=list)
    _matchers: dict[str, Callable[[str], object]] = field(default_factory=dict, repr=False)

    def add(self, pattern: str, module: str) -> None:
        self.add_many([(pattern, module)])

    def add_many(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add (pattern, module) pairs; the module names must be normalised.
        (The boot parses every alias of the tree: this loop is kept tight.)"""
        exact, by_prefix, search = self.exact, self.by_prefix, _FIRST_WILDCARD.search
        lengths = set(self.prefix_lengths)
        for raw, module in pairs:
            pattern = normalize(raw)
            wildcard = search(pattern)
            if wildcard is None:
                exact.setdefault(pattern, []).append(module)
                continue
            cut = wildcard.start()
            group = by_prefix.get(pattern[:cut])
            if group is None:
                group = by_prefix[pattern[:cut]] = []
                lengths.add(cut)
            group.append((pattern, module))
        self.prefix_lengths = sorted(lengths)

    def _matches(self, pattern: str, name: str) -> bool:
        matcher = self._matchers.get(pattern)
        if matcher is None:
            if "?" in pattern or "[" in pattern:
                # C fnmatch also takes `[^...]` for a negated class; Python's translate wants `[!...]`.
                matcher = re.compile(translate(pattern.replace("[^", "[!")), re.DOTALL).match
            else:
                matcher = partial(_star_match, tuple(pattern.split("*")))
            self._matchers[pattern] = matcher
        return bool(matcher(name))

    def lookup(self, name: str) -> list[tuple[str, str]]:
        """Every (pattern, module) whose pattern matches the normalised name."""
        found = [(name, module) for module in self.exact.get(name, ())]
        for length in self.prefix_lengths:
            if length > len(name):
                break
            for pattern, module in self.by_prefix.get(name[:length], ()):
                if self._matches(pattern, name):
                    found.append((pattern, module))
        return found

    def __len__(self) -> int:
        return sum(map(len, self.exact.values())) + sum(map(len, self.by_prefix.values()))
