"""The one set of fill rules, shared by backtests (`simulate`, a numba loop) and live bots (`step`, one candle).

Both paths call the same compiled per-candle function `_bar`, so a bot replayed over a period makes exactly the
backtest's fills (bit for bit). Pure: numpy + numba, no Django.

Rules (long-only spot, one position at a time; prices are quote per base unit):

* Signals are decided on a candle's close and filled at THAT candle's close (no look-ahead: the candle is closed).
* Buy (action 1) while flat: fill price p = close * (1 + slippage); amount = cash * fraction / (p * (1 + fee));
  fee = amount * p * fee; cash -= amount * p + fee. So cash * fraction is spent including the fee (cash is clamped at
  0 when rounding would leave -1e-12).
* Sell (action -1) while in position: closes the WHOLE position. p = close * (1 - slippage); fee = amount * p * fee;
  cash += amount * p - fee.
* A buy while in position, or a sell while flat, does nothing.
* Stop-loss / take-profit (optional, fractions of the ENTRY FILL PRICE, i.e. including entry slippage):
  stop = entry_price * (1 - stop_loss), target = entry_price * (1 + take_profit). Checked on every candle AFTER the
  entry candle (never on the entry candle itself: we entered at its close, its low/high happened before), in this
  order, first match wins:
    1. open <= stop    -> stop-loss at the open (the price gapped through the stop; the open is the first price);
    2. open >= target  -> take-profit at the open (gapped through the target);
    3. low <= stop     -> stop-loss at the stop price;
    4. high >= target  -> take-profit at the target price.
  So when a candle touches both levels without gapping, the stop-loss is assumed to have come first (conservative:
  OHLC does not say which came first). The exit price gets slippage like any sell: p = level * (1 - slippage), and
  the fee is charged as on any fill.
* Intrabar detail (`--detail 1m|trades`, `apps/bots/trading/detail.py`; off by default): a candle is AMBIGUOUS when a
  protected position could exit on it and its outcome depends on the path inside it: a level inside [low, high] (both
  levels: which came first; one level: at which price) and no gap through a level at the open (rules 1-2 above: the
  open is the candle's first price, so a gap is never ambiguous). Only ambiguous candles read detail data:
    - 1m: the stored 1m candles of the interval [close - timeframe, close), in time order, each checked with rules
      1-4 above; the first 1m candle that triggers decides (a 1m candle touching both levels without a gap is still
      stop-first at the stop: the finest data we have does not say more);
    - trades: the stored raw trades of the interval, in time order; the first trade at or below the stop is a
      stop-loss, the first at or above the target a take-profit, filled at THAT trade's price (then slippage and fee
      as on any sell).
  Missing detail for an ambiguous candle (no 1m candle or trade in its interval), or detail that never touches a
  level, keeps the conservative rule above for that candle and is reported as a warning naming the candle. An
  ambiguous candle exits with or without detail, so fills happen on the same candles; only the ambiguous exits'
  reason and price (and, through the cash, later amounts) change. The result reports the ambiguous exits, how many
  the detail changed and the metrics against the candle-only run. The tick core applies the same rule
  (`fleet.decide_fleet(detail=...)` -> `detail.resolve_exit`, exits fixed in `step_fleet`), so `replay_bot --detail`
  equals the backtest with the same `--detail`; live bots use the stored raw trades when their market's stream stores
  them (`bots.selectors.live_detail`; reconcile's twin too).
* After a stop-loss / take-profit exit, that candle's signal is ignored: a buy signal on the same candle does NOT
  re-enter (the strategy decided at the close without knowing it had been stopped out; re-entering on the candle that
  just hit a stop is what a trader usually does not want; the next buy signal re-enters).
* A fee is charged on every fill (default 0.1 % of the notional).
* Equity at each candle = cash + amount * close (mark to market, after that candle's fill). A position still open at
  the end is valued at the last close with NO exit fee deducted and reported as `open_trade`, not as a closed trade.
* A trade's pnl = exit proceeds net of the exit fee - (entry notional + entry fee); its return_pct =
  pnl / (amount * entry_price) * 100 (net of both fees, relative to the entry notional, as backtesting.py does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit

from apps.bots.trading.equity import (
    K_WINDOW,
    STATS_BLOCK,
    dd_init,
    moments_init,
    shift_of,
    stats_block,
    stats_final,
)
from apps.common.errors import ApplicationError

# Events of one candle (what `_bar` did).
EV_NONE = 0
EV_BUY = 1
EV_SELL = 2
EV_STOP_LOSS = 3
EV_TAKE_PROFIT = 4

EXIT_REASONS: dict[int, str] = {EV_SELL: "signal", EV_STOP_LOSS: "stop_loss", EV_TAKE_PROFIT: "take_profit"}
_REASON_NAMES = np.array(["", "", "signal", "stop_loss", "take_profit"])

TRADE_DTYPE = np.dtype(
    [
        ("entry_bar", np.int64),
        ("exit_bar", np.int64),
        ("entry_time", np.int64),
        ("exit_time", np.int64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("amount", np.float64),
        ("entry_fee", np.float64),
        ("exit_fee", np.float64),
        ("fees", np.float64),
        ("pnl", np.float64),
        ("return_pct", np.float64),
        ("exit_reason", "U11"),
        ("cash_after_entry", np.float64),
        ("cash_after_exit", np.float64),
    ]
)
# The public columns of a closed trade (the `--json` shape).
TRADE_FIELDS: tuple[str, ...] = (
    "entry_time", "exit_time", "entry_price", "exit_price", "amount", "fees", "pnl", "return_pct", "exit_reason",
)


@dataclass(frozen=True)
class FillRules:
    """How orders fill. Fractions: fee 0.001 = 0.1 % per fill; stop_loss 0.05 = exit 5 % below the entry price."""

    fee: float = 0.001
    slippage: float = 0.0
    fraction: float = 1.0
    stop_loss: float | None = None
    take_profit: float | None = None
    initial_balance: float = 10_000.0

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ApplicationError(f"fill rule {name!r} must be {rule}, got {getattr(self, name)!r}", field=name)

        def finite(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        check("fee", finite(self.fee) and 0.0 <= self.fee < 1.0, "a number in [0, 1)")
        check("slippage", finite(self.slippage) and 0.0 <= self.slippage < 1.0, "a number in [0, 1)")
        check("fraction", finite(self.fraction) and 0.0 < self.fraction <= 1.0, "a number in (0, 1]")
        check("stop_loss", self.stop_loss is None or (finite(self.stop_loss) and 0.0 < self.stop_loss < 1.0),
              "null or a number in (0, 1)")
        check("take_profit", self.take_profit is None or (finite(self.take_profit) and self.take_profit > 0.0),
              "null or a number > 0")
        check("initial_balance", finite(self.initial_balance) and self.initial_balance > 0.0, "a number > 0")

    def to_dict(self) -> dict[str, float | None]:
        return {"fee": self.fee, "slippage": self.slippage, "fraction": self.fraction, "stop_loss": self.stop_loss,
                "take_profit": self.take_profit, "initial_balance": self.initial_balance}

    def _kernel_args(self) -> tuple[float, float, float, bool, float, bool, float]:
        return (
            float(self.fee), float(self.slippage), float(self.fraction),
            self.stop_loss is not None, float(self.stop_loss or 0.0),
            self.take_profit is not None, float(self.take_profit or 0.0),
        )


@njit(cache=True)
def _exit(cash, amount, level, event, fee, slippage):
    """A stop-loss / take-profit exit of the whole position at `level` (slippage and fee as on any sell). Returns
    `_bar`'s tuple. Shared by `_bar` and the intrabar-detail refill (detail.py), so both fill the same way."""
    p = level * (1.0 - slippage)
    gross = amount * p
    f = gross * fee
    return cash + gross - f, 0.0, 0.0, event, p, amount, f


