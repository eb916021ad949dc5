"""Keep freed host memory in the process instead of handing it back to the OS (`run.retain_memory`).

An update allocates and frees tensors of MBs to hundreds of MBs (two-hot head logits over every
imagined state, CNN activations of the whole batch). glibc's malloc serves large requests with
fresh `mmap` regions and trims freed memory off the top of its heap, so every update touches new
pages again, and the kernel zero-fills each one on its first touch. Measured on the project's
2-core CPU, one thread, per update: size1m vector (16 × 64) 41,230 minor page faults, 0.92 s →
~1,000 faults, 0.80 s; SheepRL-XS-sized 64×64 images ~974,000 faults (≈ 4 GB of zero-filled
pages), 8.4 s → 16,000 faults, 5.5 s.

`retain_freed_memory` tells glibc (`mallopt`) to serve every request from its heap and never to
trim it, so freed blocks are reused by the next update. The price: the process's resident size
stays at its peak and fragmentation adds to it (XS images: peak RSS 2.5 → 3.2 GB) — the trade a
caching allocator such as PyTorch's CUDA one makes too. Only glibc has `mallopt`; elsewhere this
does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # <malloc.h>: free heap top kept before it is returned to the OS
M_MMAP_MAX = -4  # <malloc.h>: how many requests may be served by their own mmap at a time
NEVER_TRIM = -1  # mallopt's int value becomes glibc's size_t threshold: SIZE_MAX, i.e. never

_applied = False


def retain_freed_memory() -> bool:
    """Serve all allocations from glibc's heap (no per-request mmap) and never trim it, for this
    process. Idempotent; returns whether the settings are in effect."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success; setting either value also ends glibc's dynamic thresholds.
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    return _applied
