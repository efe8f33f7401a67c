"""A modprobe in Python: resolve module names and aliases to an ordered load
list from depmod's files, and load it with finit_module(2).

Resolution follows kmod (modprobe) closely, so that the boot, the kernel's
request_module and dockerd's `modprobe` calls all see one answer:

- a name is normalised (`-` -> `_`, except inside `[...]`) and looked up, in
  kmod's order, in modprobe.d aliases, modules.dep names, modules.alias glob
  patterns (fnmatch), then builtin aliases (modules.builtin.modinfo) and
  modules.builtin; the first source that knows it wins;
- a module's load list is its softdep `pre:` modules (each resolved the same
  way, recursively), the modules.dep dependencies (that line is already the
  whole closure, listed last-needed first, so it is loaded in reverse) each
  preceded by its own softdeps, then the module, then its `post:` softdeps;
- builtin modules and those in /proc/modules are kept in the plan but marked
  so that nothing loads them.

Owns: ModuleIndex, PlanEntry, ModuleNotFound.
May use: pid1.kmod.aliases and pid1.kmod.config; reads only depmod's index
files (modules.dep, .alias, .builtin, .builtin.modinfo, .softdep, .order).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pid1.kmod.aliases import AliasTable, module_name_of, normalize
from pid1.kmod.config import ModprobeConfig, SoftDep, parse_softdep, read_lines

_ALIAS_LINE = re.compile(r"^alias[ \t]+(\S+)[ \t]+(\S+)[ \t]*$", re.MULTILINE)


class ModuleNotFound(LookupError):
    """No module, alias or builtin answers to this name."""


@dataclass(frozen=True)
class PlanEntry:
    """One module of a load plan. `path` is absolute (None for builtin);
    `state` is "load", "builtin" or "loaded" (in /proc/modules already)."""

    name: str
    path: str | None
    state: str
    params: str = ""
    needs: tuple[str, ...] = ()  # modules.dep dependencies: if one fails, this cannot load


@dataclass
class ModuleIndex:
    """depmod's view of one kernel's modules (`moddir` = lib/modules/VERSION),
    plus modprobe.d configuration. modules.alias is parsed on first use: a
    lookup by module name (the common modprobe case) never needs it."""

    moddir: str
    config: ModprobeConfig = field(default_factory=ModprobeConfig)
    paths: dict[str, str] = field(default_factory=dict)  # name -> path relative to moddir (or absolute)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> modules.dep line, as listed
    builtin: set[str] = field(default_factory=set)
    softdeps: list[tuple[str, SoftDep]] = field(default_factory=list)  # modules.softdep
    order: dict[str, int] = field(default_factory=dict)  # modules.order position: kmod's tie-break
    _aliases: AliasTable | None = field(default=None, repr=False)
    _builtin_aliases: AliasTable | None = field(default=None, repr=False)

    @classmethod
    def load(cls, moddir: str, config: ModprobeConfig | None = None) -> ModuleIndex:
        if not os.path.isfile(os.path.join(moddir, "modules.dep")):
            raise FileNotFoundError(errno.ENOENT, f"no modules.dep in {moddir} (was depmod run?)")
        index = cls(moddir=moddir, config=config or ModprobeConfig())
        for line in read_lines(os.path.join(moddir, "modules.dep")):
            target, colon, rest = line.partition(":")
            if not colon:
                continue
            name = module_name_of(target)
            index.paths[name] = target
            index.deps[name] = tuple(module_name_of(dep) for dep in rest.split())
        for line in read_lines(os.path.join(moddir, "modules.builtin")):
            if line.strip():
                index.builtin.add(module_name_of(line.strip()))
        for line in read_lines(os.path.join(moddir, "modules.softdep")):
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "softdep":
                index.softdeps.append((normalize(words[1]), parse_softdep(words[2:])))
        for position, line in enumerate(read_lines(os.path.join(moddir, "modules.order"))):
            index.order.setdefault(module_name_of(line.strip()), position)
        return index

    @property
    def aliases(self) -> AliasTable:
        if self._aliases is None:
            table = AliasTable()
            try:
                with open(os.path.join(self.moddir, "modules.alias"), encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            table.add_many((pattern, normalize(module)) for pattern, module in _ALIAS_LINE.findall(text))
            self._aliases = table
        return self._aliases

    @property
    def builtin_aliases(self) -> AliasTable:
        if self._builtin_aliases is None:
            table = AliasTable()
            try:
                with open(os.path.join(self.moddir, "modules.builtin.modinfo"), "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
            for entry in raw.split(b"\0"):
                key, eq, value = entry.decode(errors="replace").partition("=")
                module, dot, attr = key.partition(".")
                if eq and dot and attr == "alias":
                    table.add(value, normalize(module))
            self._builtin_aliases = table
        return self._builtin_aliases

    def path_of(self, name: str) -> str:
        rel = self.paths[name]
        return rel if os.path.isabs(rel) else os.path.join(self.moddir, rel)

    def _sorted_matches(self, matches: list[tuple[str, str]]) -> list[str]:
        # kmod's index search keeps every match sorted by the module's position
        # in modules.order; do the same, so that an alias naming several modules
        # (crypto-crc32c -> crc32c_intel, crc32c_generic) loads as modprobe does.
        far = len(self.order)
        ranked = sorted(matches, key=lambda pm: (self.order.get(pm[1], far), pm[0]))
        return list(dict.fromkeys(module for _pattern, module in ranked))

    def lookup(self, name: str, use_blacklist: bool = False) -> list[str]:
        """Module names for a module name or alias, in kmod's lookup order; []
        when nothing knows it. With use_blacklist (udev's `modprobe -b`, and
        coldplug), blacklisted modules found through an alias are dropped."""
        key = normalize(name)
        found = self._sorted_matches(self.config.aliases.lookup(key))
        if not found and key in self.paths:
            return [key]
        if not found:
            found = self._sorted_matches(self.aliases.lookup(key))
            if use_blacklist:
                found = [m for m in found if m not in self.config.blacklist]
        if not found:
            found = self._sorted_matches(self.builtin_aliases.lookup(key))
        if not found and key in self.builtin:
            found = [key]
        return found

    def softdep_of(self, name: str) -> SoftDep:
        from fnmatch import fnmatchcase

        for pattern, soft in (*self.config.softdeps, *self.softdeps):
            if fnmatchcase(name, pattern):
                return soft
        return SoftDep()

    def probe_order(self, module: str) -> list[str]:
        """The modules to load for one module, first to last, as kmod's
        probe list orders them (softdeps recursive, dependencies reversed).
        kmod's list can name a module twice (a dependency that is also reached
        through a softdep), and `modprobe --show-depends` prints both; loading
        needs only the first, so this list names each module once."""
        out: list[str] = []
        visited: set[str] = set()

        def with_softdeps(name: str) -> None:
            soft = self.softdep_of(name)
            for dep_name in soft.pre:
                for dep in self.lookup(dep_name):
                    probe(dep)
            if name not in out:
                out.append(name)
            for dep_name in soft.post:
                for dep in self.lookup(dep_name):
                    probe(dep)

        def probe(name: str) -> None:
            if name in visited:
                return
            visited.add(name)
            for dep in reversed(self.deps.get(name, ())):
                with_softdeps(dep)
            with_softdeps(name)

        probe(module)
        return out

    def params_of(self, name: str) -> str:
        return " ".join(self.config.options.get(name, ()))

    def plan(
        self,
        requests: Iterable[str],
        loaded: set[str] | frozenset[str] = frozenset(),
        use_blacklist: bool = False,
        extra_params: dict[str, str] | None = None,
    ) -> list[PlanEntry]:
        """One ordered plan for several names or aliases, each module once.
        Raises ModuleNotFound naming the first request nothing knows."""
        entries: list[PlanEntry] = []
        seen: set[str] = set()
        for request in requests:
            modules = self.lookup(request, use_blacklist=use_blacklist)
            if not modules:
                raise ModuleNotFound(f"module {request} not found in {self.moddir}")
            for module in modules:
                for name in self.probe_order(module):
                    if name not in seen:
                        seen.add(name)
                        entries.append(self.entry(name, loaded, (extra_params or {}).get(name, "")))
        return entries

    def entry(self, name: str, loaded: set[str] | frozenset[str], extra: str = "") -> PlanEntry:
        if name not in self.paths:
            return PlanEntry(name, None, "builtin")
        params = " ".join(p for p in (self.params_of(name), extra) if p)
        state = "loaded" if name in loaded else "load"
        return PlanEntry(name, self.path_of(name), state, params, self.deps.get(name, ()))
