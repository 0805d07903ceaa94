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



@njit(cache=True)
def cross_run(fb, sb, ab, first_j, tol_rel, d0, t0):  # pragma: no cover - compiled
    """The crossover rule over one run of candles: ab[j] = +1 / -1 / 0 for lines fb, sb (branch-free booleans, same
    results as `cross_signals`); rows j < first_j are warm-up. d0, t0: line gap and tolerance of the candle before
    the run (NaN at the start). Returns them for the next run. Shared by the fused kernel and the sweep."""
    for j in range(ab.shape[0]):
        s1 = sb[j]
        d1 = fb[j] - s1
        t1 = abs(s1) * tol_rel
        live = j >= first_j
        up = (d1 > t1) & (d0 <= t0) & live
        down = (d1 < -t1) & (d0 >= -t0) & live
        ab[j] = np.int8(up) - np.int8(down)
        d0 = d1
        t0 = t1
    return d0, t0

@njit(cache=True)
def _cross_signal(f0, s0, f1, s1, tol_rel):
    """The crossover decision at t from the lines at t-1 (f0, s0) and t (f1, s1): 1 buy, -1 sell, 0 hold.

    Exactly `crossed_above` / `crossed_below` with tol = |slow| * tol_rel (NaN compares false: never a cross)."""
    d1 = f1 - s1
    t1 = abs(s1) * tol_rel
    if d1 > t1:
        return 1 if f0 - s0 <= abs(s0) * tol_rel else 0
    if d1 < -t1:
        return -1 if f0 - s0 >= -(abs(s0) * tol_rel) else 0
    return 0


@njit(cache=True, error_model="numpy")
def _confidence(f, s):
    """`cross_confidence` at one row, then `finish`'s NaN -> 0.5 and clip to [0, 1] (same operations, same bits)."""
    c = 0.5 + 0.5 * min(1.0, (abs(f - s) / abs(s)) / FULL_CONFIDENCE_SPREAD)
    if c != c:
        return 0.5
    return min(max(c, 0.0), 1.0)


@njit(cache=True, error_model="numpy")
def _cross_kernel(fast, slow, warmup, tol_rel):
    """One pass: crossover with the relative tolerance, warm-up, confidence (0 on holds). int8 actions."""
    n = fast.shape[0]
    action = np.zeros(n, np.int8)
    conf = np.zeros(n, np.float64)
    for t in range(max(warmup, 1), n):
        a = _cross_signal(fast[t - 1], slow[t - 1], fast[t], slow[t], tol_rel)
        if a != 0:
            action[t] = a
            conf[t] = _confidence(fast[t], slow[t])
    return action, conf


