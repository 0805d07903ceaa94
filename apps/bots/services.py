"""Bot lifecycle and virtual trading. Writes only; reads live in selectors.

A tick decides every candle a bot has not decided yet, in order: signals come from the strategy's vectorized form
computed once over the window (equal, by the strategy contract, to `process_data` on each prefix), fills from
`apps.bots.trading.fills.step` — the backtest's own rules — so a bot replayed over a period makes exactly the
backtest's trades over that period.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.bots.config import CONFIG_FIELDS, BotConfig, BotConfigError, validate_config
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.base import ACTION_LABELS
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules
from apps.common.state import refuse_state_fields
from apps.market.selectors import candle_frame, last_candle_timestamp
from apps.market.timeframes import timeframe_ms
from tradebot.notify import SYSTEM_CHANNEL, publish, publish_many, signals_channel, status_channel

logger = logging.getLogger(__name__)

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

LIFECYCLE_HOW = "bot lifecycle state changes through start/stop and ticks, not edits"
LIFECYCLE_FIELDS: tuple[str, ...] = (
    "status", "cash", "position", "entry_price", "entry_timestamp", "entry_fee", "fees_paid", "peak_equity",
    "realized_pnl", "last_candle_timestamp", "history_start", "heartbeat_at", "restart_times", "restart_count",
    "failed_at", "last_error",
)


def bot_config(bot: Bot) -> dict[str, Any]:
    """The config fields of a stored bot (what bot_update merges changes into)."""
    return {name: getattr(bot, name) for name in CONFIG_FIELDS}


def refuse_lifecycle(data: Mapping[str, Any], *, current: Mapping[str, Any] | None = None) -> None:
    """A write naming a lifecycle field is refused (apps.common.state, the guard every app shares)."""
    refuse_state_fields(data, LIFECYCLE_FIELDS, current=current, how=LIFECYCLE_HOW)


def _publish_status(bot: Bot, *, event: str = "", error: str = "") -> None:
    payload = {"bot_id": bot.pk, "name": bot.name, "status": bot.status, "error": error}
    if event:
        payload["event"] = event
    transaction.on_commit(lambda: publish(status_channel(payload["bot_id"]), payload))


@transaction.atomic
def bot_create(*, data: Mapping[str, Any] | BotConfig, config_file: str = "") -> Bot:
    """A stopped bot from a validated config; its virtual portfolio starts at the config's initial balance."""
    if not isinstance(data, BotConfig):
        refuse_lifecycle(data)
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
        refuse_lifecycle(data)
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
def bot_start(*, bot: Bot, catch_up: bool = False) -> Bot:
    """Start a bot (its market becomes watched, validated: its provider must serve it): it trades from the NEXT
    closed candle of its market; stored history only warms its indicators.

    A fresh bot (never decided anything) starts after the market's newest stored candle (with none stored: at the
    first candle that arrives, see decide_fleet), with `history_start` = the first of the `warmup_rows(strategy)`
    stored candles up to there (window strategies: `lookback`; recursive ones: the declared warm-up, see
    apps.bots.trading.fleet).
    A bot that ran before resumes after its last decided candle when `catch_up` (deciding, in order, what it missed
    while stopped); by default it skips to the newest candle like a fresh start, because deciding candles that closed
    while it was stopped would be trading the past (that is what replay_bot is for). Not a restart: the restart
    budget (MAX_RESTARTS_PER_HOUR) counts only the monitor's restarts."""
    from apps.bots.trading.fleet import warmup_rows

    _lock(bot)
    _watch_market_of(bot)
    bot.refresh_from_db()
    if bot.last_candle_timestamp is None or not catch_up:
        newest = last_candle_timestamp(bot.exchange, bot.symbol, bot.timeframe)
        if newest is None:  # no candle yet: the first tick decides the newest candle it sees (fleet core)
            bot.history_start = None
        elif bot.history_start is None or bot.last_candle_timestamp is None:
            rows = warmup_rows(create_strategy(bot.strategy, bot.parameters))
            bot.history_start = _nth_candle_back(bot, newest, rows)
        bot.last_candle_timestamp = newest
    bot.heartbeat_at = timezone.now()
    bot.failed_at = None
    bot.save(update_fields=["last_candle_timestamp", "history_start", "heartbeat_at", "failed_at", "updated_at"])
    _set_status(bot, Bot.Status.RUNNING)
    return bot


