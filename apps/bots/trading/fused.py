"""One run's fills + the equity pass of its metrics without per-candle arrays (pure: numpy + numba only).

What a parameter sweep needs per set is the metrics, not the equity curve. So the candles are walked block by block
(FUSED_BLOCK candles): `fills.fill_block` (simulate's own fill loop) writes the block's equity into a small
cache-resident buffer and `equity.stats_block` consumes it at once. Same `_bar` calls, same equity values, same
helpers in the same order as `simulate` + `compute_metrics`: bit-identical results.

The actions come from the caller, block by block: `run_actions` takes a precomputed action array (any strategy); a
strategy's `sweep_kernel` may instead decide each block inside its own compiled loop and feed `fused_block` (e.g.
the line crossovers, apps/bots/strategies/sma_cross.py). Never imports Django, tradebot or any models/services.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from apps.bots.trading.equity import K_WINDOW, STATS_BLOCK, dd_init, moments_init, shift_of, stats_block, stats_final
from apps.bots.trading.fills import fill_block

#: Candles per block (> K_WINDOW: the first block fixes the moments' shift).
FUSED_BLOCK = STATS_BLOCK


class FusedRun(NamedTuple):
    """What a fused pass returns: the equity pass (`equity.equity_stats` layout), the fill event rows (as
    `SimResult.events`), the fees paid and the final equity (cash + amount * last close)."""

    stats: tuple
    events: np.ndarray
    fees_paid: float
    final_equity: float


@njit(cache=True, error_model="numpy")
def fused_start(n, initial):
    """The running state of a fused pass over n candles (pass it through `fused_block`, then `fused_end`)."""
    rec = np.empty((n + 1, 6), np.float64)
    buf = np.empty(FUSED_BLOCK, np.float64)
    rbuf = np.empty(FUSED_BLOCK, np.float64)
    return (rec, 0, buf, rbuf, 0.0, moments_init(), initial, dd_init(initial), (initial, 0.0, 0.0, -1, 0.0))


@njit(cache=True, error_model="numpy")
def fused_block(run, b0, n, initial, open_, high, low, close, act, fee, slippage, fraction, use_sl, sl, use_tp, tp):
    """Fills + equity pass of the block starting at candle b0 (slices of FUSED_BLOCK candles or fewer, the last)."""
    rec, m, buf, rbuf, k, mom, prev, st, state = run
    size = close.shape[0]
    state, m = fill_block(b0, open_, high, low, close, act, buf[:size], state, rec, m, n, fee, slippage, fraction,
                          use_sl, sl, use_tp, tp)
    if b0 == 0:
        k = shift_of(buf, min(n, K_WINDOW), initial)
    prev, mom, st = stats_block(buf[:size], b0, prev, k, mom, st, rbuf)
    return (rec, m, buf, rbuf, k, mom, prev, st, state)


@njit(cache=True, error_model="numpy")
def fused_end(run, n):
    """(stats, events, fees_paid, final equity) of a finished pass."""
    rec, m, buf, rbuf, k, mom, prev, st, state = run
    return stats_final(n, k, mom, st), rec[:m].copy(), state[4], prev


@njit(cache=True, error_model="numpy")
def _run_actions(close, open_, high, low, action, initial, fee, slippage, fraction, use_sl, sl, use_tp, tp):
    n = close.shape[0]
    run = fused_start(n, initial)
    for b0 in range(0, n, FUSED_BLOCK):
        b1 = min(b0 + FUSED_BLOCK, n)
        run = fused_block(run, b0, n, initial, open_[b0:b1], high[b0:b1], low[b0:b1], close[b0:b1], action[b0:b1],
                          fee, slippage, fraction, use_sl, sl, use_tp, tp)
    return fused_end(run, n)


def run_actions(close: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, action: np.ndarray,
                rules) -> FusedRun:
    """The fused pass over precomputed actions (int8 -1/0/1, one per candle) under `rules` (a FillRules)."""
    act = np.ascontiguousarray(action, dtype=np.int8)
    return FusedRun(*_run_actions(close, open_, high, low, act, *rule_args(rules)))


def rule_args(rules) -> tuple:
    """(initial balance, fee, slippage, fraction, use_sl, sl, use_tp, tp): a FillRules as compiled-kernel arguments."""
    return (float(rules.initial_balance), *rules._kernel_args())
