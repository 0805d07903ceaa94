"""Walk-forward analysis (pure): rolling train/test windows, best parameters in-sample, evaluated out-of-sample.

On each window the best parameter set of the train slice is chosen (the sweep's parameter sets run on it, or a
caller's `choose`, e.g. `optimize --walk-forward`'s Optuna search re-run per window); it is then evaluated on the
following test slice. Its signals are computed on train+test (the train part is the indicator warm-up, and signals
never look ahead), and only the test bars are simulated. The stitched out-of-sample result simulates the
concatenated test bars once with each window's chosen actions, so it compounds like one account switching
parameters at every window boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.backtest.engine.chunk import compute_actions, evaluate, run_chunk
from apps.backtest.engine.metrics import jsonable
from apps.backtest.engine.ranking import rank_results
from apps.backtest.engine.run import downsample_minmax
from apps.bots.trading.candles import CandleArrays
from apps.common.errors import ApplicationError
from apps.market.timeframes import timeframe_ms

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


class WalkForwardError(ApplicationError):
    """Windows that cannot be planned (names the size and why)."""


@dataclass(frozen=True)
class Window:
    """Half-open index ranges [train_start, train_end) and [test_start, test_end); train_end == test_start."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def to_candles(value: int | str, timeframe: str, *, what: str = "size") -> int:
    """A window size as a candle count: an int / digit string is candles, '30d', '12h', '90m', '2w' a duration."""
    if isinstance(value, (int, np.integer)):
        n = int(value)
    else:
        text = str(value).strip()
        if text.isdigit():
            n = int(text)
        else:
            m = _DURATION.match(text)
            if not m:
                raise WalkForwardError(f"{what} {value!r}: expected a candle count or a duration like 30d, 12h, 90m",
                                       field=what)
            dur = int(m.group(1)) * _UNIT_MS[m.group(2)]
            tf = timeframe_ms(timeframe)
            if dur % tf:
                raise WalkForwardError(f"{what} {value!r} is not a whole number of {timeframe} candles", field=what)
            n = dur // tf
    if n <= 0:
        raise WalkForwardError(f"{what} must be positive, got {value!r}", field=what)
    return n


def plan_windows(n_candles: int, train: int, test: int, step: int | None = None) -> list[Window]:
    """Rolling windows over n candles; the last test window must fit completely."""
    step = test if step is None else step
    for name, v in (("train", train), ("test", test), ("step", step)):
        if v <= 0:
            raise WalkForwardError(f"{name} must be a positive number of candles, got {v}")
    if train + test > n_candles:
        raise WalkForwardError(f"train {train} + test {test} candles exceed the {n_candles} candles of the data",
                               field="train")
    windows = []
    start = 0
    while start + train + test <= n_candles:
        windows.append(Window(len(windows), start, start + train, start + train, start + train + test))
        start += step
    return windows


def grid_choice(strategy_cls: type, param_sets: Sequence[dict[str, Any]], rules: Any, timeframe: str,
                metric: str) -> Callable[[Window, CandleArrays], dict[str, Any]]:
    """The default `choose`: every parameter set on the train slice, the best by the metric."""
    if not param_sets:
        raise WalkForwardError("no parameter sets to choose from")

    def choose(window: Window, train_arr: CandleArrays) -> dict[str, Any]:
        return rank_results(run_chunk(train_arr, strategy_cls, list(enumerate(param_sets)), rules, timeframe),
                            metric)[0]

    return choose


def walk_forward(arrays: CandleArrays, strategy_cls: type, param_sets: Sequence[dict[str, Any]] | None, rules: Any,
                 timeframe: str, *, train: int, test: int, step: int | None = None,
                 metric: str = "sharpe", on_window: Any = None,
                 choose: Callable[[Window, CandleArrays], dict[str, Any]] | None = None) -> dict[str, Any]:
    """{windows: [...], stitched_metrics, stitched_equity, warnings} (all JSON-ready). `on_window(done, total)` is
    called after each window (a command's progress bar).

    `choose(window, train arrays) -> {"parameters", "metrics" (in-sample), "error", ...}` picks each window's set
    (default: the best of `param_sets` on the train slice); extra keys of its row are kept in the window's row."""
    windows = plan_windows(len(arrays), train, test, step)
    if choose is None:
        choose = grid_choice(strategy_cls, param_sets or [], rules, timeframe, metric)
    out_windows = []
    seg_actions: list[np.ndarray] = []
    seg_index: list[np.ndarray] = []
    warnings: list[str] = []
    for w in windows:
        best = choose(w, arrays.slice(w.train_start, w.train_end))
        row = {
            "index": w.index,
            "train_start": int(arrays.timestamp[w.train_start]),
            "train_end": int(arrays.timestamp[w.train_end - 1]),
            "test_start": int(arrays.timestamp[w.test_start]),
            "test_end": int(arrays.timestamp[w.test_end - 1]),
            "parameters": best["parameters"],
            "in_sample": best.get("metrics"),
            "out_of_sample": None,
            "error": best.get("error", ""),
            **{k: v for k, v in best.items() if k not in ("parameters", "metrics", "error", "index", "rank", "value",
                                                          "compute_seconds")},
        }
        if best.get("error") or best.get("metrics") is None:
            warnings.append(f"window {w.index}: no parameter set could be evaluated on train ({best.get('error')})")
            out_windows.append(row)
            continue
        strategy = strategy_cls(dict(best["parameters"]))
        full = arrays.slice(w.train_start, w.test_end)
        actions = compute_actions(strategy, full)[w.test_start - w.train_start:]
        _, oos = evaluate(arrays.slice(w.test_start, w.test_end), actions, rules, timeframe)
        row["out_of_sample"] = oos
        out_windows.append(row)
        # Stitch: this window's test bars up to where the next window's test begins (windows may overlap).
        stop = w.test_end
        if on_window is not None:
            on_window(w.index + 1, len(windows))
        if w.index + 1 < len(windows):
            stop = min(stop, windows[w.index + 1].test_start)
        seg_actions.append(actions[: stop - w.test_start])
        seg_index.append(np.arange(w.test_start, stop))
    stitched_metrics: dict[str, Any] = {}
    stitched_equity: dict[str, list] = {"timestamp": [], "equity": []}
    if seg_actions:
        idx = np.concatenate(seg_index)
        stitched = arrays.take(idx)
        if np.any(np.diff(idx) > 1):
            warnings.append("test windows do not touch (step > test): the stitched curve skips the bars between them")
        sim, stitched_metrics = evaluate(stitched, np.concatenate(seg_actions), rules, timeframe)
        stitched_equity = jsonable(downsample_minmax(stitched.timestamp, sim.equity))  # keeps the drawdown trough
    return {"windows": jsonable(out_windows), "stitched_metrics": stitched_metrics,
            "stitched_equity": stitched_equity, "warnings": warnings}
