"""The DT_NEEDED entries of an ELF file (x86-64), read without ldd.

ldd runs the binary's loader on the host, which resolves against the host's
libraries; the image must resolve against the unpacked packages instead, so
only the names are read here and the build finds the files.
"""

from __future__ import annotations

import struct
from pathlib import Path

DT_NEEDED = 1
DT_STRTAB = 5
PT_LOAD = 1
PT_DYNAMIC = 2


def needed(path: Path) -> list[str]:
    """Sonames the file needs; [] for anything that is not a 64-bit ELF."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return []
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []  # static
    entries, strtab_addr = [], None
    offset, end = dynamic[0], dynamic[0] + dynamic[1]
    while offset + 16 <= end:
        tag, value = struct.unpack_from("<qQ", data, offset)
        offset += 16
        if tag == 0:
            break
        if tag == DT_NEEDED:
            entries.append(value)
        elif tag == DT_STRTAB:
            strtab_addr = value
    if strtab_addr is None:
        return []
    strtab = next(
        (off + strtab_addr - vaddr for vaddr, off, size in loads if vaddr <= strtab_addr < vaddr + size), None
    )
    if strtab is None:
        return []
    names = []
    for index in entries:
        start = strtab + index
        names.append(data[start : data.index(b"\0", start)].decode())
    return names