@njit(cache=True)
def _bar(cash, amount, entry_price, may_exit_early, o, h, l, c, action,  # noqa: E741
         fee, slippage, fraction, use_sl, sl, use_tp, tp):
    """THE rules for one candle. Returns (cash, amount, entry_price, event, fill_price, fill_amount, fill_fee).

    `may_exit_early`: the position was entered on an earlier candle (stop-loss/take-profit may trigger)."""
    if amount > 0.0:
        if may_exit_early and (use_sl or use_tp):
            level = -1.0
            event = EV_NONE
            stop = entry_price * (1.0 - sl)
            target = entry_price * (1.0 + tp)
            if use_sl and o <= stop:
                level = o
                event = EV_STOP_LOSS
            elif use_tp and o >= target:
                level = o
                event = EV_TAKE_PROFIT
            elif use_sl and l <= stop:
                level = stop
                event = EV_STOP_LOSS
            elif use_tp and h >= target:
                level = target
                event = EV_TAKE_PROFIT
            if event != EV_NONE:
                return _exit(cash, amount, level, event, fee, slippage)
        if action == -1:
            p = c * (1.0 - slippage)
            gross = amount * p
            f = gross * fee
            return cash + gross - f, 0.0, 0.0, EV_SELL, p, amount, f
        return cash, amount, entry_price, EV_NONE, 0.0, 0.0, 0.0
    if action == 1 and cash > 0.0:
        p = c * (1.0 + slippage)
        a = cash * fraction / (p * (1.0 + fee))
        if a > 0.0:
            notional = a * p
            f = notional * fee
            left = cash - notional - f
            if left < 0.0:  # -1e-12 from rounding when spending everything
                left = 0.0
            return left, a, p, EV_BUY, p, a, f
    return cash, amount, entry_price, EV_NONE, 0.0, 0.0, 0.0


