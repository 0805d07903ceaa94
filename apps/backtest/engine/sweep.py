"""Parameter sweeps (pure: no Django, no Celery): expand a space, validate each set, chunk, run a chunk, rank.

A chunk is the unit of work of one Celery task: it shares one candle load and one indicator cache between all its
parameter sets, so each distinct indicator (e.g. SMA(20)) is computed once per chunk, not once per set. By default
that cache is a view of the process-wide `IndicatorLRU` keyed by the data's CONTENT fingerprint, so the next chunks
of the same data on the same worker process reuse the indicators too (bounded in bytes, least recently used first).
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from apps.backtest.engine.metrics import assemble_metrics
from apps.bots.strategies.sma_cross import cross_run
from apps.bots.trading.equity import K_WINDOW, STATS_BLOCK, dd_init, moments_init, shift_of, stats_block, stats_final
from apps.bots.trading.fills import fill_block, open_trade_of, trade_columns
from apps.common.errors import ApplicationError

# Metrics where smaller is better; every other metric ranks descending. A leading "-" on the metric flips the order.
# Every name is a key of metrics.METRIC_KEYS (a test checks it).
LOWER_IS_BETTER = frozenset({"max_drawdown_duration_bars", "max_drawdown_duration_ms", "longest_drawdown_bars",
                             "longest_drawdown_ms", "fees_paid", "volatility_pct", "max_consecutive_losses",
                             "avg_holding_time_ms", "max_holding_time_ms", "avg_holding_bars", "max_holding_bars"})


class SweepSpaceError(ApplicationError):
    """A sweep space that cannot be expanded (names the parameter and what is wrong)."""


@dataclass(frozen=True)
class CandleArrays:
    """The columns of a candle frame as contiguous arrays: what a chunk works on (cheap to slice and share)."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> CandleArrays:
        return cls(
            timestamp=np.ascontiguousarray(df["timestamp"].to_numpy(dtype=np.int64)),
            open=np.ascontiguousarray(df["open"].to_numpy(dtype=np.float64)),
            high=np.ascontiguousarray(df["high"].to_numpy(dtype=np.float64)),
            low=np.ascontiguousarray(df["low"].to_numpy(dtype=np.float64)),
            close=np.ascontiguousarray(df["close"].to_numpy(dtype=np.float64)),
            volume=np.ascontiguousarray(df["volume"].to_numpy(dtype=np.float64)),
        )

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def slice(self, start: int, stop: int) -> CandleArrays:
        return CandleArrays(*(a[start:stop] for a in (self.timestamp, self.open, self.high, self.low, self.close,
                                                       self.volume)))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"timestamp": self.timestamp, "open": self.open, "high": self.high, "low": self.low,
                             "close": self.close, "volume": self.volume})


# --- the per-process indicator cache ------------------------------------------------------------------------------

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


# --- expanding a space ------------------------------------------------------------------------------------------

