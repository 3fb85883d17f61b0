"""Heap retention: large freed blocks stay in the heap instead of going back to the kernel."""
import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import ctypes, sys
import numpy as np
from tagclip_cls.runtime.cpu_memory import retain_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
applied = retain_freed_memory() if sys.argv[1] == "on" else None
block = np.ones(64 * 2**20 // 8)
mapped = libc.mallinfo2().hblkhd
del block
print(applied, mapped >> 20, libc.mallinfo2().fordblks >> 20)
"""


def probe(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
                    or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc >= 2.33 only")
def test_large_blocks_come_from_the_heap_and_stay_there():
    applied, mapped_mib, free_in_heap_mib = probe("on")
    assert applied == "True"
    assert int(mapped_mib) == 0  # the 64 MiB block was not mmapped
    assert int(free_in_heap_mib) >= 64  # and once freed it is still in the heap, ready for reuse
    _, mapped_default, free_default = probe("off")
    assert int(mapped_default) >= 64 and int(free_default) < 64  # glibc's default does the opposite