@njit(cache=True)
def fill_block(b0, o, h, lo, c, act, out, state, rec, m, n, fee, slippage, fraction, use_sl, sl, use_tp, tp):
    """The fill loop over one block of candles (b0 = index of its first): slices o/h/lo/c/act in, equity into
    `out` (same length), fill events appended to rec from row m. state = (cash, amount, entry_price, entry_bar,
    fees_paid); returns (state, m). Block-local slices let the compiler drop negative-index handling (measured
    ~15 % faster than indexing the full arrays). Shared by `simulate` and the sweep's fused kernel."""
    cash, amount, entry_price, entry_bar, fees_paid = state
    protect = use_sl or use_tp
    for j in range(c.shape[0]):
        cj = c[j]
        if protect:
            oj, hj, lj = o[j], h[j], lo[j]
        else:  # open/high/low are not used without stop-loss/take-profit: do not load them
            oj = hj = lj = cj
        i = b0 + j
        cash, amount, entry_price, ev, p, a, f = _bar(
            cash, amount, entry_price, i > entry_bar, oj, hj, lj, cj, act[j],
            fee, slippage, fraction, use_sl, sl, use_tp, tp,
        )
        if ev != EV_NONE:
            fees_paid += f
            r = rec[m]
            r[0] = i
            r[1] = ev
            r[2] = p
            r[3] = a
            r[4] = f
            r[5] = cash
            m += 1
            entry_bar = i if ev == EV_BUY else n  # flat: nothing to protect
        out[j] = cash + amount * cj
    return (cash, amount, entry_price, entry_bar, fees_paid), m