@transaction.atomic
def bot_stop(*, bot: Bot) -> Bot:
    """Stop ticking; the virtual portfolio is kept (start resumes). The market stays watched (others may use it)."""
    _lock(bot)
    _set_status(bot, Bot.Status.STOPPED)
    return bot


def start_bot(bot: Bot, *, catch_up: bool = False) -> Bot:
    """Positional alias of bot_start (kept for existing callers)."""
    return bot_start(bot=bot, catch_up=catch_up)


def stop_bot(bot: Bot) -> Bot:
    """Positional alias of bot_stop (kept for existing callers)."""
    return bot_stop(bot=bot)


def upsert_bot_from_config(config: BotConfig, *, config_file: str = "") -> Bot:
    """Create or update a bot by name (bot_create / bot_update). Portfolio state is kept on update."""
    existing = Bot.objects.filter(name=config.name).first()
    if existing is None:
        return bot_create(data=config, config_file=config_file)
    return bot_update(bot=existing, data=config, config_file=config_file)


@dataclass
class SyncReport:
    bots: list[Bot] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per bad file, naming the file and the field


def sync_bots(directory: Path | None = None) -> SyncReport:
    """Create/update bots from every config/bots/*.json (single bots or fleet files). A bad file is one error line;
    the other files still load. A name used by two files is an error on the second."""
    from apps.bots.config import BotConfigError, load_config_entries

    directory = Path(directory or settings.TRADEBOT_BOT_CONFIG_DIR)
    report = SyncReport()
    if not directory.is_dir():
        report.errors.append(f"{directory}: not a directory")
        return report
    names: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            configs = load_config_entries(path)
            for config in configs:
                if config.name in names:
                    raise BotConfigError(f"{path}: field 'name': {config.name!r} is already used by "
                                         f"{names[config.name]}")
        except BotConfigError as exc:
            report.errors.append(str(exc))
            continue
        with transaction.atomic():
            for config in configs:
                names[config.name] = path
                report.bots.append(upsert_bot_from_config(config, config_file=path.name))
    return report


def sync_bots_from_configs(directory: Path | None = None) -> list[Bot]:
    """Load every config file; the first bad one raises (BotConfigError naming file and field)."""
    from apps.bots.config import BotConfigError

    report = sync_bots(directory)
    if report.errors:
        raise BotConfigError(report.errors[0])
    return report.bots


def sync_bots_on_worker_start() -> None:
    """Worker start: load the config files; a bad file is logged, never stops the worker."""
    try:
        report = sync_bots()
    except Exception:  # noqa: BLE001 - a worker must come up even when the config folder is broken
        logger.exception("sync_bots at worker start failed")
        return
    for line in report.errors:
        logger.error("sync_bots: %s", line)


def _set_status(bot: Bot, status: str, *, error: str = "") -> None:
    bot.status = status
    bot.last_error = error
    bot.save(update_fields=["status", "last_error", "updated_at"])
    payload = {"bot_id": bot.pk, "name": bot.name, "status": status, "error": error}
    transaction.on_commit(lambda: publish(status_channel(bot.pk), payload))


