"""Strategy contract: parameters, the vectorized `compute`, and the per-candle `process_data` built on it (pure).

One logic, written in any of three forms (a subclass implements exactly one; `form()` says which):

* ``compute(close, high, low, open_, volume)`` over whole numpy arrays -> `StrategyOutput` (the fast form; built-ins).
* ``populate(df) -> df`` (freqtrade-style, pandas): return the frame with boolean ``buy`` and ``sell`` columns (both
  true on one row = hold), optionally ``confidence``; every other numeric column it adds is an indicator
  (`get_indicators()`). The base `compute` builds the frame from the arrays and calls it once per history.
* ``process_data(df) -> Signal`` for the LAST row only (the seed's contract). The base `compute` then evaluates it on
  every prefix df[:t+1] (the last `lookback` rows of it when the strategy declares one): exact, but O(n) calls of
  user code, so runs get a warning that this form is slow.

`signals(df)` runs `compute` once over a history (backtests, sweeps, bot ticks); `process_data(df)` (unless the
strategy wrote its own) runs it over the shortest tail of `df` that determines the last row and returns that row as a
`Signal`. So for every t the vectorized signal at t equals `process_data(df[:t+1])`, bit for bit, as long as every
indicator value at t depends only on rows <= t (no lookahead) and, for window indicators, only on the rows inside its
window (see `indicators.py`). `apps.bots.strategies.checks` verifies exactly that for any strategy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from apps.common.errors import ApplicationError
from apps.market.validation import CANDLE_COLUMNS

if TYPE_CHECKING:
    from apps.bots.trading.fills import FillRules
    from apps.bots.trading.fused import FusedRun

# The largest indicator window/span the built-ins accept (candles): 10,000 is a week of 1m or 14 months of 1h
# candles. A bound, not a taste: windows like 1e30 would otherwise be accepted and fail on every tick.
MAX_WINDOW = 10_000
MAX_EXACT_INT = 2**53  # integers a JSON number (float64) holds exactly


class Action(IntEnum):
    SELL = -1
    HOLD = 0
    BUY = 1

    @property
    def label(self) -> str:
        return self.name.lower()


ACTION_LABELS: dict[int, str] = {int(a): a.label for a in Action}


@dataclass
class Signal:
    """The decision for one closed candle. `indicators` holds the indicator values at that candle (None = undefined,
    e.g. during warm-up, so the dict is JSON-safe for storage)."""

    action: str
    confidence: float
    indicators: dict[str, float | None]
    price: float
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "confidence": self.confidence,
            "indicators": dict(self.indicators),
            "price": self.price,
            "timestamp": self.timestamp,
        }


@dataclass
class StrategyOutput:
    """What `compute` returns: one value per input row. action int8 (-1/0/1), confidence float64 in [0, 1]
    (0 for hold), indicators float64 arrays (NaN where undefined)."""

    action: np.ndarray
    confidence: np.ndarray
    indicators: dict[str, np.ndarray] = field(default_factory=dict)


class ParameterError(ApplicationError):
    """An invalid strategy parameter; the message names the strategy and the parameter (field `parameters.<name>`)."""

    def __init__(self, strategy: str, parameter: str | None, message: str) -> None:
        super().__init__(f"{strategy}: {message}", field=f"parameters.{parameter}" if parameter else "parameters")
        self.strategy = strategy
        self.parameter = parameter


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One declared parameter: its type (int, float, bool or str), default, bounds (inclusive) or choices."""

    name: str
    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def coerce(self, value: Any, strategy: str) -> Any:
        """Return `value` as this parameter's type, or raise ParameterError saying what is wrong."""
        where = f"parameter {self.name!r}"

        def fail(rule: str) -> ParameterError:
            return ParameterError(strategy, self.name, f"{where} must be {rule}, got {value!r}")

        if self.type is bool:
            if not isinstance(value, bool | np.bool_):
                raise fail(_TYPE_NAMES[bool])
            out: Any = bool(value)
        elif self.type is int:
            # bool is an int subclass in Python but never a valid count; 10.0 is accepted as 10, 10.5 is not.
            if isinstance(value, bool | np.bool_):
                raise fail(_TYPE_NAMES[int])
            if isinstance(value, numbers.Integral):
                out = int(value)
            elif isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
                out = int(value)
            else:
                raise fail(_TYPE_NAMES[int])
        elif self.type is float:
            if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
                raise fail(_TYPE_NAMES[float])
            out = float(value)
            if not math.isfinite(out):
                raise fail("a finite number")
        elif self.type is str:
            if not isinstance(value, str):
                raise fail(_TYPE_NAMES[str])
            out = value
        else:  # pragma: no cover - a schema error in the strategy itself
            raise TypeError(f"{strategy}: parameter {self.name!r} has unsupported type {self.type!r}")
        if self.type is int and abs(out) > MAX_EXACT_INT:  # even without a declared max: JSON-safe (float64-exact)
            raise fail(f"an integer within ±2**53 (the parameter's range: {self.min}..{self.max})")
        if self.min is not None and out < self.min:
            raise fail(f">= {self.min}")
        if self.max is not None and out > self.max:
            raise fail(f"<= {self.max}")
        if self.choices is not None and out not in self.choices:
            raise fail(f"one of {', '.join(repr(c) for c in self.choices)}")
        return out

    def parse(self, text: str, strategy: str) -> Any:
        """Parse a command-line string ("10", "2.5", "true") into this parameter's type, then validate it."""
        raw: Any = text
        if self.type in (int, float):
            try:
                raw = int(text) if self.type is int and text.strip().lstrip("+-").isdigit() else float(text)
            except ValueError:
                raise ParameterError(
                    strategy, self.name, f"parameter {self.name!r} must be {_TYPE_NAMES[self.type]}, got {text!r}"
                ) from None
        elif self.type is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                raw = True
            elif lowered in ("false", "0", "no", "off"):
                raw = False
        return self.coerce(raw, strategy)


