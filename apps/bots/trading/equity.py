"""The equity pass of the metrics: per-candle returns' moments and the drawdowns, in one streaming pass.

Pure numba, no Django. Three callers feed the SAME helpers the SAME equity values in the same order, so their results
are bit-identical: `simulate` (fills.py) right after its fill loop writes each block of equity, `equity_stats` over a
stored equity array (compute_metrics of a SimResult built elsewhere), and the sweep's fused kernel over a
cache-resident block buffer. Blocks of STATS_BLOCK candles: the per-candle returns r_i = E_i / E_(i-1) - 1 are
computed for a whole block first (one vectorized loop; a division per candle costs ~5 cycles scalar), then one
sequential loop adds them to the shifted sums and steps the drawdown state (the definitions are in metrics.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

STATS_BLOCK = 4096  # candles per block; > K_WINDOW, so the first block fixes the moments' shift

K_WINDOW = 1000  # the shift of the return moments is the mean of the first K_WINDOW returns


@njit(cache=True)
def shift_of(first: np.ndarray, m0: int, initial: float) -> float:
    """K = mean of the first m0 per-candle returns (first[i] = equity after candle i)."""
    k = 0.0
    prev = initial
    for i in range(m0):
        k += first[i] / prev - 1.0
        prev = first[i]
    return k / m0


LANES = 4  # the return sums are kept in 4 interleaved partial sums (candle i -> lane i % 4): no add-latency chain


@njit(cache=True)
def moments_init():
    """(s1, s2, d2) per lane: sums of x = r - K, of x^2 and of min(r, 0)^2."""
    return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@njit(cache=True)
def moments_step(r, k, s1, s2, d2):
    """One return into one lane's shifted sums (no cancellation when K is near the mean) and downside sum."""
    x = r - k
    m = min(r, 0.0)
    return s1 + x, s2 + x * x, d2 + m * m


@njit(cache=True, error_model="numpy")
def moments_block(r, mom, k):
    """The returns r (the first at a candle index divisible by LANES) into the lane sums `mom`."""
    a0, a1, a2, a3, q0, q1, q2, q3, w0, w1, w2, w3 = mom
    m = r.shape[0]
    j = 0
    while j + 4 <= m:
        a0, q0, w0 = moments_step(r[j], k, a0, q0, w0)
        a1, q1, w1 = moments_step(r[j + 1], k, a1, q1, w1)
        a2, q2, w2 = moments_step(r[j + 2], k, a2, q2, w2)
        a3, q3, w3 = moments_step(r[j + 3], k, a3, q3, w3)
        j += 4
    if j < m:
        a0, q0, w0 = moments_step(r[j], k, a0, q0, w0)
    if j + 1 < m:
        a1, q1, w1 = moments_step(r[j + 1], k, a1, q1, w1)
    if j + 2 < m:
        a2, q2, w2 = moments_step(r[j + 2], k, a2, q2, w2)
    return (a0, a1, a2, a3, q0, q1, q2, q3, w0, w1, w2, w3)


@njit(cache=True)
def moments_final(n, k, mom):
    """(mean, std ddof=1, downside deviation) of the n returns; lanes combined in a fixed order."""
    a0, a1, a2, a3, q0, q1, q2, q3, w0, w1, w2, w3 = mom
    s1 = (a0 + a1) + (a2 + a3)
    s2 = (q0 + q1) + (q2 + q3)
    d2 = (w0 + w1) + (w2 + w3)
    mean = k + s1 / n
    std = math.sqrt(max(s2 - s1 * s1 / n, 0.0) / (n - 1)) if n > 1 else math.nan
    return mean, std, math.sqrt(d2 / n)


@njit(cache=True)
def dd_init(initial):
    """Drawdown state: peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep,
    sum_depth, longest, lg_start, lg_end. The initial balance is the first peak (index 0 stands for it)."""
    return (initial, 0, False, 0.0, 0, 0.0, 0, 0, -1, 0, 0.0, -1, 0, 0)


@njit(cache=True)
def _close_episode(st, last, end_mark):
    """End the drawdown episode that is open in `st` at candle `last`: its depth (trough / peak - 1) counts toward the
    average and the maximum (which records `end_mark` as its end: the recovery candle, or -1 when never recovered),
    and its length (peak to `last`) toward the longest."""
    (peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
     lg_start, lg_end) = st
    depth = trough / peak - 1.0
    sum_depth += depth
    n_ep += 1
    if depth < max_dd:
        max_dd = depth
        dd_peak = peak_idx
        dd_trough = trough_idx
        dd_end = end_mark
    if last - peak_idx > longest:
        longest = last - peak_idx
        lg_start = peak_idx
        lg_end = last
    return (peak, peak_idx, False, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
            lg_start, lg_end)