def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a grid {name: [values]} in a stable order (names as given, values as listed)."""
    if not isinstance(grid, Mapping) or not grid:
        raise SweepSpaceError("grid must be a non-empty JSON object {parameter: [values, ...]}")
    names = list(grid)
    values = []
    for name in names:
        vals = grid[name]
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
            vals = [vals]
        if len(vals) == 0:
            raise SweepSpaceError(f"grid parameter {name!r} has no values")
        values.append(list(vals))
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _param_map(strategy_cls: type) -> dict[str, Any]:
    space = strategy_cls.param_space() if hasattr(strategy_cls, "param_space") else getattr(strategy_cls, "params", ())
    return {p.name: p for p in space}


def random_samples(strategy_cls: type, n: int, *, seed: int | None = None,
                   space: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """N seeded random parameter sets drawn from the strategy's declared Param ranges/choices.

    `space` overrides per parameter: {"fast": [5, 50]} (min, max), {"fast": {"min": 5, "max": 50}},
    {"kind": {"choices": [...]}} or a fixed scalar value. Parameters absent from both keep their default.
    """
    if n <= 0:
        raise SweepSpaceError(f"random sample count must be positive, got {n}")
    params = _param_map(strategy_cls)
    space = dict(space or {})
    unknown = sorted(set(space) - set(params))
    if unknown:
        raise SweepSpaceError(
            f"unknown parameter {unknown[0]!r} for strategy {strategy_cls.name!r}: expected one of {', '.join(params)}"
        )
    rng = np.random.default_rng(seed)
    samplers = {name: _sampler(p, space.get(name)) for name, p in params.items()}
    out = []
    for _ in range(n):
        out.append({name: sample(rng) for name, sample in samplers.items()})
    return out


def _sampler(param: Any, override: Any):
    ptype = param.type if isinstance(param.type, type) else {"int": int, "float": float, "bool": bool,
                                                              "str": str}.get(str(param.type), float)
    lo, hi, choices = param.min, param.max, param.choices
    if override is not None:
        if isinstance(override, Mapping):
            lo = override.get("min", lo)
            hi = override.get("max", hi)
            choices = override.get("choices", None if ("min" in override or "max" in override) else choices)
        elif isinstance(override, Sequence) and not isinstance(override, str):
            if len(override) != 2:
                raise SweepSpaceError(f"space for {param.name!r} must be [min, max] or {{'choices': [...]}}")
            lo, hi = override
            choices = None
        else:
            return lambda rng, v=override: v
    if choices:
        options = list(choices)
        return lambda rng: _plain(options[int(rng.integers(0, len(options)))])
    if ptype is bool:
        return lambda rng: bool(rng.integers(0, 2))
    if ptype in (int, float):
        if lo is None or hi is None:
            if override is None:
                return lambda rng, v=param.default: v
            raise SweepSpaceError(f"space for {param.name!r} needs both min and max")
        if hi < lo:
            raise SweepSpaceError(f"space for {param.name!r}: max {hi} < min {lo}")
        if ptype is int:
            return lambda rng: int(rng.integers(int(lo), int(hi) + 1))
        return lambda rng: float(rng.uniform(float(lo), float(hi)))
    return lambda rng, v=param.default: v


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def validate_param_sets(strategy_cls: type, param_sets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """[{index, parameters, error}] : each set validated by the strategy; a bad one carries its reason, alone."""
    out = []
    for index, params in enumerate(param_sets):
        try:
            strategy = strategy_cls(dict(params))
            full = dict(getattr(strategy, "parameters", params))
            out.append({"index": index, "parameters": _jsonable(full), "error": ""})
        except (ValueError, TypeError) as exc:  # ParameterError is a ValueError
            out.append({"index": index, "parameters": _jsonable(dict(params)), "error": f"{type(exc).__name__}: {exc}"})
    return out


def split_chunks(items: Sequence[Any], chunk_size: int) -> list[list[Any]]:
    if chunk_size <= 0:
        raise SweepSpaceError(f"chunk size must be positive, got {chunk_size}")
    return [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]


# --- running --------------------------------------------------------------------------------------------------

def _accepts_cache(strategy: Any) -> bool:
    try:
        return "cache" in inspect.signature(strategy.compute).parameters
    except (TypeError, ValueError):
        return False


def compute_actions(strategy: Any, arrays: CandleArrays, cache: dict | None = None) -> np.ndarray:
    """The strategy's vectorized actions (int8) over the arrays, sharing `cache` when the strategy supports it."""
    from apps.backtest.engine.run import frame_kwargs

    args = (arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume)
    extra = frame_kwargs(strategy, arrays.timestamp)
    if cache is not None and _accepts_cache(strategy):
        out = strategy.compute(*args, cache=cache, **extra)
    else:
        out = strategy.compute(*args, **extra)
    return np.ascontiguousarray(np.asarray(out.action, dtype=np.int8))


def evaluate(arrays: CandleArrays, actions: np.ndarray, rules: Any, timeframe: str) -> tuple[Any, dict[str, Any]]:
    """simulate + metrics on precomputed actions: (SimResult, metrics)."""
    from apps.backtest.engine.metrics import compute_metrics
    from apps.bots.trading.fills import simulate

    sim = simulate(arrays.timestamp, arrays.open, arrays.high, arrays.low, arrays.close, actions, rules)
    metrics = compute_metrics(sim, arrays.close, arrays.timestamp, timeframe)
    return sim, _jsonable(dict(metrics))


@njit(cache=True)
def cross_block(fast, slow, b0, b1, first, tol_rel, d0, t0, out):
    """sma_cross's actions for candles [b0, b1) into out[0:b1-b0]: `_cross_signal` of (t-1, t) with the same
    operations as branch-free booleans (same results). d0, t0: the line gap and tolerance at b0 - 1 (NaN at 0)."""
    cross_run(fast[b0:b1], slow[b0:b1], out[:b1 - b0], first - b0, tol_rel, d0, t0)
    return out


