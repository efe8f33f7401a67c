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

`python -m pid1 modprobe` (pid1.modprobe, then `modprobe_main`) is the
command-line face of the same resolver. Pure logic apart from `load_module`, which goes through
`pid1.syscalls`.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import translate
from functools import partial

from pid1.procfs import loaded_modules

# Module suffixes depmod knows; Debian 12 (6.1) ships plain .ko, newer kernels .ko.xz/.ko.zst.
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
WILDCARD_CHARS = frozenset("*?[")
_FIRST_WILDCARD = re.compile(r"[*?\[]")
_ALIAS_LINE = re.compile(r"^alias[ \t]+(\S+)[ \t]+(\S+)[ \t]*$", re.MULTILINE)
# Where modprobe.d files live, most important first (a file name in an earlier
# directory hides the same name in a later one, as in kmod).
CONFIG_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "lib/modprobe.d", "usr/lib/modprobe.d")


class ModuleNotFound(LookupError):
    """No module, alias or builtin answers to this name."""


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


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


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
    compiled the first time they are tried (compiling all ~23k would cost
    about a second); one with only `*` (nearly all) needs no regex at all."""

    exact: dict[str, list[str]] = field(default_factory=dict)
    by_prefix: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # prefix -> [(pattern, module)]
    prefix_lengths: list[int] = field(default_factory=list)
    _matchers: dict[str, Callable[[str], object]] = field(default_factory=dict, repr=False)

    def add(self, pattern: str, module: str) -> None:
        self.add_many([(pattern, module)])

    def add_many(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add (pattern, module) pairs; the module names must be normalised.
        (The boot parses ~26k aliases: this loop is kept tight.)"""
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
        for line in _read_lines(chosen[name]):
            config.parse_line(line, f"{chosen[name]}: ")
    return config


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
        for line in _read_lines(os.path.join(moddir, "modules.dep")):
            target, colon, rest = line.partition(":")
            if not colon:
                continue
            name = module_name_of(target)
            index.paths[name] = target
            index.deps[name] = tuple(module_name_of(dep) for dep in rest.split())
        for line in _read_lines(os.path.join(moddir, "modules.builtin")):
            if line.strip():
                index.builtin.add(module_name_of(line.strip()))
        for line in _read_lines(os.path.join(moddir, "modules.softdep")):
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "softdep":
                index.softdeps.append((normalize(words[1]), parse_softdep(words[2:])))
        for position, line in enumerate(_read_lines(os.path.join(moddir, "modules.order"))):
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


def read_modalias(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace").strip()
    except OSError:
        return None  # a device gone meanwhile, or an attribute that refuses reads
    return text or None


def scan_modaliases(devices_dir: str) -> list[str]:
    """Every distinct `modalias` under /sys/devices, in walk order. sysfs links
    every device many times over; following only real directories (never
    symlinks) visits each device once and keeps the walk finite."""
    seen: dict[str, None] = {}
    stack = [devices_dir]
    while stack:
        directory = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError:
            continue
        subdirs = []
        with it:
            for entry in it:
                try:
                    if entry.is_symlink():
                        continue
                    if entry.name == "modalias" and entry.is_file(follow_symlinks=False):
                        alias = read_modalias(entry.path)
                        if alias:
                            seen.setdefault(alias, None)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.path)
                except OSError:
                    continue
        stack.extend(reversed(subdirs))
    return list(seen)


NETLINK_KOBJECT_UEVENT = 15
UEVENT_KERNEL_GROUP = 1


def uevent_modalias(message: bytes) -> str | None:
    """MODALIAS of a kernel "add" uevent ("add@DEVPATH\\0KEY=VALUE\\0..."), else None."""
    if not message.startswith(b"add@"):
        return None
    for field_ in message.split(b"\0")[1:]:
        if field_.startswith(b"MODALIAS="):
            return field_[len(b"MODALIAS=") :].decode(errors="replace").strip() or None
    return None