def _nth_candle_back(bot: Bot, until: int, rows: int) -> int:
    """Close time of the first of the last `rows` stored candles up to `until` (the oldest stored when fewer)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT min(timestamp) FROM (SELECT timestamp FROM market_data WHERE exchange = %s AND symbol = %s "
                    "AND timeframe = %s AND timestamp <= %s ORDER BY timestamp DESC LIMIT %s) t",
                    [bot.exchange, bot.symbol, bot.timeframe, until, max(1, rows)])
        return int(cur.fetchone()[0])


def arm_replay(bot: Bot, *, start: int | None = None) -> Bot:
    """Fresh portfolio, status running, deciding every stored candle from `start` on (replays, not live starts)."""
    reset_portfolio(bot, history_start=0 if start is None else start)
    _set_status(bot, Bot.Status.RUNNING)
    return bot


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
#
# A tick is a SHARD: a list of bot ids (of one market, usually), decided together in one transaction by the pure core
# `apps.bots.trading.fleet.decide_fleet`: rows locked FOR UPDATE SKIP LOCKED, the candle window read once, signals
# once per (strategy, parameters), fills in one compiled loop, rows written with one INSERT ... SELECT FROM unnest(...)
# ... ON CONFLICT DO NOTHING per table and the bots' state with one UPDATE ... FROM unnest(...).
# Exactly once: the decided rows and the bot's `last_candle_timestamp` commit together, so a redelivered shard (late
# ack after a crash) decides only what is not decided yet; a concurrent second delivery skips the rows the first one
# holds and re-enqueues them (waiting on the lock that time), and the unique constraints (one signal per bot and
# candle, one fill per bot, candle and side) make a duplicate impossible even then.

_BOT_COLUMNS = ("id", "strategy", "parameters", "exchange", "symbol", "timeframe", "initial_balance", "fee_rate",
                "fraction", "slippage", "stop_loss", "take_profit", "cash", "position", "entry_price",
                "entry_timestamp", "entry_fee", "fees_paid", "realized_pnl", "peak_equity", "last_candle_timestamp",
                "history_start")
_STRATEGIES: dict = {}  # params_key -> strategy instance (stateless), per process


@dataclass
class ShardReport:
    decided: int = 0  # (bot, candle) decisions stored
    fills: int = 0
    bots: int = 0  # bots locked and looked at
    skipped: list[int] = field(default_factory=list)  # locked by another delivery (re-enqueued)
    errors: dict[int, str] = field(default_factory=dict)
    reports: dict[int, TickReport] = field(default_factory=dict)


def _strategy(name: str, parameters: dict):
    from apps.bots.trading.fleet import params_key

    key = params_key(name, parameters)
    found = _STRATEGIES.get(key)
    if found is None:
        found = _STRATEGIES[key] = create_strategy(name, parameters)
    return found


def _lock_bots(bot_ids: list[int], *, wait: bool) -> list[dict]:
    from django.db import connection

    if connection.vendor != "postgresql":  # the embedded default (SQLite) has one writer at a time: no row locks
        return list(Bot.objects.filter(pk__in=bot_ids, status=Bot.Status.RUNNING).order_by("pk")
                    .values(*_BOT_COLUMNS))
    lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
    with connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_BOT_COLUMNS)} FROM bots WHERE id = ANY(%s) AND status = 'running' "
                    f"ORDER BY id {lock}", [list(bot_ids)])
        return [dict(zip(_BOT_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def _running_ids(bot_ids: list[int]) -> set[int]:
    return set(Bot.objects.filter(pk__in=bot_ids, status=Bot.Status.RUNNING).values_list("pk", flat=True))


@functools.lru_cache(maxsize=4096)
def _fill_rules(fee: float, slippage: float, fraction: float, stop_loss: float | None, take_profit: float | None,
                initial_balance: float) -> FillRules:
    """Validated once per distinct rule set: a fleet of thousands of bots shares a handful of them."""
    return FillRules(fee=fee, slippage=slippage, fraction=fraction, stop_loss=stop_loss, take_profit=take_profit,
                     initial_balance=initial_balance)


def _bot_tick(row: dict):
    from apps.bots.trading.fleet import BotTick

    parameters = row["parameters"] if isinstance(row["parameters"], dict) else json.loads(row["parameters"])
    rules = _fill_rules(row["fee_rate"], row["slippage"], row["fraction"], row["stop_loss"], row["take_profit"],
                        row["initial_balance"])
    return BotTick(bot_id=row["id"], strategy=row["strategy"], parameters=parameters, rules=rules, cash=row["cash"],
                   amount=row["position"], entry_price=row["entry_price"] or 0.0, entry_time=row["entry_timestamp"],
                   entry_fee=row["entry_fee"], fees_paid=row["fees_paid"], realized_pnl=row["realized_pnl"],
                   peak_equity=row["peak_equity"], last_candle=row["last_candle_timestamp"],
                   history_start=row["history_start"])


def _lookbacks(ticks: list) -> list[int | None | Exception]:
    """Each bot's strategy lookback (None: recursive, whole history), or the exception building it raised
    (decide_fleet records that on the bot)."""
    out: list[int | None | Exception] = []
    for t in ticks:
        try:
            out.append(_strategy(t.strategy, t.parameters).lookback)
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def _window_start(ticks: list, lookbacks: list, timeframe: str) -> int | None:
    """The first candle the market's window must hold for every bot (None: from the first stored one)."""
    tf = timeframe_ms(timeframe)
    start: int | None = None
    for t, lookback in zip(ticks, lookbacks, strict=True):
        if isinstance(lookback, Exception):
            continue
        if lookback is None or t.last_candle is None:
            need = t.history_start
        else:
            need = t.last_candle - 2 * (lookback + 1) * tf  # margin for gaps, checked after the read
            if t.history_start is not None:
                need = max(need, t.history_start)
        if need is None:
            return None
        start = need if start is None else min(start, need)
    return start


