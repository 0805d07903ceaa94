"""Bot lifecycle and virtual trading. Writes only; reads live in selectors.

A tick decides every candle a bot has not decided yet, in order: signals come from the strategy's vectorized form
computed once over the window (equal, by the strategy contract, to `process_data` on each prefix), fills from
`apps.bots.trading.fills.step` — the backtest's own rules — so a bot replayed over a period makes exactly the
backtest's trades over that period.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.bots.config import CONFIG_FIELDS, BotConfig, BotConfigError, load_config_dir, validate_config
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.fills import Bar, FillRules, PortfolioState, step
from apps.common.errors import ApplicationError
from apps.market.selectors import candle_frame
from apps.market.timeframes import timeframe_ms
from tradebot.notify import SYSTEM_CHANNEL, publish, publish_many, signals_channel, status_channel

logger = logging.getLogger(__name__)

ACTION_NAMES = {1: "buy", 0: "hold", -1: "sell"}
# The virtual portfolio columns a tick (or a reset) writes.
PORTFOLIO_FIELDS = ("cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid", "realized_pnl",
                    "peak_equity", "last_candle_timestamp")


@dataclass
class TickReport:
    bot_id: int
    decided: int = 0
    fills: int = 0
    last_candle: int | None = None
    skipped: str = ""
    actions: dict[str, int] = field(default_factory=dict)


def rules_for(bot: Bot) -> FillRules:
    return FillRules(fee=bot.fee_rate, slippage=bot.slippage, fraction=bot.fraction, stop_loss=bot.stop_loss,
                     take_profit=bot.take_profit, initial_balance=bot.initial_balance)


# --- lifecycle: every write of a bot's config or status goes through these ---------------------------------------
# Config fields are validated by THE bot config schema (apps.bots.config.BotConfig); lifecycle fields (LIFECYCLE_FIELDS)
# are never set from outside: status changes through bot_start / bot_stop, the portfolio through ticks and resets.

LIFECYCLE_FIELDS: tuple[str, ...] = (
    "status", "cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid", "peak_equity",
    "realized_pnl", "last_candle_timestamp", "history_start", "heartbeat_at", "restart_times", "restart_count",
    "failed_at", "last_error",
)


def bot_config(bot: Bot) -> dict[str, Any]:
    """The config fields of a stored bot (what bot_update merges changes into)."""
    return {name: getattr(bot, name) for name in CONFIG_FIELDS}


def _refuse_lifecycle(data: Mapping[str, Any]) -> None:
    for name in data:
        if name in LIFECYCLE_FIELDS:
            raise ApplicationError(f"{name!r} is lifecycle state: it changes through start/stop and ticks, not edits",
                                   field=name)


def _publish_status(bot: Bot, *, event: str = "", error: str = "") -> None:
    payload = {"bot_id": bot.pk, "name": bot.name, "status": bot.status, "error": error}
    if event:
        payload["event"] = event
    transaction.on_commit(lambda: publish(status_channel(payload["bot_id"]), payload))


@transaction.atomic
def bot_create(*, data: Mapping[str, Any] | BotConfig, config_file: str = "") -> Bot:
    """A stopped bot from a validated config; its virtual portfolio starts at the config's initial balance."""
    if not isinstance(data, BotConfig):
        _refuse_lifecycle(data)
    config = validate_config(data)
    if Bot.objects.filter(name=config.name).exists():
        raise BotConfigError(f"name: a bot named {config.name!r} already exists", field="name")
    bot = Bot.objects.create(**config.bot_fields(), config_file=config_file, cash=config.initial_balance,
                             peak_equity=config.initial_balance)
    _publish_status(bot, event="created")
    return bot