class ModaliasWatch:
    """The kernel's uevents, read for the modaliases of devices added while
    modules load (a driver adds devices: virtio_pci the virtio devices, an
    ATA driver the SCSI devices behind it), so that finding their drivers
    needs no second walk of /sys (slow under emulation: ~0.5 s a walk).
    `take()` returns None when events may have been lost (the queue
    overflowed): walk /sys again then."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def open(cls) -> ModaliasWatch | None:
        """None where uevents cannot be had (no netlink, no permission)."""
        try:
            sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                NETLINK_KOBJECT_UEVENT,
            )
        except OSError:
            return None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, UEVENT_KERNEL_GROUP))
        except OSError:
            sock.close()
            return None
        return cls(sock)

    def take(self) -> list[str] | None:
        found: dict[str, None] = {}
        lost = False
        while True:
            try:
                message = self.sock.recv(65536)
            except BlockingIOError:
                return None if lost else list(found)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            alias = uevent_modalias(message)
            if alias:
                found.setdefault(alias, None)

    def close(self) -> None:
        self.sock.close()


# --- loading ------------------------------------------------------------------


def _decompressed(path: str) -> bytes | None:
    """The module image for a compressed .ko (None for a plain one). 6.1's
    finit_module has no MODULE_INIT_COMPRESSED_FILE (that came in 6.2 and
    depends on the kernel's config), so decompress here and hand the kernel a
    memfd."""
    if path.endswith(".ko.xz"):
        import lzma

        with open(path, "rb") as f:
            return lzma.decompress(f.read())
    if path.endswith(".ko.gz"):
        import gzip

        with open(path, "rb") as f:
            return gzip.decompress(f.read())
    if path.endswith(".ko.zst"):
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError as exc:
            raise OSError(errno.ENOEXEC, f"{path}: zstd-compressed and no zstd decoder in this Python") from exc
        with open(path, "rb") as f:
            return zstandard.ZstdDecompressor().decompressobj().decompress(f.read())
    return None


def load_module(path: str, params: str = "") -> bool:
    """Load one module file. True when loaded, False when the kernel already
    had it (EEXIST, e.g. a concurrent modprobe won); OSError otherwise."""
    from pid1 import syscalls

    image = _decompressed(path)
    if image is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.memfd_create(os.path.basename(path), os.MFD_CLOEXEC)
        os.write(fd, image)
        os.lseek(fd, 0, os.SEEK_SET)
    try:
        syscalls.finit_module(fd, params)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True)
class LoadResult:
    name: str
    outcome: str  # "loaded", "already", "builtin", "failed", "skipped"
    error: str = ""  # errno name and message for failed; the failed dependency for skipped


Loader = Callable[[str, str], bool]


def load_entry(entry: PlanEntry, failed: set[str], loader: Loader = load_module) -> LoadResult:
    """Load one plan entry; a module whose modules.dep dependency failed is
    skipped (the kernel would only say "Unknown symbol")."""
    if entry.state == "builtin":
        return LoadResult(entry.name, "builtin")
    if entry.state == "loaded":
        return LoadResult(entry.name, "already")
    broken = next((dep for dep in entry.needs if dep in failed), None)
    if broken is not None:
        failed.add(entry.name)
        return LoadResult(entry.name, "skipped", f"needs {broken}")
    try:
        assert entry.path is not None
        return LoadResult(entry.name, "loaded" if loader(entry.path, entry.params) else "already")
    except OSError as exc:
        failed.add(entry.name)
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        return LoadResult(entry.name, "failed", f"{code} ({why})")


# --- the command line ---------------------------------------------------------


def module_dir(root: str = "/", version: str | None = None) -> str:
    return os.path.join(root, "lib/modules", version or os.uname().release)


def _kmsg(message: str) -> None:
    """The kernel's request_module runs us with no terminal: leave a trace in dmesg."""
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, f"<6>pid1-modprobe: {message}".encode(errors="replace")[:900])
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_modprobe_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pid1 modprobe",
        description="load kernel modules with their dependencies (pid1's resolver; a subset of kmod's modprobe)",
    )
    parser.add_argument("-a", "--all", action="store_true", help="every argument is a module name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no error for a module that is not found")
    parser.add_argument("-v", "--verbose", action="store_true", help="print what is done")
    parser.add_argument("-n", "--dry-run", action="store_true", help="do not load anything")
    parser.add_argument("-D", "--show-depends", action="store_true", help="print the load list and stop")
    parser.add_argument("-R", "--resolve-alias", action="store_true", help="print the modules an alias names")
    parser.add_argument("-b", "--use-blacklist", action="store_true", help="apply blacklists to aliases too")
    parser.add_argument("-r", "--remove", action="store_true", help="(not supported)")
    parser.add_argument("-d", "--dirname", default="/", help="the root holding lib/modules")
    parser.add_argument("-S", "--set-version", help="kernel version (default: the running one)")
    parser.add_argument("-C", "--config", action="append", help="modprobe.d directory (repeatable)")
    parser.add_argument("names", nargs="*", metavar="NAME")
    return parser.parse_args(argv)