def _read_window(exchange: str, symbol: str, timeframe: str, ticks: list, until: int | None):
    lookbacks = _lookbacks(ticks)
    start = _window_start(ticks, lookbacks, timeframe)
    frame = candle_frame(exchange=exchange, symbol=symbol, timeframe=timeframe, start=start, end=until)
    if start is not None and len(frame):
        # gaps ate a window strategy's margin (fewer than `lookback` rows before its last decided candle, and its
        # history reaches further back than the read): read from the earliest history instead
        ts = frame["timestamp"].to_numpy()
        window = [(t, lb) for t, lb in zip(ticks, lookbacks, strict=True)
                  if lb is not None and not isinstance(lb, Exception) and t.last_candle is not None]
        if window:
            last = np.array([t.last_candle for t, _ in window], dtype=np.int64)
            lookback = np.array([lb for _, lb in window], dtype=np.int64)
            reaches_back = np.array([t.history_start is None or ts[0] > t.history_start for t, _ in window])
            if np.any((np.searchsorted(ts, last, side="right") < lookback) & reaches_back):
                hs_all = [x.history_start for x in ticks]
                frame = candle_frame(exchange=exchange, symbol=symbol, timeframe=timeframe,
                                     start=None if None in hs_all else min(hs_all), end=until)
    return CandleArrays.from_frame(frame)


def _write_result(result, now) -> None:
    """All rows of one decided shard: one statement per table."""
    from django.db import connection

    if not result.decided:
        return
    actions = [ACTION_LABELS[int(a)] for a in result.sig_action.tolist()]
    if connection.vendor != "postgresql":
        return _write_result_orm(result, actions)
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO signals (bot_id, timestamp, action, confidence, indicators, price, created_at) "
            "SELECT u.bot, u.ts, u.action, u.conf, u.ind::jsonb, u.price, %s FROM unnest(%s::bigint[], %s::bigint[], "
            "%s::text[], %s::float8[], %s::text[], %s::float8[]) AS u(bot, ts, action, conf, ind, price) "
            "ON CONFLICT DO NOTHING",
            [now, result.sig_bot.tolist(), result.sig_ts.tolist(), actions, result.sig_conf.tolist(),
             result.sig_indicators, result.sig_price.tolist()])
        cur.execute(
            "INSERT INTO bot_performance (bot_id, timestamp, cash, position, equity, realized_pnl, unrealized_pnl, "
            "drawdown) SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[], "
            "%s::float8[], %s::float8[], %s::float8[]) ON CONFLICT DO NOTHING",
            [result.sig_bot.tolist(), result.sig_ts.tolist(), result.snap_cash.tolist(),
             result.snap_position.tolist(), result.snap_equity.tolist(), result.snap_realized.tolist(),
             result.snap_unrealized.tolist(), result.snap_drawdown.tolist()])
        rows = result.trade_rows
        if rows.shape[0]:
            cur.execute(
                "INSERT INTO trades (bot_id, signal_id, timestamp, side, reason, price, amount, fee, realized_pnl, "
                "cash_after, position_after, created_at) "
                "SELECT u.bot, s.id, u.ts, u.side, u.reason, u.price, u.amount, u.fee, u.pnl, u.cash, u.pos, %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::float8[], %s::float8[], "
                "%s::float8[], %s::float8[], %s::float8[], %s::float8[]) "
                "AS u(bot, ts, side, reason, price, amount, fee, pnl, cash, pos) "
                "LEFT JOIN signals s ON s.bot_id = u.bot AND s.timestamp = u.ts ON CONFLICT DO NOTHING",
                [now, result.sig_bot[rows].tolist(), result.sig_ts[rows].tolist(), result.trade_side,
                 result.trade_reason, result.trade_price.tolist(), result.trade_amount.tolist(),
                 result.trade_fee.tolist(), result.trade_pnl.tolist(), result.snap_cash[rows].tolist(),
                 result.snap_position[rows].tolist()])


