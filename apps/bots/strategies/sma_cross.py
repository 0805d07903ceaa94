"""Simple moving-average crossover (trend following)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import MAX_WINDOW, BaseStrategy, IndicatorCache, Param, StrategyOutput
from apps.bots.strategies.registry import register
from apps.bots.trading.fused import FUSED_BLOCK, FusedRun, fused_block, fused_end, fused_start, rule_args

#: Lines closer than this fraction of the slow line count as equal (float noise, not a cross).
CROSS_TOLERANCE = 1e-9
#: Relative line separation at which a cross gets full confidence.
FULL_CONFIDENCE_SPREAD = 0.005


def cross_confidence(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """0.5 + 0.5 * min(1, |fast - slow| / slow / 0.005): 0.5 for a bare cross, 1.0 once the lines are 0.5 % apart."""
    spread = np.abs(fast - slow) / np.abs(slow)
    return 0.5 + 0.5 * np.minimum(1.0, spread / FULL_CONFIDENCE_SPREAD)



@njit(cache=True, error_model="numpy")
def _confidence(f, s):
    """`cross_confidence` at one row, then `finish`'s NaN -> 0.5 and clip to [0, 1] (same operations, same bits)."""
    c = 0.5 + 0.5 * min(1.0, (abs(f - s) / abs(s)) / FULL_CONFIDENCE_SPREAD)
    if c != c:
        return 0.5
    return min(max(c, 0.0), 1.0)


@njit(cache=True, error_model="numpy")
def _cross_kernel(fast, slow, warmup, tol_rel):
    """The crossover (`indicators.cross_run`, relative tolerance, warm-up), then the confidence on its rare signal
    rows (0 on holds). int8 actions."""
    n = fast.shape[0]
    action = np.empty(n, np.int8)
    ind.cross_run(fast, slow, action, max(warmup, 1), tol_rel, np.nan, np.nan)
    conf = np.zeros(n, np.float64)
    for t in range(n):
        if action[t] != 0:
            conf[t] = _confidence(fast[t], slow[t])
    return action, conf


def cross_signals(fast: np.ndarray, slow: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(action int8, confidence) of a two-line crossover: buy when fast rises above slow by more than
    CROSS_TOLERANCE x |slow|, sell when it falls below by more, none before row `warmup`; the values of
    crossed_above/crossed_below + cross_confidence + finish, in one compiled pass."""
    return _cross_kernel(np.ascontiguousarray(fast, dtype=np.float64), np.ascontiguousarray(slow, dtype=np.float64),
                         int(warmup), CROSS_TOLERANCE)


@njit(cache=True, error_model="numpy")
def _cross_fused(close, open_, high, low, fast, slow, warmup, tol_rel, initial, fee, slippage, fraction, use_sl, sl,
                 use_tp, tp):
    """The sweep kernel of a two-line crossover: per block, the block's decisions (`ind.cross_run`, off the
    fill loop's critical path) into a small buffer, then `fused.fused_block` (fills + equity pass). Same actions as
    `cross_signals`, so the same FusedRun as `fused.run_actions` over them."""
    n = close.shape[0]
    run = fused_start(n, initial)
    abuf = np.zeros(FUSED_BLOCK, np.int8)
    first = max(warmup, 1)
    d0 = np.nan
    t0 = np.nan
    for b0 in range(0, n, FUSED_BLOCK):
        b1 = min(b0 + FUSED_BLOCK, n)
        act = abuf[:b1 - b0]
        d0, t0 = ind.cross_run(fast[b0:b1], slow[b0:b1], act, first - b0, tol_rel, d0, t0)
        run = fused_block(run, b0, n, initial, open_[b0:b1], high[b0:b1], low[b0:b1], close[b0:b1], act, fee,
                          slippage, fraction, use_sl, sl, use_tp, tp)
    return fused_end(run, n)


class LineCross(BaseStrategy):
    """A fast line crossing a slow one (sma_cross, ema_cross): parameters fast < slow, first signal at t = slow."""

    def validate(self, params: dict[str, Any]) -> None:
        if params["fast"] >= params["slow"]:
            raise self.error("fast", f"parameter 'fast' must be < slow ({params['slow']}), got {params['fast']}")

    @property
    def warmup(self) -> int:
        return int(self.parameters["slow"])


@register
class SmaCross(LineCross):
    """Buy/sell on SMA(fast) crossing SMA(slow).

    Exact rule, for candle t (SMA(n)[t] = plain mean of close[t-n+1..t], undefined for t < n-1):
    - buy  when SMA(fast)[t] > SMA(slow)[t] and SMA(fast)[t-1] <= SMA(slow)[t-1];
    - sell when SMA(fast)[t] < SMA(slow)[t] and SMA(fast)[t-1] >= SMA(slow)[t-1];
    - otherwise hold. ">" means "by more than 1e-9 x SMA(slow)" (closer lines are equal: float noise).
    The first possible signal is at t = slow (it needs both SMAs at t-1): warmup = slow, lookback = slow + 1 rows.
    Confidence: 0.5 + 0.5 * min(1, |SMA(fast) - SMA(slow)| / SMA(slow) / 0.005); hold = 0.
    """

    name = "sma_cross"
    params = (
        Param("fast", int, 10, min=1, max=MAX_WINDOW, help="fast SMA window (candles)"),
        Param("slow", int, 50, min=2, max=MAX_WINDOW, help="slow SMA window (candles), > fast"),
    )

    @property
    def lookback(self) -> int:
        return int(self.parameters["slow"]) + 1

    def lines(self, close: np.ndarray, cache: IndicatorCache | None) -> tuple[np.ndarray, np.ndarray]:
        """(SMA fast, SMA slow): from `cache` when there, the missing ones from one scan of the closes."""
        ns = (int(self.parameters["fast"]), int(self.parameters["slow"]))
        found = [None if cache is None else cache.get(("sma", "close", n)) for n in ns]
        missing = [n for line, n in zip(found, ns, strict=True) if line is None]
        made = dict(zip(missing, ind.window_means(close, missing), strict=True))
        fast, slow = (line if line is not None else self.cached(cache, ("sma", "close", n), lambda v=made[n]: v)
                      for line, n in zip(found, ns, strict=True))
        return fast, slow

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        fast, slow = self.lines(close, cache)
        act, conf = cross_signals(fast, slow, self.warmup)
        return StrategyOutput(act, conf, {"sma_fast": fast, "sma_slow": slow})

    def sweep_kernel(self, close, high, low, open_, volume, rules, *, cache: IndicatorCache | None = None
                     ) -> FusedRun:
        """Both SMAs (shared with `compute` through the sweep's cache), then the crossover decided inside the fused
        fills + equity pass (`_cross_fused`): no action or confidence arrays."""
        fast, slow = self.lines(close, cache)
        return FusedRun(*_cross_fused(close, open_, high, low, fast, slow, int(self.warmup), CROSS_TOLERANCE,
                                      *rule_args(rules)))
