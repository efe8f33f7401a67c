"""The guest's Python: Debian's python3.11 with only the standard library
modules pid1 and its dependencies import, plus the dependencies (PyPI wheels
through `pip install --target`), byte-compiled.

How the module list is found (and kept honest):

1. Debian's python3.11 packages (unpacked) and the wheels go into a full
   tree (build/python-full).
2. That tree's own interpreter imports every pid1 module, every module pid1's
   source names in an import statement (also those inside functions: pid1
   imports heavy things late), exercises uvloop, aiodocker/aiohttp and
   pyroute2 the way pid1 does, and imports image/python-keep.txt (modules
   only reached at run time, found by booting). What ends up in sys.modules
   is the list (build/python-modules.txt).
3. The runtime keeps each imported single-file module, and the whole of each
   standard-library package touched (asyncio, email, json...: their
   submodules import each other lazily), compiled to sourceless .pyc
   (unchecked-hash, so no mtime is ever compared); pid1 keeps its sources
   next to the .pyc for readable tracebacks. Wheels' extension modules are
   stripped (uvloop's ships with debug symbols: docs/benchmarks.md, "Image sizes").
4. The trimmed tree's interpreter then imports the whole list again: a
   module missing from the runtime fails the build, not the boot.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SITE = "usr/lib/python3/dist-packages"
STDLIB = "usr/lib/python3.11"
FULL = REPO / "build" / "python-full"
KEEP_LIST = HERE / "python-keep.txt"
# Never shipped, even when something imports them at build time.
STDLIB_DROP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils"}
# frozenlist's C++ extension would pull in libstdc++ for a speed-up pid1
# never notices: without it frozenlist uses its pure-Python class. (_ssl and
# OpenSSL would be next, but uvloop imports ssl unconditionally. Their sizes:
# docs/benchmarks.md, "Image sizes".)
STDLIB_DROP_GLOBS: tuple[str, ...] = ()
SITE_DROP_GLOBS = ("frozenlist/_frozenlist*.so", "multidict/_testcapi*.so")
SITE_DROP_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp", ".typed", ".md", ".rst")


class RuntimeError_(RuntimeError):
    pass


def requirements(pyproject: Path) -> list[str]:
    with open(pyproject, "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def interpreter_env(root: Path) -> dict[str, str]:
    return {
        "PYTHONHOME": str(root / "usr"),
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def python(root: Path) -> str:
    return str(root / "usr/bin/python3.11")


def make_full_tree(python_trees: list[Path], reqs: list[str], wheel_cache: Path) -> Path:
    """build/python-full: Debian's python3.11 and the wheels, unpruned."""
    key = hashlib.sha256(json.dumps([sorted(t.name for t in python_trees), reqs]).encode()).hexdigest()[:16]
    stamp = FULL / ".key"
    if stamp.exists() and stamp.read_text() == key:
        return FULL
    shutil.rmtree(FULL, ignore_errors=True)
    for tree in python_trees:
        for sub in ("usr/bin", "usr/lib"):
            if (tree / sub).exists():
                shutil.copytree(tree / sub, FULL / sub, symlinks=True, dirs_exist_ok=True)
    site = FULL / SITE
    site.mkdir(parents=True, exist_ok=True)
    cached = wheel_cache / f"site-{hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:16]}"
    if not (cached / ".done").exists():
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        pip_install(reqs, cached)
        (cached / ".done").touch()
    shutil.copytree(cached, site, symlinks=True, dirs_exist_ok=True)
    (site / ".done").unlink(missing_ok=True)
    stamp.write_text(key)
    return FULL


