"""A Debian 12 kernel's modules, unpacked (never installed): the tree the
modprobe tests resolve against and the image build takes its kernel and
modules from.

`apt-get download` + `dpkg-deb -x` into a cache ($KERNEL_CACHE, default
/var/cache/only-docker/kernel), then depmod, as a package install would (the
package ships no modules.dep or modules.alias). Done once; later calls find
the tree. `python -m devtools.kernel_tree` prints the root that holds
lib/modules/VERSION (tests/run exports it as PID1_TEST_MODULES_ROOT).
Stdlib only; needs apt, dpkg and kmod on the host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

METAPACKAGE = "linux-image-amd64"  # depends on the current versioned image package
VERSIONED = re.compile(r"^\s*Depends: (linux-image-[0-9]\S*)")


class KernelTreeError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("KERNEL_CACHE", "/var/cache/only-docker/kernel"))


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """argv with its output on stderr (the caller's stdout is for the root)."""
    try:
        return subprocess.run(argv, check=True, stdout=kwargs.pop("stdout", sys.stderr), **kwargs)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KernelTreeError(f"kernel-tree: {' '.join(argv)}: {exc}") from None


def ensure_kernel_tree(cache: Path | None = None) -> Path:
    """The root holding lib/modules/VERSION with depmod's indexes; unpacked on first use."""
    cache = cache or cache_dir()
    root, debs = cache / "root", cache / "debs"
    if any(root.glob("lib/modules/*/modules.dep")):
        return root
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "update", "-q"])
    depends = run(["apt-cache", "depends", METAPACKAGE], stdout=subprocess.PIPE, text=True).stdout
    package = next((m[1] for line in depends.splitlines() if (m := VERSIONED.match(line))), None)
    if package is None:
        raise KernelTreeError(f"kernel-tree: cannot resolve {METAPACKAGE}")
    if not list(debs.glob(f"{package}_*.deb")):
        run(["apt-get", "download", package], cwd=debs)
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    run(["dpkg-deb", "-x", str(deb), str(root)])
    version = sorted(os.listdir(root / "lib/modules"))[0]
    run(["depmod", "-b", str(root), version])
    return root


def main() -> int:
    try:
        print(ensure_kernel_tree())
    except KernelTreeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