@transaction.atomic
def bot_update(*, bot: Bot, data: Mapping[str, Any] | BotConfig, config_file: str | None = None) -> Bot:
    """Change a bot's config (partial `data` is merged into the stored config, then validated as a whole).

    Portfolio state is kept: changing a config does not reset a trading bot. A bot that has not decided a candle yet
    starts from its (new) initial balance. A running bot moved to another market gets that market watched."""
    bot = Bot.objects.select_for_update().get(pk=bot.pk)
    if isinstance(data, BotConfig):
        config = data
    else:
        _refuse_lifecycle(data)
        config = validate_config({**bot_config(bot), **dict(data)})
    if config.name != bot.name and Bot.objects.filter(name=config.name).exclude(pk=bot.pk).exists():
        raise BotConfigError(f"name: a bot named {config.name!r} already exists", field="name")
    fields = config.bot_fields()
    changed = [k for k, v in fields.items() if getattr(bot, k) != v]
    for key in changed:
        setattr(bot, key, fields[key])
    if config_file is not None and bot.config_file != config_file:
        bot.config_file = config_file
        changed.append("config_file")
    fresh = bot.last_candle_timestamp is None and bot.position == 0 and not bot.trades.exists()
    if fresh and "initial_balance" in changed:
        bot.cash = bot.peak_equity = config.initial_balance
        changed += ["cash", "peak_equity"]
    if changed:
        bot.save(update_fields=[*changed, "updated_at"])
    if bot.status == Bot.Status.RUNNING and {"exchange", "symbol", "timeframe"} & set(changed):
        _watch_market_of(bot)
    return bot


@transaction.atomic
def bot_delete(*, bot: Bot) -> None:
    """Delete a bot with its signals, trades and snapshots; a `deleted` status event is published on commit."""
    pk, name = bot.pk, bot.name
    Bot.objects.filter(pk=pk).delete()
    payload = {"bot_id": pk, "name": name, "status": "deleted", "event": "deleted", "error": ""}
    transaction.on_commit(lambda: publish(status_channel(pk), payload))


def _watch_market_of(bot: Bot) -> None:
    from apps.market.services import market_watch

    market_watch(exchange=bot.exchange, symbol=bot.symbol, timeframe=bot.timeframe)


def _lock(bot: Bot) -> None:
    Bot.objects.select_for_update().filter(pk=bot.pk).values_list("pk", flat=True).first()


@transaction.atomic
def bot_start(*, bot: Bot) -> Bot:
    """Running bots are ticked on each new closed candle of their market (which this watches, validated: its provider
    must serve it); they resume from the last candle decided."""
    _lock(bot)
    _watch_market_of(bot)
    _set_status(bot, Bot.Status.RUNNING)
    return bot


@transaction.atomic
def bot_stop(*, bot: Bot) -> Bot:
    """Stop ticking; the virtual portfolio is kept (start resumes). The market stays watched (others may use it)."""
    _lock(bot)
    _set_status(bot, Bot.Status.STOPPED)
    return bot


def start_bot(bot: Bot) -> Bot:
    """Positional alias of bot_start (kept for existing callers)."""
    return bot_start(bot=bot)


def stop_bot(bot: Bot) -> Bot:
    """Positional alias of bot_stop (kept for existing callers)."""
    return bot_stop(bot=bot)


def upsert_bot_from_config(config: BotConfig, *, config_file: str = "") -> Bot:
    """Create or update a bot by name (bot_create / bot_update). Portfolio state is kept on update."""
    existing = Bot.objects.filter(name=config.name).first()
    if existing is None:
        return bot_create(data=config, config_file=config_file)
    return bot_update(bot=existing, data=config, config_file=config_file)


def sync_bots_from_configs(directory: Path | None = None) -> list[Bot]:
    """Load every config/bots/*.json (validated: the first bad file raises naming file and field) into bots."""
    directory = Path(directory or settings.TRADEBOT_BOT_CONFIG_DIR)
    configs = load_config_dir(directory)
    with transaction.atomic():
        return [upsert_bot_from_config(config, config_file=path.name) for path, config in configs]


