"""The indicator cache of parameter sweeps (pure: no Django).

A sweep chunk shares one indicator cache between all its parameter sets, so each distinct indicator (e.g. SMA(20))
is computed once per chunk, not once per set. By default that cache is a view of the process-wide `IndicatorLRU`
keyed by the data's CONTENT fingerprint, so the next chunks of the same data on the same worker process reuse the
indicators too (bounded in bytes, least recently used first).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, MutableMapping
from typing import Any

import numpy as np
from numba import njit

from apps.bots.trading.candles import CandleArrays

#: Byte budget of the process-wide indicator cache (env TRADEBOT_INDICATOR_CACHE_MB): 256 MiB = 32 indicator arrays
#: of a million candles; a sweep worker's RSS stays well under 1 GB.
INDICATOR_CACHE_BYTES = int(float(os.environ.get("TRADEBOT_INDICATOR_CACHE_MB", "256")) * 1024 * 1024)


@njit(cache=True)
def _content_hash(bits: np.ndarray) -> int:
    """A 64-bit content hash of an int64 array: the sum of fmix64(value ^ position-salt) (murmur3's finalizer; a
    mixed sum vectorizes, ~0.2 ms per million values). For cache identity of candle data, not for security."""
    h = np.uint64(0)
    for i in range(bits.shape[0]):
        z = np.uint64(bits[i]) ^ (np.uint64(i) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
        z = (z ^ (z >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
        h += z ^ (z >> np.uint64(33))
    return h


def data_fingerprint(arrays: CandleArrays) -> tuple:
    """Identity of a candle data set by content: length, first/last timestamp and a hash of every column."""
    n = len(arrays)
    if n == 0:
        return (0,)
    cols = (arrays.timestamp, arrays.open, arrays.high, arrays.low, arrays.close, arrays.volume)
    return (n, int(arrays.timestamp[0]), int(arrays.timestamp[-1]),
            *(int(_content_hash(np.ascontiguousarray(c).view(np.int64))) for c in cols))


class IndicatorLRU:
    """Indicator arrays keyed by (data fingerprint, indicator key), at most `max_bytes` of arrays (least recently
    used evicted first; the entry just stored is never evicted, so one indicator larger than the budget still
    serves its chunk). Thread-safe. Arrays are shared read-only (BaseStrategy.cached marks them so)."""

    def __init__(self, max_bytes: int = INDICATOR_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(value: Any) -> int:
        return int(value.nbytes) if isinstance(value, np.ndarray) else 64

    def get(self, key: tuple, default: Any = None) -> Any:
        with self._lock:
            value = self._items.get(key, default)
            if key in self._items:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            if key in self._items:
                self.nbytes -= self._size(self._items.pop(key))
            self._items[key] = value
            self.nbytes += self._size(value)
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.nbytes -= self._size(old)

    def keys_for(self, fingerprint: tuple) -> list[Hashable]:
        with self._lock:
            return [k[1] for k in self._items if k[0] == fingerprint]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def view(self, arrays: CandleArrays) -> DataIndicatorCache:
        """The dict-like cache of one data set (what run_chunk hands to the strategies)."""
        return DataIndicatorCache(self, arrays)


class DataIndicatorCache(MutableMapping):
    """One data set's indicators inside an IndicatorLRU: a mapping {indicator key: array}. The data's fingerprint
    is computed on first use (inside the first parameter set's timing)."""

    def __init__(self, lru: IndicatorLRU, arrays: CandleArrays) -> None:
        self._lru = lru
        self._arrays = arrays
        self._fp: tuple | None = None

    @property
    def fingerprint(self) -> tuple:
        if self._fp is None:
            self._fp = data_fingerprint(self._arrays)
        return self._fp

    def __getitem__(self, key: Hashable) -> Any:
        value = self._lru.get((self.fingerprint, key), _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: Hashable, default: Any = None) -> Any:
        value = self._lru.get((self.fingerprint, key), _MISSING)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return self._lru.get((self.fingerprint, key), _MISSING) is not _MISSING

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._lru.put((self.fingerprint, key), value)

    def __delitem__(self, key: Hashable) -> None:
        raise TypeError("indicator cache entries are evicted by the LRU, not deleted")

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._lru.keys_for(self.fingerprint))

    def __len__(self) -> int:
        return len(self._lru.keys_for(self.fingerprint))


_MISSING = object()
_PROCESS_LRU = IndicatorLRU()


def process_indicator_cache() -> IndicatorLRU:
    """This process's indicator LRU (one per Celery worker process: prefork children each have their own)."""
    return _PROCESS_LRU