@njit(cache=True, error_model="numpy")
def _simulate_kernel(open_, high, low, close, action, initial, fee, slippage, fraction, use_sl, sl, use_tp, tp):
    """The fill loop over all candles: equity per candle + one event row per fill + the equity pass of the metrics.

    Event rows (float64): bar, event, price, amount, fee, cash after. Buys and exits alternate, so rows 0, 2, 4...
    are entries and 1, 3, 5... their exits; a trailing unmatched buy is the open trade. One records array (rather
    than one array per field) keeps the loop's live state small, which keeps it fast (sized by a count of the buy
    signals, so no bounds check in the loop; a growable buffer costs 50 % more here).
    Per block of STATS_BLOCK candles `fill_block` writes the equity, then `equity.stats_block` reads it back while
    it is still in cache (compute_metrics then needs no second pass over 8 MB per million candles; two short loops
    keep each loop's state in registers, one fused loop measured 40 % slower). Visiting only the signal candles
    (state is constant between them without stop-loss/take-profit) measured 60 % SLOWER at sma_cross's density of
    a signal every ~36 candles: the per-run overhead and mispredicted exits cost more than the ~5 cycles a candle."""
    n = close.shape[0]
    equity = np.empty(n, np.float64)
    buys = 0
    for i in range(n):  # every entry needs a buy signal and every exit an entry: at most 2 events per buy signal
        buys += action[i] == 1
    rec = np.empty((2 * buys + 1, 6), np.float64)  # ~1 % of the worst-case (n + 1) rows: less heap churn
    state = (initial, 0.0, 0.0, -1, 0.0)
    m = 0
    k = 0.0
    mom = moments_init()
    prev = initial
    st = dd_init(initial)
    rbuf = np.empty(STATS_BLOCK, np.float64)
    for b0 in range(0, n, STATS_BLOCK):
        b1 = min(b0 + STATS_BLOCK, n)
        state, m = fill_block(b0, open_[b0:b1], high[b0:b1], low[b0:b1], close[b0:b1], action[b0:b1],
                              equity[b0:b1], state, rec, m, n, fee, slippage, fraction, use_sl, sl, use_tp, tp)
        if b0 == 0:
            k = shift_of(equity, min(n, K_WINDOW), initial)
        prev, mom, st = stats_block(equity[b0:b1], b0, prev, k, mom, st, rbuf)
    cash, amount, _, _, fees_paid = state
    return equity, rec[:m].copy(), cash, amount, fees_paid, stats_final(n, k, mom, st)


@njit(cache=True)
def _state_arrays(n, initial, events):
    """Per-candle cash and position (after each candle's fill) rebuilt from the fill events."""
    cash = np.empty(n, np.float64)
    pos = np.zeros(n, np.float64)
    c = initial
    a = 0.0
    j = 0
    for r in range(events.shape[0]):
        b = int(events[r, 0])
        cash[j:b] = c
        pos[j:b] = a
        c = events[r, 5]
        a = events[r, 3] if events[r, 1] == EV_BUY else 0.0
        j = b
    cash[j:] = c
    pos[j:] = a
    return cash, pos


@dataclass
class SimResult:
    """What `simulate` returns. Closed trades in time order: `columns` (one array per TRADE_DTYPE field, exit_reason
    as int8 code `exit_code`), `trades` (the same as a structured array, built on first access)."""

    columns: dict[str, np.ndarray]
    open_trade: dict[str, Any] | None
    equity: np.ndarray
    final_equity: float
    fees_paid: float
    initial_balance: float
    final_cash: float
    final_position: float
    events: np.ndarray = field(repr=False)
    #: equity.stats_block's result over `equity` (computed by the fill kernel; None: compute_metrics recomputes it)
    stats: tuple | None = field(default=None, repr=False)

    @property
    def n_trades(self) -> int:
        return int(self.columns["pnl"].shape[0])

    @cached_property
    def trades(self) -> np.ndarray:
        """Closed trades as a structured array (TRADE_DTYPE)."""
        out = np.empty(self.n_trades, dtype=TRADE_DTYPE)
        for name in TRADE_DTYPE.names:
            if name == "exit_reason":
                out[name] = _REASON_NAMES[self.columns["exit_code"]]
            else:
                out[name] = self.columns[name]
        return out

    @cached_property
    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        return _state_arrays(len(self.equity), self.initial_balance, self.events)

    @property
    def cash(self) -> np.ndarray:
        """Cash after each candle's fill (computed on first access)."""
        return self._state[0]

    @property
    def position(self) -> np.ndarray:
        """Base amount held after each candle's fill (computed on first access)."""
        return self._state[1]

    def trades_frame(self):
        """Closed trades as a DataFrame (all TRADE_DTYPE columns)."""
        import pandas as pd

        return pd.DataFrame({name: self.trades[name] for name in TRADE_DTYPE.names})

    def trade_dicts(self) -> list[dict[str, Any]]:
        """Closed trades as JSON-ready dicts with the public fields."""
        cols = [self.trades[name].tolist() for name in TRADE_FIELDS]
        return [dict(zip(TRADE_FIELDS, row, strict=True)) for row in zip(*cols, strict=True)]


