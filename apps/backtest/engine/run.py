"""One backtest: signals once (the strategy's vectorized `compute`), fills (`simulate`), metrics. Pure: no Django.

`run_backtest(df, strategy, rules, timeframe).to_dict()` is the `--json` shape of the backtest command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from apps.backtest.engine.metrics import compute_metrics
from apps.bots.trading.fills import FillRules, SimResult, simulate
from apps.market.timeframes import format_ms, timeframe_ms
from apps.market.validation import CANDLE_COLUMNS

if TYPE_CHECKING:
    from apps.bots.strategies.base import BaseStrategy


@dataclass
class BacktestResult:
    """Metrics, trades and the per-candle equity of one run (`equity`, `timestamp`, `action` stay off to_dict)."""

    metrics: dict[str, float | int | None]
    sim: SimResult
    timestamp: np.ndarray
    action: np.ndarray
    warnings: list[str] = field(default_factory=list)
    strategy: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    rules: FillRules | None = None
    timeframe: str = ""
    indicators: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: intrabar detail report (source, ambiguous_exits, changed, missing, metrics_candle_only, metric_diff) or None
    detail: dict[str, Any] | None = None

    @property
    def equity(self) -> np.ndarray:
        return self.sim.equity

    @property
    def trades(self) -> np.ndarray:
        return self.sim.trades

    @property
    def open_trade(self) -> dict[str, Any] | None:
        return self.sim.open_trade

    @property
    def final_equity(self) -> float:
        return self.sim.final_equity

    def to_dict(self) -> dict[str, Any]:
        """{"metrics", "trades", "open_trade", "final_equity", "warnings"} (+ "detail" with --detail): JSON-ready
        (no NaN/inf)."""
        out = {
            "metrics": dict(self.metrics),
            "trades": self.sim.trade_dicts(),
            "open_trade": dict(self.sim.open_trade) if self.sim.open_trade is not None else None,
            "final_equity": float(self.sim.final_equity),
            "warnings": list(self.warnings),
        }
        if self.detail is not None:
            out["detail"] = dict(self.detail)
        return out

    def equity_curve(self, max_points: int = 2000) -> dict[str, list]:
        """{"timestamp": [...], "equity": [...]} with at most max_points points, for storage and plots.

        Keeps the first and last candle and, per bucket of candles, the lowest and highest equity (in time order),
        so peaks and troughs, hence the max drawdown, survive the downsampling."""
        return downsample_minmax(self.timestamp, self.sim.equity, max_points)


def downsample_minmax(timestamp: np.ndarray, values: np.ndarray, max_points: int = 2000) -> dict[str, list]:
    """First, last, and per-bucket min and max of `values` (see BacktestResult.equity_curve)."""
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4, got {max_points}")
    ts = np.asarray(timestamp, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n <= max_points:
        idx = np.arange(n)
    else:
        buckets = (max_points - 2) // 2
        edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)  # interior candles 1..n-2 split into buckets
        picks = [np.array([0, n - 1])]
        starts, ends = edges[:-1], edges[1:]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e > s:
                seg = v[s:e]
                picks.append(np.array([s + int(seg.argmin()), s + int(seg.argmax())]))
        idx = np.unique(np.concatenate(picks))
    return {"timestamp": ts[idx].tolist(), "equity": [float(x) for x in v[idx]]}


def gap_warning(timestamp: np.ndarray, timeframe: str) -> str | None:
    """"N candles missing in M gaps, largest K candles at <time>" when consecutive candles are more than tf apart."""
    tf = timeframe_ms(timeframe)
    ts = np.asarray(timestamp, dtype=np.int64)
    if ts.shape[0] < 2:
        return None
    d = np.diff(ts)
    gaps = np.flatnonzero(d > tf)
    if gaps.size == 0:
        return None
    missing = (d[gaps] + tf - 1) // tf - 1  # an off-grid step still counts as at least one missing candle
    j = int(np.argmax(missing))
    largest_at = int(ts[gaps[j]]) + tf
    plural = "s" if gaps.size > 1 else ""
    return (f"{int(missing.sum())} candles missing in {gaps.size} gap{plural}, largest {int(missing[j])} candles at "
            f"{format_ms(largest_at)} UTC ({largest_at}); fills and metrics treat the data as continuous")


def _candle_arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"backtest data: candle frame lacks column(s) {', '.join(missing)}")
    out = {"timestamp": df["timestamp"].to_numpy(dtype=np.int64)}
    for c in CANDLE_COLUMNS[1:]:
        out[c] = np.ascontiguousarray(df[c].to_numpy(dtype=np.float64))
    ts = out["timestamp"]
    if ts.shape[0] > 1:
        bad = np.flatnonzero(np.diff(ts) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"backtest data: timestamps must be strictly ascending; row {i} has {int(ts[i])} after "
                             f"{int(ts[i - 1])}")
    for c in CANDLE_COLUMNS[1:5]:
        nan = np.flatnonzero(~np.isfinite(out[c]))
        if nan.size:
            i = int(nan[0])
            raise ValueError(f"backtest data: {c} is not a finite number at row {i} (timestamp {int(ts[i])})")
    return out


def frame_kwargs(strategy: Any, timestamp: np.ndarray) -> dict[str, Any]:
    """`strategy.frame_kwargs(timestamp)` (the close times the populate/process_data forms see), {} for a duck-typed
    strategy without it."""
    kwargs = getattr(strategy, "frame_kwargs", None)
    return kwargs(timestamp) if callable(kwargs) else {}


def run_backtest(df: pd.DataFrame, strategy: BaseStrategy, rules: FillRules, timeframe: str, *,
                 detail: tuple[str, Any] | None = None) -> BacktestResult:
    """Signals once over the whole frame (vectorized), then `simulate`, then `compute_metrics`.

    `detail` = (kind "1m"|"trades", DetailSource): stop-loss/take-profit exits of ambiguous candles resolved on finer
    data (apps/bots/trading/detail.py; the rule is in the fills module docstring); the result's `detail` reports
    what changed against the candle-only run, and each candle whose detail is missing is a warning."""
    tf_ms = timeframe_ms(timeframe)  # unknown timeframe -> TimeframeError
    a = _candle_arrays(df)
    n = a["timestamp"].shape[0]
    warnings: list[str] = []
    name = str(getattr(strategy, "name", type(strategy).__name__))
    params = dict(getattr(strategy, "parameters", {}) or {})
    warmup = int(getattr(strategy, "warmup", 0) or 0)
    if n == 0:
        warnings.append("no candles in the selected range: nothing to backtest")
    elif n <= warmup:
        warnings.append(f"only {n} candles: {name} needs {warmup} warm-up candles before its first signal, "
                        "so no trade is possible")
    off = np.flatnonzero(a["timestamp"] % tf_ms != 0)
    if off.size:
        warnings.append(f"{off.size} candles are off the {timeframe} grid (first at row {int(off[0])}, "
                        f"timestamp {int(a['timestamp'][off[0]])}): is the timeframe right?")
    gap = gap_warning(a["timestamp"], timeframe)
    if gap:
        warnings.append(gap)
    form_warning = getattr(strategy, "form_warning", None)
    slow = form_warning() if callable(form_warning) else None
    if slow:
        warnings.append(slow)

    if n:
        out = strategy.compute(a["close"], a["high"], a["low"], a["open"], a["volume"],
                               **frame_kwargs(strategy, a["timestamp"]))
        action = np.ascontiguousarray(out.action, dtype=np.int8)
        if action.shape[0] != n:
            raise ValueError(f"strategy {name} returned {action.shape[0]} actions for {n} candles")
        indicators = dict(out.indicators)
    else:
        action = np.zeros(0, dtype=np.int8)
        indicators = {}
    report = None
    if detail is not None and n:
        sim, metrics, report = with_detail(a, action, rules, timeframe, detail, warnings)
    else:
        sim = simulate(a["timestamp"], a["open"], a["high"], a["low"], a["close"], action, rules)
        metrics = compute_metrics(sim, a["close"], a["timestamp"], timeframe)
    return BacktestResult(metrics=metrics, sim=sim, timestamp=a["timestamp"], action=action, warnings=warnings,
                          strategy=name, parameters=params, rules=rules, timeframe=timeframe, indicators=indicators,
                          detail=report)


def with_detail(a: dict[str, np.ndarray], action: np.ndarray, rules: FillRules, timeframe: str,
                 detail: tuple[str, Any], warnings: list[str]) -> tuple[SimResult, dict[str, Any], dict[str, Any]]:
    from apps.bots.trading.detail import detail_warnings, simulate_detail

    kind, source = detail
    sim, base, rep = simulate_detail(a["timestamp"], a["open"], a["high"], a["low"], a["close"], action, rules,
                                     kind, source)
    metrics = compute_metrics(sim, a["close"], a["timestamp"], timeframe)
    base_metrics = metrics if base is sim else compute_metrics(base, a["close"], a["timestamp"], timeframe)
    diff: dict[str, float] = {}
    for key, value in metrics.items():
        other = base_metrics.get(key)
        if (isinstance(value, int | float) and isinstance(other, int | float) and not isinstance(value, bool)
                and value != other):
            diff[key] = float(value) - float(other)
    ts = a["timestamp"]
    warnings += detail_warnings(kind, [int(ts[b]) for b in rep.missing], [int(ts[b]) for b in rep.untouched])
    report = {**rep.to_dict(), "metrics_candle_only": base_metrics, "metric_diff": diff}
    return sim, metrics, report