def _set_status(bot: Bot, status: str, *, error: str = "") -> None:
    bot.status = status
    bot.last_error = error
    bot.save(update_fields=["status", "last_error", "updated_at"])
    payload = {"bot_id": bot.pk, "name": bot.name, "status": status, "error": error}
    transaction.on_commit(lambda: publish(status_channel(bot.pk), payload))


def reset_portfolio(bot: Bot, *, history_start: int | None = None) -> Bot:
    """Forget decisions and fills: back to the initial balance (used to replay a period)."""
    with transaction.atomic():
        Trade.objects.filter(bot=bot).delete()
        Signal.objects.filter(bot=bot).delete()
        BotPerformance.objects.filter(bot=bot).delete()
        bot.cash = bot.initial_balance
        bot.peak_equity = bot.initial_balance
        bot.position = 0.0
        bot.entry_price = None
        bot.entry_timestamp = None
        bot.entry_fee = 0.0
        bot.fees_paid = 0.0
        bot.realized_pnl = 0.0
        bot.last_candle_timestamp = None
        bot.history_start = history_start
        bot.save(update_fields=[*PORTFOLIO_FIELDS, "history_start", "updated_at"])
    return bot


# --- ticks ------------------------------------------------------------------------------------------------------

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


def tick_bot(bot_id: int, *, until: int | None = None) -> TickReport:
    """Decide and trade every closed candle after the bot's last one (up to `until`), under a row lock."""
    with transaction.atomic():
        bot = Bot.objects.select_for_update().get(pk=bot_id)
        report = TickReport(bot_id=bot.pk, last_candle=bot.last_candle_timestamp)
        if bot.status != Bot.Status.RUNNING:
            report.skipped = f"status {bot.status}"
            return report
        strategy = create_strategy(bot.strategy, bot.parameters)
        frame = _window(bot, strategy, until)
        last = bot.last_candle_timestamp
        ts = frame["timestamp"].to_numpy()
        first_new = 0 if last is None else int(np.searchsorted(ts, last, side="right"))
        if first_new >= len(frame):
            bot.heartbeat_at = timezone.now()
            bot.save(update_fields=["heartbeat_at"])
            report.skipped = "no new candle"
            return report
        decided = strategy.signals(frame)
        _apply(bot, frame, decided, first_new, rules_for(bot), report)
    return report


def _apply(bot: Bot, frame: pd.DataFrame, decided: pd.DataFrame, first_new: int, rules: FillRules,
           report: TickReport) -> None:
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
        report.actions[ACTION_NAMES[action]] = report.actions.get(ACTION_NAMES[action], 0) + 1
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
    report.decided = len(signals)
    report.fills = len(pending_trades)
    report.last_candle = bot.last_candle_timestamp
    messages = [(signals_channel(bot.pk), {"bot_id": bot.pk, "timestamp": s.timestamp, "action": s.action,
                                           "confidence": s.confidence, "price": s.price}) for s in signals[-100:]]
    transaction.on_commit(lambda: publish_many(messages))


def record_tick_error(bot_id: int, exc: BaseException) -> None:
    """A tick that raised: keep the error on the bot (still `running`, marked failed) for the monitor to restart;
    other bots are unaffected."""
    message = f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        bot = Bot.objects.select_for_update().get(pk=bot_id)
        bot.last_error = message
        bot.failed_at = timezone.now()
        bot.save(update_fields=["last_error", "failed_at", "updated_at"])
        payload = {"bot_id": bot_id, "name": bot.name, "status": bot.status, "event": "tick_failed", "error": message}
        transaction.on_commit(lambda: publish(status_channel(bot_id), payload))


def tick_market(exchange: str, symbol: str, timeframe: str, *, until: int | None = None) -> list[TickReport]:
    """One batch for every running bot of a market; each bot in its own transaction so one failure blocks none."""
    reports = []
    bot_ids = Bot.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe,
                                 status=Bot.Status.RUNNING).values_list("pk", flat=True)
    for bot_id in bot_ids:
        try:
            reports.append(tick_bot(bot_id, until=until))
            Bot.objects.filter(pk=bot_id, failed_at__isnull=False).update(failed_at=None)
        except Exception as exc:  # noqa: BLE001 - recorded on the bot, the batch goes on
            logger.exception("tick of bot %s failed", bot_id)
            record_tick_error(bot_id, exc)
            reports.append(TickReport(bot_id=bot_id, skipped=f"error: {exc}"))
    return reports


