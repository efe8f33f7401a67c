"""The shell-init anchor the benchmarks measure pid1 against: where it
lives (outside this repository: `shared/anchors/shell-init` beside it, or
ANCHOR_DIR) and where its build goes (ANCHOR_OUT), built when missing with
the kernel pid1's image uses, so both boot the same one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from devtools.harness import REPO

ANCHOR = Path(os.environ.get("ANCHOR_DIR", REPO.parent / "shared/anchors/shell-init"))
ANCHOR_OUT = Path(os.environ.get("ANCHOR_OUT", "/var/tmp/only-docker-shell-init-bench"))


def build_anchor_if_missing() -> None:
    """Run the anchor's build.sh when ANCHOR_OUT has no initrd yet (needs dist/sizes.json: build pid1's image first)."""
    if (ANCHOR_OUT / "initrd.img").exists():
        return
    print(f"building the anchor (OUT={ANCHOR_OUT})", flush=True)
    kver = json.loads((REPO / "dist/sizes.json").read_text())["kernel"]
    env = dict(os.environ, OUT=str(ANCHOR_OUT), KVER=kver)
    subprocess.run([str(ANCHOR / "build.sh")], env=env, check=True, stdout=subprocess.DEVNULL)