def _write_result_orm(result, actions: list[str]) -> None:
    """The same rows through the ORM (the embedded SQLite default; PostgreSQL takes the unnest statements)."""
    bots, ts = result.sig_bot.tolist(), result.sig_ts.tolist()
    Signal.objects.bulk_create([
        Signal(bot_id=b, timestamp=t, action=a, confidence=c, indicators=json.loads(i), price=p)
        for b, t, a, c, i, p in zip(bots, ts, actions, result.sig_conf.tolist(), result.sig_indicators,
                                    result.sig_price.tolist(), strict=True)], ignore_conflicts=True)
    BotPerformance.objects.bulk_create([
        BotPerformance(bot_id=b, timestamp=t, cash=c, position=p, equity=e, realized_pnl=r, unrealized_pnl=u,
                       drawdown=d)
        for b, t, c, p, e, r, u, d in zip(bots, ts, result.snap_cash.tolist(), result.snap_position.tolist(),
                                          result.snap_equity.tolist(), result.snap_realized.tolist(),
                                          result.snap_unrealized.tolist(), result.snap_drawdown.tolist(),
                                          strict=True)], ignore_conflicts=True)
    rows = result.trade_rows.tolist()
    if not rows:
        return
    ids = {(b, t): pk for pk, b, t in Signal.objects.filter(bot_id__in=set(bots), timestamp__in=[ts[r] for r in rows])
           .values_list("pk", "bot_id", "timestamp")}
    Trade.objects.bulk_create([
        Trade(bot_id=bots[r], signal_id=ids.get((bots[r], ts[r])), timestamp=ts[r], side=side, reason=reason,
              price=price, amount=amount, fee=fee, realized_pnl=pnl, cash_after=float(result.snap_cash[r]),
              position_after=float(result.snap_position[r]))
        for r, side, reason, price, amount, fee, pnl in zip(
            rows, result.trade_side, result.trade_reason, result.trade_price.tolist(), result.trade_amount.tolist(),
            result.trade_fee.tolist(), result.trade_pnl.tolist(), strict=True)], ignore_conflicts=True)


def _update_bots(result, idle: list[int], now) -> None:
    """The state of every decided bot and the heartbeat of every idle one: one UPDATE."""
    from django.db import connection

    states = list(result.states.values())
    ids = [s.bot_id for s in states] + list(idle)
    if not ids:
        return
    k = len(states)
    if connection.vendor != "postgresql":
        for st in states:
            Bot.objects.filter(pk=st.bot_id).update(
                cash=st.cash, position=st.amount, entry_price=st.entry_price if st.amount > 0 else None,
                entry_timestamp=st.entry_time, entry_fee=st.entry_fee, fees_paid=st.fees_paid,
                realized_pnl=st.realized_pnl, peak_equity=st.peak_equity, last_candle_timestamp=st.last_candle,
                history_start=st.history_start, heartbeat_at=now, failed_at=None, updated_at=now)
        Bot.objects.filter(pk__in=idle).update(heartbeat_at=now, updated_at=now)
        return

    def col(get, fill=None):
        return [get(s) for s in states] + [fill] * (len(ids) - k)

    with connection.cursor() as cur:
        cur.execute(
            "UPDATE bots SET cash = COALESCE(u.cash, bots.cash), position = COALESCE(u.pos, bots.position), "
            "entry_price = CASE WHEN u.decided THEN u.ep ELSE bots.entry_price END, "
            "entry_timestamp = CASE WHEN u.decided THEN u.et ELSE bots.entry_timestamp END, "
            "entry_fee = COALESCE(u.ef, bots.entry_fee), fees_paid = COALESCE(u.fp, bots.fees_paid), "
            "realized_pnl = COALESCE(u.rp, bots.realized_pnl), peak_equity = COALESCE(u.pk, bots.peak_equity), "
            "last_candle_timestamp = COALESCE(u.last, bots.last_candle_timestamp), "
            "history_start = COALESCE(u.hs, bots.history_start), heartbeat_at = %s, "
            "failed_at = CASE WHEN u.decided THEN NULL ELSE bots.failed_at END, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::bool[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[], "
            "%s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[], %s::bigint[]) "
            "AS u(id, decided, cash, pos, ep, et, ef, fp, rp, pk, last, hs) WHERE bots.id = u.id",
            [now, now, ids, [True] * k + [False] * (len(ids) - k), col(lambda s: s.cash),
             col(lambda s: s.amount), col(lambda s: s.entry_price if s.amount > 0 else None),
             col(lambda s: s.entry_time), col(lambda s: s.entry_fee), col(lambda s: s.fees_paid),
             col(lambda s: s.realized_pnl), col(lambda s: s.peak_equity), col(lambda s: s.last_candle),
             col(lambda s: s.history_start)])