_FUSED_BLOCK = STATS_BLOCK  # > K_WINDOW: the first block fixes the moments' shift


@njit(cache=True, error_model="numpy")
def _fused_run(close, open_, high, low, action, fast, slow, use_lines, warmup, tol_rel, initial,
               fee, slippage, fraction, use_sl, sl, use_tp, tp):
    """simulate + the equity pass of compute_metrics without per-candle arrays: per block of 4096 candles, the fill
    loop (`fills.fill_block`, simulate's own) writes the equity to a small cache-resident buffer, then
    `equity.stats_block` consumes it. The actions are `action[i]`, or with `use_lines` the sma_cross crossover of
    fast/slow decided per block (`cross_block`, the rule of `cross_signals`). Same `_bar` calls, same equity values,
    same helpers in the same order as simulate + compute_metrics: bit-identical results."""
    n = close.shape[0]
    rec = np.empty((n + 1, 6), np.float64)
    m = 0
    buf = np.empty(_FUSED_BLOCK, np.float64)
    rbuf = np.empty(_FUSED_BLOCK, np.float64)
    k = 0.0
    mom = moments_init()
    prev = initial
    st = dd_init(initial)
    abuf = np.zeros(_FUSED_BLOCK, np.int8)
    d0 = np.nan
    t0 = np.nan
    state = (initial, 0.0, 0.0, -1, 0.0)
    for b0 in range(0, n, _FUSED_BLOCK):
        b1 = min(b0 + _FUSED_BLOCK, n)
        if use_lines:  # the block's crossover decisions first: branch-free, off the fill loop's critical path
            abuf = cross_block(fast, slow, b0, b1, max(warmup, 1), tol_rel, d0, t0, abuf)
            d0 = fast[b1 - 1] - slow[b1 - 1]
            t0 = abs(slow[b1 - 1]) * tol_rel
            act = abuf[:b1 - b0]
        else:
            act = action[b0:b1]
        state, m = fill_block(b0, open_[b0:b1], high[b0:b1], low[b0:b1], close[b0:b1], act, buf[:b1 - b0], state,
                              rec, m, n, fee, slippage, fraction, use_sl, sl, use_tp, tp)
        if b0 == 0:
            k = shift_of(buf, min(n, K_WINDOW), initial)
        prev, mom, st = stats_block(buf[:b1 - b0], b0, prev, k, mom, st, rbuf)
    stats = stats_final(n, k, mom, st)
    return stats, rec[:m].copy(), state[4], prev


_NO_F8 = np.zeros(0, np.float64)
_NO_I1 = np.zeros(0, np.int8)