def modprobe_main(argv: list[str], not_found: set[str] | None = None) -> int:
    """`modprobe [-q] [-a] [-v] [-D] NAME [PARAM=VALUE...]`: what the kernel
    (`/proc/sys/kernel/modprobe -q -- NAME`) and dockerd (`modprobe -va ...`)
    call. Exit 0 when everything asked for is in the kernel afterwards. Names
    that no module or alias answers are added to `not_found`."""
    args = parse_modprobe_args(argv)
    if args.remove:
        print("modprobe: removing modules is not supported by pid1's modprobe", file=sys.stderr)
        return 1
    if not args.names:
        print("modprobe: no module name given", file=sys.stderr)
        return 1
    names = args.names if args.all else args.names[:1]
    cli_params = "" if args.all else " ".join(args.names[1:])
    if args.config:
        config = read_config("/", [os.path.abspath(d) for d in args.config])
    else:
        config = read_config(args.dirname)
    if args.dirname == "/":
        try:
            with open("/proc/cmdline") as f:
                config.add_kernel_cmdline(f.read())
        except OSError:
            pass
    moddir = module_dir(args.dirname, args.set_version)
    try:
        index = ModuleIndex.load(moddir, config)
    except OSError as exc:
        if not args.quiet:
            print(f"modprobe: FATAL: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.resolve_alias:
        found = [m for name in names for m in index.lookup(name, args.use_blacklist)]
        for module in found:
            print(module)
        return 0 if found else 1
    dry = args.dry_run or args.show_depends
    loaded = frozenset() if args.show_depends else frozenset(loaded_modules())
    status = 0
    for name in names:
        try:
            top = index.lookup(name, args.use_blacklist)
            if not top:
                if not_found is not None:
                    not_found.add(name)
                raise ModuleNotFound(f"Module {name} not found in directory {moddir}")
            extra = dict.fromkeys(top, cli_params) if cli_params else None
            plan = index.plan([name], loaded, args.use_blacklist, extra)
        except ModuleNotFound as exc:
            if not args.quiet:
                print(f"modprobe: FATAL: {exc}", file=sys.stderr)
            status = 1
            continue
        status |= _run_plan(plan, args.show_depends, dry, args.verbose, args.quiet)
    return status


def _run_plan(plan: list[PlanEntry], show: bool, dry: bool, verbose: bool, quiet: bool) -> int:
    status = 0
    failed: set[str] = set()
    for entry in plan:
        if show:
            if entry.state == "builtin":
                print(f"builtin {entry.name}")
            else:
                print(f"insmod {entry.path} {entry.params}")
            continue
        if entry.state != "load":
            continue
        if verbose:
            print(f"insmod {entry.path} {entry.params}")
        if dry:
            continue
        result = load_entry(entry, failed)
        if result.outcome in ("failed", "skipped"):
            status = 1
            _kmsg(f"{entry.name}: {result.error}")
            if not quiet:
                print(f"modprobe: ERROR: could not insert '{entry.name}': {result.error}", file=sys.stderr)
        elif result.outcome == "loaded":
            _kmsg(f"loaded {entry.name}")
    return status