def pip_command() -> list[str]:
    """A pip that runs here; the wheels are chosen for the guest, not for it."""
    for candidate in (sys.executable, str(REPO / ".venv/bin/python")):
        if subprocess.run([candidate, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [candidate, "-m", "pip"]
    raise RuntimeError_("no pip on this machine (apt-get install python3-pip, or run ./tests/run once for .venv)")


def pip_install(reqs: list[str], target: Path) -> None:
    argv = [
        *pip_command(), "install", "-q", "--disable-pip-version-check", "--no-compile", "--target", str(target),
        "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--abi", "abi3", "--abi", "none", *reqs,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError_(f"pip install --target failed: {result.stderr.strip()[-2000:]}")
    shutil.rmtree(target / "bin", ignore_errors=True)


def source_imports(package: Path) -> tuple[list[str], list[str]]:
    """Module names the import statements in the package's sources name (top
    level and inside functions; `from X import Y` also yields X.Y): (required,
    optional), optional being those inside a `try` that catches ImportError."""
    required: set[str] = set()
    optional: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            (optional if id(node) in guarded else required).update(names)
    return sorted(required), sorted(optional - required)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    kinds = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return caught is None or any(
        isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds
    )


# Run inside the guest's interpreter (full or trimmed tree): imports what pid1
# imports and does what pid1 does with its dependencies, prints the files.
TRACER = r"""
import sys, json, importlib, pkgutil
site, pid1_parent, names, keep = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
optional_names = json.loads(sys.argv[5])
sys.path.append(site)
if pid1_parent:
    sys.path.insert(0, pid1_parent)
failed = []
def want(name, optional):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        if not optional:
            failed.append(f"{name}: {exc}")
import pid1
for info in pkgutil.walk_packages(pid1.__path__, "pid1."):
    want(info.name, False)
for name in names:
    # `from X import Y` where Y is a function, not a module, is not an error
    want(name, "." in name and name.rsplit(".", 1)[0] in sys.modules)
for name in keep:
    want(name, False)
for name in optional_names:
    want(name, True)
import asyncio, uvloop
loop = uvloop.new_event_loop()
async def exercise():
    import aiodocker, aiohttp
    docker = aiodocker.Docker(url="unix:///nonexistent/docker.sock")
    try:
        await docker.version()
    except Exception:
        pass
    await docker.close()
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            ipr.get_links()
    except Exception as exc:
        print("pyroute2 exercise:", exc, file=sys.stderr)
loop.run_until_complete(exercise())
loop.close()
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
print(json.dumps({"failed": failed, "files": files, "modules": sorted(sys.modules)}))
"""


def trace(root: Path, pid1_parent: str, names: list[str], keep: list[str], optional: list[str]) -> dict:
    argv = [python(root), "-S", "-c", TRACER, str(root / SITE), pid1_parent, json.dumps(names), json.dumps(keep)]
    result = subprocess.run(
        [*argv, json.dumps(optional)],
        capture_output=True,
        text=True,
        env=interpreter_env(root),
    )
    if result.returncode != 0:
        raise RuntimeError_(f"import trace failed in {root}: {result.stderr.strip()[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def keep_list() -> list[str]:
    if not KEEP_LIST.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in KEEP_LIST.read_text().splitlines())
    return [line for line in lines if line]


def compile_tree(root: Path, directory: Path, keep_sources: bool) -> None:
    """Byte-compile directory with root's interpreter: unchecked-hash .pyc;
    without keep_sources each .pyc replaces its .py (sourceless import)."""
    interp = FULL  # the trimmed runtime has no py_compile
    script = r"""
import sys, py_compile, pathlib
directory, keep = pathlib.Path(sys.argv[1]), sys.argv[2] == "1"
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
for path in sorted(directory.rglob("*.py")):
    shown = "/" + str(path.relative_to(sys.argv[3]))
    if keep:
        py_compile.compile(str(path), doraise=True, invalidation_mode=mode, dfile=shown)
    else:
        py_compile.compile(str(path), cfile=str(path) + "c", doraise=True, invalidation_mode=mode, dfile=shown)
        path.unlink()
"""
    base = directory
    while base.parent != base and not (base / "usr").is_dir():
        base = base.parent
    result = subprocess.run(
        [python(interp), "-S", "-c", script, str(directory), "1" if keep_sources else "0", str(base)],
        capture_output=True,
        text=True,
        env=interpreter_env(interp),
    )
    if result.returncode != 0:
        raise RuntimeError_(f"byte-compiling {directory} failed: {result.stderr.strip()[-2000:]}")


def top_stdlib_entry(relative: Path) -> Path | None:
    """usr/lib/python3.11/asyncio/events.py -> usr/lib/python3.11/asyncio."""
    parts = relative.parts
    base = len(Path(STDLIB).parts)
    if parts[:base] != Path(STDLIB).parts or len(parts) <= base:
        return None
    if parts[base] == "lib-dynload":
        return relative
    return Path(*parts[: base + 1])


def build(stage: Path, python_trees: list[Path], requirements: list[str], pid1_source: Path, wheel_cache: Path) -> dict:
    full = make_full_tree(python_trees, requirements, wheel_cache)
    required, optional = source_imports(pid1_source)
    names = [n for n in required if not n.startswith("pid1")]
    optional = [n for n in optional if not n.startswith("pid1")]
    keep = keep_list()
    traced = trace(full, str(pid1_source.parent), names, keep, optional)
    if traced["failed"]:
        raise RuntimeError_("imports fail even with the full standard library: " + "; ".join(traced["failed"]))
    # the interpreter, and the stdlib entries the trace touched
    (stage / "usr/bin").mkdir(parents=True)
    shutil.copy2(full / "usr/bin/python3.11", stage / "usr/bin/python3.11")
    os.symlink("python3.11", stage / "usr/bin/python3")
    entries: set[Path] = {Path(STDLIB) / "os.py", Path(STDLIB) / "lib-dynload"}  # prefix landmarks
    for file in traced["files"]:
        path = Path(file)
        try:
            relative = path.relative_to(full)
        except ValueError:
            continue  # pid1 itself (the source tree)
        top = top_stdlib_entry(relative)
        dropped = any(relative.match(f"{STDLIB}/{pattern}") for pattern in STDLIB_DROP_GLOBS)
        if top is not None and top.name not in STDLIB_DROP and not dropped:
            entries.add(top)
    for relative in sorted(entries):
        source, target = full / relative, stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and relative.name != "lib-dynload":
            shutil.copytree(
                source,
                target,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "test", "tests", "idle_test"),
            )
        elif source.is_dir():
            target.mkdir(exist_ok=True)
        else:
            shutil.copy2(source, target)
    # the dependencies, whole (they import their own submodules lazily), less
    # what only builds or type-checks them
    site = stage / SITE
    shutil.copytree(
        full / SITE,
        site,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "tests", "*.dist-info", *(f"*{s}" for s in SITE_DROP_SUFFIXES)),
    )
    for pattern in SITE_DROP_GLOBS:
        for path in site.glob(pattern):
            path.unlink()
    for so in site.rglob("*.so"):
        subprocess.run(["strip", "--strip-unneeded", str(so)], check=True)
    compile_tree(full, stage / STDLIB, keep_sources=False)
    compile_tree(full, site, keep_sources=False)
    # the trimmed runtime must import everything again, with pid1 from the source tree
    check = trace(stage, str(pid1_source.parent), names, keep, optional)
    if check["failed"]:
        raise RuntimeError_("the trimmed runtime lacks modules: " + "; ".join(check["failed"]))
    return {"modules": check["modules"]}
