"""Loading modules into the kernel: a module file (decompressed here when
it is compressed) through finit_module(2), and one plan entry with its
outcome.

Owns: load_module, load_entry, LoadResult, Loader, module_dir.
May use: pid1.linux.syscalls (finit_module) and pid1.kmod.index (PlanEntry).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from pid1.kmod.index import PlanEntry


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
    from pid1.linux import syscalls  # here: ctypes is not needed to resolve, only to load

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


def module_dir(root: str = "/", version: str | None = None) -> str:
    return os.path.join(root, "lib/modules", version or os.uname().release)
