"""Technical indicators over float64 arrays (pure numpy + numba), NaN where undefined.

Two families, and why they differ:
- WINDOW indicators (sma, rolling_std, bollinger): the value at t is a function of the n values x[t-n+1..t] alone.
  A plain running float sum would carry rounding from every earlier row, so the value at t would depend on where the
  series starts, and a live bot deciding on the last `slow + 1` rows could disagree with the backtest over the whole
  history when two averages are within float noise. SMA(n)[t] = (the CORRECTLY ROUNDED exact sum of the window) / n:
  the exact sum is a function of the window only, so is its rounding, bit-identical however long the series is, and
  an EXACT running sum (integer limbs in float64, or Shewchuk partials for extreme magnitudes) gets it in O(len)
  whatever n (1M rows: ~0.5 ms). rolling_std is a two-pass sum around the window's mean in a fixed order, O(len * n).
- RECURSIVE indicators (ema, rsi, macd): the value at t depends on every value <= t (still no lookahead). They are
  prefix-consistent: computing on x[:t+1] gives exactly the value at t of the full computation.

EMA convention: alpha = 2 / (n + 1), adjust=False, seeded with the FIRST value (ema[0] = x[0]); equal to
`pd.Series(x).ewm(span=n, adjust=False).mean()` up to rounding. RSI uses Wilder smoothing seeded with the plain mean of
the first `period` changes (the classic definition).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_PARTIALS = 96  # more than the ~41 non-overlapping float64 partials an exact sum can ever need


_ABS_MASK = 0x7FFFFFFFFFFFFFFF  # clears the sign bit of a float64's bits
_INF_BITS = 0x7FF0000000000000  # |x| bits at or above this: inf or NaN
_NO_BITS = 0x7FFFFFFFFFFFFFFF


@njit(cache=True)
def _bits_to_float(b: int) -> float:
    return np.array([b], np.int64).view(np.float64)[0]


@njit(cache=True)
def _scan(x: np.ndarray) -> tuple[float, float, int]:
    """(smallest non-zero |x|, largest finite |x|, number of non-finite values): what fixes the fast path's scale.

    On the bits: for non-negative floats the integer order of the bits is the value order, and integer min/max
    reductions vectorize where float ones (NaN semantics) do not (1M values: ~0.15 ms instead of ~0.7 ms).
    (a - 1) & mask maps 0 to the largest value, so the minimum skips zeros; a second pass only with non-finites."""
    bits = x.view(np.int64)
    size = bits.shape[0]
    lo = _NO_BITS
    hi = 0
    special = 0
    for i in range(size):
        a = bits[i] & _ABS_MASK
        special += a >= _INF_BITS
        hi = max(hi, a)
        lo = min(lo, (a - 1) & _ABS_MASK)
    if special:  # the maximum above may be inf/NaN bits: recompute it over the finite values only
        hi = 0
        lo = _NO_BITS
        for i in range(size):
            a = bits[i] & _ABS_MASK
            if a < _INF_BITS:
                hi = max(hi, a)
                lo = min(lo, (a - 1) & _ABS_MASK)
    lo_value = np.inf if lo >= _INF_BITS - 1 else _bits_to_float(lo + 1)
    return lo_value, _bits_to_float(hi), special


@njit(cache=True)
def _special_value(n_nan: int, n_pos: int, n_neg: int, s: float) -> float:
    """IEEE semantics of a sum with non-finite terms: NaN, or +-inf, or the finite sum `s`."""
    if n_nan > 0 or (n_pos > 0 and n_neg > 0):
        return np.nan
    if n_pos > 0:
        return np.inf
    if n_neg > 0:
        return -np.inf
    return s


@njit(cache=True)
def _window_sum_limbs(x: np.ndarray, n: int, inv_u: float, u: float, k: int, special: bool,
                      divisor: float) -> np.ndarray:
    """out[t] = correctly rounded sum(x[t-n+1..t]) / divisor, O(len) via an EXACT running sum.

    Every finite x is an integer multiple of u (the smallest ulp in x); x/u = hi * 2^k + lo with integer limbs
    hi, lo (lo in [0, 2^k)), both float64 integers. The caller guarantees that n + 8 limbs of either kind sum below
    2^53, so the running limb sums H, L are exact in float64 (order does not matter), (H * 2^k) and L are exact
    doubles and ONE rounded addition gives the correctly rounded window sum; * u is exact (power of two, no
    underflow). Non-finite inputs count as 0 in the limbs and are tracked by counts (NaN / +inf / -inf)."""
    limb = 2.0**k
    inv_limb = 2.0**-k
    size = x.shape[0]
    out = np.empty(size)
    for t in range(min(n - 1, size)):
        out[t] = np.nan
    h_sum = 0.0
    l_sum = 0.0
    n_nan = 0
    n_pos = 0
    n_neg = 0
    for t in range(size):
        v = x[t]
        if special and not abs(v) <= 1.7976931348623157e308:
            if v != v:
                n_nan += 1
            elif v > 0:
                n_pos += 1
            else:
                n_neg += 1
            hv = 0.0
            lv = 0.0
        else:
            xs = v * inv_u
            hv = np.floor(xs * inv_limb)
            lv = xs - hv * limb
        if t >= n:
            w = x[t - n]
            if special and not abs(w) <= 1.7976931348623157e308:
                if w != w:
                    n_nan -= 1
                elif w > 0:
                    n_pos -= 1
                else:
                    n_neg -= 1
            else:
                ws = w * inv_u
                hw = np.floor(ws * inv_limb)
                hv -= hw
                lv -= ws - hw * limb
        h_sum += hv
        l_sum += lv
        if t >= n - 1:
            s = (h_sum * limb + l_sum) * u
            if special:
                s = _special_value(n_nan, n_pos, n_neg, s)
            out[t] = s / divisor
    return out


@njit(cache=True)
def _msum_add(p: np.ndarray, m: int, x: float) -> int:
    """Add x exactly to the non-overlapping partials p[:m] (Shewchuk's msum, as in CPython's math.fsum)."""
    i = 0
    for j in range(m):
        y = p[j]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            p[i] = lo
            i += 1
        x = hi
    if x != 0.0:
        p[i] = x
        i += 1
    return i


@njit(cache=True)
def _msum_round(p: np.ndarray, m: int) -> float:
    """The correctly rounded (half-even) value of the exact sum held by the partials (CPython's fsum ending)."""
    if m == 0:
        return 0.0
    k = m - 1
    hi = p[k]
    lo = 0.0
    while k > 0:
        x = hi
        k -= 1
        y = p[k]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break
    if k > 0 and ((lo < 0.0 and p[k - 1] < 0.0) or (lo > 0.0 and p[k - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        if y == x - hi:
            hi = x
    return hi


@njit(cache=True)
def _window_sum_msum(x: np.ndarray, n: int, divisor: float) -> np.ndarray:
    """The general path (any magnitudes): an exact running sum as non-overlapping partials, correctly rounded per t.

    Slower (a few partials per step) but, like the fast path, a function of the window alone. Finite |x| must stay
    below ~2^1000 so partials cannot overflow."""
    size = x.shape[0]
    out = np.empty(size)
    for t in range(min(n - 1, size)):
        out[t] = np.nan
    p = np.empty(_PARTIALS)
    m = 0
    n_nan = 0
    n_pos = 0
    n_neg = 0
    for t in range(size):
        v = x[t]
        if abs(v) <= 1.7976931348623157e308:
            m = _msum_add(p, m, v)
        elif v != v:
            n_nan += 1
        elif v > 0:
            n_pos += 1
        else:
            n_neg += 1
        if t >= n:
            w = x[t - n]
            if abs(w) <= 1.7976931348623157e308:
                m = _msum_add(p, m, -w)
            elif w != w:
                n_nan -= 1
            elif w > 0:
                n_pos -= 1
            else:
                n_neg -= 1
        if t >= n - 1:
            out[t] = _special_value(n_nan, n_pos, n_neg, _msum_round(p, m)) / divisor
    return out


def _limb_plan(x: np.ndarray, longest: int) -> tuple[str, float, float, int, bool]:
    """Which exact path fits x: ("limbs" | "msum", 1/u, u, k, any non-finite) with u the smallest ulp in x and k the
    limb split (limbs of k and bits - k bits; n + 8 limbs must sum below 2^53 to stay exact in float64)."""
    lo, hi, special = _scan(x)
    if hi == 0.0:  # every finite value is 0 (or there is none): u = 1 is exact
        return "limbs", 1.0, 1.0, 32, special > 0
    e_min = math.frexp(lo)[1]
    e_max = math.frexp(hi)[1]
    bits = e_max - e_min + 53  # |x / u| < 2^bits
    k = (bits + 1) // 2
    if e_min < -900 or e_max > 900 or (longest + 8.0) * 2.0**k > 2.0**53:
        return "msum", 1.0, 1.0, 0, special > 0
    return "limbs", 2.0 ** (53 - e_min), 2.0 ** (e_min - 53), k, special > 0


_BLOCK = 1024  # candles per block of `_window_means_blocked`: its working set stays in L1/L2


@njit(cache=True, error_model="numpy")
def _window_means_blocked(x, ns, outs, inv_u, u, k):
    """outs[w, t] = the exact-limb window mean of `_window_sum_limbs` (same limbs, same exact sums, ONE rounding to a
    double, * u exact, / n: bit-identical) for every window ns[w], for x without special values, in ONE blocked pass.

    Per block of >= 1024 candles, short loops that each run at their own speed on data still in cache (one long
    loop per window measured 2x slower: the divisions and the limb split do not vectorize inside the loop-carried
    sums): 1. the limbs of x (vectorized) after the previous block's last `span` limbs (the windows' outgoing
    values); 2. per window, the exact running limb sums (the only loop-carried work), rounded to the window sums;
    3. the divisions by n (vectorized)."""
    size = x.shape[0]
    nw = ns.shape[0]
    limb = 2.0**k
    inv_limb = 2.0**-k
    span = 1
    for w in range(nw):
        span = max(span, ns[w])
    block = max(_BLOCK, span)
    hr = np.zeros(span + block)  # limbs: [0, span) the previous rows (zeros before the first), then the block
    lr = np.zeros(span + block)
    hs = np.zeros(nw)
    ls = np.zeros(nw)
    for b0 in range(0, size, block):
        b1 = min(b0 + block, size)
        m = b1 - b0
        xb = x[b0:b1]
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
        for w in range(nw):
            n = ns[w]
            ho = hr[span - n:span - n + m]
            lo = lr[span - n:span - n + m]
            ob = outs[w][b0:b1]
            h = hs[w]
            low = ls[w]
            for j in range(m):
                h += hb[j] - ho[j]
                low += lb[j] - lo[j]
                ob[j] = (h * limb + low) * u
            hs[w] = h
            ls[w] = low
            div = float(n)
            for j in range(m):
                ob[j] = ob[j] / div
            for t in range(b0, min(b1, n - 1)):
                outs[w][t] = np.nan
    return outs


def window_means(x: np.ndarray, windows: list[int] | tuple[int, ...]) -> list[np.ndarray]:
    """[sma(x, n) for n in windows], bit for bit, sharing one scan of x (a sweep or a two-line strategy).

    THE simple moving average. One definition (the correctly rounded exact window sum / n), three exact paths chosen
    by the data: blocked integer limbs for all windows at once (finite prices of a normal range: the common case),
    limbs per window with non-finite values counted aside, Shewchuk partials for extreme magnitudes."""
    arr = _as_float(x)
    for n in windows:
        _check_window(n, "sma")
    ns = [int(n) for n in windows]
    if not ns:
        return []
    path, inv_u, u, k, special = _limb_plan(arr, max(ns))
    if path == "limbs" and not special and arr.shape[0]:
        # one 2-D block, not a numba typed List: building a List of arrays costs ~0.1 ms per call, more than the
        # scan itself on a bot's short window (a fleet tick calls this once per parameter set)
        outs = np.empty((len(ns), arr.shape[0]))
        return list(_window_means_blocked(arr, np.array(ns, dtype=np.int64), outs, inv_u, u, k))
    if path == "limbs":
        return [_window_sum_limbs(arr, n, inv_u, u, k, special, float(n)) for n in ns]
    return [_window_sum_msum(arr, n, float(n)) for n in ns]


@njit(cache=True)
def _window_std(x: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Population std (ddof=0) of each window, two-pass around the window's own mean (no cancellation)."""
    size = x.shape[0]
    out = np.full(size, np.nan)
    for t in range(n - 1, size):
        start = t - n + 1
        m = mean[t]
        a0 = 0.0
        a1 = 0.0
        j = 0
        while j + 2 <= n:
            d0 = x[start + j] - m
            d1 = x[start + j + 1] - m
            a0 += d0 * d0
            a1 += d1 * d1
            j += 2
        if j < n:
            d0 = x[start + j] - m
            a0 += d0 * d0
        out[t] = np.sqrt((a0 + a1) / n)
    return out


@njit(cache=True)
def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Recursive EMA seeded with the first finite value; a NaN input gives NaN there and leaves the state alone."""
    size = x.shape[0]
    out = np.full(size, np.nan)
    state = np.nan
    started = False
    for t in range(size):
        v = x[t]
        if np.isnan(v):
            continue
        if not started:
            state = v
            started = True
        else:
            state = state + alpha * (v - state)
        out[t] = state
    return out


@njit(cache=True)
def _rsi(x: np.ndarray, period: int) -> np.ndarray:
    size = x.shape[0]
    out = np.full(size, np.nan)
    if size <= period:
        return out
    gain = 0.0
    loss = 0.0
    for t in range(1, period + 1):
        d = x[t] - x[t - 1]
        if d > 0:
            gain += d
        else:
            loss -= d
    avg_gain = gain / period
    avg_loss = loss / period
    out[period] = _rsi_value(avg_gain, avg_loss)
    for t in range(period + 1, size):
        d = x[t] - x[t - 1]
        g = d if d > 0 else 0.0
        lo = -d if d < 0 else 0.0
        avg_gain = (avg_gain * (period - 1) + g) / period
        avg_loss = (avg_loss * (period - 1) + lo) / period
        out[t] = _rsi_value(avg_gain, avg_loss)
    return out


@njit(cache=True)
def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    if avg_loss == 0.0:
        return 100.0 if avg_gain > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def _as_float(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def _check_window(n: int, what: str) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{what}: window must be a positive integer, got {n!r}")


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over the last n values; NaN for the first n-1 rows. Window-only (see module doc)."""
    _check_window(n, "sma")
    return window_means(x, [n])[0]


def rolling_std(x: np.ndarray, n: int, mean: np.ndarray | None = None) -> np.ndarray:
    """Population standard deviation (ddof=0) over the last n values; NaN for the first n-1 rows."""
    _check_window(n, "rolling_std")
    arr = _as_float(x)
    return _window_std(arr, _as_float(sma(arr, n) if mean is None else mean), int(n))


def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, alpha = 2/(n+1), adjust=False, seeded with the first value."""
    _check_window(n, "ema")
    return _ema(_as_float(x), 2.0 / (n + 1.0))


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder RSI in [0, 100]; defined from row `period` on (needs `period` changes). 100 when there were no losses,
    50 when the price did not move at all."""
    _check_window(period, "rsi")
    return _rsi(_as_float(close), int(period))


def macd(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, signal, hist): line = EMA(fast) - EMA(slow), signal = EMA(line, signal), hist = line - signal."""
    line = ema(close, fast) - ema(close, slow)
    sig = ema(line, signal)
    return line, sig, line - sig


def bollinger(close: np.ndarray, period: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, mid, upper): mid = SMA(period), bands = mid -/+ k * population std over the same window."""
    mid = sma(close, period)
    std = rolling_std(close, period, mean=mid)
    return mid - k * std, mid, mid + k * std


@njit(cache=True, inline="always")
def cross_step(d0, t0, d1, t1):  # pragma: no cover - compiled
    """THE crossover rule: +1 when the gap a - b rises above the tolerance (d1 > t1 after d0 <= t0), -1 when it falls
    below minus the tolerance (d1 < -t1 after d0 >= -t0), else 0. Branch-free; NaN compares false: never a cross."""
    up = (d1 > t1) & (d0 <= t0)
    down = (d1 < -t1) & (d0 >= -t0)
    return np.int8(up) - np.int8(down)


@njit(cache=True)
def cross_run(a, b, out, first, tol_rel, d0, t0):  # pragma: no cover - compiled
    """`cross_step` over one run of rows with the tolerance |b| * tol_rel: out[j] = +1 / -1 / 0, rows j < first are
    warm-up (0). d0, t0: the gap and tolerance of the row before the run (NaN at the start); returns those of its
    last row, so a long series can be decided block by block (the sweep kernel) with the same results."""
    for j in range(out.shape[0]):
        d1 = a[j] - b[j]
        t1 = abs(b[j]) * tol_rel
        out[j] = cross_step(d0, t0, d1, t1) * np.int8(j >= first)
        d0 = d1
        t0 = t1
    return d0, t0


@njit(cache=True)
def _crossings(diff, tol):  # pragma: no cover - compiled
    out = np.zeros(diff.shape[0], np.int8)
    for t in range(1, diff.shape[0]):
        out[t] = cross_step(diff[t - 1], tol[t - 1], diff[t], tol[t])
    return out


def crossings(a: np.ndarray, b: np.ndarray, tol: np.ndarray | float = 0.0) -> np.ndarray:
    """`cross_step` of a over b at every row with an absolute tolerance (scalar or per row): int8 +1 / -1 / 0, row 0
    never. `tol` treats lines closer than float noise as equal, so flat stretches (e.g. an exchange outage of
    identical candles) do not produce crosses out of rounding."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    tol_arr = np.ascontiguousarray(np.broadcast_to(np.asarray(tol, dtype=np.float64), diff.shape))
    return _crossings(np.ascontiguousarray(diff), tol_arr)


def crossed_above(a: np.ndarray, b: np.ndarray, tol: np.ndarray | float = 0.0) -> np.ndarray:
    """True at t when a[t] - b[t] > tol and a[t-1] - b[t-1] <= tol (row 0 never; NaN never crosses)."""
    return crossings(a, b, tol) == 1


def crossed_below(a: np.ndarray, b: np.ndarray, tol: np.ndarray | float = 0.0) -> np.ndarray:
    """True at t when a[t] - b[t] < -tol and a[t-1] - b[t-1] >= -tol (mirror of crossed_above)."""
    return crossings(a, b, tol) == -1


def recursive_startup(alpha: float, tol: float = 1e-12) -> int:
    """Candles after which a recursion x[t] = (1 - alpha) x[t-1] + alpha v[t] has forgotten its seed to `tol`
    (relative): ceil(ln(tol) / ln(1 - alpha)). With tol 1e-12 it leaves 1,000x margin below check_strategy's 1e-9,
    for values near zero (a MACD histogram) whose relative error exceeds the seed's."""
    if not 0.0 < alpha < 1.0:
        return 1
    return int(math.ceil(math.log(tol) / math.log1p(-alpha)))
