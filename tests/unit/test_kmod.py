"""pid1.kmod resolves against Debian's real kernel tree (devtools/kernel_tree.py
unpacks linux-image-amd64 and runs depmod) and agrees with Debian's own
`modprobe --show-depends`, run on the same tree as the oracle.

Only resolution is tested here: this machine's kernel is not Debian's (and
has no module support), so really loading a module is left to the VM tests.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pid1 import kmod
from pid1.module_sets import IN_IMAGE, LOADED_AT_BOOT

MODULES_ROOT = Path(os.environ.get("PID1_TEST_MODULES_ROOT", "/var/cache/only-docker/kernel/root"))
REPO = Path(__file__).resolve().parents[2]
# Devices a qemu pc (i440fx) guest with virtio disk and network shows in /sys/devices/**/modalias.
QEMU_MODALIASES = (
    "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00",  # host bridge
    "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",  # PIIX IDE: ata_piix, ata_generic
    "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00",  # std VGA: bochs
    "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",  # virtio net (legacy): virtio_pci
    "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",  # virtio blk (legacy): virtio_pci
    "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",  # e1000
    "virtio:d00000001v00001AF4",  # virtio_net
    "virtio:d00000002v00001AF4",  # virtio_blk
    "acpi:LNXPWRBN:",  # the ACPI power button: button
    "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw",  # its input device: evdev
    "serio:ty01pr00id00ex00",  # an i8042 port: modules.alias wins over the built-in atkbd
    "platform:no-such-driver",  # names nothing
)


def kernel_version() -> str | None:
    try:
        versions = sorted(p.name for p in (MODULES_ROOT / "lib/modules").iterdir() if (p / "modules.dep").is_file())
    except OSError:
        return None
    return versions[-1] if versions else None


VERSION = kernel_version()
pytestmark = pytest.mark.skipif(
    VERSION is None,
    reason=f"no Debian kernel tree with modules.dep under {MODULES_ROOT}/lib/modules "
    "(devtools/kernel_tree.py makes it; PID1_TEST_MODULES_ROOT points elsewhere)",
)
MODPROBE = shutil.which("modprobe", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def empty_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A modprobe.d with nothing in it, for both resolvers: the host's own
    /etc/modprobe.d is not part of the tree under test."""
    return tmp_path_factory.mktemp("modprobe.d")


@pytest.fixture(scope="module")
def index() -> kmod.ModuleIndex:
    return kmod.ModuleIndex.load(str(MODULES_ROOT / "lib/modules" / str(VERSION)))


def show_depends(index: kmod.ModuleIndex, name: str) -> list[str]:
    """Our plan in `modprobe --show-depends` form."""
    return [f"builtin {e.name}" if e.state == "builtin" else f"insmod {e.path} " for e in index.plan([name])]


def once(lines: list[str]) -> list[str]:
    """kmod's listing with repeats dropped (it can name a module twice, e.g.
    a dependency also reached through a softdep; only the first load counts)."""
    return list(dict.fromkeys(lines))