IndicatorCache = dict[Hashable, np.ndarray]


class BaseStrategy:
    """Subclass, set `name` and `params`, implement one of `compute` / `populate` / `process_data` (and `warmup`,
    `lookback`, `startup_candles` when they are not the defaults), then `@register`."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: Closed candles before the current one that a bot must feed for the signal to be exact (< 1e-9 relative on
    #: every indicator) when `lookback` is None (recursive indicators). None = not declared: the bot uses its whole
    #: stored history. `manage.py check_strategy` measures it (the "warm-up needed" row).
    startup_candles: ClassVar[int | None] = None

    def __init__(self, parameters: Mapping[str, Any] | None = None) -> None:
        self.parameters: dict[str, Any] = self._validated(dict(parameters or {}))
        self._last_indicators: dict[str, pd.Series] = {}

    # ----- parameters ---------------------------------------------------------------------------------------------
    @classmethod
    def param_space(cls) -> tuple[Param, ...]:
        return tuple(cls.params)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params}

    @classmethod
    def parse_parameters(cls, raw: Mapping[str, str]) -> dict[str, Any]:
        """Strings (e.g. from `--param fast=10`) -> typed values; unknown names and bad values raise ParameterError."""
        by_name = {p.name: p for p in cls.params}
        out: dict[str, Any] = {}
        for key, text in raw.items():
            if key not in by_name:
                raise cls._unknown(key)
            out[key] = by_name[key].parse(text, cls.name or cls.__name__)
        return out

    @classmethod
    def _unknown(cls, key: str) -> ParameterError:
        known = ", ".join(p.name for p in cls.params) or "none"
        return ParameterError(cls.name or cls.__name__, key, f"unknown parameter {key!r} (expected: {known})")

    def _validated(self, given: dict[str, Any]) -> dict[str, Any]:
        label = self.name or type(self).__name__
        by_name = {p.name: p for p in self.params}
        for key in given:
            if key not in by_name:
                raise self._unknown(key)
        out = {p.name: p.coerce(given[p.name], label) if p.name in given else p.default for p in self.params}
        self.validate(out)
        return out

    def validate(self, params: dict[str, Any]) -> None:
        """Cross-parameter rules (e.g. fast < slow); raise `self.error(name, message)`. Default: none."""
        return None

    def error(self, parameter: str, message: str) -> ParameterError:
        return ParameterError(self.name or type(self).__name__, parameter, message)

    # ----- the one logic ------------------------------------------------------------------------------------------
    @property
    def warmup(self) -> int:
        """Candles needed before the first possible signal: the first non-hold can be at row index `warmup`.
        Default 0 (a class attribute `warmup = 20` in a user strategy overrides this property)."""
        return 0

    @property
    def history_needed(self) -> int | None:
        """Candles a bot must hand `signals` before the first candle it decides: `lookback` when finite, else the
        declared/measured `startup_candles` (None = all stored history). What bot warm-up uses."""
        lookback = self.lookback
        return int(lookback) if lookback is not None else self.startup_candles

    # ----- forms --------------------------------------------------------------------------------------------------
    @classmethod
    def form(cls) -> str:
        """"compute", "populate" or "process_data": the form this class implements (the first one overridden)."""
        if cls.compute is not BaseStrategy.compute:
            return "compute"
        if cls.populate is not BaseStrategy.populate:
            return "populate"
        if cls.process_data is not BaseStrategy.process_data:
            return "process_data"
        raise TypeError(f"strategy {cls.name or cls.__qualname__!r} must implement one of compute(close, high, low, "
                        "open_, volume), populate(df) or process_data(df)")

    @classmethod
    def form_warning(cls) -> str | None:
        """A warning for runs of this strategy (the process_data form is evaluated once per candle), else None."""
        if cls.form() == "process_data":
            return (f"strategy {cls.name!r} implements only process_data: it is evaluated on every prefix (exact but "
                    "slow, one Python call per candle); write populate(df) or compute(...) for speed")
        return None

    def populate(self, df: pd.DataFrame) -> pd.DataFrame:
        """The DataFrame form: return `df` with boolean `buy` / `sell` columns (+ indicator columns). Override it."""
        raise NotImplementedError

    @property
    def lookback(self) -> int | None:
        """Rows `process_data` needs to decide the last row exactly; None = the whole history (recursive indicators
        such as EMA/Wilder, whose value at t depends on every row <= t)."""
        return None

    def compute(
        self,
        close: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        open_: np.ndarray,
        volume: np.ndarray,
        *,
        cache: IndicatorCache | None = None,
        timestamp: np.ndarray | None = None,
    ) -> StrategyOutput:
        """Vectorized signals for every row. `cache` (one dict per dataset) memoizes indicator arrays by key, so a
        parameter sweep over one dataset computes each distinct indicator once. Override it (the fast form); the base
        implementation runs `populate` or `process_data` (`timestamp`: close times for the frame they see)."""
        frame = candle_frame(close, high, low, open_, volume, timestamp)
        if self.form() == "populate":
            return self._from_populate(frame)
        return self._from_prefixes(frame)

    def _from_populate(self, frame: pd.DataFrame) -> StrategyOutput:
        label = self.name or type(self).__name__
        n = len(frame)
        out = self.populate(frame.copy())
        if not isinstance(out, pd.DataFrame) or len(out) != n:
            raise ValueError(f"{label}: populate must return the frame it was given ({n} rows) with buy/sell columns")
        missing = [c for c in ("buy", "sell") if c not in out.columns]
        if missing:
            raise ValueError(f"{label}: populate returned no {' / '.join(missing)} column")
        buy = out["buy"].fillna(False).to_numpy(dtype=bool)
        sell = out["sell"].fillna(False).to_numpy(dtype=bool)
        action = np.where(buy & ~sell, Action.BUY, np.where(sell & ~buy, Action.SELL, Action.HOLD))
        conf = (out["confidence"].to_numpy(dtype=np.float64) if "confidence" in out.columns
                else np.ones(n, dtype=np.float64))
        skip = {*CANDLE_COLUMNS, "buy", "sell", "confidence"}
        indicators = {
            str(c): np.ascontiguousarray(out[c].to_numpy(dtype=np.float64))
            for c in out.columns
            if c not in skip and pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
        }
        act, conf = finish(action, conf, self.warmup_mask(n))
        return StrategyOutput(act, conf, indicators)

    def _from_prefixes(self, frame: pd.DataFrame) -> StrategyOutput:
        n = len(frame)
        lookback = self.lookback
        action = np.zeros(n, dtype=np.int8)
        conf = np.zeros(n, dtype=np.float64)
        indicators: dict[str, np.ndarray] = {}
        codes = {a.label: int(a) for a in Action}
        for t in range(n):
            lo = 0 if lookback is None else max(0, t + 1 - int(lookback))
            sig = self.process_data(frame.iloc[lo:t + 1])
            action[t] = codes[sig.action]
            conf[t] = sig.confidence
            for key, value in sig.indicators.items():
                arr = indicators.get(key)
                if arr is None:
                    arr = indicators[key] = np.full(n, np.nan)
                arr[t] = np.nan if value is None else value
        act, conf = finish(action, conf, self.warmup_mask(n))
        return StrategyOutput(act, conf, indicators)

    # ----- the optional sweep kernel -------------------------------------------------------------------------------
    def sweep_kernel(
        self,
        close: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        open_: np.ndarray,
        volume: np.ndarray,
        rules: FillRules,
        *,
        cache: IndicatorCache | None = None,
    ) -> FusedRun | None:
        """Optional fast path of parameter sweeps: the fills and the equity pass of `rules` over these candles with
        this strategy's decisions made inside the same compiled loop (drive `apps.bots.trading.fused.fused_block`
        block by block), returning its FusedRun. It must equal `fused.run_actions(compute(...).action)` bit for
        bit. Default None: the sweep runs `compute` and then the generic fused pass over its actions."""
        return None

    def run_sweep_kernel(self, close, high, low, open_, volume, rules, *, cache=None) -> FusedRun | None:
        """What the sweep calls: `sweep_kernel`'s result when the kernel belongs to the `compute` in effect (a
        subclass that overrides `compute` below the class that wrote the kernel may decide otherwise: None)."""
        for klass in type(self).__mro__:
            if "sweep_kernel" in vars(klass):
                if klass is BaseStrategy:
                    return None
                return self.sweep_kernel(close, high, low, open_, volume, rules, cache=cache)
            if "compute" in vars(klass):
                return None
        return None

    @staticmethod
    def cached(cache: IndicatorCache | None, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        """Memoize `make()` under `key`; cached arrays are read-only so no caller can corrupt another's input."""
        if cache is None:
            return make()
        found = cache.get(key)
        if found is None:
            found = make()
            found.flags.writeable = False
            cache[key] = found
        return found

    def warmup_mask(self, n: int) -> np.ndarray:
        """True on rows that may carry a signal (index >= warmup)."""
        return np.arange(n) >= self.warmup

    # ----- frames -------------------------------------------------------------------------------------------------
    def frame_kwargs(self, timestamp: Any) -> dict[str, Any]:
        """Extra `compute` keywords for this strategy's form: the close times, which the frame forms show their code
        (the fast form takes arrays only). Callers holding timestamps pass `**strategy.frame_kwargs(ts)`."""
        if type(self).compute is not BaseStrategy.compute:
            return {}
        return {"timestamp": np.asarray(timestamp, dtype=np.int64)}

    @staticmethod
    def _arrays(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
        missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"candle frame is missing column(s) {', '.join(missing)}")
        return tuple(np.ascontiguousarray(df[c].to_numpy(dtype=np.float64)) for c in ("close", "high", "low", "open",
                                                                                        "volume"))

    def signals(self, df: pd.DataFrame, *, cache: IndicatorCache | None = None) -> pd.DataFrame:
        """Vectorized signals for every row of `df`: columns action (int8), confidence, then the indicators."""
        close, high, low, open_, volume = self._arrays(df)
        out = self.compute(close, high, low, open_, volume, cache=cache, **self.frame_kwargs(df["timestamp"]))
        frame = pd.DataFrame({"action": out.action.astype(np.int8), "confidence": out.confidence}, index=df.index)
        for key, values in out.indicators.items():
            frame[key] = values
        self._last_indicators = {k: pd.Series(v, index=df.index, name=k) for k, v in out.indicators.items()}
        return frame

    def process_data(self, df: pd.DataFrame) -> Signal:
        """Decide the LAST row of `df` (the newest closed candle). Computes on the last `lookback` rows only; for
        recursive indicators (lookback None) on all of `df`, O(len(df)) in compiled code (~1 ms per 100k rows)."""
        if len(df) == 0:
            raise ValueError(f"{self.name}: process_data needs at least one candle, got an empty frame")
        lookback = self.lookback
        tail = df if lookback is None or len(df) <= lookback else df.iloc[len(df) - lookback:]
        close, high, low, open_, volume = self._arrays(tail)
        out = self.compute(close, high, low, open_, volume, **self.frame_kwargs(tail["timestamp"]))
        self._last_indicators = {k: pd.Series(v, index=tail.index, name=k) for k, v in out.indicators.items()}
        action = int(out.action[-1])
        values: dict[str, float | None] = {}
        for key, arr in out.indicators.items():
            v = float(arr[-1])
            values[key] = v if math.isfinite(v) else None
        return Signal(
            action=ACTION_LABELS[action],
            confidence=float(out.confidence[-1]),
            indicators=values,
            price=float(close[-1]),
            timestamp=int(tail["timestamp"].iloc[-1]),
        )

    def get_indicators(self) -> dict[str, pd.Series]:
        """Indicator series from the last `signals`/`process_data` call, indexed like the rows they were computed on
        (for process_data: the tail of df it used)."""
        return dict(self._last_indicators)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
        return f"{type(self).__name__}({args})"


def candle_frame(close: np.ndarray, high: np.ndarray, low: np.ndarray, open_: np.ndarray, volume: np.ndarray,
                 timestamp: np.ndarray | None = None) -> pd.DataFrame:
    """The candle DataFrame (CANDLE_COLUMNS, RangeIndex) the frame forms see; timestamp None -> row numbers."""
    n = len(close)
    ts = np.arange(n, dtype=np.int64) if timestamp is None else np.asarray(timestamp, dtype=np.int64)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume})


def finish(action: np.ndarray, confidence: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Common tail of `compute`: hold outside `valid`, confidence 0 on holds, clipped to [0, 1], int8 actions."""
    act = np.where(valid, action, 0).astype(np.int8)
    conf = np.where(act != 0, np.clip(np.nan_to_num(confidence, nan=0.5), 0.0, 1.0), 0.0)
    return act, conf.astype(np.float64)