def _as(arr: Any, dtype: Any, name: str, n: int | None) -> np.ndarray:
    out = np.ascontiguousarray(arr, dtype=dtype)
    if out.ndim != 1:
        raise ValueError(f"simulate: {name} must be one-dimensional, got shape {out.shape}")
    if n is not None and out.shape[0] != n:
        raise ValueError(f"simulate: {name} has {out.shape[0]} rows, expected {n} (same as timestamp)")
    return out


def simulate(timestamp: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             action: np.ndarray, rules: FillRules) -> SimResult:
    """Fill `action` (int8: 1 buy, -1 sell, anything else hold; one per candle) over the candles with `rules`
    (see the module docstring). Deterministic: the same inputs give bit-identical results."""
    ts = _as(timestamp, np.int64, "timestamp", None)
    n = ts.shape[0]
    o = _as(open_, np.float64, "open", n)
    h = _as(high, np.float64, "high", n)
    lo = _as(low, np.float64, "low", n)
    c = _as(close, np.float64, "close", n)
    act = _as(action, np.int8, "action", n)
    equity, events, cash, amount, fees_paid, stats = _simulate_kernel(o, h, lo, c, act,
                                                                      float(rules.initial_balance),
                                                                      *rules._kernel_args())
    final_equity = float(equity[-1]) if n else float(rules.initial_balance)
    return SimResult(
        columns=trade_columns(ts, events), open_trade=open_trade_of(ts, c, events), equity=equity,
        final_equity=final_equity, fees_paid=float(fees_paid), initial_balance=float(rules.initial_balance),
        final_cash=float(cash), final_position=float(amount), events=events, stats=stats if n else None,
    )


def trade_columns(ts: np.ndarray, events: np.ndarray) -> dict[str, np.ndarray]:
    """The closed trades (SimResult.columns) from the kernel's event rows: entries at even rows, exits at odd."""
    k = events.shape[0] // 2
    ent, ext = events[0:2 * k:2], events[1:2 * k:2]
    e_bar = ent[:, 0].astype(np.int64)
    x_bar = ext[:, 0].astype(np.int64)
    e_price, x_price, amt = ent[:, 2].copy(), ext[:, 2].copy(), ent[:, 3].copy()
    e_fee, x_fee = ent[:, 4].copy(), ext[:, 4].copy()
    cost = amt * e_price
    pnl = (amt * x_price - x_fee) - (cost + e_fee)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = pnl / cost * 100.0
    return {
        "entry_bar": e_bar, "exit_bar": x_bar, "entry_time": ts[e_bar], "exit_time": ts[x_bar],
        "entry_price": e_price, "exit_price": x_price, "amount": amt, "entry_fee": e_fee, "exit_fee": x_fee,
        "fees": e_fee + x_fee, "pnl": pnl, "return_pct": ret, "exit_code": ext[:, 1].astype(np.int8),
        "cash_after_entry": ent[:, 5].copy(), "cash_after_exit": ext[:, 5].copy(),
    }


def open_trade_of(ts: np.ndarray, c: np.ndarray, events: np.ndarray) -> dict[str, Any] | None:
    """The position still open after the last candle (a trailing unmatched buy event), marked at the last close."""
    if events.shape[0] % 2 == 0:
        return None
    n = ts.shape[0]
    last_ev = events[-1]
    eb = int(last_ev[0])
    ep, a, fe = float(last_ev[2]), float(last_ev[3]), float(last_ev[4])
    last = float(c[-1])
    upnl = a * last - (a * ep + fe)
    return {
        "entry_time": int(ts[eb]),
        "entry_bar": eb,
        "entry_price": ep,
        "amount": a,
        "fees": fe,
        "last_price": last,
        "last_time": int(ts[-1]),
        "unrealized_pnl": upnl,
        "return_pct": upnl / (a * ep) * 100.0,
        "bars_held": n - 1 - eb,
    }