def oracle(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if MODPROBE is None:
        pytest.skip("Debian's modprobe (kmod) is not installed: no oracle")
    argv = [MODPROBE, "-C", str(config), "-d", str(MODULES_ROOT), "-S", str(VERSION), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def names_of(lines: list[str]) -> list[str]:
    return [kmod.module_name_of(line.split()[1]) for line in lines]


@pytest.mark.parametrize("name", LOADED_AT_BOOT)
def test_fixed_list_resolves_as_modprobe_does(index: kmod.ModuleIndex, empty_config: Path, name: str) -> None:
    want = oracle(empty_config, "--show-depends", name).stdout.splitlines()
    assert show_depends(index, name) == once(want)


def test_the_image_carries_what_modprobe_would_load_for_its_modules(empty_config: Path) -> None:
    """image/build.py's module closure (pid1.kmod's plan) is, module for
    module, what Debian's modprobe loads for the image's list: the initrd
    holds nothing the boot cannot load and lacks nothing it would."""
    from image import build

    moddir = MODULES_ROOT / "lib/modules" / str(VERSION)
    ours = {kmod.module_name_of(path) for path in build.module_closure(moddir, IN_IMAGE)}
    real = oracle(empty_config, "--show-depends", "-a", *IN_IMAGE)
    assert real.returncode == 0, real.stderr
    theirs = {kmod.module_name_of(line.split()[1]) for line in real.stdout.splitlines() if line.startswith("insmod ")}
    assert ours == theirs, (sorted(ours - theirs), sorted(theirs - ours))
    assert build.MODULES == IN_IMAGE and "ext4" in ours and "isofs" in ours


def test_ext4_needs_crc32c_generic_through_its_softdep(index: kmod.ModuleIndex) -> None:
    order = [e.name for e in index.plan(["ext4"])]
    assert order[-1] == "ext4", order
    for dep in ("crc32c_generic", "jbd2", "mbcache", "crc16"):
        assert dep in order[:-1], order
    assert order.index("crc32c_generic") < order.index("jbd2"), "jbd2's softdep loads before jbd2"
    # Negative control: without modules.softdep, modules.dep alone misses crc32c.
    bare = kmod.ModuleIndex.load(index.moddir)
    bare.softdeps = []
    assert "crc32c_generic" not in [e.name for e in bare.plan(["ext4"])]


def test_every_module_and_alias_resolves_as_modprobe_does(index: kmod.ModuleIndex, empty_config: Path) -> None:
    """All ~4000 modules of modules.dep, every plain alias of modules.alias and
    the devices of a qemu guest, in one run of the real modprobe (`-a` prints
    each name's list in turn; a built-in module between two names marks
    where one list ends)."""
    aliases = [
        line.split()[1]
        for line in (Path(index.moddir) / "modules.alias").read_text().splitlines()
        if line.startswith("alias ") and not set(line.split()[1]) & kmod.WILDCARD_CHARS
    ]
    requests = sorted(set(index.paths) - index.builtin) + aliases + [a for a in QEMU_MODALIASES if index.lookup(a)]
    assert len(requests) > 5000, len(requests)
    marker = "unix"
    assert show_depends(index, marker) == ["builtin unix"]
    real = oracle(empty_config, "--show-depends", "-a", *[arg for name in requests for arg in (name, marker)])
    assert real.returncode == 0, real.stderr[-2000:]
    chunks: list[list[str]] = [[]]
    for line in real.stdout.splitlines():
        if line == "builtin unix":
            chunks.append([])
        else:
            chunks[-1].append(line)
    assert len(chunks) == len(requests) + 1 and chunks[-1] == []
    differ = [(name, show_depends(index, name), once(want)) for name, want in zip(requests, chunks, strict=False)]
    differ = [d for d in differ if d[1] != d[2]]
    assert not differ, f"{len(differ)} of {len(requests)} differ, e.g. (name, ours, modprobe's): {differ[:3]}"


@pytest.mark.parametrize("modalias", QEMU_MODALIASES)
def test_modalias_resolves_as_modprobe_resolve_alias(
    index: kmod.ModuleIndex, empty_config: Path, modalias: str
) -> None:
    real = oracle(empty_config, "--resolve-alias", modalias)
    assert index.lookup(modalias) == once(real.stdout.split()), real.stderr


def test_virtio_devices_resolve_to_their_drivers(index: kmod.ModuleIndex) -> None:
    assert index.lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00") == ["virtio_pci"]
    assert index.lookup("virtio:d00000001v00001AF4") == ["virtio_net"]
    assert names_of(show_depends(index, "virtio:d00000001v00001AF4")) == [
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
    ]


def test_names_are_normalised(index: kmod.ModuleIndex) -> None:
    assert index.lookup("crc32c-intel") == index.lookup("crc32c_intel") == ["crc32c_intel"]
    assert index.lookup("nf-conntrack") == ["nf_conntrack"]
    assert kmod.normalize("pci:v0000[a-f]-x") == "pci:v0000[a-f]_x"


def test_builtin_and_loaded_modules_are_not_loaded(index: kmod.ModuleIndex) -> None:
    assert [(e.name, e.state) for e in index.plan(["unix"])] == [("unix", "builtin")]
    assert index.lookup("fs-tracefs") == ["tracefs"]  # found by its alias in modules.builtin.modinfo
    assert [(e.name, e.state) for e in index.plan(["fs-tracefs"])] == [("tracefs", "builtin")]
    plan = {e.name: e.state for e in index.plan(["ext4"], loaded={"jbd2", "mbcache"})}
    assert plan["jbd2"] == plan["mbcache"] == "loaded"
    assert plan["ext4"] == plan["crc16"] == "load"


def test_unknown_module_is_a_clear_error(index: kmod.ModuleIndex, empty_config: Path) -> None:
    with pytest.raises(kmod.ModuleNotFound, match="no_such_module not found in"):
        index.plan(["overlay", "no_such_module"])
    assert index.lookup("no_such_module") == []
    cli = run_cli("-C", str(empty_config), "-d", str(MODULES_ROOT), "-S", str(VERSION), "no_such_module")
    assert cli.returncode == 1 and "Module no_such_module not found in directory" in cli.stderr
    quiet = run_cli("-q", "-C", str(empty_config), "-d", str(MODULES_ROOT), "-S", str(VERSION), "no_such_module")
    assert quiet.returncode == 1 and quiet.stderr == ""
    real = oracle(empty_config, "--show-depends", "no_such_module")
    assert real.returncode == 1 and "not found" in real.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pid1", "modprobe", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_cli_show_depends_matches_modprobe(empty_config: Path) -> None:
    args = ["-C", str(empty_config), "-d", str(MODULES_ROOT), "-S", str(VERSION), "--show-depends", "-a"]
    names = ["ext4", "iptable_nat", "unix", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"]
    ours = run_cli(*args, *names)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == oracle(empty_config, *args[6:], *names).stdout


def test_module_parameters_come_from_config_cmdline_and_arguments(index: kmod.ModuleIndex) -> None:
    config = kmod.ModprobeConfig()
    config.parse_line("options nf-conntrack hashsize=4096  # a comment")
    config.add_kernel_cmdline("quiet nf_conntrack.expect_hashsize=64 pid1.hostname=box")
    configured = kmod.ModuleIndex.load(index.moddir, config)
    entry = next(e for e in configured.plan(["nf_conntrack"]) if e.name == "nf_conntrack")
    assert entry.params == "hashsize=4096 expect_hashsize=64"
    entry = configured.plan(["overlay"], extra_params={"overlay": "redirect_dir=on"})[0]
    assert entry.params == "redirect_dir=on"


def test_modprobe_d_softdep_alias_and_blacklist(index: kmod.ModuleIndex, tmp_path: Path) -> None:
    conf = tmp_path / "etc/modprobe.d"
    conf.mkdir(parents=True)
    (conf / "test.conf").write_text(
        "softdep overlay pre: veth post: dummy\n"
        "alias my-net virtio_net\n"
        "blacklist e1000\n"
        "install foo /bin/true\n"
        "softdep cifs gcm\n"
    )
    config = kmod.read_config(str(tmp_path))
    assert config.ignored == [f"{conf}/test.conf: install foo /bin/true"]
    configured = kmod.ModuleIndex.load(index.moddir, config)
    assert [e.name for e in configured.plan(["overlay"])] == ["veth", "overlay", "dummy"]
    assert configured.lookup("my-net") == ["virtio_net"]
    e1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
    assert configured.lookup(e1000) == ["e1000"]
    assert configured.lookup(e1000, use_blacklist=True) == []
    assert configured.lookup("e1000", use_blacklist=True) == ["e1000"], "blacklist is for aliases only"
    assert kmod.parse_softdep(["gcm"]) == kmod.SoftDep()


def test_alias_patterns_are_fnmatch_globs() -> None:
    table = kmod.AliasTable()
    table.add("usb:v1234p*d*dc[0-9]*", "a")
    table.add("usb:v1234p000[^1]*", "b")
    table.add("acpi*:PNP0C0C:*", "c")
    table.add("exact-name", "d")
    table.add("ab*ba", "e")
    assert [m for _p, m in table.lookup("usb:v1234p0001d0100dc0Fdsc")] == ["a"]
    assert [m for _p, m in table.lookup("usb:v1234p0002d0100dcFF")] == ["b"]
    assert [m for _p, m in table.lookup("acpi:PNP0C0C:")] == ["c"]
    assert [m for _p, m in table.lookup("exact_name")] == ["d"]
    assert table.lookup("usb:v9999p0001") == []
    assert table.lookup("aba") == [], "prefix and suffix may not overlap"
    assert [m for _p, m in table.lookup("abba")] == ["e"]


def test_alias_index_agrees_with_fnmatch_over_every_pattern(index: kmod.ModuleIndex) -> None:
    """The prefix index and the `*`-only matcher find exactly what fnmatch
    over every one of the ~26k patterns finds, for real modaliases and for
    names made from patterns (wildcards filled in)."""
    from fnmatch import fnmatchcase

    patterns = [
        (kmod.normalize(line.split()[1]), kmod.normalize(line.split()[2]))
        for line in (Path(index.moddir) / "modules.alias").read_text().splitlines()
        if line.startswith("alias ")
    ]
    wild = [p for p, _m in patterns if set(p) & kmod.WILDCARD_CHARS]
    made = [p.replace("*", "0A", 1).replace("*", "").replace("?", "x") for p in wild[:: len(wild) // 60]]
    names = [kmod.normalize(n) for n in (*QEMU_MODALIASES, *made, *kmod.scan_modaliases("/sys/devices"))]
    names = [n for n in names if "[" not in n]
    # A glob only matches names that start with its text before the first
    # wildcard: filtering on that keeps fnmatch's regex compiles to the candidates.
    literal = {p: re.split(r"[*?\[]", p, maxsplit=1)[0] for p, _m in patterns}
    for name in names:
        candidates = [(p, m) for p, m in patterns if name.startswith(literal[p])]
        want = sorted((p, m) for p, m in candidates if fnmatchcase(name, p.replace("[^", "[!")))
        assert sorted(index.aliases.lookup(name)) == want, name


def test_compressed_module_is_decompressed_for_finit_module(index: kmod.ModuleIndex, tmp_path: Path) -> None:
    """Debian 12's modules are plain .ko; a later kernel's .ko.xz is loaded
    from a memfd holding the decompressed image."""
    plain = Path(index.path_of("overlay"))
    assert plain.suffix == ".ko"
    packed = tmp_path / "overlay.ko.xz"
    packed.write_bytes(lzma.compress(plain.read_bytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
    assert kmod.load._decompressed(str(packed)) == plain.read_bytes()
    assert kmod.load._decompressed(str(plain)) is None
    assert kmod.module_name_of(str(packed)) == "overlay"


def test_debian_12_ships_uncompressed_modules(index: kmod.ModuleIndex) -> None:
    suffixes = {next(s for s in kmod.MODULE_SUFFIXES[::-1] if p.endswith(s)) for p in index.paths.values()}
    assert suffixes == {".ko"}, suffixes


def test_all_in_kernel_answers_for_loaded_and_builtin_names(tmp_path) -> None:
    from pid1.modprobe import all_in_kernel

    proc_modules = tmp_path / "modules"
    proc_modules.write_text("overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\n")
    sys_module = tmp_path / "sys_module"
    (sys_module / "unix").mkdir(parents=True)
    args = {"proc_modules": str(proc_modules), "sys_module": str(sys_module)}
    assert all_in_kernel(["overlay", "br-netfilter", "unix"], **args)
    assert not all_in_kernel(["overlay", "xt_mark"], **args)  # one missing: the index decides
    assert not all_in_kernel(["fs-overlay"], **args)  # an alias: the index decides
