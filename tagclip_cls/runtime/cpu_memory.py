"""Keep freed memory in the process heap (glibc), so big tensors are not page-faulted in again.

glibc serves large allocations with ``mmap`` (above a threshold that adapts up to 32 MiB) and
returns them to the kernel on ``free``. A ViT layer on a 1000-token image allocates and frees
several tensors beyond that (the ``heads x T x T`` attention logits and probabilities), so every
layer pays for fresh zeroed pages again; on a 2-core CPU that was 8-10% of CAM generation
(1.03 -> 0.92-0.95 s per image). Allocating from the heap and not trimming it removes that cost
and changes no result. The PyTorch CPU tuning guide gets the same from preloading jemalloc or
tcmalloc; this needs no preload.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def retain_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory there (up to 2 GiB free on top).

    Returns False where it does not apply (not Linux, or a C library without glibc's ``mallopt``).
    The process then keeps its peak memory until it exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    log.debug("heap retention %s", "on" if applied else "not available")
    return applied