# ---------------------------------------------------------------------------------------------------------------------
# One candle at a time (live bots): the same `_bar`.


@dataclass(frozen=True)
class PortfolioState:
    """A bot's portfolio between candles. `entry_time` = close time of the entry candle (None when flat)."""

    cash: float
    amount: float = 0.0
    entry_price: float = 0.0
    entry_time: int | None = None
    entry_fee: float = 0.0
    fees_paid: float = 0.0

    @classmethod
    def initial(cls, rules: FillRules) -> PortfolioState:
        return cls(cash=float(rules.initial_balance))

    @property
    def in_position(self) -> bool:
        return self.amount > 0.0

    def equity(self, price: float) -> float:
        """Mark to market at `price` (no exit fee deducted, as in `simulate`)."""
        return self.cash + self.amount * price


@dataclass(frozen=True)
class Bar:
    """One closed candle: `timestamp` is its close time (ms UTC)."""

    timestamp: int
    open: float
    high: float
    low: float
    close: float


@dataclass(frozen=True)
class Fill:
    """One executed virtual order. `pnl` is the realised pnl of the closed trade (sells only, else None)."""

    side: str  # "buy" | "sell"
    reason: str  # "signal" | "stop_loss" | "take_profit"
    timestamp: int
    price: float
    amount: float
    fee: float
    cash_after: float
    pnl: float | None = None


def step(state: PortfolioState, bar: Bar | Any, action: int, rules: FillRules,
         detail: tuple[str, Any] | None = None) -> tuple[PortfolioState, list[Fill]]:
    """Apply one closed candle and its signal (`action` 1/0/-1 or 'buy'/'hold'/'sell') to `state`.

    Exactly the rules of `simulate` (same compiled function); `bar` needs timestamp/open/high/low/close attributes.
    `detail` = ("trades", prices in time order) or ("1m", (open, high, low, close) arrays) of this candle's interval:
    an ambiguous stop-loss/take-profit candle is resolved on it (the intrabar detail rule above, `detail.resolve_exit`,
    the same as `simulate_detail`); None or empty detail keeps the conservative rule."""
    if isinstance(action, str):
        try:
            action = {"buy": 1, "hold": 0, "sell": -1}[action]
        except KeyError:
            raise ValueError(f"action must be 'buy', 'hold' or 'sell', got {action!r}") from None
    ts = int(bar.timestamp)
    may_exit_early = state.entry_time is not None and ts > state.entry_time
    resolved = None
    if detail is not None and may_exit_early and state.amount > 0.0:
        from apps.bots.trading.detail import is_ambiguous, resolve_exit

        kind, rows = detail
        has_rows = len(rows[0]) > 0 if kind == "1m" else len(rows) > 0
        if has_rows and is_ambiguous(state.entry_price, float(bar.open), float(bar.high), float(bar.low), rules):
            resolved = resolve_exit(state.entry_price, rules, kind, rows)
    if resolved is not None:
        cash, amount, entry_price, ev, p, a, f = _exit(float(state.cash), float(state.amount), resolved[1],
                                                       resolved[0], float(rules.fee), float(rules.slippage))
    else:
        cash, amount, entry_price, ev, p, a, f = _bar(
            float(state.cash), float(state.amount), float(state.entry_price), may_exit_early,
            float(bar.open), float(bar.high), float(bar.low), float(bar.close), np.int8(action),
            *rules._kernel_args(),
        )
    if ev == EV_NONE:
        return state, []
    fees_paid = state.fees_paid + f
    if ev == EV_BUY:
        new = PortfolioState(cash=cash, amount=amount, entry_price=entry_price, entry_time=ts, entry_fee=f,
                             fees_paid=fees_paid)
        return new, [Fill("buy", "signal", ts, p, a, f, cash)]
    pnl = (a * p - f) - (a * state.entry_price + state.entry_fee)
    new = replace(state, cash=cash, amount=0.0, entry_price=0.0, entry_time=None, entry_fee=0.0, fees_paid=fees_paid)
    return new, [Fill("sell", EXIT_REASONS[ev], ts, p, a, f, cash, pnl)]