@njit(cache=True)
def dd_step(i, e, st):
    """One candle of the drawdown pass. No division per candle: within an episode the peak is fixed, so its deepest
    point is its lowest equity (depth = trough / peak - 1, computed once per episode)."""
    if e >= st[0] and st[2]:
        st = _close_episode(st, i, i)
    (peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
     lg_start, lg_end) = st
    if e >= peak:
        peak = e
        peak_idx = i
    elif not in_dd:
        in_dd = True
        trough = e
        trough_idx = i
    elif e < trough:
        trough = e
        trough_idx = i
    return (peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
            lg_start, lg_end)


_INF_BITS = 0x7FF0000000000000


@njit(cache=True)
def _bits(v):
    return np.array([v]).view(np.int64)[0]


@njit(cache=True)
def dd_block(e, i0, st):
    """`dd_step` over the candles of e (the first at index i0). Shortcut, same result: when every value is positive,
    finite and below the running peak (no new high in the block: the common case), only the trough can move, to
    the block's first minimum; found with integer min/max over the float bits (the bit order of positive floats is
    their value order, and integer reductions vectorize where float ones do not)."""
    peak = st[0]
    if 0.0 < peak < np.inf:
        bits = e.view(np.int64)
        lo = bits[0]
        hi = bits[0]
        for j in range(1, bits.shape[0]):
            lo = min(lo, bits[j])
            hi = max(hi, bits[j])
        if lo > 0 and hi < _bits(peak):
            jmin = 0
            while bits[jmin] != lo:
                jmin += 1
            low = e[jmin]
            (peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
             lg_start, lg_end) = st
            if not in_dd or low < trough:
                trough = low
                trough_idx = i0 + jmin
            return (peak, peak_idx, True, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth,
                    longest, lg_start, lg_end)
    for j in range(e.shape[0]):
        st = dd_step(i0 + j, e[j], st)
    return st


@njit(cache=True)
def dd_final(n, st):
    """(max_dd, dd_peak, dd_trough, dd_end (-1 = not recovered), avg_depth, lg_start, lg_end) after n candles."""
    if st[2]:
        st = _close_episode(st, n - 1, -1)
    (peak, peak_idx, in_dd, trough, trough_idx, max_dd, dd_peak, dd_trough, dd_end, n_ep, sum_depth, longest,
     lg_start, lg_end) = st
    avg_depth = sum_depth / n_ep if n_ep > 0 else 0.0
    return max_dd, dd_peak, dd_trough, dd_end, avg_depth, lg_start, lg_end


@njit(cache=True, error_model="numpy")
def stats_block(e, i0, prev, k, mom, st, rbuf):
    """Feed equity values e (candles i0, i0+1, ...; i0 divisible by LANES; E before them = prev) into the moments
    and the drawdown state. Returns (last equity, mom, st). rbuf: scratch of at least len(e) floats."""
    m = e.shape[0]
    r = rbuf[:m]
    r[0] = e[0] / prev - 1.0
    for j in range(1, m):  # vectorized: no loop-carried state
        r[j] = e[j] / e[j - 1] - 1.0
    return e[m - 1], moments_block(r, mom, k), dd_block(e, i0, st)


@njit(cache=True, error_model="numpy")
def stats_final(n, k, mom, st):
    """The stats tuple of `equity_stats` from the running state after n candles."""
    mean, std, downside = moments_final(n, k, mom)
    max_dd, dd_peak, dd_trough, dd_end, avg_depth, lg_start, lg_end = dd_final(n, st)
    return mean, std, downside, max_dd, dd_peak, dd_trough, dd_end, avg_depth, lg_start, lg_end


@njit(cache=True, error_model="numpy")
def equity_stats(equity, initial):
    """One pass over the equity: (mean, std, downside, max_dd, dd_peak, dd_trough, dd_end, avg_depth, lg_start,
    lg_end); returns r_i = E_i / E_(i-1) - 1 with E_-1 = initial."""
    n = equity.shape[0]
    k = shift_of(equity, min(n, K_WINDOW), initial)
    mom = moments_init()
    prev = initial
    st = dd_init(initial)
    rbuf = np.empty(STATS_BLOCK)
    for b0 in range(0, n, STATS_BLOCK):
        prev, mom, st = stats_block(equity[b0:min(b0 + STATS_BLOCK, n)], b0, prev, k, mom, st, rbuf)
    return stats_final(n, k, mom, st)