def _record_errors(errors: dict[int, str], now) -> None:
    """Failed bots keep their error (still running, marked failed for the monitor), in a savepoint of the shard."""
    from django.db import connection

    if not errors:
        return
    ids = list(errors)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for i in ids:
                Bot.objects.filter(pk=i).update(last_error=errors[i], failed_at=now, updated_at=now)
    else:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("UPDATE bots SET last_error = u.err, failed_at = %s, updated_at = %s "
                        "FROM unnest(%s::bigint[], %s::text[]) AS u(id, err) WHERE bots.id = u.id",
                        [now, now, ids, [errors[i] for i in ids]])
    payloads = [(status_channel(i), {"bot_id": i, "status": Bot.Status.RUNNING, "event": "tick_failed",
                                     "error": errors[i]}) for i in ids]
    transaction.on_commit(lambda: publish_many(payloads))


# SQLSTATE classes of a statement that the database refused while the connection stays fine (disk full 53, a revoked
# privilege 42, a check or a trigger 23 / P0, a statement timeout 57014...): retrying the same writes cannot help.
# Connection loss (08, 57P01-03 shutdown/terminate) and serialization failures / deadlocks (40) are retried instead.
_RETRIED_SQLSTATES = ("08", "40", "57P01", "57P02", "57P03")