# ---------------------------------------------------------------------------------------------------------------------
# Many bots at once (fleet ticks): the same `_bar`, one compiled loop over every bot's new candles.

NO_ENTRY = np.iinfo(np.int64).max  # entry_time of a flat portfolio (no candle is after it)


@njit(cache=True)
def step_fleet(offsets, rows, act, ts, o, h, lo, c, cash, amount, entry_price, entry_time, entry_fee, fees_paid,
               realized, peak, fee, slippage, fraction, use_sl, sl, use_tp, tp, ov_event, ov_level, ev_out, p_out,
               a_out, f_out, pnl_out, cash_out, pos_out, eq_out, real_out, unreal_out, dd_out):
    """`step` for many bots: bot b decides the frame rows rows[offsets[b]:offsets[b+1]] (in time order) with the
    actions at the same flat positions, from its state (per-bot arrays, updated in place; entry_time NO_ENTRY when
    flat) and its rules (per-bot arrays). Writes per flat position the fill (event EV_*, price, amount, fee, pnl of a
    closed trade) and the snapshot after it (cash, position, equity, realized and unrealized pnl, drawdown). Every
    decision goes through `_bar`, the rule of `simulate` and `step`, so fleet bots fill like backtests; a flat
    position k with ov_event[k] != EV_NONE (an ambiguous candle resolved on intrabar detail, fleet.decide_fleet)
    exits at ov_level[k] through `_exit` instead, as `detail._refill_kernel` does for backtests."""
    for b in range(offsets.shape[0] - 1):
        cb, ab, eb, tb, efb, fpb, rb, pkb = (cash[b], amount[b], entry_price[b], entry_time[b], entry_fee[b],
                                             fees_paid[b], realized[b], peak[b])
        fe, sp, fr, usl, slb, utp, tpb = fee[b], slippage[b], fraction[b], use_sl[b], sl[b], use_tp[b], tp[b]
        for k in range(offsets[b], offsets[b + 1]):
            i = rows[k]
            t = ts[i]
            ci = c[i]
            if ov_event[k] != EV_NONE and ab > 0.0:
                nc, na, ne, ev, p, a, f = _exit(cb, ab, ov_level[k], ov_event[k], fe, sp)
            else:
                nc, na, ne, ev, p, a, f = _bar(cb, ab, eb, t > tb, o[i], h[i], lo[i], ci, act[k],
                                               fe, sp, fr, usl, slb, utp, tpb)
            pnl = 0.0
            if ev != EV_NONE:
                fpb += f
                if ev == EV_BUY:
                    tb = t
                    efb = f
                else:
                    pnl = (a * p - f) - (a * eb + efb)
                    rb += pnl
                    tb = NO_ENTRY
                    efb = 0.0
            cb, ab, eb = nc, na, ne
            eq = cb + ab * ci
            if eq > pkb:
                pkb = eq
            ev_out[k] = ev
            p_out[k] = p
            a_out[k] = a
            f_out[k] = f
            pnl_out[k] = pnl
            cash_out[k] = cb
            pos_out[k] = ab
            eq_out[k] = eq
            real_out[k] = rb
            unreal_out[k] = ab * (ci - eb) - efb if ab > 0.0 else 0.0
            dd = 1.0 - eq / pkb if pkb > 0.0 else 0.0
            dd_out[k] = dd if dd > 0.0 else 0.0
        cash[b], amount[b], entry_price[b], entry_time[b], entry_fee[b], fees_paid[b], realized[b], peak[b] = (
            cb, ab, eb, tb, efb, fpb, rb, pkb)
