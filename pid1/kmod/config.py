"""What modprobe.d files and the kernel command line say about modules:
aliases, options, softdeps and blacklists, as kmod reads them.

Owns: CONFIG_DIRS, ModprobeConfig, SoftDep, parse_softdep, read_config, read_lines.
May use: pid1.kmod.aliases; reads only modprobe.d `*.conf` files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from pid1.kmod.aliases import AliasTable, normalize

# Where modprobe.d files live, most important first (a file name in an earlier
# directory hides the same name in a later one, as in kmod).
CONFIG_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "lib/modprobe.d", "usr/lib/modprobe.d")


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class SoftDep:
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()


@dataclass
class ModprobeConfig:
    """What modprobe.d files say (alias, options, softdep, blacklist).
    `install`/`remove` commands are not run: there is no shell to run them."""

    aliases: AliasTable = field(default_factory=AliasTable)
    options: dict[str, list[str]] = field(default_factory=dict)
    softdeps: list[tuple[str, SoftDep]] = field(default_factory=list)  # (module glob, softdep), first match wins
    blacklist: set[str] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)  # lines not understood, for a debug message

    def parse_line(self, line: str, where: str = "") -> None:
        words = line.split("#", 1)[0].split()
        if not words:
            return
        command, args = words[0], words[1:]
        if command == "alias" and len(args) >= 2:
            self.aliases.add(args[0], normalize(args[1]))
        elif command == "options" and len(args) >= 2:
            self.options.setdefault(normalize(args[0]), []).extend(args[1:])
        elif command == "blacklist" and len(args) == 1:
            self.blacklist.add(normalize(args[0]))
        elif command == "softdep" and len(args) >= 2:
            self.softdeps.append((normalize(args[0]), parse_softdep(args[1:])))
        else:
            self.ignored.append(f"{where}{line.strip()}")

    def add_kernel_cmdline(self, cmdline: str) -> None:
        """`MODULE.param=value` on the kernel command line are module options,
        and `modprobe.blacklist=a,b` blacklists, as kmod reads them."""
        for word in cmdline.split():
            key, eq, value = word.partition("=")
            module, dot, param = key.partition(".")
            if not dot or not module or not param:
                continue
            if key == "modprobe.blacklist" and eq:
                self.blacklist.update(normalize(m) for m in value.split(",") if m)
            elif module != "pid1":
                self.options.setdefault(normalize(module), []).append(f"{param}{eq}{value}")


def parse_softdep(words: list[str]) -> SoftDep:
    """`pre: a b post: c` -> SoftDep(pre=(a, b), post=(c,)). Words before any
    `pre:`/`post:` mean nothing (kmod ignores them too: Debian's modules.softdep
    has lines like `softdep cifs gcm`)."""
    pre: list[str] = []
    post: list[str] = []
    mode: list[str] | None = None
    for word in words:
        if word == "pre:":
            mode = pre
        elif word == "post:":
            mode = post
        elif mode is not None:
            mode.append(word)
    return SoftDep(tuple(pre), tuple(post))


def read_config(root: str = "/", dirs: Iterable[str] = CONFIG_DIRS) -> ModprobeConfig:
    """modprobe.d `*.conf` files under `root`, sorted by file name across the
    directories; a name in an earlier directory hides it in later ones."""
    chosen: dict[str, str] = {}
    for rel in dirs:
        directory = os.path.join(root, rel.lstrip("/"))
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(directory, name)
    config = ModprobeConfig()
    for name in sorted(chosen):
        for line in read_lines(chosen[name]):
            config.parse_line(line, f"{chosen[name]}: ")
    return config
