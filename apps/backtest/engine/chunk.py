"""One sweep chunk (pure: no Django, no Celery): evaluate parameter sets on one data set, sharing its indicators.

A chunk is the unit of work of one Celery task: one candle load and one indicator cache (`engine.cache`) for all its
parameter sets. Per set: a strategy's own `sweep_kernel` when it declares one (its decisions made inside one
compiled pass with the fills and the equity pass), else its vectorized `compute` and then the generic fused pass over
the actions (`apps.bots.trading.fused.run_actions`). Both give exactly the metrics of simulate + compute_metrics.
This module never names a strategy.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from apps.backtest.engine.cache import process_indicator_cache
from apps.backtest.engine.metrics import assemble_metrics, compute_metrics, jsonable
from apps.backtest.engine.run import frame_kwargs
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import open_trade_of, simulate, trade_columns
from apps.bots.trading.fused import FusedRun, run_actions


def _accepts_cache(strategy: Any) -> bool:
    try:
        return "cache" in inspect.signature(strategy.compute).parameters
    except (TypeError, ValueError):
        return False


def compute_actions(strategy: Any, arrays: CandleArrays, cache: dict | None = None) -> np.ndarray:
    """The strategy's vectorized actions (int8) over the arrays, sharing `cache` when the strategy supports it."""
    args = (arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume)
    extra = frame_kwargs(strategy, arrays.timestamp)  # the close times the populate/process_data forms see
    if cache is not None and _accepts_cache(strategy):
        out = strategy.compute(*args, cache=cache, **extra)
    else:
        out = strategy.compute(*args, **extra)
    return np.ascontiguousarray(np.asarray(out.action, dtype=np.int8))


def evaluate(arrays: CandleArrays, actions: np.ndarray, rules: Any, timeframe: str) -> tuple[Any, dict[str, Any]]:
    """simulate + metrics on precomputed actions: (SimResult, metrics)."""
    sim = simulate(arrays.timestamp, arrays.open, arrays.high, arrays.low, arrays.close, actions, rules)
    metrics = compute_metrics(sim, arrays.close, arrays.timestamp, timeframe)
    return sim, jsonable(dict(metrics))


def fused_metrics(arrays: CandleArrays, run: FusedRun, rules: Any, timeframe: str) -> dict[str, Any]:
    """The metrics of a fused pass (bit-identical to `evaluate`'s), JSON-safe."""
    ts, close = arrays.timestamp, arrays.close
    open_trade = open_trade_of(ts, close, run.events)
    metrics = assemble_metrics(run.stats, close, ts, timeframe, initial=float(rules.initial_balance),
                               final=float(run.final_equity), fees_paid=float(run.fees_paid),
                               columns=trade_columns(ts, run.events),
                               open_entry_bar=None if open_trade is None else int(open_trade["entry_bar"]))
    return jsonable(metrics)


def evaluate_fast(arrays: CandleArrays, actions: np.ndarray, rules: Any, timeframe: str) -> dict[str, Any]:
    """The metrics of `evaluate` (bit-identical) through the fused pass, without per-candle equity arrays."""
    run = run_actions(arrays.close, arrays.open, arrays.high, arrays.low, actions, rules)
    return fused_metrics(arrays, run, rules, timeframe)


def evaluate_strategy(strategy: Any, arrays: CandleArrays, rules: Any, timeframe: str,
                      cache: dict | None) -> dict[str, Any]:
    """One parameter set's metrics: the strategy's sweep kernel when it has one, else compute + the fused pass."""
    if len(arrays) == 0:
        return evaluate(arrays, compute_actions(strategy, arrays, cache), rules, timeframe)[1]
    run = strategy.run_sweep_kernel(arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume, rules,
                                    cache=cache) if hasattr(strategy, "run_sweep_kernel") else None
    if run is not None:
        return fused_metrics(arrays, run, rules, timeframe)
    return evaluate_fast(arrays, compute_actions(strategy, arrays, cache), rules, timeframe)


def evaluate_detail(strategy: Any, arrays: CandleArrays, rules: Any, timeframe: str, cache: dict | None,
                    detail: tuple[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, detail report + its warnings) of one set with intrabar detail: the backtest's own detail pass
    (`run.with_detail`), so a sweep row equals `backtest --detail` of the same set."""
    from apps.backtest.engine.run import with_detail

    actions = compute_actions(strategy, arrays, cache)
    a = {"timestamp": arrays.timestamp, "open": arrays.open, "high": arrays.high, "low": arrays.low,
         "close": arrays.close}
    warnings: list[str] = []
    _, metrics, report = with_detail(a, actions, rules, timeframe, detail, warnings)
    report = {k: v for k, v in report.items() if k != "metrics_candle_only"}
    return jsonable(dict(metrics)), jsonable({**report, "warnings": warnings})


def run_chunk(arrays: CandleArrays, strategy_cls: type, param_sets: Sequence[Any], rules: Any,
              timeframe: str, *, cache: dict | None = None,
              detail: tuple[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate param sets on one data set: [{index, parameters, metrics, error, compute_seconds}] in input order
    (+ "detail": the intrabar detail report of the set, with `detail` = (kind, DetailSource)).

    `param_sets` items are dicts, or (index, dict) pairs / {"index", "parameters"} dicts to keep sweep indexes.
    A set that fails (bad parameters, or an error while computing) is reported with its reason; the rest run.
    Indicators are shared through `cache`, by default this process's IndicatorLRU for this data, so later chunks of
    the same data reuse them.
    """
    shared = process_indicator_cache().view(arrays) if cache is None else cache
    results = []
    for pos, item in enumerate(param_sets):
        index, params = _unpack(pos, item)
        t0 = time.perf_counter()
        try:
            strategy = strategy_cls(dict(params))
            report = None
            if detail is not None and len(arrays):
                metrics, report = evaluate_detail(strategy, arrays, rules, timeframe, shared, detail)
            else:
                metrics = evaluate_strategy(strategy, arrays, rules, timeframe, shared)
            full = jsonable(dict(getattr(strategy, "parameters", params)))
            results.append({"index": index, "parameters": full, "metrics": metrics, "error": "",
                            "compute_seconds": time.perf_counter() - t0})
            if detail is not None:
                results[-1]["detail"] = report
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError) as exc:
            results.append({"index": index, "parameters": jsonable(dict(params)), "metrics": None,
                            "error": f"{type(exc).__name__}: {exc}", "compute_seconds": time.perf_counter() - t0})
    return results


def _unpack(pos: int, item: Any) -> tuple[int, Mapping[str, Any]]:
    if isinstance(item, Mapping) and "parameters" in item and "index" in item:
        return int(item["index"]), item["parameters"]
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], Mapping):
        return int(item[0]), item[1]
    return pos, item
