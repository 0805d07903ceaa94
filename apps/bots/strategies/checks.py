"""Bias checks for any strategy (built-in or user, any form): lookahead, recursion/warm-up, parameter schema. Pure.

What `manage.py check_strategy` runs. Each check returns `CheckRow`s (one line of the printed table); a row with
ok=False is a problem (the command exits 1).

* lookahead, prefix: for EVERY checked row t the vectorized signal (`signals(df)` row t) equals `process_data(df[:t+1])`
  (action exactly, confidence and indicator values to 1e-9 relative). A strategy that reads row t+1 (`shift(-1)`)
  decides differently once the future row is missing.
* lookahead, truncation (freqtrade's lookahead-analysis, at every row, not only where trades fired): the signals of
  df[:k] equal the full-data signals on rows < k for random cuts k.
* recursion / warm-up (freqtrade's recursive-analysis): the indicator values on the last rows computed from start-up
  lengths 200, 500, 1,000 and 2,000 candles vs from all the data, as the largest relative difference per indicator;
  and the start-up length needed for every indicator to be within 1e-9 (a binary search), which is what a bot must
  feed before the candle it decides (`BaseStrategy.history_needed`). A strategy that declares a finite `lookback` or a
  `startup_candles` smaller than what is measured is a problem (its live decisions would differ from the backtest).
* parameters: the defaults and the given parameters survive a JSON round trip unchanged; values below `min`, above
  `max`, outside `choices`, of the wrong type and unknown names are rejected with ParameterError.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from apps.bots.strategies.base import BaseStrategy, ParameterError

TOLERANCE = 1e-9
STARTUP_LENGTHS = (200, 500, 1000, 2000)


@dataclass
class CheckRow:
    check: str
    subject: str
    result: str
    ok: bool = True


@dataclass
class CheckReport:
    strategy: str
    parameters: dict[str, Any]
    rows: list[CheckRow] = field(default_factory=list)
    #: the measured start-up length (candles) for every indicator within TOLERANCE; None when not measurable
    warmup_needed: int | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        head = ("check", "subject", "result", "")
        lines = [head] + [(r.check, r.subject, r.result, "ok" if r.ok else "PROBLEM") for r in self.rows]
        widths = [max(len(str(line[i])) for line in lines) for i in range(4)]
        out = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        out.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(out)


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| / max(|b|, 1e-300) where both are finite; inf where exactly one is NaN; 0 when equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nan_a, nan_b = ~np.isfinite(a), ~np.isfinite(b)
    if (nan_a != nan_b).any():
        return math.inf
    both = ~nan_a
    if not both.any():
        return 0.0
    d = np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-300)
    return float(d.max()) if d.size else 0.0


def _fmt_time(df: pd.DataFrame, row: int) -> str:
    from datetime import UTC, datetime

    ts = int(df["timestamp"].iat[row])
    return f"row {row} ({datetime.fromtimestamp(ts / 1000, tz=UTC):%Y-%m-%d %H:%M} UTC)"


def _frame_diff(got: pd.DataFrame, want: pd.DataFrame) -> tuple[int | None, str]:
    """(first row index where the two signal frames differ, which column) or (None, "")."""
    act_g = got["action"].to_numpy()
    act_w = want["action"].to_numpy()
    first: int | None = None
    what = ""
    bad = np.flatnonzero(act_g != act_w)
    if bad.size:
        first, what = int(bad[0]), "action"
    for col in want.columns:
        if col == "action" or col not in got.columns:
            continue
        g = got[col].to_numpy(dtype=np.float64)
        w = want[col].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.where(np.isfinite(g) & np.isfinite(w), np.abs(g - w) / np.maximum(np.abs(w), 1e-300), 0.0)
        mismatch = (np.isfinite(g) != np.isfinite(w)) | (diff > TOLERANCE)
        idx = np.flatnonzero(mismatch)
        if idx.size and (first is None or int(idx[0]) < first):
            first, what = int(idx[0]), col
    return first, what


def check_lookahead(strategy: BaseStrategy, df: pd.DataFrame, *, rows: int = 2000, cuts: int = 20,
                    seed: int = 0) -> list[CheckRow]:
    """The prefix check on the last `rows` rows of df, and the truncation check at `cuts` random cut points."""
    n = len(df)
    full = strategy.signals(df)
    out: list[CheckRow] = []
    codes = {"buy": 1, "sell": -1, "hold": 0}
    start = max(0, n - rows)
    mismatched: list[int] = []
    first_what = ""
    for t in range(start, n):
        sig = strategy.process_data(df.iloc[: t + 1])
        row_bad = codes[sig.action] != int(full["action"].iat[t])
        what = "action" if row_bad else ""
        if not row_bad and int(full["action"].iat[t]) != 0 and abs(sig.confidence - full["confidence"].iat[t]) > (
                TOLERANCE * max(1.0, abs(full["confidence"].iat[t]))):
            row_bad, what = True, "confidence"
        if not row_bad:
            for key, value in sig.indicators.items():
                if key in full.columns:
                    want = float(full[key].iat[t])
                    got = math.nan if value is None else float(value)
                    if _rel_diff(np.array([got]), np.array([want])) > TOLERANCE:
                        row_bad, what = True, key
                        break
        if row_bad:
            if not mismatched:
                first_what = what
            mismatched.append(t)
    checked = n - start
    if mismatched:
        result = (f"{len(mismatched)} of {checked} rows differ from process_data on the prefix; first at "
                  f"{_fmt_time(df, mismatched[0])} ({first_what})")
    else:
        result = f"{checked} rows: vectorized == process_data(prefix) at every row"
    out.append(CheckRow("lookahead", "vectorized vs process_data", result, not mismatched))

    rng = np.random.default_rng(seed)
    lo = max(2, strategy.warmup + 2, n // 4)
    points_set = {int(k) for k in rng.integers(lo, n, size=cuts)} if n > lo else set()
    # and a cut right after each of the first `cuts` signals: a future-peeking signal shows on the cut's last row
    signal_rows = np.flatnonzero(full["action"].to_numpy()[lo - 1:] != 0) + lo
    points_set.update(int(k) for k in signal_rows[:cuts] if k < n)
    points = sorted(points_set)
    bad_cuts: list[tuple[int, int, str]] = []
    for k in points:
        part = strategy.signals(df.iloc[:k])
        first, what = _frame_diff(part, full.iloc[:k])
        if first is not None:
            bad_cuts.append((k, first, what))
    if bad_cuts:
        k, first, what = bad_cuts[0]
        result = (f"{len(bad_cuts)} of {len(points)} cuts change earlier signals; cut at {k}: {_fmt_time(df, first)} "
                  f"({what})")
    else:
        result = f"{len(points)} random cuts: signals before each cut unchanged"
    out.append(CheckRow("lookahead", "truncated data", result, not bad_cuts))
    return out


def _tail_indicators(strategy: BaseStrategy, df: pd.DataFrame, startup: int, m: int) -> pd.DataFrame:
    n = len(df)
    sig = strategy.signals(df.iloc[max(0, n - m - startup):])
    return sig.iloc[-m:].drop(columns=["action", "confidence"])


def check_recursion(strategy: BaseStrategy, df: pd.DataFrame, *, lengths: tuple[int, ...] = STARTUP_LENGTHS,
                    rows: int = 50) -> tuple[list[CheckRow], int | None]:
    """Indicator values on the last `rows` rows from each start-up length vs from all of df; the length needed."""
    n = len(df)
    m = min(rows, max(1, n // 10))
    longest = n - m
    reference = _tail_indicators(strategy, df, longest, m)
    out: list[CheckRow] = []
    if reference.shape[1] == 0:
        out.append(CheckRow("recursion", "indicators", "the strategy reports no indicator values", True))
    for col in reference.columns:
        parts = []
        for length in lengths:
            if length >= longest:
                parts.append(f"{length}: n/a")
                continue
            got = _tail_indicators(strategy, df, length, m)[col]
            parts.append(f"{length}: {_rel_diff(got.to_numpy(), reference[col].to_numpy()):.1e}")
        out.append(CheckRow("recursion", f"indicator {col}", "rel. diff by start-up  " + "  ".join(parts), True))

    def close_enough(length: int) -> bool:
        got = _tail_indicators(strategy, df, length, m)
        return all(_rel_diff(got[c].to_numpy(), reference[c].to_numpy()) <= TOLERANCE for c in reference.columns)

    needed: int | None
    lo, hi = 0, longest
    if reference.shape[1] == 0:
        needed = int(strategy.lookback or 0) if strategy.lookback is not None else 0
    else:
        while lo < hi:  # smallest start-up length within tolerance (monotone for decaying recursions)
            mid = (lo + hi) // 2
            if close_enough(mid):
                hi = mid
            else:
                lo = mid + 1
        needed = lo
    measurable = needed is not None and needed < longest // 2
    declared = strategy.history_needed
    if not measurable:
        out.append(CheckRow("warm-up", "start-up candles needed",
                            f"> {longest // 2} candles: not measurable on {n} candles (give more data)", False))
        return out, None
    ok = declared is None or declared >= needed
    note = (f"declared {declared}" if declared is not None else "none declared: bots feed all stored history")
    result = f"{needed} candles for every indicator within {TOLERANCE:g} ({note})"
    if not ok:
        result += ": the declared value is too small (live signals would differ from the backtest)"
    out.append(CheckRow("warm-up", "start-up candles needed", result, ok))
    return out, needed


def _bad_values(p: Any) -> list[tuple[str, Any]]:
    """Values `p` must reject: out of range, outside choices, wrong type."""
    bad: list[tuple[str, Any]] = []
    step = 1 if p.type is int else max(abs(float(p.min if p.min is not None else p.max or 1.0)) * 1e-6, 1e-9)
    if p.min is not None:
        bad.append(("below min", (int(p.min) - 1) if p.type is int else float(p.min) - step))
    if p.max is not None:
        bad.append(("above max", (int(p.max) + 1) if p.type is int else float(p.max) + step))
    if p.choices is not None:
        bad.append(("not a choice", object()))
    if p.type in (int, float):
        bad.append(("wrong type", "not-a-number"))
        bad.append(("bool", True))
    elif p.type is bool:
        bad.append(("wrong type", "yes"))
    elif p.type is str:
        bad.append(("wrong type", 1))
    return bad


def check_parameters(cls: type[BaseStrategy], parameters: dict[str, Any]) -> list[CheckRow]:
    out: list[CheckRow] = []
    for label, given in (("defaults", {}), ("given", parameters)):
        try:
            first = cls(given).parameters
            again = cls(json.loads(json.dumps(first))).parameters
            ok = again == first and all(type(again[k]) is type(first[k]) for k in first)
            result = json.dumps(first) + (" round-trips through JSON" if ok else f" came back as {again!r}")
        except (ParameterError, TypeError, ValueError) as exc:
            ok, result = False, f"rejected: {exc}"
        out.append(CheckRow("parameters", label, result, ok))
    base = cls(parameters).parameters
    for p in cls.params:
        accepted = []
        for what, value in _bad_values(p):
            try:
                cls({**base, p.name: value})
            except (ParameterError, ValueError, TypeError):
                continue
            accepted.append(f"{what} {value!r}")
        unbounded = p.type in (int, float) and p.min is None and p.max is None
        if accepted:
            out.append(CheckRow("parameters", p.name, "accepts " + ", ".join(accepted), False))
        else:
            rng = f"[{p.min if p.min is not None else '-inf'}, {p.max if p.max is not None else 'inf'}]"
            out.append(CheckRow("parameters", p.name,
                                f"{p.type.__name__} {rng}: out-of-range and wrong-type values rejected"
                                + (" (no range declared)" if unbounded else ""), True))
    try:
        cls({**base, "__nope__": 1})
        out.append(CheckRow("parameters", "unknown name", "an unknown parameter name is accepted", False))
    except (ParameterError, ValueError, TypeError):
        out.append(CheckRow("parameters", "unknown name", "rejected", True))
    return out


def run_checks(cls: type[BaseStrategy], parameters: dict[str, Any], df: pd.DataFrame, *, rows: int = 2000,
               cuts: int = 20, seed: int = 0) -> CheckReport:
    """All checks of one strategy with `parameters` on candles `df` (CANDLE_COLUMNS, ascending close times)."""
    df = df.reset_index(drop=True)
    strategy = cls(parameters)
    report = CheckReport(cls.name, dict(strategy.parameters))
    report.rows.append(CheckRow("form", cls.form(), f"{len(df)} candles; warmup {strategy.warmup}, lookback "
                                f"{strategy.lookback if strategy.lookback is not None else 'whole history'}"))
    report.rows += check_lookahead(strategy, df, rows=rows, cuts=cuts, seed=seed)
    rec_rows, needed = check_recursion(strategy, df)
    report.rows += rec_rows
    report.warmup_needed = needed
    report.rows += check_parameters(cls, parameters)
    return report
