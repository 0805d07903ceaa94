"""The per-bot tick path as it was before the fleet tick (commit f2774a0), kept as bench/bots.py's baseline only.

One bot per transaction: its own candle window read, signals, `fills.step` per candle, ORM bulk_create per table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from django.db import transaction
from django.utils import timezone

from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.services import rules_for
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.fills import Bar, FillRules, PortfolioState, step
from apps.market.selectors import candle_frame
from apps.market.timeframes import timeframe_ms

ACTION_NAMES = {1: "buy", 0: "hold", -1: "sell"}
PORTFOLIO_FIELDS = ("cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid", "realized_pnl",
                    "peak_equity", "last_candle_timestamp")


def _window(bot: Bot, strategy, until: int | None) -> pd.DataFrame:
    """Candles the strategy needs to decide every undecided candle up to `until`.

    Window strategies (lookback = N rows) get the N rows before the first undecided candle; recursive ones (EMA, RSI:
    lookback None) get the whole history from `history_start`, because their value depends on where it starts."""
    last = bot.last_candle_timestamp
    lookback = strategy.lookback
    key = {"exchange": bot.exchange, "symbol": bot.symbol, "timeframe": bot.timeframe}
    if lookback is None or last is None:
        return candle_frame(**key, start=bot.history_start, end=until)
    tf = timeframe_ms(bot.timeframe)
    start = last - 2 * (lookback + 1) * tf
    if bot.history_start is not None:
        start = max(start, bot.history_start)
    frame = candle_frame(**key, start=start, end=until)
    decided = int((frame["timestamp"] <= last).sum())
    if decided < lookback and (bot.history_start is None or start > bot.history_start):
        frame = candle_frame(**key, start=bot.history_start, end=until)  # gaps ate the margin: take it all
        decided = int((frame["timestamp"] <= last).sum())
    return frame.iloc[max(0, decided - lookback):].reset_index(drop=True)


def tick_bot(bot_id: int, *, until: int | None = None) -> int:
    """Decide and trade every closed candle after the bot's last one (up to `until`), under a row lock."""
    with transaction.atomic():
        bot = Bot.objects.select_for_update().get(pk=bot_id)
        if bot.status != Bot.Status.RUNNING:
            return 0
        strategy = create_strategy(bot.strategy, bot.parameters)
        frame = _window(bot, strategy, until)
        last = bot.last_candle_timestamp
        ts = frame["timestamp"].to_numpy()
        first_new = 0 if last is None else int(np.searchsorted(ts, last, side="right"))
        if first_new >= len(frame):
            bot.heartbeat_at = timezone.now()
            bot.save(update_fields=["heartbeat_at"])
            return 0
        decided = strategy.signals(frame)
        return _apply(bot, frame, decided, first_new, rules_for(bot))


def _apply(bot: Bot, frame: pd.DataFrame, decided: pd.DataFrame, first_new: int, rules: FillRules) -> int:
    state = PortfolioState(cash=bot.cash, amount=bot.position, entry_price=bot.entry_price or 0.0,
                           entry_time=bot.entry_timestamp, entry_fee=bot.entry_fee, fees_paid=bot.fees_paid)
    cols = {c: frame[c].to_numpy() for c in ("timestamp", "open", "high", "low", "close")}
    actions = decided["action"].to_numpy()
    confidence = decided["confidence"].to_numpy()
    indicator_cols = [c for c in decided.columns if c not in ("action", "confidence")]
    indicators = {c: decided[c].to_numpy() for c in indicator_cols}
    signals: list[Signal] = []
    pending_trades: list[tuple[int, Trade]] = []
    snapshots: list[BotPerformance] = []
    realized, peak = bot.realized_pnl, bot.peak_equity
    for i in range(first_new, len(frame)):
        t = int(cols["timestamp"][i])
        close = float(cols["close"][i])
        action = int(actions[i])
        values = {c: (None if not math.isfinite(v := float(indicators[c][i])) else v) for c in indicator_cols}
        signals.append(Signal(bot=bot, timestamp=t, action=ACTION_NAMES[action], confidence=float(confidence[i]),
                              indicators=values, price=close))
        bar = Bar(timestamp=t, open=float(cols["open"][i]), high=float(cols["high"][i]), low=float(cols["low"][i]),
                  close=close)
        state, fills = step(state, bar, action, rules)
        for fill in fills:
            realized += fill.pnl or 0.0
            pending_trades.append((len(signals) - 1, Trade(
                bot=bot, timestamp=t, side=fill.side, reason=fill.reason, price=fill.price, amount=fill.amount,
                fee=fill.fee, realized_pnl=fill.pnl or 0.0, cash_after=fill.cash_after,
                position_after=state.amount)))
        equity = state.equity(close)
        peak = max(peak, equity)
        unrealized = state.amount * (close - state.entry_price) - state.entry_fee if state.in_position else 0.0
        snapshots.append(BotPerformance(bot=bot, timestamp=t, cash=state.cash, position=state.amount, equity=equity,
                                        realized_pnl=realized, unrealized_pnl=unrealized,
                                        drawdown=max(0.0, 1.0 - equity / peak) if peak > 0 else 0.0))
    Signal.objects.bulk_create(signals)
    for index, trade in pending_trades:
        trade.signal = signals[index] if signals[index].pk else None
    Trade.objects.bulk_create([t for _, t in pending_trades])
    BotPerformance.objects.bulk_create(snapshots)
    bot.cash, bot.position = state.cash, state.amount
    bot.entry_price = state.entry_price if state.in_position else None
    bot.entry_timestamp = state.entry_time
    bot.entry_fee, bot.fees_paid = state.entry_fee, state.fees_paid
    bot.realized_pnl, bot.peak_equity = realized, peak
    bot.last_candle_timestamp = int(cols["timestamp"][-1])
    bot.heartbeat_at = timezone.now()
    bot.save(update_fields=[*PORTFOLIO_FIELDS, "heartbeat_at", "updated_at"])
    return len(signals)