def replay_bot(bot: Bot, *, start: int | None = None, end: int | None = None) -> TickReport:
    """Run a bot over stored candles [start, end] from a fresh portfolio: the virtual twin of a backtest."""
    reset_portfolio(bot, history_start=start)
    start_bot(bot)
    return tick_bot(bot.pk, until=end)


# --- supervision ----------------------------------------------------------------------------------------------------

MAX_RESTARTS_PER_HOUR = 3
HOUR_MS = 3_600_000


@dataclass
class MonitorReport:
    restarted: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)


def _pending_work(bot: Bot) -> bool:
    """A silent bot has candles it should have decided: its market has a newer closed candle than its last one."""
    from apps.market.selectors import last_candle_timestamp

    newest = last_candle_timestamp(bot.exchange, bot.symbol, bot.timeframe)
    return newest is not None and (bot.last_candle_timestamp is None or newest > bot.last_candle_timestamp)


def monitor_bots(*, now_ms: int | None = None) -> MonitorReport:
    """Restart failed or silent running bots, at most MAX_RESTARTS_PER_HOUR in a rolling hour; past that the bot goes
    to status error and a system event is published. Silent = no heartbeat for 2 timeframes (at least 2 minutes)
    while its market has candles it has not decided."""
    from apps.bots.tasks import tick_bot_task

    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    report = MonitorReport()
    for bot in Bot.objects.filter(status=Bot.Status.RUNNING):
        silence_ms = max(2 * timeframe_ms(bot.timeframe), 120_000)
        beat_ms = int(bot.heartbeat_at.timestamp() * 1000) if bot.heartbeat_at else None
        silent = (beat_ms is None or now_ms - beat_ms > silence_ms) and _pending_work(bot)
        if bot.failed_at is None and not silent:
            continue
        with transaction.atomic():
            bot = Bot.objects.select_for_update().get(pk=bot.pk)
            recent = [t for t in bot.restart_times if now_ms - int(t) < HOUR_MS]
            reason = bot.last_error if bot.failed_at else "silent: no heartbeat while candles are pending"
            if len(recent) >= MAX_RESTARTS_PER_HOUR:
                bot.restart_times = recent
                bot.failed_at = None
                bot.save(update_fields=["restart_times", "failed_at", "updated_at"])
                _set_status(bot, Bot.Status.ERROR, error=f"gave up after {len(recent)} restarts in an hour; "
                                                          f"last: {reason}")
                event = {"event": "bot_gave_up", "bot_id": bot.pk, "name": bot.name, "error": reason}
                transaction.on_commit(lambda event=event: publish(SYSTEM_CHANNEL, event))
                report.gave_up.append(bot.pk)
                continue
            bot.restart_times = [*recent, now_ms]
            bot.restart_count += 1
            bot.failed_at = None
            bot.save(update_fields=["restart_times", "restart_count", "failed_at", "updated_at"])
            payload = {"bot_id": bot.pk, "name": bot.name, "status": bot.status, "event": "restarted",
                       "reason": reason}
            transaction.on_commit(lambda payload=payload: publish(status_channel(payload["bot_id"]), payload))
            transaction.on_commit(lambda pk=bot.pk: tick_bot_task.delay(pk))
            report.restarted.append(bot.pk)
    return report


def resume_running_bots() -> list[int]:
    """On worker start: every running bot catches up from its last processed candle (one tick each, enqueued)."""
    from apps.bots.tasks import tick_bot_task

    ids = list(Bot.objects.filter(status=Bot.Status.RUNNING).values_list("pk", flat=True))
    for pk in ids:
        tick_bot_task.delay(pk)
    return ids
