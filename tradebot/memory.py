"""Allocator tuning for compute processes (backtest / sweep workers, the backtest and sweep commands).

Why: a backtest allocates the same few large arrays (one float64 per candle: SMAs, equity, ...; 8 MB per million
candles) on every run and frees them at the end. glibc serves blocks above M_MMAP_THRESHOLD (128 KiB at start, a
dynamic threshold rising to at most 32 MiB) with a fresh mmap and returns them with munmap, and it trims the top of the
heap back to the kernel above M_TRIM_THRESHOLD. Either way the next run's arrays are FRESH pages: every 4 KiB page
costs a page fault plus zeroing on first touch, which on the VMs we run on measured 2-30 ms per 8 MB array versus
0.23 ms to refill a reused one, more than the whole compiled backtest. Raising both thresholds keeps freed arrays in
the heap for reuse (bounded: a worker's RSS keeps its high-water mark instead of shrinking, which the sweep benchmark
measures; blocks above 256 MiB still go to mmap, so a huge one-off never stays pinned).

Setting them explicitly also disables glibc's dynamic threshold adjustment, so the behaviour is the same from the
first run on. `tune_allocator()` is idempotent and a no-op where glibc's `mallopt` is not available (macOS, musl).
The environment variables MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ have the same effect when set before the
process starts; this module makes it a property of the code instead of the launcher.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

#: glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _libc_mallopt():
    """glibc's mallopt, or None when this is not a glibc process."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only: musl/macOS lack it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_allocator() -> bool:
    """Keep freed large arrays in the heap (see module doc). True when glibc accepted both settings; idempotent."""
    with _lock:
        if "tuned" not in _state:
            mallopt = _libc_mallopt()
            ok = mallopt is not None
            if ok:
                ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
                    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
            _state["tuned"] = ok
        return _state["tuned"]


def allocator_tuned() -> bool:
    """Whether `tune_allocator()` ran in this process and glibc accepted it."""
    return _state.get("tuned", False)