def cross_signals(fast: np.ndarray, slow: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(action int8, confidence) of a two-line crossover: buy when fast rises above slow by more than
    CROSS_TOLERANCE x |slow|, sell when it falls below by more, none before row `warmup`; the values of
    crossed_above/crossed_below + cross_confidence + finish, fused into one compiled pass."""
    return _cross_kernel(np.ascontiguousarray(fast, dtype=np.float64), np.ascontiguousarray(slow, dtype=np.float64),
                         int(warmup), CROSS_TOLERANCE)


_BLOCK = 1024  # candles per block of the fused kernel: its working set (~6 arrays x 8 KiB) stays in L1/L2


@njit(cache=True, error_model="numpy")
def _sma_cross_limbs(x, nf, ns, inv_u, u, k, warmup, tol_rel):
    """SMA(nf), SMA(ns), actions and confidence in ONE blocked pass over the closes (no special values in x).

    The same exact-limb definition as indicators._window_sum_limbs (the exact window sum of the integer limbs, ONE
    rounding to a double, * u exact, / n), so the lines are bit-identical to `indicators.sma`; the crossover is
    `_cross_kernel`'s rule with the same operations (branch-free booleans instead of nested ifs: same results).
    Per block of >= 1024 candles, short loops that each run at their own speed on data still in cache (one long
    loop measured 2x slower: the divisions and the limb split do not vectorize inside the loop-carried sums):
    1. the limbs of x (vectorized) after the previous block's last `span` limbs (the windows' outgoing values);
    2. the exact running limb sums of both windows (the only loop-carried work), rounded to the window sums;
    3. the divisions by n (vectorized: scalar divisions cost ~5 cycles per value each);
    4. the crossover decision; 5. on the rare crossing rows (found 8 actions at a time), the confidence."""
    size = x.shape[0]
    limb = 2.0**k
    inv_limb = 2.0**-k
    fdiv = float(nf)
    sdiv = float(ns)
    fast = np.empty(size)
    slow = np.empty(size)
    action = np.empty(size, np.int8)
    conf = np.empty(size)
    span = max(nf, ns)
    block = max(_BLOCK, span)
    hr = np.zeros(span + block)  # limbs: [0, span) the previous rows (zeros before the first), then the block
    lr = np.zeros(span + block)
    hf = 0.0
    lf = 0.0
    hs = 0.0
    ls = 0.0
    first = max(warmup, 1)
    d0 = np.nan
    t0 = np.nan
    for b0 in range(0, size, block):
        b1 = min(b0 + block, size)
        m = b1 - b0
        xb = x[b0:b1]
        fb = fast[b0:b1]
        sb = slow[b0:b1]
        ab = action[b0:b1]
        cb = conf[b0:b1]
        if b0 > 0:
            for j in range(span):
                hr[j] = hr[block + j]
                lr[j] = lr[block + j]
        hb = hr[span:span + m]
        lb = lr[span:span + m]
        for j in range(m):
            xs = xb[j] * inv_u
            hv = np.floor(xs * inv_limb)
            hb[j] = hv
            lb[j] = xs - hv * limb
        hfo = hr[span - nf:span - nf + m]
        lfo = lr[span - nf:span - nf + m]
        hso = hr[span - ns:span - ns + m]
        lso = lr[span - ns:span - ns + m]
        for j in range(m):
            hf += hb[j] - hfo[j]
            lf += lb[j] - lfo[j]
            hs += hb[j] - hso[j]
            ls += lb[j] - lso[j]
            fb[j] = (hf * limb + lf) * u
            sb[j] = (hs * limb + ls) * u
        for j in range(m):
            fb[j] = fb[j] / fdiv
        for j in range(m):
            sb[j] = sb[j] / sdiv
        for t in range(b0, min(b1, nf - 1)):
            fast[t] = np.nan
        for t in range(b0, min(b1, ns - 1)):
            slow[t] = np.nan
        d0, t0 = cross_run(fb, sb, ab, first - b0, tol_rel, d0, t0)
        for j in range(m):
            cb[j] = 0.0
        m8 = m // 8 * 8
        words = ab[:m8].view(np.int64)
        for w in range(m8 // 8):
            if words[w] != 0:
                for j in range(8 * w, 8 * w + 8):
                    if ab[j] != 0:
                        cb[j] = _confidence(fb[j], sb[j])
        for j in range(m8, m):
            if ab[j] != 0:
                cb[j] = _confidence(fb[j], sb[j])
    return fast, slow, action, conf


def sma_cross_lines(close: np.ndarray, fast_n: int, slow_n: int, warmup: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(SMA fast, SMA slow, action, confidence) = (sma, sma, *cross_signals) bit for bit, in one fused pass when the
    closes fit the exact-limb fast path (any finite prices of a normal range), else composed from the general path."""
    x = np.ascontiguousarray(close, dtype=np.float64)
    path, inv_u, u, k, special = ind._limb_plan(x, max(fast_n, slow_n))
    if path == "limbs" and not special and x.shape[0]:
        return _sma_cross_limbs(x, int(fast_n), int(slow_n), inv_u, u, int(k), int(warmup), CROSS_TOLERANCE)
    fast, slow = ind.window_means(x, [fast_n, slow_n])
    return (fast, slow, *cross_signals(fast, slow, warmup))


@njit(cache=True, error_model="numpy")
def _cross_fused(close, open_, high, low, fast, slow, warmup, tol_rel, initial, fee, slippage, fraction, use_sl, sl,
                 use_tp, tp):
    """The sweep kernel of a two-line crossover: per block, the block's decisions (`cross_run`, branch-free, off the
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
        d0, t0 = cross_run(fast[b0:b1], slow[b0:b1], act, first - b0, tol_rel, d0, t0)
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

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        fast_n, slow_n = self.parameters["fast"], self.parameters["slow"]
        fast_key, slow_key = ("sma", "close", fast_n), ("sma", "close", slow_n)
        if cache is None or (fast_key not in cache and slow_key not in cache):
            # one fused pass: both lines, the crossover and the confidence (sma_cross_lines)
            lines = sma_cross_lines(close, fast_n, slow_n, self.warmup)
            fast = self.cached(cache, fast_key, lambda: lines[0])
            slow = self.cached(cache, slow_key, lambda: lines[1])
            act, conf = lines[2], lines[3]
        else:
            fast = self.cached(cache, fast_key, lambda: ind.sma(close, fast_n))
            slow = self.cached(cache, slow_key, lambda: ind.sma(close, slow_n))
            act, conf = cross_signals(fast, slow, self.warmup)
        return StrategyOutput(act, conf, {"sma_fast": fast, "sma_slow": slow})

    def sweep_kernel(self, close, high, low, open_, volume, rules, *, cache: IndicatorCache | None = None
                     ) -> FusedRun:
        """Both SMAs (from the sweep's shared cache, same keys and values as `compute`; missing ones from one scan of
        the closes), then the crossover decided inside the fused fills + equity pass (`_cross_fused`)."""
        fast_n, slow_n = int(self.parameters["fast"]), int(self.parameters["slow"])
        keys = (("sma", "close", fast_n), ("sma", "close", slow_n))
        lines = [None if cache is None else cache.get(key) for key in keys]
        missing = [n for line, n in zip(lines, (fast_n, slow_n), strict=True) if line is None]
        if missing:
            made = dict(zip(missing, ind.window_means(close, missing), strict=True))
            lines = [line if line is not None else self.cached(cache, ("sma", "close", n), lambda v=made[n]: v)
                     for line, n in zip(lines, (fast_n, slow_n), strict=True)]
        return FusedRun(*_cross_fused(close, open_, high, low, lines[0], lines[1], int(self.warmup), CROSS_TOLERANCE,
                                      *rule_args(rules)))