def _refused_statement(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error that refused a statement (None: a lost connection or a retryable one)."""
    cause = exc.__cause__
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)  # psycopg 3 / psycopg2
    if not code or any(code.startswith(p) for p in _RETRIED_SQLSTATES):
        return None
    return code


def tick_shard(bot_ids: list[int], *, until: int | None = None, wait: bool = False) -> ShardReport:
    """Decide every closed candle (up to `until`) after each running bot's last one, for the bots `bot_ids`, in one
    transaction (see the section comment). Bots another delivery holds are skipped (`wait=True`: wait for them).

    A statement the database refuses (disk full, a revoked permission, a statement timeout on one bot's rows) rolls
    the shard back; the shard is then ticked bot by bot, so the healthy bots go on and each failing bot gets the
    error in last_error (failed: the monitor restarts it a bounded number of times, then gives up with the reason).
    A lost connection is raised for the task to retry."""
    from django.db import DatabaseError

    try:
        return _tick_shard(bot_ids, until=until, wait=wait)
    except DatabaseError as exc:
        code = _refused_statement(exc)
        if code is None or transaction.get_connection().in_atomic_block:
            raise
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        message = f"database write failed (SQLSTATE {code}): {first_line}"
    if len(bot_ids) > 1:
        logger.warning("tick shard of %d bots refused by the database (%s): ticking them one by one",
                       len(bot_ids), message)
        report = ShardReport()
        for bot_id in bot_ids:
            part = tick_shard([bot_id], until=until, wait=wait)
            report.decided += part.decided
            report.fills += part.fills
            report.bots += part.bots
            report.skipped.extend(part.skipped)
            report.errors.update(part.errors)
            report.reports.update(part.reports)
        return report
    logger.error("bot %s: %s", bot_ids[0], message)
    _record_errors({bot_ids[0]: message}, timezone.now())
    report = ShardReport(bots=1, errors={bot_ids[0]: message})
    report.reports[bot_ids[0]] = TickReport(bot_id=bot_ids[0], skipped=f"error: {message}")
    return report


def _tick_shard(bot_ids: list[int], *, until: int | None = None, wait: bool = False) -> ShardReport:
    from apps.bots.selectors import live_detail
    from apps.bots.trading.fleet import decide_fleet

    report = ShardReport()
    messages: list[tuple[str, dict]] = []
    with transaction.atomic():
        rows = _lock_bots(bot_ids, wait=wait)
        report.bots = len(rows)
        if not wait and len(rows) < len(set(bot_ids)):  # some were stopped, or held by another delivery
            locked = {r["id"] for r in rows}
            report.skipped = sorted(_running_ids(bot_ids) - locked)
        now = timezone.now()
        markets: dict[tuple, list] = {}
        for row in rows:
            markets.setdefault((row["exchange"], row["symbol"], row["timeframe"]), []).append(_bot_tick(row))
        for (exchange, symbol, timeframe), ticks in markets.items():
            candles = _read_window(exchange, symbol, timeframe, ticks, until)
            detail = live_detail(exchange=exchange, symbol=symbol, timeframe=timeframe, candle_ts=candles.timestamp,
                                 rules=[t.rules for t in ticks])
            result = decide_fleet(candles, ticks, strategies=_STRATEGIES, detail=detail)
            _write_result(result, now)
            _update_bots(result, result.idle, now)
            _record_errors(result.errors, now)
            report.decided += result.decided
            report.fills += int(result.trade_rows.shape[0])
            report.errors.update(result.errors)
            _collect(report, result, messages)
    if messages:
        transaction.on_commit(lambda: publish_many(messages))  # at once when no outer transaction is open
    if report.skipped:
        from apps.bots.tasks import tick_shard_task

        tick_shard_task.apply_async(args=(report.skipped,), kwargs={"until": until, "wait": True}, countdown=1)
    return report


def _collect(report: ShardReport, result, messages: list) -> None:
    """Per-bot reports and the `signals:{bot_id}` messages (the last 100 decisions of each bot)."""
    bots = result.sig_bot
    for bot_id in result.idle:
        report.reports[bot_id] = TickReport(bot_id=bot_id, skipped="no new candle")
    for bot_id, error in result.errors.items():
        report.reports[bot_id] = TickReport(bot_id=bot_id, skipped=f"error: {error}")
    if not result.decided:
        return
    bounds = np.flatnonzero(np.diff(bots)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [bots.shape[0]]))
    fills_per_bot = dict(zip(*np.unique(bots[result.trade_rows], return_counts=True), strict=True))
    ts, act, conf, price = (result.sig_ts.tolist(), result.sig_action.tolist(), result.sig_conf.tolist(),
                            result.sig_price.tolist())
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        bot_id = int(bots[a])
        rep = TickReport(bot_id=bot_id, decided=b - a, fills=int(fills_per_bot.get(bot_id, 0)), last_candle=ts[b - 1])
        for i in range(a, b):
            name = ACTION_LABELS[act[i]]
            rep.actions[name] = rep.actions.get(name, 0) + 1
        report.reports[bot_id] = rep
        for i in range(max(a, b - 100), b):
            messages.append((signals_channel(bot_id), {"bot_id": bot_id, "timestamp": ts[i],
                                                       "action": ACTION_LABELS[act[i]], "confidence": conf[i],
                                                       "price": price[i]}))


def tick_bot(bot_id: int, *, until: int | None = None) -> TickReport:
    """One bot's tick: a shard of one (waits for the bot's lock)."""
    report = tick_shard([bot_id], until=until, wait=True)
    if bot_id in report.reports:
        return report.reports[bot_id]
    status = Bot.objects.filter(pk=bot_id).values_list("status", flat=True).first()
    return TickReport(bot_id=bot_id, skipped=f"status {status}")


def shard_size() -> int:
    return int(settings.TRADEBOT_TICK_SHARD_SIZE)


def fleet_shards(markets: list[tuple[str, str, str]]) -> list[list[int]]:
    """The running bots of these (exchange, symbol, timeframe) markets in shards of TRADEBOT_TICK_SHARD_SIZE, by
    market then id: the 100 bots each of 100 markets whose candles closed together make 4 shards of 2,500, not 100
    tasks of 100 (a shard reads each of its markets' windows once)."""
    if not markets:
        return []
    where = Q()
    for exchange, symbol, timeframe in set(markets):
        where |= Q(exchange=exchange, symbol=symbol, timeframe=timeframe)
    ids = list(Bot.objects.filter(where, status=Bot.Status.RUNNING)
               .order_by("exchange", "symbol", "timeframe", "pk").values_list("pk", flat=True))
    size = max(1, shard_size())
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def market_shards(exchange: str, symbol: str, timeframe: str) -> list[list[int]]:
    return fleet_shards([(exchange, symbol, timeframe)])


def enqueue_ticks(markets: list[tuple[str, str, str]], *, until: int | None = None) -> list[list[int]]:
    """One `tick_shard_task` per shard of the markets' running bots on queue `bots`; returns the shards."""
    from apps.bots.tasks import tick_shard_task

    shards = fleet_shards(markets)
    for ids in shards:
        tick_shard_task.apply_async(args=(ids,), kwargs={"until": until})
    return shards


def tick_market(exchange: str, symbol: str, timeframe: str, *, until: int | None = None) -> list[TickReport]:
    """Every shard of a market, here and now (commands, tests); the live path enqueues them instead."""
    reports: list[TickReport] = []
    for ids in market_shards(exchange, symbol, timeframe):
        shard = tick_shard(ids, until=until, wait=True)
        reports.extend(shard.reports[i] for i in ids if i in shard.reports)
    return reports


def record_tick_error(bot_id: int, exc: BaseException) -> None:
    """A tick that raised outside the core: keep the error on the bot for the monitor."""
    with transaction.atomic():
        _record_errors({bot_id: f"{type(exc).__name__}: {exc}"}, timezone.now())


def replay_bot(bot: Bot, *, start: int | None = None, end: int | None = None) -> TickReport:
    """Run a bot over stored candles [start, end] from a fresh portfolio: the virtual twin of a backtest."""
    arm_replay(bot, start=start)
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
    newest = last_candle_timestamp(bot.exchange, bot.symbol, bot.timeframe)
    return newest is not None and (bot.last_candle_timestamp is None or newest > bot.last_candle_timestamp)


def _silent(bot: Bot, now_ms: int) -> bool:
    """No heartbeat for 2 timeframes (at least 2 minutes) while its market has candles it has not decided."""
    silence_ms = max(2 * timeframe_ms(bot.timeframe), 120_000)
    beat_ms = int(bot.heartbeat_at.timestamp() * 1000) if bot.heartbeat_at else None
    return (beat_ms is None or now_ms - beat_ms > silence_ms) and _pending_work(bot)


def monitor_bots(*, now_ms: int | None = None) -> MonitorReport:
    """Restart failed or silent running bots, at most MAX_RESTARTS_PER_HOUR in a rolling hour; past that the bot goes
    to status error and a system event is published. Silent = no heartbeat for 2 timeframes (at least 2 minutes)
    while its market has candles it has not decided."""
    from apps.bots.tasks import tick_shard_task

    now_ms = int(timezone.now().timestamp() * 1000) if now_ms is None else now_ms
    report = MonitorReport()
    for bot in Bot.objects.filter(status=Bot.Status.RUNNING):
        if bot.failed_at is None and not _silent(bot, now_ms):
            continue
        with transaction.atomic():
            bot = Bot.objects.select_for_update().get(pk=bot.pk)
            # Re-read under the lock: a tick that finished between the read above and the lock may have recovered
            # the bot (failed_at cleared, a fresh heartbeat) or someone stopped it; such a bot is left alone.
            if bot.status != Bot.Status.RUNNING or not (bot.failed_at is not None or _silent(bot, now_ms)):
                continue
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
            transaction.on_commit(lambda pk=bot.pk: tick_shard_task.delay([pk], wait=True))
            report.restarted.append(bot.pk)
    return report


def resume_running_bots() -> list[int]:
    """On worker start: every running bot catches up from its last decided candle (one shard task per shard)."""
    # order_by() drops Meta.ordering (name), which DISTINCT would otherwise include: one market per bot, not per market.
    markets = list(Bot.objects.filter(status=Bot.Status.RUNNING).order_by()
                   .values_list("exchange", "symbol", "timeframe").distinct())
    return sorted(i for shard in enqueue_ticks(markets) for i in shard)
