"""A modprobe in Python: resolve module names and aliases to an ordered load
list from depmod's files, and load it with finit_module(2). One concern a
module:

- `aliases`: names and alias patterns (normalize, module_name_of, AliasTable);
- `config`: what modprobe.d and the kernel command line say (ModprobeConfig);
- `index`: the resolver (ModuleIndex, PlanEntry, ModuleNotFound), pure apart
  from reading depmod's index files;
- `coldplug`: the devices' modaliases, from sysfs and from uevents;
- `load`: decompression and finit_module (through pid1.linux.syscalls), LoadResult;
- `cli`: `python -m pid1 modprobe`, for the kernel and dockerd (not named
  here: the boot never runs it, and argparse is slow to import under emulation);
- `batch`: many requests loaded at once, with a tally (the modules phase's);
- `helper`: pid1's modprobe installed for the kernel and dockerd.

The fast front the kernel runs (pid1.modprobe) stays outside this package: it
answers most requests without importing it, and imports `cli` otherwise.

Owns: nothing of its own; it names the public API of its modules, so that
`from pid1 import kmod; kmod.ModuleIndex` works.
"""

from __future__ import annotations

from pid1.kmod.aliases import MODULE_SUFFIXES, WILDCARD_CHARS, AliasTable, module_name_of, normalize
from pid1.kmod.coldplug import ModaliasWatch, read_modalias, scan_modaliases, uevent_modalias
from pid1.kmod.config import CONFIG_DIRS, ModprobeConfig, SoftDep, parse_softdep, read_config
from pid1.kmod.index import ModuleIndex, ModuleNotFound, PlanEntry
from pid1.kmod.load import Loader, LoadResult, load_entry, load_module, module_dir
from pid1.linux.procfs import loaded_modules

__all__ = [
    "CONFIG_DIRS",
    "MODULE_SUFFIXES",
    "WILDCARD_CHARS",
    "AliasTable",
    "LoadResult",
    "Loader",
    "ModaliasWatch",
    "ModprobeConfig",
    "ModuleIndex",
    "ModuleNotFound",
    "PlanEntry",
    "SoftDep",
    "load_entry",
    "load_module",
    "loaded_modules",
    "module_dir",
    "module_name_of",
    "normalize",
    "parse_softdep",
    "read_config",
    "read_modalias",
    "scan_modaliases",
    "uevent_modalias",
]