def _sma_cross_lines(strategy: Any, arrays: CandleArrays, cache: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(SMA fast, SMA slow) from the shared cache (same keys and values as SmaCross.compute) when `strategy` is a
    plain sma_cross (compute not overridden), else None (the generic path runs the strategy's own compute)."""
    from apps.bots.strategies import indicators as ind
    from apps.bots.strategies.sma_cross import SmaCross

    if not isinstance(strategy, SmaCross) or type(strategy).compute is not SmaCross.compute:
        return None
    fast_n, slow_n = int(strategy.parameters["fast"]), int(strategy.parameters["slow"])
    keys = (("sma", "close", fast_n), ("sma", "close", slow_n))
    lines = [cache.get(key) for key in keys]
    missing = [n for line, n in zip(lines, (fast_n, slow_n), strict=True) if line is None]
    if missing:  # one scan of the closes for both windows
        made = dict(zip(missing, ind.window_means(arrays.close, missing), strict=True))
        lines = [line if line is not None else strategy.cached(cache, ("sma", "close", n), lambda v=made[n]: v)
                 for line, n in zip(lines, (fast_n, slow_n), strict=True)]
    return lines[0], lines[1]


def evaluate_fast(arrays: CandleArrays, rules: Any, timeframe: str, *, action: np.ndarray | None = None,
                  lines: tuple[np.ndarray, np.ndarray, int] | None = None) -> dict[str, Any]:
    """The metrics of `evaluate` (bit-identical) through the fused kernel: given actions, or (fast, slow, warmup)
    of a two-line crossover decided inside the loop. JSON-safe dict."""
    from apps.bots.strategies.sma_cross import CROSS_TOLERANCE

    ts, close = arrays.timestamp, arrays.close
    if lines is not None:
        fast, slow, warmup = lines
        act, use_lines = _NO_I1, True
    else:
        fast = slow = _NO_F8
        warmup, act, use_lines = 0, np.ascontiguousarray(action, dtype=np.int8), False
    initial = float(rules.initial_balance)
    stats, events, fees_paid, final = _fused_run(
        close, arrays.open, arrays.high, arrays.low, act, fast, slow, use_lines, int(warmup), CROSS_TOLERANCE,
        initial, *rules._kernel_args())
    open_trade = open_trade_of(ts, close, events)
    metrics = assemble_metrics(stats, close, ts, timeframe, initial=initial, final=float(final),
                               fees_paid=float(fees_paid), columns=trade_columns(ts, events),
                               open_entry_bar=None if open_trade is None else int(open_trade["entry_bar"]))
    return _jsonable(metrics)


def run_chunk(arrays: CandleArrays, strategy_cls: type, param_sets: Sequence[Any], rules: Any,
              timeframe: str, *, cache: dict | None = None) -> list[dict[str, Any]]:
    """Evaluate param sets on one data set: [{index, parameters, metrics, error, compute_seconds}] in input order.

    `param_sets` items are dicts, or (index, dict) pairs / {"index", "parameters"} dicts to keep sweep indexes.
    A set that fails (bad parameters, or an error while computing) is reported with its reason; the rest run.
    Per set: the strategy's actions (indicators shared through `cache`, by default this process's IndicatorLRU
    for this data, so later chunks of the same data reuse them; a plain sma_cross decides its crossover inside the
    kernel), then ONE compiled pass for fills + metrics (`evaluate_fast`).
    """
    shared = _PROCESS_LRU.view(arrays) if cache is None else cache
    results = []
    for pos, item in enumerate(param_sets):
        index, params = _unpack(pos, item)
        t0 = time.perf_counter()
        try:
            strategy = strategy_cls(dict(params))
            if len(arrays) == 0:
                _, metrics = evaluate(arrays, compute_actions(strategy, arrays, shared), rules, timeframe)
            else:
                lines = _sma_cross_lines(strategy, arrays, shared)
                if lines is not None:
                    metrics = evaluate_fast(arrays, rules, timeframe, lines=(*lines, int(strategy.warmup)))
                else:
                    metrics = evaluate_fast(arrays, rules, timeframe, action=compute_actions(strategy, arrays, shared))
            full = _jsonable(dict(getattr(strategy, "parameters", params)))
            results.append({"index": index, "parameters": full, "metrics": metrics, "error": "",
                            "compute_seconds": time.perf_counter() - t0})
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError) as exc:
            results.append({"index": index, "parameters": _jsonable(dict(params)), "metrics": None,
                            "error": f"{type(exc).__name__}: {exc}", "compute_seconds": time.perf_counter() - t0})
    return results


def _unpack(pos: int, item: Any) -> tuple[int, Mapping[str, Any]]:
    if isinstance(item, Mapping) and "parameters" in item and "index" in item:
        return int(item["index"]), item["parameters"]
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], Mapping):
        return int(item[0]), item[1]
    return pos, item


# --- ranking --------------------------------------------------------------------------------------------------

def metric_value(result: Mapping[str, Any], metric: str) -> float | None:
    metrics = result.get("metrics") or {}
    value = metrics.get(metric.lstrip("-"))
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def rank_results(results: Iterable[Mapping[str, Any]], metric: str = "sharpe",
                 top_k: int | None = None) -> list[dict[str, Any]]:
    """Best first by `metric` (descending, ascending for LOWER_IS_BETTER or a leading '-'); failed/None last.

    Ties keep sweep index order, so the ranking is deterministic whatever order the chunks finished in.
    """
    name = metric.lstrip("-")
    ascending = (name in LOWER_IS_BETTER) != metric.startswith("-")
    rows = [dict(r) for r in results]

    def key(r: Mapping[str, Any]):
        v = metric_value(r, name)
        missing = v is None or bool(r.get("error"))
        return (missing, 0.0 if v is None else (v if ascending else -v), int(r.get("index", 0)))

    rows.sort(key=key)
    ranked = []
    for rank, r in enumerate(rows[: top_k if top_k else None], start=1):
        r["rank"] = rank
        r["value"] = metric_value(r, name)
        ranked.append(r)
    return ranked


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/inf become None (PostgreSQL jsonb and strict JSON reject them)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


jsonable = _jsonable
