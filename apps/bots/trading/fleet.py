"""The tick core: decide many bots of one market over one candle window. Pure: numpy + numba, no Django.

`decide_fleet(candles, bots)` is THE tick: the database shard (`apps.bots.services.tick_shard`) feeds it the rows it
locked and the window it read once; `replay_bot --data` feeds it a CSV in memory, candle after candle. It

1. finds each bot's undecided rows (after `last_candle`, from `history_start`);
2. groups the bots by (strategy, parameters, indicator anchor) and computes each group's signals ONCE over the
   shortest slice that decides all of them exactly (window strategies: `lookback` rows before the first undecided
   one; recursive ones, EMA/RSI: from the bot's `history_start`, because their values depend on where they start);
3. fills every bot's rows in one compiled loop (`fills.step_fleet`, the rule `_bar` of backtests and `step`; with
   `detail`, a first pass finds the ambiguous stop-loss/take-profit exits, resolved on the detail as backtests do);
4. returns flat columns for the signal / trade / snapshot rows and each bot's new state.

A group whose strategy raises becomes an error on its bots (they decide nothing this time); the other bots go on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from apps.bots.strategies.base import ACTION_LABELS
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import EV_BUY, EV_NONE, EXIT_REASONS, NO_ENTRY, FillRules, step_fleet

# Candles of history a started bot loads before its first decision when its strategy is recursive (EMA, RSI: the
# value at t depends on every row since the start) and declares no `startup_candles`, as a multiple of its warm-up:
# after 10 x span an EMA's seed weighs e^-20 (2e-9). Window strategies load exactly `lookback` rows. The backtest
# twin of a bot (reconcile, replay) starts its indicators at the same row, so the two stay equal bit for bit.
RECURSIVE_WARMUP_FACTOR = 10


def warmup_rows(strategy) -> int:
    """Rows of history a bot started now loads to warm its indicators: `history_needed` (the window strategies'
    `lookback`, the recursive ones' declared `startup_candles`, which check_strategy measures), else a multiple of
    the strategy's warm-up."""
    needed = strategy.history_needed
    if needed is not None:
        return int(needed)
    return RECURSIVE_WARMUP_FACTOR * max(1, int(strategy.warmup))


@dataclass
class BotTick:
    """One bot going into a tick: identity, config, portfolio after its last decided candle."""

    bot_id: int
    strategy: str
    parameters: Mapping[str, Any]
    rules: FillRules
    cash: float
    amount: float = 0.0
    entry_price: float = 0.0
    entry_time: int | None = None
    entry_fee: float = 0.0
    fees_paid: float = 0.0
    realized_pnl: float = 0.0
    peak_equity: float = 0.0
    last_candle: int | None = None
    history_start: int | None = None

    @classmethod
    def fresh(cls, bot_id: int, strategy: str, parameters: Mapping[str, Any], rules: FillRules,
              history_start: int | None = None) -> BotTick:
        return cls(bot_id=bot_id, strategy=strategy, parameters=dict(parameters), rules=rules,
                   cash=float(rules.initial_balance), peak_equity=float(rules.initial_balance),
                   history_start=history_start)


@dataclass
class FleetResult:
    """Flat rows of one tick. Signals and snapshots share one index (one row per decided (bot, candle)); trades are
    the rows of it that filled. `states[bot_id]` = the bot's BotTick after the tick (decided bots only)."""

    sig_bot: np.ndarray
    sig_ts: np.ndarray
    sig_action: np.ndarray
    sig_conf: np.ndarray
    sig_price: np.ndarray
    sig_indicators: list[str]
    snap_cash: np.ndarray
    snap_position: np.ndarray
    snap_equity: np.ndarray
    snap_realized: np.ndarray
    snap_unrealized: np.ndarray
    snap_drawdown: np.ndarray
    trade_rows: np.ndarray  # indices into the signal rows
    trade_side: list[str]
    trade_reason: list[str]
    trade_price: np.ndarray
    trade_amount: np.ndarray
    trade_fee: np.ndarray
    trade_pnl: np.ndarray
    states: dict[int, BotTick] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    idle: list[int] = field(default_factory=list)  # bots with nothing new to decide
    #: with `detail`: {"source", "ambiguous_exits", "changed", "missing": [close ms], "untouched": [close ms]}
    detail: dict[str, Any] | None = None

    @property
    def decided(self) -> int:
        return int(self.sig_bot.shape[0])

    def trades_of(self, bot_id: int) -> list[dict[str, Any]]:
        rows = self.trade_rows[self.sig_bot[self.trade_rows] == bot_id]
        out = []
        for j, r in zip(np.flatnonzero(self.sig_bot[self.trade_rows] == bot_id), rows, strict=True):
            out.append({"timestamp": int(self.sig_ts[r]), "side": self.trade_side[j], "reason": self.trade_reason[j],
                        "price": float(self.trade_price[j]), "amount": float(self.trade_amount[j]),
                        "fee": float(self.trade_fee[j]), "pnl": float(self.trade_pnl[j]),
                        "cash_after": float(self.snap_cash[r]), "position_after": float(self.snap_position[r])})
        return out


def params_key(strategy: str, parameters: Mapping[str, Any]) -> tuple:
    return (strategy, tuple(sorted((str(k), repr(v)) for k, v in dict(parameters).items())))


def _indicator_json(names: list[str], arrays: list[np.ndarray], j: int) -> str:
    values = {}
    for name, arr in zip(names, arrays, strict=True):
        v = float(arr[j])
        values[name] = v if math.isfinite(v) else None
    return orjson.dumps(values).decode()


def decide_fleet(candles: CandleArrays, bots: list[BotTick], *, strategies: dict | None = None,
                 detail: tuple[str, Any] | None = None) -> FleetResult:
    """Decide every bot's undecided rows of `candles` (see the module docstring). `strategies` caches strategy
    instances by params_key across calls (replay). `detail` = (kind "1m"|"trades", DetailSource over the rows of
    `candles`): stop-loss/take-profit exits on ambiguous candles are resolved on it, the rule of backtests with
    `--detail` (`_detail_overrides`); the result's `detail` counts what it did.

    Undecided rows of a bot: those after `last_candle`, from `history_start` on; a bot with neither (started while
    its market had no candle) decides only the newest row of the window."""
    ts = candles.timestamp
    n = len(candles)
    strategies = {} if strategies is None else strategies
    errors: dict[int, str] = {}
    idle: list[int] = []
    # (strategy key, anchor row or -1) -> list of (bot index, first undecided row)
    groups: dict[tuple, list[tuple[int, int]]] = {}
    group_strategy: dict[tuple, Any] = {}
    new_history_start: dict[int, int] = {}
    for b, bot in enumerate(bots):
        key = params_key(bot.strategy, bot.parameters)
        strat = strategies.get(key)
        if strat is None:
            try:
                strat = create_strategy(bot.strategy, bot.parameters)
            except Exception as exc:  # noqa: BLE001 - an unusable config is that bot's error
                errors[bot.bot_id] = f"{type(exc).__name__}: {exc}"
                continue
            strategies[key] = strat
        if n == 0:
            idle.append(bot.bot_id)
            continue
        if bot.last_candle is None and bot.history_start is None:
            # started before its market had any candle: it decides the newest candle of this (first) window only;
            # the rows before it warm the indicators and fix its history start
            first = n - 1
            hs = max(0, first - warmup_rows(strat))
            new_history_start[b] = int(ts[hs])
        else:
            hs = 0 if bot.history_start is None else int(np.searchsorted(ts, bot.history_start, side="left"))
            first = hs if bot.last_candle is None else max(hs, int(np.searchsorted(ts, bot.last_candle, side="right")))
        if first >= n:
            idle.append(bot.bot_id)
            continue
        lookback = strat.lookback
        anchor = hs if (lookback is None or first - lookback < hs) else -1
        groups.setdefault((key, anchor), []).append((b, first))
        group_strategy[(key, anchor)] = strat

    bot_index: list[np.ndarray] = []
    firsts: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    confs: list[np.ndarray] = []
    ind_json: list[list[str]] = []
    rows_all: list[np.ndarray] = []
    # Window groups all compute over ONE slice (the widest they need: a window strategy's values depend only on its
    # last `lookback` rows, so a longer slice changes nothing) and share one indicator cache: 100 sma_cross parameter
    # sets over fast 3..12 x slow 20..29 scan 20 distinct SMAs, not 200. Recursive groups compute from their anchor.
    window_start = min((max(0, min(f for _, f in members) - int(group_strategy[gkey].lookback))
                        for gkey, members in groups.items() if gkey[1] < 0), default=0)
    caches: dict[int, dict] = {}
    for gkey, members in groups.items():
        strat = group_strategy[gkey]
        anchor = gkey[1]
        members_b = np.array([m[0] for m in members], dtype=np.int64)
        members_f = np.array([m[1] for m in members], dtype=np.int64)
        s = anchor if anchor >= 0 else window_start
        try:
            out = strat.compute(candles.close[s:], candles.high[s:], candles.low[s:], candles.open[s:],
                                candles.volume[s:], cache=caches.setdefault(s, {}),
                                **strat.frame_kwargs(candles.timestamp[s:]))
            action = np.asarray(out.action, dtype=np.int8)
            conf = np.asarray(out.confidence, dtype=np.float64)
            if action.shape[0] != n - s or conf.shape[0] != n - s:
                raise ValueError(f"{strat.name}: compute returned {action.shape[0]} rows for {n - s} candles")
        except Exception as exc:  # noqa: BLE001 - the group's bots carry the error, the shard goes on
            message = f"{type(exc).__name__}: {exc}"
            for b in members_b:
                errors[bots[b].bot_id] = message
            continue
        lo = int(members_f.min())
        names = list(out.indicators)
        arrays = [np.asarray(out.indicators[k], dtype=np.float64) for k in names]
        texts = [_indicator_json(names, arrays, i - s) for i in range(lo, n)]
        counts = n - members_f
        total = int(counts.sum())
        starts = np.cumsum(counts) - counts
        rows = np.repeat(members_f, counts) + (np.arange(total) - np.repeat(starts, counts))
        bot_index.append(np.repeat(members_b, counts))
        firsts.append(members_f)
        rows_all.append(rows)
        acts.append(action[rows - s])
        confs.append(conf[rows - s])
        ind_json.append([texts[r - lo] for r in rows.tolist()])

    if rows_all:
        flat_bot = np.concatenate(bot_index)
        flat_rows = np.concatenate(rows_all)
        flat_act = np.concatenate(acts)
        flat_conf = np.concatenate(confs)
        flat_ind = [t for chunk in ind_json for t in chunk]
        order = np.argsort(flat_bot, kind="stable")  # bot by bot, rows in time order within each bot
        flat_bot, flat_rows, flat_act, flat_conf = flat_bot[order], flat_rows[order], flat_act[order], flat_conf[order]
        flat_ind = [flat_ind[i] for i in order.tolist()]
    else:
        flat_bot = np.empty(0, np.int64)
        flat_rows = np.empty(0, np.int64)
        flat_act = np.empty(0, np.int8)
        flat_conf = np.empty(0, np.float64)
        flat_ind = []
    decided_bots, counts = np.unique(flat_bot, return_counts=True)
    offsets = np.zeros(decided_bots.shape[0] + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    chosen = [bots[int(b)] for b in decided_bots]

    def arr(get, dtype=np.float64):
        return np.array([get(x) for x in chosen], dtype=dtype)

    cash = arr(lambda x: x.cash)
    amount = arr(lambda x: x.amount)
    entry_price = arr(lambda x: x.entry_price if x.amount > 0 else 0.0)
    entry_time = arr(lambda x: NO_ENTRY if x.entry_time is None else x.entry_time, np.int64)
    entry_fee = arr(lambda x: x.entry_fee)
    fees_paid = arr(lambda x: x.fees_paid)
    realized = arr(lambda x: x.realized_pnl)
    peak = arr(lambda x: x.peak_equity)
    fee = arr(lambda x: x.rules.fee)
    slippage = arr(lambda x: x.rules.slippage)
    fraction = arr(lambda x: x.rules.fraction)
    use_sl = arr(lambda x: x.rules.stop_loss is not None, np.bool_)
    sl = arr(lambda x: x.rules.stop_loss or 0.0)
    use_tp = arr(lambda x: x.rules.take_profit is not None, np.bool_)
    tp = arr(lambda x: x.rules.take_profit or 0.0)
    m = flat_rows.shape[0]
    ev = np.zeros(m, np.int64)
    p_out, a_out, f_out, pnl_out = (np.zeros(m) for _ in range(4))
    cash_out, pos_out, eq_out, real_out, unreal_out, dd_out = (np.zeros(m) for _ in range(6))
    ov_event, ov_level = np.zeros(m, np.int64), np.zeros(m)
    state = (cash, amount, entry_price, entry_time, entry_fee, fees_paid, realized, peak)
    rules_arrays = (fee, slippage, fraction, use_sl, sl, use_tp, tp)
    outputs = (ev, p_out, a_out, f_out, pnl_out, cash_out, pos_out, eq_out, real_out, unreal_out, dd_out)
    detail_counts = None
    if m and detail is not None and (use_sl.any() or use_tp.any()):
        # a first pass on copies finds the stop-loss/take-profit exits; the ambiguous ones are resolved on the detail
        step_fleet(offsets, flat_rows, flat_act, ts, candles.open, candles.high, candles.low, candles.close,
                   *(a.copy() for a in state), *rules_arrays, ov_event, ov_level, *outputs)
        detail_counts = _detail_overrides(candles, chosen, offsets, flat_rows, entry_price, ev, p_out, detail,
                                          ov_event, ov_level)
    if m:
        step_fleet(offsets, flat_rows, flat_act, ts, candles.open, candles.high, candles.low, candles.close,
                   *state, *rules_arrays, ov_event, ov_level, *outputs)
    states: dict[int, BotTick] = {}
    for j, b in enumerate(decided_bots.tolist()):
        bot = chosen[j]
        states[bot.bot_id] = BotTick(
            bot_id=bot.bot_id, strategy=bot.strategy, parameters=bot.parameters, rules=bot.rules,
            cash=float(cash[j]), amount=float(amount[j]), entry_price=float(entry_price[j]),
            entry_time=None if entry_time[j] == NO_ENTRY else int(entry_time[j]), entry_fee=float(entry_fee[j]),
            fees_paid=float(fees_paid[j]), realized_pnl=float(realized[j]), peak_equity=float(peak[j]),
            last_candle=int(ts[flat_rows[offsets[j + 1] - 1]]),
            history_start=new_history_start.get(b, bot.history_start))
    ids = np.array([b.bot_id for b in bots], dtype=np.int64)
    filled = np.flatnonzero(ev != EV_NONE)
    return FleetResult(
        sig_bot=ids[flat_bot] if m else np.empty(0, np.int64), sig_ts=ts[flat_rows], sig_action=flat_act,
        sig_conf=flat_conf, sig_price=candles.close[flat_rows], sig_indicators=flat_ind,
        snap_cash=cash_out, snap_position=pos_out, snap_equity=eq_out, snap_realized=real_out,
        snap_unrealized=unreal_out, snap_drawdown=dd_out,
        trade_rows=filled, trade_side=["buy" if ev[k] == EV_BUY else "sell" for k in filled.tolist()],
        trade_reason=["signal" if ev[k] == EV_BUY else EXIT_REASONS[int(ev[k])] for k in filled.tolist()],
        trade_price=p_out[filled], trade_amount=a_out[filled], trade_fee=f_out[filled], trade_pnl=pnl_out[filled],
        states=states, errors=errors, idle=idle, detail=detail_counts,
    )


def _detail_overrides(candles: CandleArrays, chosen: list[BotTick], offsets: np.ndarray, flat_rows: np.ndarray,
                      entry_price0: np.ndarray, ev: np.ndarray, price: np.ndarray, detail: tuple[str, Any],
                      ov_event: np.ndarray, ov_level: np.ndarray) -> dict[str, Any]:
    """Fill ov_event/ov_level for the stop-loss/take-profit exits of a first pass that fell on ambiguous candles
    and whose detail touches a level (`detail.is_ambiguous` / `resolve_exit`: the rule of `simulate_detail`).

    Exact for the same reason as `simulate_detail`: an ambiguous candle exits with or without detail, and entry
    prices do not depend on the cash, so the first pass finds the very candles the second one fills."""
    from apps.bots.trading.detail import is_ambiguous, resolve_exit
    from apps.bots.trading.fills import EV_STOP_LOSS, EV_TAKE_PROFIT

    kind, source = detail
    ambiguous: list[tuple[int, float, FillRules]] = []  # (flat position, entry price, rules)
    for j, bot in enumerate(chosen):
        entry = float(entry_price0[j])
        for k in range(int(offsets[j]), int(offsets[j + 1])):
            e = int(ev[k])
            if e == EV_BUY:
                entry = float(price[k])
            elif e in (EV_STOP_LOSS, EV_TAKE_PROFIT):
                i = int(flat_rows[k])
                if is_ambiguous(entry, float(candles.open[i]), float(candles.high[i]), float(candles.low[i]),
                                bot.rules):
                    ambiguous.append((k, entry, bot.rules))
    counts: dict[str, Any] = {"source": kind, "ambiguous_exits": len(ambiguous), "changed": 0, "missing": [],
                              "untouched": []}
    if not ambiguous:
        return counts
    bars = np.unique(np.array([int(flat_rows[k]) for k, _, _ in ambiguous], dtype=np.int64))
    starts, stops, cols = source(bars)
    where = {int(b): q for q, b in enumerate(bars.tolist())}
    for k, entry, rules in ambiguous:
        i = int(flat_rows[k])
        a, z = int(starts[where[i]]), int(stops[where[i]])
        t = int(candles.timestamp[i])
        if z <= a:
            counts["missing"].append(t)
            continue
        rows = tuple(c[a:z] for c in cols[:4]) if kind == "1m" else cols[0][a:z]
        resolved = resolve_exit(entry, rules, kind, rows)
        if resolved is None:
            counts["untouched"].append(t)
            continue
        ov_event[k], ov_level[k] = resolved
        counts["changed"] += int(resolved[0] != int(ev[k]) or resolved[1] * (1.0 - rules.slippage) != price[k])
    return counts



# ---------------------------------------------------------------------------------------------------------------------
# Replays and reconciliation (pure): the tick core over an in-memory candle source, and the backtest twin of a bot.


def replay(candles: CandleArrays, bot: BotTick, *, batch: int = 1, detail: tuple[str, Any] | None = None,
           detail_counts: dict[str, Any] | None = None) -> tuple[BotTick, list[dict[str, Any]], int]:
    """Feed `candles` to the tick core `batch` new candles at a time (1 = as a live market delivers them), from
    `bot`'s state. Returns (final state, fills in order, decided count). Raises what the strategy raises.
    `detail` = (kind, DetailSource over the rows of `candles`): each tick resolves its ambiguous exits on it;
    `detail_counts` (a dict) accumulates the ticks' counts."""
    strategies: dict = {}
    fills: list[dict[str, Any]] = []
    decided = 0
    n = len(candles)
    step = max(1, int(batch))
    for end in [*range(step, n, step), n] if n else []:
        result = decide_fleet(candles.slice(None, end), [bot], strategies=strategies, detail=detail)
        if result.errors:
            raise RuntimeError(result.errors[bot.bot_id])
        fills += result.trades_of(bot.bot_id)
        decided += result.decided
        bot = result.states.get(bot.bot_id, bot)
        if detail_counts is not None and result.detail is not None:
            for key, value in result.detail.items():
                if key == "source":
                    detail_counts[key] = value
                else:
                    detail_counts[key] = detail_counts.get(key, [] if isinstance(value, list) else 0) + value
    return bot, fills, decided


def round_trips(fills: list[dict[str, Any]], last_time: int | None, last_price: float | None,
                candle_times: np.ndarray | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Fills (buy, sell, buy, ...) -> closed trades with the backtest's `--json` fields, and the open trade."""
    trades = []
    entry = None
    for f in fills:
        if f["side"] == "buy":
            entry = f
            continue
        cost = entry["amount"] * entry["price"]
        pnl = (f["amount"] * f["price"] - f["fee"]) - (cost + entry["fee"])
        trades.append({"entry_time": entry["timestamp"], "exit_time": f["timestamp"], "entry_price": entry["price"],
                       "exit_price": f["price"], "amount": entry["amount"], "fees": entry["fee"] + f["fee"],
                       "pnl": pnl, "return_pct": pnl / cost * 100.0, "exit_reason": f["reason"]})
        entry = None
    open_trade = None
    if entry is not None and last_price is not None:
        a, ep, fe = entry["amount"], entry["price"], entry["fee"]
        upnl = a * last_price - (a * ep + fe)
        bars = entry_bar = None
        if candle_times is not None:
            entry_bar = int(np.searchsorted(candle_times, entry["timestamp"]))
            bars = int(np.searchsorted(candle_times, last_time)) - entry_bar
        open_trade = {"entry_time": entry["timestamp"], "entry_bar": entry_bar, "entry_price": ep, "amount": a,
                      "fees": fe, "last_price": last_price, "last_time": last_time, "unrealized_pnl": upnl,
                      "return_pct": upnl / (a * ep) * 100.0, "bars_held": bars}
    return trades, open_trade


def twin_fills(candles: CandleArrays, strategy, rules: FillRules, *, trading_from: int,
               signals: np.ndarray | None = None, detail: tuple[str, Any] | None = None) -> list[dict[str, Any]]:
    """What a backtest of a bot's config makes over `candles` (its history start on), trading only candles with
    close time >= `trading_from` (before: hold, indicators warming): fills as `FleetResult.trades_of` gives them.
    `signals`: the strategy's actions over `candles` when already computed. `detail` = (kind, DetailSource over
    `candles`): the backtest with intrabar detail (`simulate_detail`), the twin of a bot ticked with it."""
    from apps.bots.trading.fills import simulate

    if signals is None:
        signals = strategy_actions(candles, strategy)
    action = np.asarray(signals, dtype=np.int8).copy()
    action[candles.timestamp < trading_from] = 0
    if detail is not None:
        from apps.bots.trading.detail import simulate_detail

        sim = simulate_detail(candles.timestamp, candles.open, candles.high, candles.low, candles.close, action,
                              rules, detail[0], detail[1])[0]
    else:
        sim = simulate(candles.timestamp, candles.open, candles.high, candles.low, candles.close, action, rules)
    fills = []
    ev = sim.events
    amount_after = 0.0
    for r in range(ev.shape[0]):
        i, kind = int(ev[r, 0]), int(ev[r, 1])
        buy = kind == EV_BUY
        amount_after = ev[r, 3] if buy else 0.0
        pnl = 0.0
        if not buy:
            e = ev[r - 1]
            pnl = (ev[r, 3] * ev[r, 2] - ev[r, 4]) - (e[3] * e[2] + e[4])
        fills.append({"timestamp": int(candles.timestamp[i]), "side": "buy" if buy else "sell",
                      "reason": "signal" if buy else EXIT_REASONS[kind], "price": float(ev[r, 2]),
                      "amount": float(ev[r, 3]), "fee": float(ev[r, 4]), "pnl": float(pnl),
                      "cash_after": float(ev[r, 5]), "position_after": float(amount_after)})
    return fills


def strategy_actions(candles: CandleArrays, strategy) -> np.ndarray:
    """The strategy's vectorized actions over `candles` (int8 -1/0/1)."""
    out = strategy.compute(candles.close, candles.high, candles.low, candles.open, candles.volume,
                           **strategy.frame_kwargs(candles.timestamp))
    return np.asarray(out.action, dtype=np.int8)


def first_divergence(candles: CandleArrays, actions: np.ndarray, trading_from: int, recorded_signals: dict[int, str],
                     recorded_fills: list[dict[str, Any]], twin: list[dict[str, Any]],
                     start: int | None = None, end: int | None = None) -> dict[str, Any] | None:
    """The first candle (close time in [start, end], from `trading_from`) where a bot's records differ from its
    backtest twin: {"timestamp", "what" (signal|fill|price|amount|fee), "bot", "backtest"}; None when they match."""
    lo = trading_from if start is None else max(trading_from, start)
    ts = candles.timestamp
    by_candle: dict[int, list] = {}
    for origin, fills in (("bot", recorded_fills), ("backtest", twin)):
        for f in fills:
            if lo <= f["timestamp"] and (end is None or f["timestamp"] <= end):
                by_candle.setdefault(f["timestamp"], [[], []])[0 if origin == "bot" else 1].append(f)
    for i in range(int(np.searchsorted(ts, lo)), ts.shape[0]):
        t = int(ts[i])
        if end is not None and t > end:
            break
        expected = ACTION_LABELS[int(actions[i])]
        got = recorded_signals.get(t)
        if got != expected:
            return {"timestamp": t, "what": "signal", "bot": got, "backtest": expected}
        mine, theirs = by_candle.get(t, [[], []])
        mine = sorted(mine, key=lambda f: f["side"])
        theirs = sorted(theirs, key=lambda f: f["side"])
        if [f["side"] for f in mine] != [f["side"] for f in theirs]:
            return {"timestamp": t, "what": "fill", "bot": [f["side"] for f in mine],
                    "backtest": [f["side"] for f in theirs]}
        for a, b in zip(mine, theirs, strict=True):
            for key, what in (("price", "price"), ("amount", "amount"), ("fee", "fee")):
                if a[key] != b[key]:
                    return {"timestamp": t, "what": what, "side": a["side"], "bot": a[key], "backtest": b[key]}
    return None
